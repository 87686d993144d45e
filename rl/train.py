"""PPO (RLlib new API stack) with rewards from a vlreward `RewardModel`: the sparse-vs-dense experiment.

The policy sees the env's state vector with the task's sentence embedding appended (`TaskObservation`), so one
policy learns every task in `--tasks`. Frames are rendered at the critic's input size into `info["frame"]`. By
default (`--score-in env-runner`) each env runner submits every finished episode's frames to the reward model as
the episode ends and keeps sampling (`rl.submission.EpisodeScorer`); only the scores reach the learner, whose
`ServiceReward` connector waits only for those still in flight. `--score-in learner` is the older path: frames
ride with the episodes and the connector scores an iteration's episodes in one `score_batch` call (design.md §6b).
Each (reward, seed) run writes `<reward>-seed<k>.csv` as it ends; the summary and `curves.png` follow the one
protocol of `rl.experiment` (steps to 0.7 and 0.9 success, median over seeds, ratio to sparse, intervals).
`--library sb3` runs the same experiment with Stable-Baselines3 PPO instead (`rl.sb3_train`).

    python -m rl.train --env babyai --tasks GoToRedBall --reward sparse dense dense+sparse --steps 20000 --seeds 3
    python -m rl.train --url http://127.0.0.1:8000 --model babyai-liv   # rewards from a running service
    python -m rl.train --url handle --model babyai-liv                  # a Serve deployment handle on this cluster
    python -m rl.train --library sb3 --reward sparse dense               # Stable-Baselines3 PPO
"""

from __future__ import annotations

import csv
import dataclasses
import functools
import math
import os
import random
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import torch

from envs.suites import SUITES, make_multitask_env
from rewards.base import RewardModel
from rl.connector import ServiceReward
from rl.experiment import TASK_SUCCESS, plot_curves, read_curves, summarize
from rl.mix import MODES, SIGNALS, RewardMix
from rl.submission import EpisodeScorer
from rewards.args import arg, parse_args

ENV_NAME = "vlreward-tasks"
SCORE_IN = ("env-runner", "learner")
LIBRARIES = ("rllib", "sb3")
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
    model: str = arg("babyai-progress", "reward model name or checkpoint directory (default: `vlreward serve`'s)")
    url: str = arg("", "reward service: http(s) URL, 'handle' (Serve deployment on this Ray cluster), '' in-process")
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
    max_episode_steps: int = arg(0, "truncate episodes after this many steps; 0 = the task's own limit")
    num_env_runners: int = arg(0, "remote env runners; 0 samples in the driver")
    num_envs: int = arg(8, "envs per env runner (sb3: in the DummyVecEnv), stepped as one vector env (one policy "
                        "forward per vector step)")
    train_batch_size: int = arg(1000, "env steps per PPO iteration")
    gae_lambda: float = arg(0.95, "GAE lambda (0.95, SB3's and most PPO setups'; RLlib's own default 1.0 makes "
                            "the advantages Monte-Carlo returns, in which per-step rewards of value differences "
                            "telescope away: PPO learned 2x slower with it, sparse and dense alike)")
    out: str = arg("runs/rl", "folder for the runs' CSVs (<reward>-seed<k>.csv) and curves.png")


def critic_input_size(model: str, default: int = 64) -> int:
    """The image side the critic resizes frames to (its config's `image_size`), so frames are rendered no larger."""
    from rewards import get_config

    try:
        return int(get_config(model).get("image_size", default))
    except Exception:  # a model only the remote service knows: keep the default
        return default


def reward_mix(args: Args, reward: str) -> RewardMix:
    """How `reward` (sparse, dense, dense+sparse) is made from scores and success, for either library."""
    return RewardMix(mode=reward, signal=args.signal, success_bonus=args.success_bonus, scale=args.reward_scale,
                     normalize=args.normalize)


