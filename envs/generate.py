"""Generate a labelled video dataset: one mp4 per episode plus `manifest.jsonl` (design.md §2).

    vlreward data generate --env babyai --tasks GoToRedBall GoToLocal --episodes 200 --out data/babyai
    vlreward data generate --env metaworld --episodes 100 --render-size 84 --warp-fraction 0.2 --out data/mw

Episode i uses seed `seed + i` (the scene) and task `tasks[i % len(tasks)]`. Within each task the episodes are
spread over three kinds in the asked shares: expert demos, failures (cycling through `failures`) and time-warped
expert demos (cycling through `WARPS`). `success` is always what the env reported; a random, noisy or other-task
failure that happens to succeed is re-drawn in the same scene (up to `MAX_ATTEMPTS` times, the row's `attempt`).

Manifest row: path, task (the sentence), paraphrase (its index in the task's sentences), paraphrases (the other
sentences), success, env,
env_task, seed, split, kind, policy, num_frames, progress (per frame, or null), performed (the task a hard
negative really did), warp, speed and source_frames (for warped demos: the recorded frame shown at each frame).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import multiprocessing
import os
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import imageio_ffmpeg
import numpy as np
from tqdm import tqdm

from envs.episode import Episode
from envs.suites import SUITES, get_suite
from rewards.args import arg, parse_args

FAILURES = ("random", "noisy_expert", "early_stop", "other_task")
WARPS = ("slow", "fast", "pause", "varying")
MAX_ATTEMPTS = 5
PARAPHRASES = 4  # episode j of a task is worded with sentence j % 4 of the task (modulo the ones it has)
PROGRESS_CHUNK = 16  # episodes a worker takes at once: the progress bar moves every this many


@dataclass
class Args:
    """Generate episodes of language-conditioned tasks as mp4 videos with a manifest."""

    env: str = arg("babyai", "environment suite (envs/suites.py)", choices=list(SUITES))
    tasks: list[str] = arg([], "tasks, assigned to episodes round-robin (default: GoToRedBall; Meta-World: all)")
    episodes: int = arg(100, "number of episodes")
    out: str = arg("data/babyai", "output folder for videos/ and manifest.jsonl")
    seed: int = arg(0, "episode i uses seed + i")
    render_size: int = arg(64, "frame height and width in pixels (even: H.264 with yuv420p)")
    failure_fraction: float = arg(0.5, "share of failure episodes, cycling through --failures")
    failures: list[str] = arg(list(FAILURES), "failure kinds: random, noisy_expert, early_stop, other_task")
    warp_fraction: float = arg(0.0, "share of time-warped expert demos (0.5x-2x), cycling through slow, fast, "
                                    "pause, varying")
    max_steps: int = arg(0, "step limit per episode (0: the suite's own: BabyAI's env limit, 150 for Meta-World)")
    workers: int = arg(2, "worker processes")


def resolve_tasks(args: Args) -> list[str]:
    """The canonical task names of `args`, the suite's defaults filled in; ValueError names the valid ones."""
    return get_suite(args.env).resolve(args.tasks)


def validate(args: Args) -> list[str]:
    """Raise ValueError on bad arguments before anything is written; returns the tasks."""
    tasks = resolve_tasks(args)
    if args.episodes <= 0:
        raise ValueError(f"episodes must be positive, got {args.episodes}")
    if args.render_size < 16 or args.render_size % 2:
        raise ValueError(f"render_size must be an even number >= 16, got {args.render_size}")
    if not (0.0 <= args.failure_fraction <= 1.0 and 0.0 <= args.warp_fraction <= 1.0
            and args.failure_fraction + args.warp_fraction <= 1.0):
        raise ValueError(f"failure_fraction and warp_fraction must lie in [0, 1] and sum to at most 1, "
                         f"got {args.failure_fraction} and {args.warp_fraction}")
    if not args.failures or set(args.failures) - set(FAILURES):
        raise ValueError(f"failures must be a non-empty subset of {', '.join(FAILURES)}, got {args.failures}")
    if args.max_steps < 0:
        raise ValueError(f"max_steps must be >= 0, got {args.max_steps}")
    if args.workers < 1:
        raise ValueError(f"workers must be at least 1, got {args.workers}")
    out = Path(args.out).absolute()
    nearest = next(path for path in (out, *out.parents) if path.exists())
    if not nearest.is_dir() or not os.access(nearest, os.W_OK | os.X_OK):
        raise ValueError(f"cannot write to {args.out!r}: {nearest} is not a writable folder")
    return tasks


