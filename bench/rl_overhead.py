"""What do served rewards cost PPO, and where does the time go? RLlib PPO (new API stack) side by side, one run.

Starts its own local Ray, runs PPO with the env's own success reward before any Serve exists, then starts the
vlreward app and runs, with the same sampler (same envs, same batch; like `vlreward rl`, only runs that score frames
render them, at the critic's input size, so the env-reward rows are env steps alone):
- the env reward again, with Serve idle beside it;
- served rewards over HTTP and through a Serve deployment handle, each scored three ways: `env-runner` (each
  episode submitted as it ends, sampling goes on, the learner waits only for what is still in flight),
  `segments` (the same, with running episodes sent every `--segment` steps) and `learner` (frames ride with the
  episodes, one blocking `score_batch` per iteration: the older path).
Per row: env steps/s, the ratio to env-reward PPO, the share of wall time the loop was blocked on rewards, and
where the time went (sampling, rendering, learner update, CPU seconds burnt by Serve's processes and the rest of
Ray). First, the frames/s of the suite's own render at the critic's input size and `--render-sizes`.

    python -m bench.rl_overhead --iterations 3 --port 8401
    python -m bench.rl_overhead --models babyai-liv babyai-progress --sources http-env-runner handle-env-runner
    python -m bench.rl_overhead --env metaworld --task drawer-open --models metaworld-progress \
        --sources env-no-serve env http-segments --train-batch-size 1000 --max-episode-steps 150
"""

from __future__ import annotations

import functools
import os
import time
from dataclasses import dataclass

from bench.common import markdown_table, ray_processes, run_identity, write_result
from envs.suites import SUITES, get_suite
from rewards.args import arg, parse_args

SOURCES = ("env-no-serve", "env", "http-segments", "http-env-runner", "http-learner", "grpc-segments",
           "grpc-env-runner", "handle-segments", "handle-env-runner", "handle-learner")
LABELS = {
    "env-no-serve": "env reward, no Serve running",
    "env": "env reward, Serve idle",
    "http-segments": "{model} over HTTP, submitted by the env runner in segments",
    "http-env-runner": "{model} over HTTP, submitted by the env runner",
    "http-learner": "{model} over HTTP, frames scored in the learner",
    "grpc-segments": "{model} over gRPC, submitted by the env runner in segments",
    "grpc-env-runner": "{model} over gRPC, submitted by the env runner",
    "handle-segments": "{model} via deployment handle, submitted by the env runner in segments",
    "handle-env-runner": "{model} via deployment handle, submitted by the env runner",
    "handle-learner": "{model} via deployment handle, frames scored in the learner",
}


@dataclass
class Args:
    """PPO iterations per reward source; targets: served >= 0.8x env-reward steps/s, waiting <= 5% of wall time."""

    env: str = arg("babyai", "environment suite", choices=list(SUITES))
    task: str = arg("GoToRedBall", "BabyAI level / Meta-World task")
    models: list[str] = arg(["babyai-liv"], "served reward models (the served sources run once per model)")
    sources: list[str] = arg(list(SOURCES), "what to measure, in this order", choices=SOURCES)
    iterations: int = arg(3, "timed PPO iterations per source (after one warm-up iteration)")
    rounds: int = arg(1, "rounds over the sources (alternating order); the tables show medians")
    train_batch_size: int = arg(1000, "env steps per iteration")
    max_episode_steps: int = arg(0, "truncate episodes after this many steps; 0 = the task's own limit")
    num_envs: int = arg(8, "envs per env runner (one vector env)")
    segment: int = arg(32, "steps per segment of the `-segments` sources (whole episodes elsewhere)")
    render_sizes: list[int] = arg([64, 128], "frame sides (px) whose render cost is reported, besides the critic's")
    frame_stride: int = arg(1, "frames (rendered and scored) on every this many steps only (`vlreward rl "
                            "--frame-stride`)")
    port: int = arg(8401, "HTTP port of the bench's own service (its gRPC port: the next one)")
    out: str = arg("runs/bench/rl_overhead.json", "result JSON")


def render_cost(env: str, task: str, size: int, frames: int = 300) -> dict:
    """Frames/s and bytes per frame of the suite's own render (what fills `info["frame"]`) at `size` px."""
    sampler_env = get_suite(env).make_env(task, seed=0, render_size=size)
    sampler_env.reset()
    start = time.perf_counter()
    for _ in range(frames):
        frame = sampler_env.render()
    elapsed = time.perf_counter() - start
    sampler_env.close()
    return {"render": f"{frame.shape[0]} px", "frames_per_s": frames / elapsed, "kb_per_frame": frame.nbytes / 1024}


