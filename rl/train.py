"""The sparse-vs-dense experiment (`vlreward rl`): PPO with rewards from a vlreward `RewardModel`, in any RL library.

The policy sees the env's state vector with the task's sentence embedding appended (`TaskObservation`), so one
policy learns every task in `--tasks`. Frames are rendered at the critic's input size into `info["frame"]`. Each
(reward, seed) run writes `<reward>-seed<k>.csv` as it ends; the summary and `curves.png` follow the one
protocol of `rl.experiment` (steps to 0.7 and 0.9 success, median over seeds, ratio to sparse, intervals).

This module is what every library shares: `Args`, the training env, the reward mix, the reward model and the
driver. The libraries are a registry (`LIBRARIES`): a new one is one adapter module with a `train_run` and one
line there; adapters import from here, never the other way round.

    python -m rl.train --env babyai --tasks GoToRedBall --reward sparse dense dense+sparse --steps 20000 --seeds 3
    python -m rl.train --url http://127.0.0.1:8000 --model babyai-liv   # rewards from a running service
    python -m rl.train --url handle --model babyai-liv                  # a Serve deployment handle on this cluster
    python -m rl.train --library sb3 --reward sparse dense               # Stable-Baselines3 PPO
"""

from __future__ import annotations

import csv
import dataclasses
import functools
import importlib
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

from envs.suites import SUITES, make_multitask_env
from rewards.args import arg, parse_args
from rewards.base import RewardModel
from rewards.registry import DEFAULT_MODEL
from rl.experiment import TASK_SUCCESS, plot_curves, read_curves, summarize
from rl.mix import MODES, SIGNALS, RewardMix

# library name -> the module whose `train_run(args, reward, seed, reward_model_factory) -> curve rows` makes one run
LIBRARIES = {"rllib": "rl.rllib_train", "sb3": "rl.sb3_train"}
SCORE_IN = ("env-runner", "learner")
RELABEL = ("rollout", "step")
CURVE_FIELDS = ("reward", "seed", "iteration", "env_steps", "success_rate", "episodes", "successes",
                "episode_return_mean", "train_return_mean", "time_s", "reward_s", "frames", "frame_mb",
                "reward_auroc", "false_pay_rate")


