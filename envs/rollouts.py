"""A policy's own episodes as critic training data: record them during RL, then import them into a dataset.

A critic trained on scripted experts and failures can pay a learning policy's failures like successes (RL's
`false_pay_rate` shows it): the policy reaches states no scripted episode did. Recording the policy's episodes
with the env's ground-truth progress and importing them as labelled rows lets the critic be retrained on that
distribution (DAgger's idea, applied to the reward):

    vlreward rl --env metaworld --tasks button-press --reward dense+sparse --model metaworld-progress-fast \
        --url "" --record runs/rollouts --record-every 4
    vlreward data import --rollouts runs/rollouts --env metaworld --out data/metaworld-128-dagger

Recording writes numpy archives only (no ffmpeg: the recorder runs inside RL processes that hold Ray's threads);
`vlreward data import` turns them into mp4 videos and manifest rows, outside RL.
"""

from __future__ import annotations

import json
import os
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import gymnasium as gym
import numpy as np
from tqdm import tqdm

from envs.episode import Episode
from envs.generate import write_row
from envs.suites import SUITES
from rewards.args import arg, parse_args

KEEP_AFTER_SUCCESS = 10  # frames a successful rollout keeps after its first success, as generated experts do
ROLLOUT_KIND = "rollout"  # the manifest `kind` of an imported rollout (its labels are the env's progress)


class RecordEpisodes(gym.Wrapper):
    """Save every `every`-th episode of this env to `directory` as `<random id>.npz`: the frames the env put in
    `info["frame"]`, the env's `info["progress"]` and `info["success"]` at those frames, the mission and the task
    (`info["task"]`, else `task`). Episodes whose frames do not all come through are skipped (a strided render
    leaves gaps a critic's labels would not match). Ids are random, so many envs and processes share a folder.
    """

    def __init__(self, env: gym.Env, directory: str | Path, every: int = 10, task: str = ""):
        super().__init__(env)
        if every < 1:
            raise ValueError(f"every must be >= 1, got {every}")
        self.directory, self.every, self.task = Path(directory), every, task
        self.directory.mkdir(parents=True, exist_ok=True)
        self._episodes = -1
        self._infos: list[dict] | None = None

    def reset(self, **kwargs):
        obs, info = self.env.reset(**kwargs)
        self._episodes += 1
        self._infos = [info] if self._episodes % self.every == 0 else None
        return obs, info

    def step(self, action):
        obs, reward, terminated, truncated, info = self.env.step(action)
        if self._infos is not None:
            self._infos.append(info)
            if terminated or truncated:
                self._save(self._infos)
                self._infos = None
        return obs, reward, terminated, truncated, info

    def _save(self, infos: list[dict]) -> None:
        if not all("frame" in info for info in infos):
            return
        path = self.directory / f"{uuid.uuid4().hex}.npz"
        tmp = path.with_suffix(".tmp.npz")  # written then renamed: an importer never reads half a file
        np.savez_compressed(tmp, frames=np.stack([info["frame"] for info in infos]),
                            progress=np.array([info.get("progress", np.nan) for info in infos], np.float32),
                            success=np.array([bool(info.get("success")) for info in infos]),
                            mission=infos[0]["mission"], task=infos[0].get("task", self.task))
        os.replace(tmp, path)


def rollout_episode(path: Path, seed: int) -> Episode:
    """A recorded archive as an `Episode` (no states or actions), cut `KEEP_AFTER_SUCCESS` frames after its first
    success; `seed` numbers the row (a rollout's scene is not reproducible from it)."""
    with np.load(path) as archive:
        frames, progress, success = archive["frames"], archive["progress"], archive["success"]
        mission, task = str(archive["mission"]), str(archive["task"])
    success_step = int(np.argmax(success)) if success.any() else None
    end = len(frames) if success_step is None else min(len(frames), success_step + KEEP_AFTER_SUCCESS + 1)
    labels = None if np.isnan(progress).any() else progress[:end]
    return Episode(frames[:end], np.zeros((end, 0), np.float32), np.zeros(0), mission, success_step is not None,
                   task, seed, "policy", success_step, progress=labels)


@dataclass
class ImportArgs:
    """Append recorded RL rollouts (`vlreward rl --record`) to a dataset as labelled rows."""

    rollouts: str = arg("runs/rollouts", "folder of recorded episodes (*.npz, `vlreward rl --record`)")
    env: str = arg("metaworld", "the suite the episodes come from", choices=list(SUITES))
    out: str = arg("data/rollouts", "dataset folder to append to (created when absent)")
    seed: int = arg(10_000_000, "row i gets seed seed + i (its train/val/test split)")


def import_rollouts(args: ImportArgs) -> Path:
    """Write each recorded episode's mp4 and append its row (kind "rollout", labelled by the env's progress) to
    `args.out`'s manifest; returns the manifest path."""
    archives = sorted(Path(args.rollouts).glob("*.npz"))
    archives = [path for path in archives if not path.name.endswith(".tmp.npz")]
    if not archives:
        raise ValueError(f"no recorded episodes (*.npz) in {args.rollouts!r}")
    out = Path(args.out)
    (out / "videos").mkdir(parents=True, exist_ok=True)
    manifest = out / "manifest.jsonl"
    existing = manifest.read_text().splitlines() if manifest.exists() else []
    first = sum(json.loads(line)["kind"] == ROLLOUT_KIND for line in existing)
    extra = {"kind": ROLLOUT_KIND, "performed": None, "warp": None, "speed": None, "source_frames": None,
             "attempt": 0}
    rows = []
    for n, path in enumerate(tqdm(archives, desc="rollouts"), start=first):
        episode = rollout_episode(path, args.seed + n)
        rows.append(write_row(out, f"videos/rollout-{n:05d}.mp4", args.env, episode, n, extra))
    tmp = manifest.with_suffix(".jsonl.tmp")  # write then rename: a failed import leaves the manifest as it was
    tmp.write_text("".join(line + "\n" for line in existing) + "".join(json.dumps(row) + "\n" for row in rows))
    os.replace(tmp, manifest)
    successes = sum(row["success"] for row in rows)
    print(f"{len(rows)} rollouts ({successes} successes) appended: {len(existing) + len(rows)} rows -> {manifest}")
    return manifest


def main(argv: Sequence[str] | None = None) -> Path:
    return import_rollouts(parse_args(ImportArgs, argv))