def cpu_seconds() -> dict[str, float]:
    """CPU seconds (user + system) used so far by this process's Ray cluster, by role."""
    totals = {}
    for role, processes in ray_processes().items():
        total = 0.0
        for process in processes:
            try:
                times = process.cpu_times()
                total += times.user + times.system
            except Exception:  # a worker that exited
                pass
        totals[role] = total
    return totals


class TimedCalls(list):
    """Durations (s) of the calls to a wrapped method; `inner` is the method before wrapping."""

    inner = None


def time_calls(owner, method: str) -> list[float]:
    """Wrap `owner.method` so that each call's duration is appended to the returned list."""
    calls, inner = TimedCalls(), getattr(owner, method)

    def timed(*args, **kwargs):
        start = time.perf_counter()
        try:
            return inner(*args, **kwargs)
        finally:
            calls.append(time.perf_counter() - start)

    setattr(owner, method, timed)
    calls.inner = inner  # to undo: setattr(owner, method, calls.inner)
    return calls


def measure(args: Args, source: str, model: str, factory) -> dict:
    """Warm-up iteration, then `args.iterations` timed ones: steps/s, time blocked on rewards, where time went."""
    from rl.rllib_train import build_config, iteration_row
    from rl.train import Args as TrainArgs

    reward = "sparse" if source.startswith("env") else "dense"
    score_in = "learner" if source.endswith("learner") else "env-runner"
    train_args = TrainArgs(env=args.env, tasks=[args.task], model=model, train_batch_size=args.train_batch_size,
                           max_episode_steps=args.max_episode_steps, num_envs=args.num_envs, score_in=score_in,
                           frame_stride=args.frame_stride,
                           segment=args.segment if source.endswith("segments") else 0)
    algo = build_config(train_args, reward, 0, factory).build_algo()
    # the env runner samples in this process (0 remote env runners): time its rendering and the learner's update
    env_class = get_suite(args.env).env_class
    learn_s, render_s = time_calls(algo.learner_group, "update"), time_calls(env_class, "render")
    try:
        first = iteration_row(reward, 0, 0, algo.train(), 0.0)  # warm-up
        rows, parts = [], {"submit_s": 0.0, "wait_s": 0.0, "missing": 0.0, "episodes": 0.0}
        learn_s.clear(), render_s.clear()
        cpu_before, load_before = cpu_seconds(), os.getloadavg()[0]
        for iteration in range(args.iterations):
            start = time.perf_counter()
            result = algo.train()
            rows.append(iteration_row(reward, 0, iteration, result, time.perf_counter() - start))
            runners, learners = result["env_runners"], result.get("learners", {})
            parts["submit_s"] += float(runners.get("vlreward/submit_s", 0.0))
            parts["wait_s"] += float(learners.get("vlreward/wait_s", 0.0))
            parts["missing"] += float(learners.get("vlreward/missing", 0.0))
            parts["episodes"] += float(runners.get("num_episodes", 0.0))
        cpu_after = cpu_seconds()
    finally:
        setattr(env_class, "render", render_s.inner)
        algo.stop()
    wall, n = sum(r["time_s"] for r in rows), len(rows)
    steps = rows[-1]["env_steps"] - first["env_steps"]
    serve_cpu = sum(cpu_after.get(k, 0) - cpu_before.get(k, 0) for k in ("replica", "ingress", "proxy", "controller"))
    return {
        "source": LABELS[source].format(model=model), "key": source, "model": model if reward == "dense" else "",
        "env_steps_per_s": steps / wall,
        "reward_wait_share": sum(r["reward_s"] for r in rows) / wall,
        "s_per_iteration": wall / n,
        "learn_s": sum(learn_s) / n, "sample_s": (wall - sum(learn_s)) / n,  # sampling and the rest of the loop
        "render_s": sum(render_s) / n,
        "reward_wait_s": sum(r["reward_s"] for r in rows) / n,
        "submit_s": parts["submit_s"] / n, "collect_wait_s": parts["wait_s"] / n,
        "episodes_per_iteration": parts["episodes"] / n, "missing_at_collect": parts["missing"] / n,
        "serve_cpu_s": serve_cpu / n,
        "driver_cpu_s": (cpu_after["driver"] - cpu_before["driver"]) / n,
        "other_ray_cpu_s": (cpu_after["other"] - cpu_before["other"]) / n,
        "frames_per_iteration": sum(r["frames"] for r in rows) / n,
        "frame_mb_per_iteration": sum(r["frame_mb"] for r in rows) / n,
        "load_1min": (load_before + os.getloadavg()[0]) / 2,
    }