def episode_kinds(count: int, args: Args) -> list[str]:
    """Kinds of a task's first `count` episodes: expert, a failure kind or a warp, each group in its share.

    Slot j goes to the group furthest behind its target share (ties: expert, failure, warped), so every prefix
    holds the shares as closely as whole episodes allow; failures and warps cycle through their kinds.
    """
    shares = {"expert": 1.0 - args.failure_fraction - args.warp_fraction,
              "failure": args.failure_fraction, "warped": args.warp_fraction}
    cycles = {"expert": ["expert"], "failure": args.failures, "warped": WARPS}
    counts, kinds = dict.fromkeys(shares, 0), []
    for slot in range(count):
        group = max((k for k in shares if shares[k] > 0), key=lambda k: (slot + 1) * shares[k] - counts[k])
        kinds.append(cycles[group][counts[group] % len(cycles[group])])
        counts[group] += 1
    return kinds


def split(seed: int) -> str:
    """train/val/test at about 80/10/10, from a stable hash of the seed (not Python's salted `hash`)."""
    bucket = int(hashlib.sha256(str(seed).encode()).hexdigest(), 16) % 10
    return "train" if bucket < 8 else "val" if bucket == 8 else "test"


def warp_indices(num_frames: int, warp: str, rng: np.random.Generator) -> np.ndarray:
    """Source frame indices [M] of a time-warped replay of `num_frames` frames: non-decreasing, 0 to the last.

    slow: constant 0.5x-0.8x; fast: constant 1.5x-2x (frames dropped); varying: a new speed in 0.5x-2x every
    8 frames; pause: real time with up to 3 frames held for 3-8 extra frames each.
    """
    if warp == "pause":
        repeats = np.ones(num_frames, np.int64)
        held = rng.choice(num_frames, size=min(3, num_frames), replace=False)
        repeats[held] += rng.integers(3, 9, size=len(held))
        return np.repeat(np.arange(num_frames), repeats)
    low, high = {"slow": (0.5, 0.8), "fast": (1.5, 2.0), "varying": (0.5, 2.0)}[warp]
    positions, speed = [0.0], rng.uniform(low, high)
    while positions[-1] < num_frames - 1:
        if warp == "varying" and len(positions) % 8 == 0:
            speed = rng.uniform(low, high)
        positions.append(positions[-1] + speed)
    return np.minimum(np.floor(positions).astype(np.int64), num_frames - 1)


def write_video(path: str | Path, frames: np.ndarray, fps: int = 10) -> Path:
    """uint8 frames [T, H, W, 3] (H, W even) -> an H.264 mp4 that decord reads back closely.

    ffmpeg is started without a Python pre-exec hook, so CPython vforks and execs it at once: no fork handlers
    run, which keeps this safe in a process that holds Ray's gRPC threads (imageio's writer forks with a hook,
    and gRPC aborts such a child when other threads are inside it).
    """
    frames = np.ascontiguousarray(frames, dtype=np.uint8)
    _, height, width, _ = frames.shape
    command = [imageio_ffmpeg.get_ffmpeg_exe(), "-y", "-loglevel", "error",
               "-f", "rawvideo", "-pix_fmt", "rgb24", "-s", f"{width}x{height}", "-r", str(fps), "-i", "-",
               "-c:v", "libx264", "-pix_fmt", "yuv420p",
               "-crf", "10",  # mean decode error ~1.4/255 at 64 px, mostly from yuv420p chroma
               "-vf", "pad=ceil(iw/2)*2:ceil(ih/2)*2", "-movflags", "+faststart", str(path)]
    finished = subprocess.run(command, input=frames.tobytes(), capture_output=True)
    if finished.returncode != 0:
        raise RuntimeError(f"ffmpeg could not write {path}: {finished.stderr.decode(errors='replace')[-300:]}")
    return Path(path)


def run_policy(env: str, task: str, seed: int, policy: str, render_size: int, max_steps: int,
               attempt: int = 0) -> Episode:
    """One episode of `policy` in scene `seed` of `env`'s `task` (max_steps 0: the suite's own limit)."""
    suite = get_suite(env)
    return suite.rollout(task, seed, policy, render_size=render_size, max_steps=max_steps or suite.max_steps,
                         attempt=attempt)