def make_training_env(env_config: dict):
    """RLlib env creator: the suite's env per task (envs.suites), sampled per episode, with the task in the
    observation."""
    env = make_multitask_env(env_config["env"], env_config["tasks"], seed=env_config.get("seed"),
                             render_size=env_config["render_size"],
                             max_episode_steps=env_config.get("max_episode_steps") or 0)
    if env_config.get("task_embedding"):
        from envs.wrappers import TaskObservation

        env = TaskObservation(env)
    return env


def log_success(*, episode, metrics_logger=None, **kwargs) -> None:
    """on_episode_end callback: 1.0 when any step reported `info["success"]`; per task too when the env names it
    (`info["task"]`: several tasks, `envs.suites.TaskSampler`)."""
    infos = episode.get_infos()
    success = float(any(info.get("success", False) for info in infos))
    metrics_logger.log_value("success_rate", success, window=100)
    metrics_logger.log_value("episodes", 1, reduce="sum")  # this iteration's finished episodes and successes:
    metrics_logger.log_value("successes", success, reduce="sum")  # the protocol's success points (rl.experiment)
    if "task" in infos[0]:
        metrics_logger.log_value(f"{TASK_SUCCESS}{infos[0]['task']}", success, window=100)


def load_reward_model(model: str, url: str = "") -> RewardModel:
    """The reward model behind `--model`/`--url`: HTTP client, Serve deployment handle, or `rewards.load_model`."""
    if url == "handle":
        from rl.handle import DeploymentRewardModel

        return DeploymentRewardModel(model)
    if url:
        from serve.client import RemoteRewardModel

        return RemoteRewardModel(url, model)
    from rewards import load_model

    return load_model(model)


def build_config(args: Args, reward: str, seed: int, reward_model_factory: Callable[[], RewardModel]):
    """PPOConfig for one run; `reward_model_factory` is called inside the learner (never for "sparse")."""
    from ray.rllib.algorithms.ppo import PPOConfig
    from ray.rllib.core.rl_module.default_model_config import DefaultModelConfig
    from ray.tune.registry import register_env

    register_env(ENV_NAME, make_training_env)
    mix = reward_mix(args, reward)
    env_config = {"env": args.env, "tasks": list(args.tasks), "seed": seed, "task_embedding": args.task_embedding,
                  "render_size": (args.render_size or critic_input_size(args.model)) if mix.uses_model else 0,
                  "max_episode_steps": args.max_episode_steps}
    if args.score_in not in SCORE_IN:
        raise ValueError(f"unknown score_in {args.score_in!r}; valid: {', '.join(SCORE_IN)}")
    in_runner = args.score_in == "env-runner"
    # env-runner path: frames leave the episodes at their end (submitted when the mix needs the model)
    callbacks = (functools.partial(EpisodeScorer, reward_model_factory=reward_model_factory, submit=mix.uses_model,
                                   ready_wait_s=args.ready_wait_s, max_in_flight=args.max_in_flight,
                                   coalesce=args.coalesce, segment=args.segment)
                 if in_runner else None)
    return (
        PPOConfig()
        .environment(ENV_NAME, env_config=env_config)
        .env_runners(num_env_runners=args.num_env_runners, num_envs_per_env_runner=args.num_envs,
                     batch_mode="complete_episodes")
        .training(train_batch_size=args.train_batch_size, minibatch_size=min(128, args.train_batch_size),
                  num_epochs=4, lr=3e-4, entropy_coeff=0.01, lambda_=args.gae_lambda)
        .rl_module(model_config=DefaultModelConfig(fcnet_hiddens=[64, 64]))
        .learners(learner_connector=functools.partial(
            _service_reward, reward_model_factory=None if in_runner else reward_model_factory, mix=mix,
            ready_wait_s=args.ready_wait_s))
        .callbacks(callbacks_class=callbacks, on_episode_end=log_success)
        .debugging(seed=seed)
    )


def _service_reward(obs_space, act_space, **kwargs) -> ServiceReward:
    return ServiceReward(obs_space, act_space, **kwargs)