def with_ratios(rows: list[dict]) -> list[dict]:
    """Add each row's steps/s as a ratio to env-reward PPO: with no Serve running, and with Serve idle."""
    base = {row["key"]: row["env_steps_per_s"] for row in rows if row["key"].startswith("env")}
    nan = float("nan")
    for row in rows:
        row["x_env_no_serve"] = row["env_steps_per_s"] / base["env-no-serve"] if "env-no-serve" in base else nan
        row["x_env_serve_idle"] = row["env_steps_per_s"] / base["env"] if "env" in base else nan
    return rows


def medians(runs: list[dict]) -> list[dict]:
    """One row per (source, model): the median of each number over the rounds."""
    import numpy as np

    merged: dict[tuple, list[dict]] = {}
    for row in runs:
        merged.setdefault((row["key"], row["model"]), []).append(row)
    return [{**same[0], "rounds": len(same),
             **{k: float(np.median([r[k] for r in same])) for k, v in same[0].items() if isinstance(v, float)}}
            for same in merged.values()]


def main(args: Args) -> list[dict]:
    from rl.handle import DeploymentRewardModel
    from rl.train import critic_input_size
    from serve.app import ServeArgs, init_ray, run_local, stop_local
    from serve.client import RemoteRewardModel
    from serve.grpc_client import GrpcRewardModel

    identity = run_identity()
    print(identity)
    sizes = sorted({critic_input_size(args.models[0]), *args.render_sizes})
    renders = [render_cost(args.env, args.task, size) for size in sizes]
    print(markdown_table(renders))

    init_ray("local", num_cpus=4)  # our own cluster, with the proxy `vlreward serve` starts
    runs, url = [], None
    try:
        for round_ in range(args.rounds):
            # "env-no-serve" runs once, before Serve exists; later rounds reverse the order to spread drift
            order = [s for s in args.sources if round_ == 0 or s != "env-no-serve"]
            order = order if round_ % 2 == 0 else order[::-1]
            for source in order:
                if source != "env-no-serve" and url is None:
                    url = run_local(ServeArgs(models=list(args.models), grpc_port=args.port + 1), port=args.port)
                    for model in args.models:  # the port is ours: another job's service there would answer 404
                        RemoteRewardModel(url, model).close()
                models = args.models if source.startswith(("http", "grpc", "handle")) else [args.models[0]]
                for model in models:
                    factory = (functools.partial(RemoteRewardModel, url, model) if source.startswith("http") else
                               functools.partial(GrpcRewardModel, f"grpc://127.0.0.1:{args.port + 1}", model)
                               if source.startswith("grpc") else
                               functools.partial(DeploymentRewardModel, model) if source.startswith("handle") else
                               None)
                    runs.append({**measure(args, source, model, factory), "round": round_})
                    print(markdown_table(runs[-1:], ["round", "source", "env_steps_per_s", "reward_wait_share",
                                                     "submit_s", "collect_wait_s", "missing_at_collect",
                                                     "serve_cpu_s", "load_1min"]), flush=True)
    finally:
        stop_local()
    rows = with_ratios(medians(runs))
    print(f"\nmedians over {args.rounds} round(s)")
    print(markdown_table(rows, ["source", "env_steps_per_s", "x_env_no_serve", "x_env_serve_idle",
                                "reward_wait_share", "frame_mb_per_iteration"]))
    print(markdown_table(rows, ["source", "s_per_iteration", "sample_s", "render_s", "learn_s", "submit_s",
                                "collect_wait_s", "missing_at_collect", "episodes_per_iteration", "serve_cpu_s",
                                "driver_cpu_s", "other_ray_cpu_s", "load_1min"]))
    write_result(args.out, args, identity, rows, renders=renders, runs=runs)
    return rows


if __name__ == "__main__":
    os.environ.setdefault("RAY_AUTH_MODE", "disabled")
    main(parse_args(Args))