@dataclass
class Args:
    """Train PPO with video-language rewards and compare sparse, dense and dense+sparse."""

    library: str = arg("rllib", "PPO from RLlib (new API stack) or Stable-Baselines3 (`pip install -e '.[sb3]'`)",
                       choices=list(LIBRARIES))
    env: str = arg("babyai", "environment suite", choices=list(SUITES))
    tasks: list[str] = arg(["GoToRedBall"], "tasks (BabyAI levels / Meta-World tasks); each episode samples one")
    reward: list[str] = arg(["dense"], "reward(s) to train on, one set of runs each", choices=MODES)
    model: str = arg(DEFAULT_MODEL, "reward model name or checkpoint directory (default: `vlreward serve`'s)")
    url: str = arg("", "reward service: http(s) URL, grpc://HOST:PORT, 'handle' (Serve deployment on this Ray "
                   "cluster), '' in-process")
    steps: int = arg(20_000, "env steps per run")
    seeds: int = arg(1, "runs per reward, seeds seed..seed+seeds-1")
    seed: int = arg(0, "first seed for RLlib, torch, numpy and the envs")
    signal: str = arg("rewards", "dense signal: the model's rewards V_t - V_{t-1}, progress V_t - V_0, or potential "
                      "gamma*V_t - V_{t-1} (policy-invariant shaping)", choices=SIGNALS)
    success_bonus: float = arg(1.0, "w in dense + w*success (and the sparse reward's size)")
    reward_scale: float = arg(1.0, "scale of the served dense reward (per model)")
    normalize: bool = arg(False, "divide the dense reward by the running std of its episode returns")
    task_embedding: bool = arg(True, "append the task's MiniLM sentence embedding to the policy observation")
    ready_wait_s: float = arg(60.0, "how long an iteration waits for an unreachable reward service before failing")
    score_in: str = arg("env-runner", "where episodes are scored: 'env-runner' submits each as it ends and keeps "
                        "sampling; 'learner' sends frames with the episodes and scores them in one batch",
                        choices=SCORE_IN)
    max_in_flight: int = arg(64, "env-runner path: episodes in flight per env runner before sampling waits")
    coalesce: int = arg(16, "env-runner path: episodes that end together share one HTTP request (up to this many)")
    segment: int = arg(32, "env-runner path: send a running episode's frames every this many steps when the model "
                       "scores in segments (LIV, progress), so little is left in flight when sampling ends; 0 = "
                       "whole episodes")
    relabel: str = arg("rollout", "sb3: 'rollout' scores episodes as they end while sampling goes on and adds the "
                       "dense rewards at each rollout's end; 'step' scores every vector step and waits for it",
                       choices=list(RELABEL))
    render_size: int = arg(0, "side of the frames sent to the reward model; 0 = the critic's input size")
    frame_stride: int = arg(1, "render and score every this many steps only (and the reset and last step): the "
                            "critic's and the renderer's work / stride; the dense reward of a frame goes to the step "
                            "that brought it, with a potential's discount per frame")
    max_episode_steps: int = arg(0, "truncate episodes after this many steps; 0 = the task's own limit")
    entropy_coeff: float = arg(0.01, "PPO's entropy bonus (RLlib entropy_coeff, SB3 ent_coef); continuous actions "
                               "(Meta-World's Gaussian policy) may want 0, or the bonus keeps the action noise wide")
    num_env_runners: int = arg(0, "remote env runners; 0 samples in the driver")
    num_envs: int = arg(8, "envs per env runner (sb3: in the DummyVecEnv), stepped as one vector env (one policy "
                        "forward per vector step)")
    train_batch_size: int = arg(1000, "env steps per PPO iteration")
    gae_lambda: float = arg(0.95, "GAE lambda (0.95, SB3's and most PPO setups'; RLlib's own default 1.0 makes "
                            "the advantages Monte-Carlo returns, in which per-step rewards of value differences "
                            "telescope away: PPO learned 2x slower with it, sparse and dense alike)")
    stop_at: float = arg(0.0, "end a run once its success point (rl.experiment's: trailing episodes pooled) reaches "
                         "this; its steps to every threshold up to it are already final. 0 = run every step")
    record: str = arg("", "folder to save every --record-every-th episode of each env to (frames, success, "
                      "progress), for `vlreward data import` to turn into critic training data; '' = none")
    record_every: int = arg(10, "with --record: save one episode in this many, per env")
    out: str = arg("runs/rl", "folder for the runs' CSVs (<reward>-seed<k>.csv) and curves.png")


def critic_input_size(model: str, default: int = 64) -> int:
    """The image side the critic resizes frames to (its config's `image_size`), so frames are rendered no larger."""
    from rewards import get_config

    try:
        return int(get_config(model).get("image_size", default))
    except Exception:  # a model only the remote service knows: keep the default
        return default


def reward_mix(args: Args, reward: str) -> RewardMix:
    """How `reward` (sparse, dense, dense+sparse) is made from scores and success, in every library."""
    return RewardMix(mode=reward, signal=args.signal, success_bonus=args.success_bonus, scale=args.reward_scale,
                     normalize=args.normalize)


def training_env_config(args: Args, seed: int, uses_model: bool) -> dict:
    """What `make_training_env` builds for a run: frames at the critic's size when the reward model reads them or
    episodes are recorded, none otherwise."""
    render = uses_model or bool(args.record)
    return {"env": args.env, "tasks": list(args.tasks), "seed": seed, "task_embedding": args.task_embedding,
            "render_size": (args.render_size or critic_input_size(args.model)) if render else 0,
            "max_episode_steps": args.max_episode_steps, "frame_stride": args.frame_stride, "record": args.record,
            "record_every": args.record_every}


