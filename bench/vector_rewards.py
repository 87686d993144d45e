"""What do served rewards cost a vector env and Stable-Baselines3 PPO? Env steps/s side by side, one run.

Starts its own local Ray + vlreward app (one model), then measures with random actions:
- 16 BabyAI envs in a gymnasium SyncVectorEnv: bare (before Serve starts, and with Serve idle), and wrapped in
  `VectorVLReward` over HTTP in each mode: "step" (one request per vector step, exact rewards at step time) and
  "episode" (each finished episode submitted as it ends, rewards filled in every `rollout` vector steps);
- SB3 PPO with 4 envs (DummyVecEnv): the env's own reward, and `VecVLReward` dense rewards in "step" and
  "rollout" (relabelled at each rollout's end) modes.
Per row: env steps/s, the ratio to the bare / env-reward baseline, and the share of wall time blocked on rewards.
Targets (issue 16): vector streaming >= 0.5x bare, SB3 served dense >= 0.5x env reward, waiting <= 5% of wall.

    python -m bench.vector_rewards --steps 300 --ppo-steps 4096 --rounds 3 --port 8402
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass

import numpy as np

from bench.common import markdown_table, run_identity, write_result
from rewards.args import arg, parse_args


@dataclass
class Args:
    """Vector steps per vector-env row and PPO timesteps per SB3 row (each after a short warm-up)."""

    task: str = arg("GoToRedBall", "BabyAI level")
    model: str = arg("babyai-liv", "served reward model")
    num_envs: int = arg(16, "sub-envs of the gymnasium vector env")
    steps: int = arg(300, "timed vector steps per vector-env row")
    rollout: int = arg(128, "episode mode: vector steps between fills (an on-policy rollout's length)")
    sb3_envs: int = arg(4, "envs of the SB3 PPO rows")
    ppo_steps: int = arg(4096, "timed PPO env steps per SB3 row")
    n_steps: int = arg(256, "PPO rollout length per env")
    only: str = arg("all", "which rows: all, vector or sb3", choices=("all", "vector", "sb3"))
    rounds: int = arg(1, "rounds over the setups (alternating order); the tables show medians")
    frame_stride: int = arg(1, "frames (rendered and scored) on every this many steps only, in every row")
    port: int = arg(8402, "HTTP port of the bench's own service")
    out: str = arg("runs/bench/vector_rewards.json", "result JSON")


def bench_env(args: Args, seed: int):
    """One BabyAI env of the bench: frames in its infos, every `frame_stride`-th step (envs.wrappers.FrameStride)."""
    from envs.suites import make_multitask_env

    return make_multitask_env("babyai", [args.task], seed=seed, frame_stride=args.frame_stride)


def vector_row(args: Args, label: str, model=None, relabel: str | None = None, segments: bool = False) -> dict:
    """Random actions through the vector env (wrapped when `relabel` is set); fills every `rollout` steps."""
    import gymnasium as gym

    from rl.wrappers import VectorVLReward

    envs = gym.vector.SyncVectorEnv([lambda s=s: bench_env(args, s) for s in range(args.num_envs)])
    if relabel is not None:
        envs = VectorVLReward(envs, model, relabel=relabel, segments=segments)
    rng = np.random.default_rng(0)
    envs.reset(seed=0)
    buffer = np.zeros((args.rollout, args.num_envs))

    def run(steps: int) -> None:
        first = getattr(envs, "steps", 0)
        for t in range(steps):
            row = t % args.rollout
            buffer[row] = envs.step(rng.integers(0, 3, args.num_envs))[1]
            if relabel == "episode" and row == args.rollout - 1:
                envs.fill(buffer, first + t - row)

    run(args.rollout)  # warm-up: one rollout and its fill (the scoring helper process started, as in SB3's rows)
    wait_before, load_before = getattr(envs, "wait_s", 0.0), os.getloadavg()[0]
    start = time.perf_counter()
    run(args.steps)
    if relabel == "episode":
        envs.collect()  # what is still in flight counts
    wall = time.perf_counter() - start
    envs.close()
    return {"bench": "vector", "row": label, "env_steps_per_s": args.steps * args.num_envs / wall,
            "wait_share": (getattr(envs, "wait_s", 0.0) - wait_before) / wall, "wall_s": wall,
            **wait_parts(envs), "load_1min": (load_before + os.getloadavg()[0]) / 2}


def wait_parts(envs) -> dict:
    """Seconds blocked submitting and collecting (whole run, warm-up included) and frames sent, for delayed modes."""
    delayed = getattr(envs, "_delayed", None)
    if delayed is None:
        return {}
    return {"submit_wait_s": delayed.submit_wait_s, "collect_wait_s": delayed.collect_wait_s,
            "frames_sent": float(delayed.frames_sent)}


def sb3_row(args: Args, label: str, model=None, relabel: str | None = None, segments: bool = False) -> dict:
    """PPO for `ppo_steps` env steps after a one-rollout warm-up; served dense rewards when `relabel` is set."""
    from stable_baselines3 import PPO
    from stable_baselines3.common.vec_env import DummyVecEnv

    from rl.sb3 import VecVLReward

    envs = DummyVecEnv([lambda s=s: bench_env(args, s) for s in range(args.sb3_envs)])
    if relabel is not None:
        envs = VecVLReward(envs, model, relabel=relabel, segments=segments)
    callback = envs.relabel_callback() if relabel == "rollout" else None
    ppo = PPO("MlpPolicy", envs, n_steps=args.n_steps, batch_size=256, n_epochs=4, seed=0, device="cpu")
    ppo.learn(args.n_steps * args.sb3_envs, callback=callback)  # warm-up rollout + update
    wait_before, load_before = getattr(envs, "wait_s", 0.0), os.getloadavg()[0]
    start = time.perf_counter()
    ppo.learn(args.ppo_steps, callback=callback, reset_num_timesteps=False)
    wall = time.perf_counter() - start
    envs.close()
    return {"bench": "sb3-ppo", "row": label, "env_steps_per_s": args.ppo_steps / wall,
            "wait_share": (getattr(envs, "wait_s", 0.0) - wait_before) / wall, "wall_s": wall,
            **wait_parts(envs), "load_1min": (load_before + os.getloadavg()[0]) / 2}


def with_ratios(rows: list[dict]) -> list[dict]:
    """Each row's steps/s over its own round's baseline: the bare vector env / PPO with the env reward."""
    baselines = ("bare, Serve idle", "PPO, env reward")
    base = {(r["bench"], r["round"]): r["env_steps_per_s"] for r in rows if r["row"] in baselines}
    for row in rows:
        row["x_baseline"] = row["env_steps_per_s"] / base.get((row["bench"], row.get("round", 0)), float("nan"))
    return rows


def medians(runs: list[dict]) -> list[dict]:
    """One row per setup: the median of each number over the rounds."""
    merged: dict[tuple, list[dict]] = {}
    for row in runs:
        merged.setdefault((row["bench"], row["row"]), []).append(row)
    return [{**same[0], "rounds": len(same),
             **{k: float(np.median([r.get(k, np.nan) for r in same])) for k, v in same[0].items()
                if isinstance(v, float)}} for same in merged.values()]


def main(args: Args) -> list[dict]:
    from serve.app import ServeArgs, init_ray, run_local, stop_local
    from serve.client import RemoteRewardModel

    identity = run_identity()
    print(identity)
    rows = [{**vector_row(args, "bare, no Serve running"), "round": 0}] if args.only != "sb3" else []
    print(markdown_table(rows[-1:]) if rows else "", flush=True)
    init_ray("local", num_cpus=4)  # our own cluster, with the proxy `vlreward serve` starts
    try:
        url = run_local(ServeArgs(models=[args.model]), port=args.port)
        model = RemoteRewardModel(url, args.model)
        plan = [(vector_row, "bare, Serve idle", None, False),
                (vector_row, "VectorVLReward step (exact at step time)", "step", False),
                (vector_row, "VectorVLReward episode (filled per rollout)", "episode", False),
                (vector_row, "VectorVLReward episode + segments (filled per rollout)", "episode", True),
                (sb3_row, "PPO, env reward", None, False),
                (sb3_row, "PPO, VecVLReward step (exact at step time)", "step", False),
                (sb3_row, "PPO, VecVLReward rollout (relabelled at rollout end)", "rollout", False),
                (sb3_row, "PPO, VecVLReward rollout + segments", "rollout", True)]
        plan = [step for step in plan if args.only in ("all", "vector" if step[0] is vector_row else "sb3")]
        for round_ in range(args.rounds):  # later rounds alternate the order, to spread the machine's drift
            for measure, label, relabel, segments in plan if round_ % 2 == 0 else plan[::-1]:
                rows.append({**measure(args, label, model, relabel, segments), "round": round_})
                print(markdown_table(rows[-1:]), flush=True)
        model.close()
    finally:
        stop_local()
    runs = with_ratios(rows)
    rows = medians(runs)
    print(f"\n{args.model}, medians over {args.rounds} round(s); x_baseline: over the same round's bare vector env "
          f"/ PPO with the env reward, both with Serve idle")
    print(markdown_table(rows, ["bench", "row", "env_steps_per_s", "x_baseline", "wait_share", "load_1min"]))
    print(markdown_table([r for r in rows if "frames_sent" in r],
                         ["bench", "row", "wall_s", "submit_wait_s", "collect_wait_s", "frames_sent"]))
    write_result(args.out, args, identity, rows, runs=runs)
    return rows


if __name__ == "__main__":
    os.environ.setdefault("RAY_AUTH_MODE", "disabled")
    main(parse_args(Args))
