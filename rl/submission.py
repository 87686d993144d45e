"""The RL side's one scoring engine: trajectories go to a `RewardModel` without the sampler waiting for them.

`EpisodeSubmitter.submit(frames, goal) -> PendingScore` queues a trajectory; one dispatcher thread sends what is
queued (episodes that end together: one batch call), bounds what is in flight and retries an unready model for a
while before failing with one clear error. `RunningEpisode` sends an episode in segments while it runs (behind
frame 0) and joins their scores. The adapters sit on top: the RLlib env-runner callback and learner connector
(`rl.connector`), the gymnasium and SB3 vector wrappers (`rl.relabel`). A failed call is never a reward of 0: its
error reaches `PendingScore.result()`.
"""

from __future__ import annotations

import concurrent.futures
import queue
import threading
import time
from dataclasses import dataclass
from typing import Callable, Sequence

import numpy as np

from rewards import ModelNotReadyError
from rewards.base import Goal, RewardModel, Score, join_segments
from rl.offload import HelperProcessModel, offloads


class PendingScore:
    """The score of one submitted trajectory, on its way. `result(timeout)` returns the `Score` or raises the
    scoring call's error (never a made-up 0).

    In the process that submitted it, it wraps a `concurrent.futures.Future`. Pickled (a remote env runner
    returning its episodes), it first waits for that future and carries only the outcome: a score or the error.
    """

    def __init__(self, future: concurrent.futures.Future, num_frames: int, nbytes: int):
        self._future, self.num_frames, self.nbytes = future, num_frames, nbytes

    def done(self) -> bool:
        return self._future.done()

    def result(self, timeout: float | None = None) -> Score:
        return self._future.result(timeout)

    def __reduce__(self):
        try:
            outcome = (self._future.result(), None)
        except Exception as error:  # the error travels and is raised where the score is collected
            outcome = (None, error)
        return _settled, (*outcome, self.num_frames, self.nbytes)


def joined(parts: list[PendingScore]) -> PendingScore:
    """One episode's `PendingScore` from those of its segments (`rewards.join_segments`); the first failure is
    the episode's."""
    future: concurrent.futures.Future = concurrent.futures.Future()
    left, lock = [len(parts)], threading.Lock()

    def settle(_) -> None:
        with lock:
            left[0] -= 1
            if left[0]:
                return
        try:
            future.set_result(join_segments([part.result() for part in parts]))
        except Exception as error:
            future.set_exception(error)

    for part in parts:
        part._future.add_done_callback(settle)
    return PendingScore(future, sum(part.num_frames for part in parts), sum(part.nbytes for part in parts))


def _settled(score: Score | None, error: Exception | None, num_frames: int, nbytes: int) -> PendingScore:
    future = concurrent.futures.Future()
    future.set_exception(error) if error is not None else future.set_result(score)
    return PendingScore(future, num_frames, nbytes)


class RunningEpisode:
    """One episode's frames on their way to an `EpisodeSubmitter`, sent while it runs.

    `in_segments` (models where `rewards.scores_in_segments`: LIV, the progress critics): each send carries the
    frames added since the last one, behind frame 0, and `score()` joins the segments' scores (equal to scoring
    the episode whole). Otherwise each send carries the whole episode so far and `score()` is the latest one's
    (a prefix's score, until the episode's end is sent).
    """

    def __init__(self, goal: Goal, in_segments: bool):
        self.goal, self.in_segments = goal, in_segments
        self.num_frames = self.sent_frames = 0  # frames added so far; of those, sent
        self._frames: list[np.ndarray] = []  # in segments: the frames not sent yet; else all of them
        self._first: np.ndarray | None = None  # frame 0, which every later segment goes behind
        self._parts: list[PendingScore] = []

    @property
    def unsent(self) -> int:
        """Frames added since the last send."""
        return self.num_frames - self.sent_frames

    def add(self, frames: Sequence[np.ndarray]) -> None:
        """frames: the episode's next uint8 [H, W, 3] frames (the first call starts with the reset frame)."""
        if not self.num_frames and len(frames):
            self._first = frames[0]
        self._frames.extend(frames)
        self.num_frames += len(frames)

    def _piece(self) -> list[np.ndarray]:
        """The trajectory to send now; in segments a later one goes behind frame 0 (its first value is dropped)."""
        piece = [self._first, *self._frames] if self.in_segments and self.sent_frames else list(self._frames)
        if self.in_segments:
            self._frames = []
        self.sent_frames = self.num_frames
        return piece

    def _sent(self, part: PendingScore) -> None:
        self._parts = [*self._parts, part] if self.in_segments else [part]

    def score(self) -> PendingScore:
        """The score of every frame sent so far."""
        return self._parts[0] if len(self._parts) == 1 else joined(self._parts)