def make_training_env(env_config: dict):
    """The env of a run (RLlib's env creator; one per SB3 sub-env): the suite's env per task (envs.suites), sampled
    per episode, with the task in the observation and, with "record", some episodes saved (envs.rollouts)."""
    env = make_multitask_env(env_config["env"], env_config["tasks"], seed=env_config.get("seed"),
                             render_size=env_config["render_size"],
                             max_episode_steps=env_config.get("max_episode_steps") or 0,
                             frame_stride=env_config.get("frame_stride", 1))
    if env_config.get("record"):
        from envs.rollouts import RecordEpisodes

        env = RecordEpisodes(env, env_config["record"], env_config.get("record_every", 10), env_config["tasks"][0])
    if env_config.get("task_embedding"):
        from envs.wrappers import TaskObservation

        env = TaskObservation(env)
    return env


def load_reward_model(model: str, url: str = "") -> RewardModel:
    """The reward model behind `--model`/`--url`: HTTP or gRPC (`grpc://HOST:PORT`) client, Serve deployment handle,
    or `rewards.load_model`."""
    if url == "handle":
        from rl.handle import DeploymentRewardModel

        return DeploymentRewardModel(model)
    if url:
        from serve.grpc_client import connect

        return connect(url, model)
    from rewards import load_model

    return load_model(model)


def get_train_run(library: str) -> Callable[[Args, str, int, Callable[[], RewardModel]], list[dict]]:
    """The run function of `library` (its module loads now: RLlib and SB3 are heavy); ValueError names the valid
    libraries."""
    if library not in LIBRARIES:
        raise ValueError(f"unknown library {library!r}; valid: {', '.join(LIBRARIES)}")
    return importlib.import_module(LIBRARIES[library]).train_run


def train(args: Args, reward_model_factory: Callable[[], RewardModel] | None = None) -> list[dict]:
    """Every (reward, seed) run; writes `<reward>-seed<k>.csv` per run as it ends, then `curves.png` and the protocol's
    summary (`rl.experiment`). Returns all rows."""
    print("args:", dataclasses.asdict(args))
    if args.frame_stride < 1:
        raise ValueError(f"frame_stride must be >= 1, got {args.frame_stride}")
    factory = reward_model_factory or functools.partial(load_reward_model, args.model, args.url)
    run = get_train_run(args.library)
    if args.url == "handle":  # join the cluster that runs the vlreward app, before any library starts its own
        import ray

        if not ray.is_initialized():
            ray.init(address=os.environ.get("RAY_ADDRESS", "auto"))
    out, rows = Path(args.out), []
    for seed in range(args.seed, args.seed + args.seeds):  # seed-major: a stopped experiment stays balanced
        for reward in args.reward:
            rows += written_or_run(out, reward, seed, lambda: run(args, reward, seed, factory))
    print(summarize(rows))
    print(f"runs: {out}/*.csv, {plot_curves(rows, out / 'curves.png', ' + '.join(args.tasks))}")
    return rows


def written_or_run(out: Path, reward: str, seed: int, run: Callable[[], list[dict]]) -> list[dict]:
    """The rows of run (reward, seed) in `out`: read back when its CSV is written (a campaign goes on from the runs
    already written; delete a CSV to rerun it), else `run()` and write them as soon as it ends."""
    done = out / run_file(reward, seed)
    if done.exists():
        print(f"[{reward} seed {seed}] kept {done}")
        return read_curves(done)
    rows = run()
    write_curves(rows, done)  # a stopped experiment keeps every finished run
    return rows


def run_file(reward: str, seed: int) -> str:
    """The CSV of one run: `<reward>-seed<k>.csv` (`python -m rl.experiment FOLDER` merges a folder of them)."""
    return f"{reward}-seed{seed}.csv"


def write_curves(rows: Sequence[dict], path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="") as f:
        tasks = sorted({key for row in rows for key in row if key.startswith(TASK_SUCCESS)})
        writer = csv.DictWriter(f, fieldnames=[*CURVE_FIELDS, *tasks], restval=float("nan"))
        writer.writeheader()
        writer.writerows(rows)


def main(argv: Sequence[str] | None = None) -> list[dict]:
    os.environ.setdefault("RAY_AUTH_MODE", "disabled")  # local clusters (design.md §6); a deployed one keeps auth
    return train(parse_args(Args, argv))


if __name__ == "__main__":
    main()
