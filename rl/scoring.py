"""What the reward wrappers share: where frames, goals and success come from (with checks that name what is missing
and how to provide it), and `DelayedRewards`, which scores finished episodes asynchronously and fills their
per-step rewards in later, so an on-policy learner never waits for the service while it samples.

Used by `rl.wrappers` (gymnasium) and `rl.sb3` (Stable-Baselines3).
"""

from __future__ import annotations

import concurrent.futures
import time
import warnings
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from rewards import Goal, RewardModel, Score
from rewards.base import scores_in_segments
from rl.mix import RewardMix

FRAME_HELP = ("give the env frames: wrap it in envs.wrappers.RenderedFrames(env, size=64) (info['frame']), or make it "
              "with render_mode='rgb_array' (env.render())")
GOAL_HELP = "pass goal=... (goals=[...] for a vector env), or have the env put the task text in info['mission']"


class MissingInputError(ValueError):
    """Raised at reset when an env gives a reward wrapper no frames or no goal; the message says how to add them."""


def goal_of(fixed: Goal | None, obs: Any, info: dict, who: str) -> Goal:
    """The episode's goal: `fixed`, else info["mission"], else obs["mission"] (plain MiniGrid); else raise."""
    if fixed is not None:
        return fixed
    if "mission" in info:
        return info["mission"]
    if isinstance(obs, dict) and isinstance(obs.get("mission"), str):
        return obs["mission"]
    raise MissingInputError(f"{who} found no goal: the env's reset gave no info['mission'] (and no obs['mission']); "
                            f"{GOAL_HELP}")


def reset_frame(info: dict, env, who: str) -> tuple[np.ndarray, bool]:
    """The reset frame and whether frames come from info["frame"] (else from `env.render()`); raise without any."""
    if "frame" in info:
        return check_frame(info["frame"], who), True
    if getattr(env, "render_mode", None) == "rgb_array":
        return check_frame(env.render(), who), False
    raise MissingInputError(f"{who} found no frames: the env's reset gave no info['frame'] and its render_mode is "
                            f"{getattr(env, 'render_mode', None)!r}; {FRAME_HELP}")


def check_frame(frame: Any, who: str) -> np.ndarray:
    frame = np.asarray(frame) if frame is not None else None
    if frame is None or frame.dtype != np.uint8 or frame.ndim != 3 or frame.shape[-1] != 3:
        got = "None" if frame is None else f"{frame.dtype} {list(frame.shape)}"
        raise MissingInputError(f"{who} needs uint8 RGB frames [H, W, 3], got {got}; {FRAME_HELP}")
    return frame


def expected_frame_side(model: RewardModel) -> int | None:
    """The side (px) of the square images the model computes on, when it states one: `image_size` in a remote
    model's /v1/models entry, else the config of the registered model of that name (`rewards.get_config`, so a
    remote client of a shipped critic knows it too), else an in-process critic's own config."""
    from rewards import UnknownModelError, get_config

    info = getattr(model, "info", None)
    candidates = [info.get("image_size") if isinstance(info, dict) else None]
    try:
        candidates.append(get_config(model.name).get("image_size") if isinstance(model.name, str) else None)
    except (UnknownModelError, AttributeError):
        pass
    candidates.append(getattr(getattr(getattr(model, "critic", None), "config", None), "image_size", None))
    return next((side for side in candidates if isinstance(side, int) and side > 0), None)


class InputWarnings:
    """Warnings a wrapper gives once: frames far from the critic's input size, episodes without info["success"]."""

    def __init__(self, model: RewardModel, mix: RewardMix, who: str):
        self.side, self.mix, self.who = expected_frame_side(model), mix, who
        self.frames_checked = self.success_warned = False

    def frame(self, frame: np.ndarray) -> None:
        """Warn once when a frame's side is more than 2x away from the critic's input side."""
        if self.frames_checked or self.side is None or not self.mix.uses_model:
            return
        self.frames_checked = True
        height, width = frame.shape[:2]
        if max(height, width) > 2 * self.side or min(height, width) * 2 < self.side:
            warnings.warn(f"{self.who}: frames are {height}x{width} px but the critic computes on {self.side} px "
                          f"images (it was trained on frames rendered near that size); rendered at another scale the "
                          f"scene looks different to it and rewards degrade: render at about {self.side} px, e.g. "
                          f"envs.wrappers.RenderedFrames(env, size={self.side})", UserWarning, stacklevel=3)

    def success(self, info: dict) -> None:
        """Warn once when the sparse part needs info["success"] and the env does not give it."""
        if self.success_warned or "success" in info or not self.mix.uses_success:
            return
        self.success_warned = True
        warnings.warn(f"{self.who}: the env gives no info['success'], so every step counts as a failure in the "
                      f"{self.mix.mode!r} reward; add info['success'], or use the env's own reward as the sparse "
                      f"signal: RewardMix(mode={self.mix.mode!r}, sparse='env_reward')", UserWarning, stacklevel=3)


