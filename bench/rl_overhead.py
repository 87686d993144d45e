"""What do served rewards cost PPO? Env steps/s and the share of wall time spent on rewards, per reward source.

Starts its own local Ray + vlreward app, then runs a few PPO iterations (RLlib, new API stack) per source:
the env's own success reward (no service), the service over HTTP, a Serve deployment handle, and the model
in-process. Also measures what rendering the frames costs at the critic's input size vs full resolution.

    python -m bench.rl_overhead --iterations 3 --port 8401
"""

from __future__ import annotations

import functools
import os
import time
from dataclasses import dataclass

from bench.common import markdown_table, run_identity, write_result
from rewards.args import arg, parse_args


@dataclass
class Args:
    """PPO iterations per reward source; the target is a reward share of wall time <= 25%."""

    task: str = arg("GoToRedBall", "BabyAI level")
    model: str = arg("babyai-liv", "served reward model")
    iterations: int = arg(3, "timed PPO iterations per source (after one warm-up iteration)")
    train_batch_size: int = arg(1000, "env steps per iteration")
    port: int = arg(8401, "HTTP port of the bench's own service")
    out: str = arg("runs/bench/rl_overhead.json", "result JSON")


def render_cost(task: str, size: int, frames: int = 300) -> dict:
    """Frames/s and bytes per frame of BabyAI's top-down render at `size` px (0 = full resolution, 32 px tiles)."""
    from envs.babyai import make_env

    env = make_env(task, seed=0, render_size=size or 64)
    env.reset()
    render = (lambda: env.unwrapped.get_frame(highlight=False, tile_size=32)) if size == 0 else env.render_frame
    start = time.perf_counter()
    for _ in range(frames):
        frame = render()
    elapsed = time.perf_counter() - start
    return {"render": f"{frame.shape[0]} px", "frames_per_s": frames / elapsed, "kb_per_frame": frame.nbytes / 1024}


def measure(args: Args, source: str, reward: str, factory) -> dict:
    """Warm-up iteration, then `args.iterations` timed ones; sums steps, wall time and time spent on rewards."""
    from rl.train import Args as TrainArgs
    from rl.train import build_config, iteration_row

    train_args = TrainArgs(tasks=[args.task], model=args.model, train_batch_size=args.train_batch_size)
    algo = build_config(train_args, reward, 0, factory).build_algo()
    try:
        first = iteration_row(reward, 0, 0, algo.train(), 0.0)  # warm-up
        rows = []
        for iteration in range(args.iterations):
            start = time.perf_counter()
            result = algo.train()
            rows.append(iteration_row(reward, 0, iteration, result, time.perf_counter() - start))
    finally:
        algo.stop()
    wall = sum(r["time_s"] for r in rows)
    steps = rows[-1]["env_steps"] - first["env_steps"]
    return {
        "source": source, "reward": reward, "env_steps_per_s": steps / wall,
        "reward_share": sum(r["reward_s"] for r in rows) / wall,
        "s_per_iteration": wall / len(rows), "reward_s_per_iteration": sum(r["reward_s"] for r in rows) / len(rows),
        "frames_per_iteration": sum(r["frames"] for r in rows) / len(rows),
        "frame_mb_per_iteration": sum(r["frame_mb"] for r in rows) / len(rows),
    }


def main(args: Args) -> list[dict]:
    import ray
    from ray import serve

    from rewards import load_model
    from rl.handle import DeploymentRewardModel
    from rl.train import critic_input_size
    from serve.app import ServeArgs, run_local
    from serve.client import RemoteRewardModel

    identity = run_identity()
    print(identity)
    renders = [render_cost(args.task, size) for size in (critic_input_size(args.model), 0)]
    print(markdown_table(renders))

    ray.init(address="local", num_cpus=4, include_dashboard=False, log_to_driver=False)  # our own cluster
    url = run_local(ServeArgs(models=[args.model]), port=args.port)
    sources = [
        ("env success reward (no service)", "sparse", None),
        ("service over HTTP", "dense", functools.partial(RemoteRewardModel, url, args.model)),
        ("Serve deployment handle", "dense", functools.partial(DeploymentRewardModel, args.model)),
        ("model in the learner process", "dense", functools.partial(load_model, args.model)),
    ]
    try:
        rows = [measure(args, source, reward, factory) for source, reward, factory in sources]
    finally:
        serve.shutdown()
        ray.shutdown()
    print(markdown_table(rows))
    write_result(args.out, args, identity, rows, renders=renders)
    return rows


if __name__ == "__main__":
    os.environ.setdefault("RAY_AUTH_MODE", "disabled")
    main(parse_args(Args))