def make_episode(env: str, task: str, seed: int, kind: str, render_size: int, max_steps: int) -> tuple[Episode, dict]:
    """The episode of `kind` and its kind-specific manifest fields.

    noisy_expert gets as many steps as the clean expert needed to succeed in the same scene (given time, even a heavily
    noisy expert gets there); early_stop cuts the expert's recording at 30-80% of the way to its first success;
    a warp replays it.
    """
    rng = np.random.default_rng([seed, 1])  # the cut and the warp; the policies draw from their own streams
    extra = {"kind": kind, "performed": None, "warp": None, "speed": None, "source_frames": None, "attempt": 0}
    expert = None if kind in ("random", "other_task") else run_policy(env, task, seed, "expert", render_size, max_steps)
    if kind in ("random", "noisy_expert", "other_task"):
        budget = (expert.success_step or len(expert.actions)) if expert else max_steps
        for attempt in range(MAX_ATTEMPTS):
            episode = run_policy(env, task, seed, kind, render_size, budget, attempt)
            if not episode.success:
                break
        return episode, {**extra, "performed": episode.performed, "attempt": attempt}
    episode = expert
    if kind == "expert":
        return episode, extra
    progress = episode.progress
    if kind == "early_stop":  # ends before the success frame (a single frame if the expert succeeds at once)
        end = len(episode.frames) - 1 if episode.success_step is None else episode.success_step
        stop = min(max(1, int(end * rng.uniform(0.3, 0.8))), end - 1)
        index = np.arange(stop + 1)
        cut = dict(actions=episode.actions[:stop], success=False, success_step=None)
    else:
        index = warp_indices(len(episode.frames), kind, rng)
        extra.update(kind="warped", warp=kind, speed=round((len(episode.frames) - 1) / max(len(index) - 1, 1), 3),
                     source_frames=index.tolist())
        success_step = None if episode.success_step is None else int(np.searchsorted(index, episode.success_step))
        cut = dict(success_step=success_step)  # the actions stay the recording's
    return dataclasses.replace(episode, frames=episode.frames[index], states=episode.states[index],
                               progress=None if progress is None else progress[index], **cut), extra


def write_episode(job: tuple[int, str, str, int, str, int, str, int, int]) -> dict:
    """Make one episode, write its mp4 and return its manifest row (runs in a worker process)."""
    i, env, task, seed, kind, paraphrase, out, render_size, max_steps = job
    episode, extra = make_episode(env, task, seed, kind, render_size, max_steps)
    return write_row(out, f"videos/{i:05d}.mp4", env, episode, paraphrase, extra)


def write_row(out: str | Path, path: str, env: str, episode: Episode, paraphrase: int, extra: dict) -> dict:
    """Write `episode`'s mp4 at `out`/`path` and return its manifest row, worded with sentence `paraphrase` of its
    task (modulo the ones it has)."""
    write_video(Path(out) / path, episode.frames)
    sentences = get_suite(env).sentences(episode.task, episode.mission)
    paraphrase %= len(sentences)
    return {
        "path": path,
        "task": sentences[paraphrase],
        "paraphrase": paraphrase,
        "paraphrases": [text for k, text in enumerate(sentences) if k != paraphrase],
        "success": bool(episode.success),
        "env": env,
        "env_task": episode.task,
        "seed": episode.seed,
        "split": split(episode.seed),
        "policy": episode.policy,
        "num_frames": len(episode.frames),
        "progress": None if episode.progress is None else np.round(episode.progress, 4).tolist(),
        **extra,
    }


def generate(args: Args) -> Path:
    """Write `args.episodes` videos and the manifest into `args.out`; returns the manifest path."""
    tasks = validate(args)
    out = Path(args.out)
    (out / "videos").mkdir(parents=True, exist_ok=True)
    kinds = episode_kinds(-(-args.episodes // len(tasks)), args)
    jobs = []
    for i in range(args.episodes):
        task, j = tasks[i % len(tasks)], i // len(tasks)
        jobs.append((i, args.env, task, args.seed + i, kinds[j], j % PARAPHRASES, str(out), args.render_size,
                     args.max_steps))

    start = time.perf_counter()
    # workers take episodes in runs of one task (the per-process caches build each Meta-World scene set once), a
    # few at a time so the progress bar moves; spawn: a worker never inherits a parent's GL context or thread state
    order = sorted(range(len(jobs)), key=lambda i: tasks.index(jobs[i][2]))
    chunk = min(-(-args.episodes // len(tasks)), -(-args.episodes // args.workers), PROGRESS_CHUNK)
    with multiprocessing.get_context("spawn").Pool(args.workers) as pool:
        done = list(tqdm(pool.imap(write_episode, [jobs[i] for i in order], chunksize=chunk), total=len(jobs),
                         desc="episodes"))
    rows = [row for _, row in sorted(zip(order, done), key=lambda pair: pair[0])]
    elapsed = time.perf_counter() - start

    # write then rename, so a failed run never leaves a partial manifest behind
    manifest = out / "manifest.jsonl"
    tmp = manifest.with_suffix(".jsonl.tmp")
    tmp.write_text("".join(json.dumps(row) + "\n" for row in rows))
    os.replace(tmp, manifest)

    frames = sum(row["num_frames"] for row in rows)
    successes = sum(row["success"] for row in rows)
    print(
        f"{len(rows)} episodes ({successes} successes, {frames} frames) in {elapsed:.1f}s: "
        f"{len(rows) / elapsed:.2f} episodes/s, {frames / elapsed:.0f} frames/s -> {manifest}"
    )
    return manifest


def main(argv: Sequence[str] | None = None) -> Path:
    args = parse_args(Args, argv)
    print(args)
    return generate(args)


if __name__ == "__main__":
    main()
