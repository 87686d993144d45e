"""How fast does each critic score frames in-process, at its own input size, with 1 and 2 torch threads?

    python -m bench.critic_speed --models babyai-liv babyai-progress metaworld-progress

Scores real 64 px BabyAI frames (each model resizes them to its input size) as videos of `--video-frames`
frames, `--videos` at a time with score_batch; prints frames/s per model and thread count, side by side, and each
model's 1-thread rate over the first model's (the critic issue's yardstick is `babyai-liv`, measured in the same run).
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import torch

import rewards
from bench.common import TASK, babyai_frames, markdown_table, run_identity, write_result
from rewards.args import arg, parse_args


@dataclass
class Args:
    """Measure in-process scoring speed of shipped critics; print a markdown table and write JSON."""

    models: list[str] = arg(["babyai-liv", "babyai-progress"], "model names or checkpoint directories")
    threads: list[int] = arg([1, 2], "torch thread counts to measure")
    video_frames: int = arg(16, "frames per video")
    videos: int = arg(16, "videos per score_batch call")
    seconds: float = arg(10.0, "measuring time per model and thread count (after one warm-up call)")
    out: str = arg("runs/bench/critic_speed.json", "result JSON")


def frames_per_second(model, videos, seconds: float) -> float:
    """Frames scored per second by repeated score_batch calls over `seconds` (after one warm-up call)."""
    goals = [TASK if "text" in model.goal_kinds else videos[0]] * len(videos)
    model.score_batch(videos, goals)
    frames, started = 0, time.perf_counter()
    while time.perf_counter() - started < seconds:
        model.score_batch(videos, goals)
        frames += sum(len(v) for v in videos)
    return frames / (time.perf_counter() - started)


def main(args: Args) -> list[dict]:
    identity = run_identity()
    frames = babyai_frames(args.video_frames * args.videos)
    videos = list(frames.reshape(args.videos, args.video_frames, *frames.shape[1:]))
    rows = []
    for name in args.models:
        model = rewards.load_model(name)
        row = {"model": name, "input px": getattr(getattr(model, "critic", None), "config", None)
               and model.critic.config.image_size}
        for threads in args.threads:
            torch.set_num_threads(threads)
            row[f"frames/s, {threads} thread{'s' * (threads > 1)}"] = frames_per_second(model, videos, args.seconds)
        rows.append(row)
    first = f"frames/s, {args.threads[0]} thread{'s' * (args.threads[0] > 1)}"
    for row in rows:
        row[f"x {args.models[0]}"] = row[first] / rows[0][first]
    print(markdown_table(rows))
    write_result(args.out, args, identity, rows)
    return rows


if __name__ == "__main__":
    main(parse_args(Args))