@dataclass
class _Job:
    outer: concurrent.futures.Future
    frames: np.ndarray | list  # [T, H, W, 3], or the T frames still to stack (done off the sampling thread)
    goal: Goal
    deadline: float  # retry an unready model until then


class EpisodeSubmitter:
    """Submit trajectories to a `RewardModel` without waiting: `submit(frames, goal) -> PendingScore`.

    Submitting only queues: one dispatcher thread stacks the frames and sends them, so the sampling thread neither
    encodes nor blocks on the client. Trajectories queued together (`submit_all`, or submitted while the last call
    went out; at most `coalesce`) go out as one call: the model's `submit_batch` (text goals; the HTTP client: one
    request), else its `submit` for each (the HTTP client, `DeploymentRewardModel`), else an in-process model's
    `score_batch` on the dispatcher thread (torch releases the GIL). The model comes from `model_factory` on first
    use, in the dispatcher. At most `max_in_flight` trajectories are out at once: submitting more blocks until one
    returns (backpressure on the sampler, not an unbounded queue). A call (or the factory) failing with
    `ModelNotReadyError` is sent again every `poll_s` until `ready_wait_s` after the submission, then fails with
    `not_ready`; other errors fail at once. Failures reach `PendingScore.result()`: never a 0. A service client
    (`remote`) makes its calls from a helper process (`rl.offload`), out of the sampler's way.
    """

    def __init__(self, model_factory: Callable[[], RewardModel], ready_wait_s: float = 0.0,
                 max_in_flight: int = 64, poll_s: float = 1.0, coalesce: int = 16):
        self.model_factory, self.ready_wait_s, self.poll_s = model_factory, ready_wait_s, poll_s
        self.coalesce = max(1, coalesce)
        self._slots = threading.BoundedSemaphore(max_in_flight)
        self._lock = threading.Lock()
        self._queue: queue.SimpleQueue[list[_Job] | None] = queue.SimpleQueue()
        self._model: RewardModel | None = None
        self._dispatcher: threading.Thread | None = None

    def model(self) -> RewardModel:
        with self._lock:
            if self._model is None:
                model = self.model_factory()
                self._model = HelperProcessModel(model) if offloads(model) else model
            return self._model

    def submit(self, frames: np.ndarray | list, goal: Goal) -> PendingScore:
        """frames: uint8 [T, H, W, 3] (or a list of T [H, W, 3] frames). Returns at once unless `max_in_flight`
        trajectories are out."""
        return self.submit_all([frames], [goal])[0]

    def submit_all(self, trajectories: Sequence[np.ndarray | list], goals: Sequence[Goal]) -> list[PendingScore]:
        """Submit trajectories as one group, sent in one call (split only where the in-flight bound blocks)."""
        with self._lock:
            if self._dispatcher is None:
                self._dispatcher = threading.Thread(target=self._dispatch, name="vlreward-submit", daemon=True)
                self._dispatcher.start()
        group, pending = [], []
        for frames, goal in zip(trajectories, goals):
            if not self._slots.acquire(blocking=False):
                self._enqueue(group)  # what is grouped so far goes out, then wait for a slot
                group = []
                self._slots.acquire()
            outer: concurrent.futures.Future = concurrent.futures.Future()
            outer.add_done_callback(lambda _: self._slots.release())
            group.append(_Job(outer, frames, goal, time.monotonic() + self.ready_wait_s))
            pending.append(PendingScore(outer, len(frames), len(frames) * frames[0].nbytes))
        self._enqueue(group)
        return pending

    def send(self, episodes: Sequence[RunningEpisode]) -> list[PendingScore]:
        """Send each episode's unsent frames, as one group; returns the pieces' `PendingScore`s."""
        parts = self.submit_all([episode._piece() for episode in episodes], [episode.goal for episode in episodes])
        for episode, part in zip(episodes, parts):
            episode._sent(part)
        return parts

    def close(self) -> None:
        """Stop the dispatcher once the queue is empty; calls already sent still complete."""
        self._queue.put(None)

    def _enqueue(self, group: list[_Job]) -> None:
        if group:
            self._queue.put(group)

    def _dispatch(self) -> None:
        jobs = self._queue.get()
        while jobs is not None:  # None: closed
            try:
                more = self._queue.get_nowait()
            except queue.Empty:
                self._send(jobs)
                jobs = self._queue.get()
                continue
            if more is not None and len(jobs) + len(more) <= self.coalesce:
                jobs = jobs + more  # whatever else is already queued goes with it
            else:
                self._send(jobs)
                jobs = more
        if isinstance(self._model, HelperProcessModel):
            self._model.close()  # ours: it answers what is in flight, then exits

    def _send(self, jobs: list[_Job]) -> None:
        try:
            for job in jobs:
                if not isinstance(job.frames, np.ndarray):
                    job.frames = np.stack(job.frames)
            model = self.model()
        except Exception as error:
            for job in jobs:
                self._failed(job, error)
            return
        trajectories, goals = [job.frames for job in jobs], [job.goal for job in jobs]
        submit_batch, submit = getattr(model, "submit_batch", None), getattr(model, "submit", None)
        if len(jobs) > 1 and callable(submit_batch) and all(isinstance(goal, str) for goal in goals):
            self._call(jobs, lambda: submit_batch(trajectories, goals))
        elif callable(submit):
            for job in jobs:
                self._call([job], lambda job=job: submit(job.frames, job.goal), one=True)
        else:
            self._call(jobs, lambda: _finished(model.score_batch, trajectories, goals))

    def _call(self, jobs: list[_Job], start: Callable[[], concurrent.futures.Future], one: bool = False) -> None:
        """Start one call for `jobs` (a future of their Scores in order; `one`: of the one job's Score) and settle
        them when it ends."""
        try:
            call = start()
        except Exception as error:
            for job in jobs:
                self._failed(job, error)
            return
        call.add_done_callback(lambda done: self._settle(jobs, done, one))

    def _settle(self, jobs: list[_Job], call: concurrent.futures.Future, one: bool) -> None:
        error = call.exception()
        scores = None if error is not None else [call.result()] if one else list(call.result())
        if error is None and len(scores) != len(jobs):
            error = ValueError(f"reward model returned {len(scores)} scores for {len(jobs)} trajectories")
        for k, job in enumerate(jobs):
            if error is None:
                job.outer.set_result(scores[k])
            else:
                self._failed(job, error)

    def _failed(self, job: _Job, error: BaseException) -> None:
        left = job.deadline - time.monotonic()
        if isinstance(error, ModelNotReadyError) and left > 0:
            retry = threading.Timer(min(self.poll_s, left), self._queue.put, ([job],))
            retry.daemon = True
            retry.start()
        elif isinstance(error, ModelNotReadyError):
            job.outer.set_exception(not_ready(error, self.ready_wait_s))
        else:
            job.outer.set_exception(error)


def _finished(function: Callable, *args) -> concurrent.futures.Future:
    """`function(*args)` run now, as a settled future (its result or its error)."""
    future: concurrent.futures.Future = concurrent.futures.Future()
    try:
        future.set_result(function(*args))
    except Exception as error:
        future.set_exception(error)
    return future


def not_ready(error: ModelNotReadyError, waited_s: float) -> ModelNotReadyError:
    """The one error the RL side raises once an unready model was waited for long enough."""
    failure = ModelNotReadyError(f"reward model not ready after waiting {waited_s:.0f} s ({error}); stopping this "
                                 "training iteration instead of training on missing rewards")
    failure.__cause__ = error
    return failure