def iteration_row(reward: str, seed: int, iteration: int, result: dict, time_s: float) -> dict:
    """One row of the learning curve from an `algo.train()` result."""
    env_runners, learners = result.get("env_runners", {}), result.get("learners", {})
    # time the training loop spent blocked on rewards: gathering + scoring in the learner (learner path), or
    # submitting in the env runners + waiting for what was still in flight in the learner (env-runner path)
    reward_s = sum(float(learners.get(f"vlreward/{key}", 0.0)) for key in ("score_s", "gather_s", "wait_s"))
    reward_s += float(env_runners.get("vlreward/submit_s", 0.0))
    per_task = {key: float(value) for key, value in env_runners.items() if key.startswith(TASK_SUCCESS)}
    return {
        "reward": reward, "seed": seed, "iteration": iteration,
        "env_steps": int(env_runners.get("num_env_steps_sampled_lifetime", 0)),
        "success_rate": float(env_runners.get("success_rate", np.nan)), **per_task,
        "episodes": int(env_runners.get("episodes", 0)), "successes": int(env_runners.get("successes", 0)),
        "episode_return_mean": float(env_runners.get("episode_return_mean", np.nan)),
        "train_return_mean": float(learners.get("vlreward/mean_return", np.nan)),
        "time_s": time_s, "reward_s": reward_s,
        "frames": int(learners.get("vlreward/frames", 0)),
        "frame_mb": float(learners.get("vlreward/frame_bytes", 0.0)) / 2**20,
        # the live reward-hacking audit (rewards.metrics.RewardAudit over the learner's last episodes)
        "reward_auroc": float(learners.get("vlreward/reward_auroc", np.nan)),
        "false_pay_rate": float(learners.get("vlreward/false_pay_rate", np.nan)),
    }


def train_run(args: Args, reward: str, seed: int, reward_model_factory: Callable[[], RewardModel]) -> list[dict]:
    """One PPO run of `args.steps` env steps; one curve row per iteration."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)  # RLlib seeds its env runners and learner from config.debugging(seed)
    return run_iterations(build_config(args, reward, seed, reward_model_factory).build_algo(), reward, seed, args)


def run_iterations(algo, reward: str, seed: int, args: Args) -> list[dict]:
    """Train `algo` for `args.steps` env steps (then stop it); one printed curve row per iteration."""
    rows: list[dict] = []
    try:
        for iteration in range(1, math.ceil(args.steps / args.train_batch_size) + 1):
            start = time.perf_counter()
            result = algo.train()
            row = iteration_row(reward, seed, iteration, result, time.perf_counter() - start)
            rows.append(row)
            print(f"[{reward} seed {seed}] it {iteration:3d}  steps {row['env_steps']:6d}  "
                  f"success {row['success_rate']:.2f}  train return {row['train_return_mean']:+.3f}  "
                  f"{row['time_s']:.1f} s (rewards {row['reward_s']:.2f} s; frames {row['frames']}, "
                  f"{row['frame_mb']:.1f} MB)", flush=True)
            if row["env_steps"] >= args.steps:
                break
    finally:
        algo.stop()
    return rows


def train(args: Args, reward_model_factory: Callable[[], RewardModel] | None = None) -> list[dict]:
    """Every (reward, seed) run; writes `<reward>-seed<k>.csv` per run as it ends, then `curves.png` and the protocol's
    summary (`rl.experiment`). Returns all rows."""
    import ray

    print("args:", dataclasses.asdict(args))
    factory = reward_model_factory or functools.partial(load_reward_model, args.model, args.url)
    if args.library not in LIBRARIES:
        raise ValueError(f"unknown library {args.library!r}; valid: {', '.join(LIBRARIES)}")
    run = train_run
    if args.library == "sb3":  # no Ray of its own; it joins the cluster only for `--url handle`
        from rl.sb3_train import train_run as run
    if (args.library == "rllib" or args.url == "handle") and not ray.is_initialized():
        if args.url == "handle":  # join the cluster that runs the vlreward app
            ray.init(address=os.environ.get("RAY_ADDRESS", "auto"))
        else:  # a fresh cluster of our own, never someone else's `ray start`
            ray.init(address="local", num_cpus=max(2, args.num_env_runners + 1), include_dashboard=False)
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