def sparse_signal(mix: RewardMix, info: dict, env_reward: float) -> float:
    """The value the sparse part multiplies by `success_bonus`: info["success"] (missing: 0) or the env's reward."""
    return float(env_reward) if mix.sparse == "env_reward" else float(info.get("success", False))


def submitter(model: RewardModel, executor: concurrent.futures.Executor | None):
    """trajectories, goals -> one future per trajectory of its Score: `model.submit_batch` (text goals, one request)
    or `model.submit` (one request each) for a remote client; for an in-process model, `model.score_batch` on
    `executor`'s thread (torch releases the GIL, so the envs keep stepping)."""
    if hasattr(model, "submit_batch") and hasattr(model, "submit"):
        def remote(trajectories: list[np.ndarray], goals: list[Goal]) -> list[concurrent.futures.Future]:
            if all(isinstance(goal, str) for goal in goals):
                batch = model.submit_batch(trajectories, goals)
                return [_Item(batch, k) for k in range(len(goals))]
            return [model.submit(frames, goal) for frames, goal in zip(trajectories, goals)]
        return remote

    def local(trajectories: list[np.ndarray], goals: list[Goal]) -> list[concurrent.futures.Future]:
        batch = executor.submit(model.score_batch, trajectories, goals)
        return [_Item(batch, k) for k in range(len(goals))]
    return local


@dataclass
class _Item:
    """Item k of a batch future, read like a future of one Score."""

    batch: concurrent.futures.Future
    k: int

    def result(self, timeout: float | None = None) -> Score:
        return self.batch.result(timeout)[self.k]


@dataclass
class _Episode:
    goal: Goal
    frames: list[np.ndarray]  # frame 0 is the reset frame
    steps: list[int] = field(default_factory=list)  # steps[k]: the global step that brought frame k + 1
    delivered: int = 0  # dense rewards already handed out (a collect scores the unfinished prefix)


@dataclass
class Relabels:
    """Dense rewards computed later: `rewards[j]` belongs to global step `steps[j]` of sub-env `envs[j]`."""

    steps: np.ndarray
    envs: np.ndarray
    rewards: np.ndarray

    def add_to(self, buffer: np.ndarray, first_step: int) -> int:
        """Add into `buffer` [T, num_envs] whose row 0 is global step `first_step`; returns how many were added
        (rewards of steps outside the buffer are left out)."""
        rows = self.steps - first_step
        inside = (rows >= 0) & (rows < len(buffer))
        np.add.at(buffer, (rows[inside], self.envs[inside]), self.rewards[inside].astype(buffer.dtype))
        return int(inside.sum())


