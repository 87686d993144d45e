"""Dense rewards of vector-env steps, scored while sampling goes on and handed out later: what the gymnasium
(`rl.wrappers.VectorVLReward`) and SB3 (`rl.sb3.VecVLReward`) wrappers relabel a rollout with, on top of the one
scoring engine (`rl.submission`).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import numpy as np

from rewards import Goal, RewardModel
from rewards.base import scores_in_segments
from rewards.metrics import RewardAudit
from rl.mix import RewardMix
from rl.submission import EpisodeSubmitter, PendingScore, RunningEpisode


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


@dataclass
class _Episode:
    running: RunningEpisode
    steps: list[int] = field(default_factory=list)  # steps[k]: the global step that brought frame k + 1
    delivered: int = 0  # steps whose rewards are on their way (a collect scores the unfinished prefix)
    success: bool | None = None  # set when the episode ends: did it succeed


@dataclass
class _Delivery:
    """The rewards of steps `first..end` of sub-env `env`'s episode, read from `score` (all frames sent so far)."""

    env: int
    episode: _Episode
    first: int
    end: int
    score: PendingScore


class DelayedRewards:
    """Per-step dense rewards of vector-env episodes, scored asynchronously and handed out on `collect()`.

    The wrapper calls `start(i, frame, goal)` at a sub-env's reset, `add(i, step, frame)` for each step that brings
    a frame (steps without one get no dense reward; with a frame stride the model sees the subsampled episode),
    `end(i)` when the episode ends, and `send()` once per vector step: the episodes that ended go to the
    `EpisodeSubmitter` together (one request), and sampling goes on. `collect()` also scores each unfinished
    episode's prefix (its new steps only), waits for everything in flight and returns the rewards:
    `mix.dense(model.score(frames, goal))` of each episode (prefix): the streamed rewards (design §3) for critics
    whose reward at step k reads only frames up to k (LIV, VLC, progress; ORCA within 1e-3, its temporal context
    reading later frames).

    segments=True is for models that score in segments (`rewards.scores_in_segments`: LIV, the progress critics):
    a running episode also goes out every `segment` new frames (`rl.submission.RunningEpisode`), so `collect()`
    waits only for the last few steps. Not for ORCA or VLC (their rewards depend on the whole prefix).

    `audit` (`rewards.metrics.RewardAudit`) keeps each ended episode's model return against its success, as the
    RLlib connector's does: the live reward-hacking audit of the vector and SB3 paths.
    """

    def __init__(self, model: RewardModel, mix: RewardMix, num_envs: int, segments: bool = False, segment: int = 8):
        if segments and not scores_in_segments(model):
            raise ValueError(f"{getattr(model, 'name', model)!r} cannot score in segments: its values need the whole "
                             "video (rewards.scores_in_segments); use segments=False")
        self.mix, self.segments, self.segment = mix, segments, segment
        self._submitter = EpisodeSubmitter(lambda: model)
        self._submitter.model()  # a service client's helper process starts now, while the envs reset
        self.episodes: list[_Episode | None] = [None] * num_envs
        self._ended: list[tuple[int, _Episode]] = []
        self._deliveries: list[_Delivery] = []
        self.submit_wait_s = self.collect_wait_s = 0.0  # time blocked on the service: submitting, collecting
        self.frames_sent = 0
        self.audit = RewardAudit()

    @property
    def wait_s(self) -> float:
        return self.submit_wait_s + self.collect_wait_s

    def start(self, i: int, frame: np.ndarray, goal: Goal) -> None:
        self.episodes[i] = _Episode(RunningEpisode(goal, self.segments))
        self.episodes[i].running.add([frame])

    def add(self, i: int, step: int, frame: np.ndarray) -> None:
        episode = self.episodes[i]
        episode.running.add([frame])
        episode.steps.append(step)

    def end(self, i: int, success: bool) -> None:
        """Sub-env i's episode ended (`success`: whether any of its steps succeeded)."""
        episode, self.episodes[i] = self.episodes[i], None
        if episode is not None:
            episode.success = success
        if episode is not None and len(episode.steps) > episode.delivered:
            self._ended.append((i, episode))

    def send(self) -> None:
        """Submit the episodes that ended, with (segments) the running ones that have `segment` new frames."""
        running = [(i, e) for i, e in enumerate(self.episodes)
                   if self.segments and e is not None and e.running.unsent >= self.segment]
        self._send(self._ended + running)
        self._ended = []

    def _send(self, episodes: list[tuple[int, _Episode]]) -> None:
        if not episodes:
            return
        start = time.perf_counter()
        parts = self._submitter.send([episode.running for _, episode in episodes])
        self.submit_wait_s += time.perf_counter() - start
        self.frames_sent += sum(part.num_frames for part in parts)
        for i, episode in episodes:
            self._deliveries.append(_Delivery(i, episode, episode.delivered, len(episode.steps),
                                              episode.running.score()))
            episode.delivered = len(episode.steps)

    def collect(self) -> Relabels:
        """Score what is not scored yet (unfinished episodes: their prefix), wait, and return every new reward."""
        self._send(self._ended + [(i, e) for i, e in enumerate(self.episodes)
                                  if e is not None and len(e.steps) > e.delivered])
        self._ended = []
        start = time.perf_counter()
        steps, envs, rewards = [], [], []
        try:
            for delivery in self._deliveries:
                score = delivery.score.result()
                dense = self.mix.dense(score)  # dense[k]: the step that brought frame k + 1
                if delivery.episode.success is not None and delivery.end == len(delivery.episode.steps):
                    self.audit.add(float(np.sum(score.rewards)), delivery.episode.success)
                steps.append(delivery.episode.steps[delivery.first:delivery.end])
                envs.append(np.full(delivery.end - delivery.first, delivery.env))
                rewards.append(dense[delivery.first:delivery.end])
        finally:
            self._deliveries = []
            self.collect_wait_s += time.perf_counter() - start
        if not steps:
            return Relabels(np.zeros(0, int), np.zeros(0, int), np.zeros(0))
        return Relabels(np.concatenate(steps).astype(int), np.concatenate(envs).astype(int), np.concatenate(rewards))

    def close(self) -> None:
        self._submitter.close()