class DelayedRewards:
    """Per-step dense rewards of vector-env episodes, scored asynchronously and handed out on `collect()`.

    The wrapper calls `start(i, frame, goal)` at a sub-env's reset, `add(i, step, frame)` for each step that brings
    a frame (steps without one get no dense reward; with a frame stride the model sees the subsampled episode),
    `end(i)` when the episode ends, and `send()` once per vector step: the episodes that ended go out in one
    request, unless `max_in_flight` of this scorer's requests still run — then they wait and go out together
    with later ones, so sampling never blocks. `collect()` also scores each unfinished episode's prefix (its new
    steps only), waits for everything in flight and returns the rewards: `mix.dense(model.score(frames, goal))`
    of each episode (prefix): the streamed rewards (design §3) for critics whose reward at step k reads only
    frames up to k (LIV, VLC, progress; ORCA within 1e-3, its temporal context reading later frames).

    segments=True is for models that score in segments (`rewards.scores_in_segments`: LIV, the progress critics,
    whose value of frame t reads only frames 0 and t): the rewards of steps k0..k1 are then read from the score of
    frame 0 followed by frames k0-1..k1, so an episode goes to the service in pieces — whenever the scorer is idle,
    each unfinished episode with `segment` new steps is sent too — and `collect()` waits only for the last few
    steps. Not for ORCA or VLC (their rewards depend on the whole prefix).
    """

    def __init__(self, model: RewardModel, mix: RewardMix, num_envs: int, max_in_flight: int = 2,
                 segments: bool = False, segment: int = 8):
        if segments and not scores_in_segments(model):
            raise ValueError(f"{getattr(model, 'name', model)!r} cannot score in segments: its values need the whole "
                             "video (rewards.scores_in_segments); use segments=False")
        self.mix, self.max_in_flight, self.segments, self.segment = mix, max_in_flight, segments, segment
        self._executor = None if hasattr(model, "submit_batch") else concurrent.futures.ThreadPoolExecutor(1)
        self._submit = submitter(model, self._executor)
        self.episodes: list[_Episode | None] = [None] * num_envs
        self._ended: list[tuple[int, _Episode]] = []
        self._pending: list[tuple[Any, int, _Episode, int, int, int]] = []  # future, env, episode, first, end, base
        self._requests: list = []  # this scorer's requests not known to be finished
        self.submit_wait_s = self.collect_wait_s = 0.0  # time blocked on the service: submitting, collecting
        self.frames_sent = 0

    @property
    def wait_s(self) -> float:
        return self.submit_wait_s + self.collect_wait_s

    def start(self, i: int, frame: np.ndarray, goal: Goal) -> None:
        self.episodes[i] = _Episode(goal, [frame])

    def add(self, i: int, step: int, frame: np.ndarray) -> None:
        episode = self.episodes[i]
        episode.frames.append(frame)
        episode.steps.append(step)

    def end(self, i: int) -> None:
        episode, self.episodes[i] = self.episodes[i], None
        if episode is not None and len(episode.steps) > episode.delivered:
            self._ended.append((i, episode))

    def send(self, force: bool = False) -> None:
        """Submit what is due in one request, unless this scorer is busy (`max_in_flight` requests running)."""
        if not force and self.busy() >= self.max_in_flight:
            return
        due = self._ended
        if self.segments and (force or self.busy() == 0):  # idle: unfinished episodes' new steps go along
            due = due + [(i, e) for i, e in enumerate(self.episodes)
                         if e is not None and len(e.steps) - e.delivered >= (1 if force else self.segment)]
        if due:
            self._send(due)
        self._ended = []

    def busy(self) -> int:
        """This scorer's requests still running."""
        self._requests = [r for r in self._requests if not r.done()]
        return len(self._requests)

    def _send(self, episodes: list[tuple[int, _Episode]]) -> None:
        bases = [e.delivered if self.segments else 0 for _, e in episodes]  # the frame each piece starts at
        # a later piece goes behind frame 0 (its score's first entry, frame 0's, is skipped in collect)
        trajectories = [np.stack(e.frames[base:] if base == 0 else [e.frames[0], *e.frames[base:]])
                        for (_, e), base in zip(episodes, bases)]
        start = time.perf_counter()
        futures = self._submit(trajectories, [e.goal for _, e in episodes])
        self.submit_wait_s += time.perf_counter() - start
        self.frames_sent += sum(len(t) for t in trajectories)
        self._requests.extend({id(r): r for r in (getattr(f, "batch", f) for f in futures)}.values())
        for (i, episode), future, base in zip(episodes, futures, bases):
            self._pending.append((future, i, episode, episode.delivered, len(episode.steps), base))
            episode.delivered = len(episode.steps)

    @property
    def pending(self) -> int:
        """Episodes (or prefixes) submitted and not collected yet."""
        return len(self._pending) + len(self._ended)

    def collect(self) -> Relabels:
        """Score what is not scored yet (unfinished episodes: their prefix), wait, and return every new reward."""
        self.send(force=True)
        prefixes = [(i, e) for i, e in enumerate(self.episodes) if e is not None and len(e.steps) > e.delivered]
        if prefixes:
            self._send(prefixes)
        start = time.perf_counter()
        steps, envs, rewards = [], [], []
        try:
            for future, i, episode, first, end, base in self._pending:
                dense = self.mix.dense(future.result())
                offset = base - (base > 0)  # dense[j] is the step into the piece's frame j + 1 (behind frame 0)
                steps.append(episode.steps[first:end])
                envs.append(np.full(end - first, i))
                rewards.append(dense[first - offset:end - offset])
        finally:
            self._pending, self._requests = [], []
            self.collect_wait_s += time.perf_counter() - start
        if not steps:
            return Relabels(np.zeros(0, int), np.zeros(0, int), np.zeros(0))
        return Relabels(np.concatenate(steps).astype(int), np.concatenate(envs).astype(int), np.concatenate(rewards))

    def close(self) -> None:
        if self._executor is not None:
            self._executor.shutdown(wait=True)
