"""Scoring off the critical path: env runners submit each finished episode and keep sampling.

`EpisodeScorer` is an RLlib callback that runs in every env runner. At `on_episode_end` it takes the episode's
frames out of its infos (they never travel to the learner), submits them with the mission to the reward model
and stores a `PendingScore` in `episode.custom_data["vlreward_score"]`; the `ServiceReward` learner connector
collects those and waits only for the ones still in flight.

Verified in RLlib 2.60 (new API stack): with `batch_mode="complete_episodes"` every `sample()` resets the envs,
so episodes never span two calls (`t_started == 0`); `on_episode_end` runs before `to_numpy()`, when the infos
are still the env's own dicts; `custom_data` survives `to_numpy()` and reaches the learner (in-process with
0 env runners and a local learner; pickled otherwise, when a `PendingScore` resolves to its outcome first).
"""

from __future__ import annotations

import concurrent.futures
import queue
import threading
import time
from dataclasses import dataclass
from typing import Callable

import numpy as np
from ray.rllib.callbacks.callbacks import RLlibCallback

from rewards import ModelNotReadyError, VLRewardError
from rewards.base import Goal, RewardModel, Score, join_segments, scores_in_segments

SCORE_KEY = "vlreward_score"  # episode.custom_data key holding the episode's PendingScore
SEGMENTS_KEY = "vlreward_segments"  # a running episode's segments so far: (frame 0, frames sent, [PendingScore])


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


@dataclass
class _Job:
    outer: concurrent.futures.Future
    frames: np.ndarray | list  # [T, H, W, 3], or the T frames still to stack (done off the sampling thread)
    goal: Goal
    deadline: float  # retry an unready model until then


class EpisodeSubmitter:
    """Submit trajectories to a `RewardModel` without waiting: `submit(frames, goal) -> PendingScore`.

    `submit` only queues the trajectory: one dispatcher thread stacks the frames and sends them, so the sampling
    thread neither encodes nor blocks on the client. Trajectories queued together (the sub-envs of a vector env that
    end on the same step) go out as one `submit_batch` request when the model has it and `coalesce` is set (the HTTP
    client: one request instead of several); otherwise each goes through the model's `submit(frames, goal) ->
    Future[Score]` (the HTTP client, `DeploymentRewardModel`), or `score` on one of `threads` worker threads.
    The model comes from `model_factory` on first use, in the dispatcher. At most `max_in_flight` trajectories are
    out at once: the next `submit` blocks until one returns (backpressure on the sampler, not an unbounded queue).
    A call failing with `ModelNotReadyError` is sent again every `poll_s` until `ready_wait_s` after the
    submission, then fails; other errors fail at once. Failures reach `PendingScore.result()`: never a 0.
    """

    def __init__(self, model_factory: Callable[[], RewardModel], ready_wait_s: float = 0.0,
                 max_in_flight: int = 64, threads: int = 4, poll_s: float = 1.0, coalesce: int = 16):
        self.model_factory, self.ready_wait_s, self.poll_s, self.threads = model_factory, ready_wait_s, poll_s, threads
        self.coalesce = coalesce
        self._slots = threading.BoundedSemaphore(max_in_flight)
        self._lock = threading.Lock()
        self._queue: queue.SimpleQueue[_Job | None] = queue.SimpleQueue()
        self._model: RewardModel | None = None
        self._pool: concurrent.futures.ThreadPoolExecutor | None = None
        self._dispatcher: threading.Thread | None = None

    def model(self) -> RewardModel:
        with self._lock:
            if self._model is None:
                self._model = self.model_factory()
            return self._model

    def submit(self, frames: np.ndarray | list, goal: Goal) -> PendingScore:
        """frames: uint8 [T, H, W, 3] (or a list of T [H, W, 3] frames). Returns at once unless `max_in_flight`
        trajectories are out."""
        self._slots.acquire()
        outer: concurrent.futures.Future = concurrent.futures.Future()
        outer.add_done_callback(lambda _: self._slots.release())
        with self._lock:
            if self._dispatcher is None:
                self._dispatcher = threading.Thread(target=self._dispatch, name="vlreward-submit", daemon=True)
                self._dispatcher.start()
        self._queue.put(_Job(outer, frames, goal, time.monotonic() + self.ready_wait_s))
        first = frames[0]
        return PendingScore(outer, len(frames), len(frames) * first.nbytes)

    def close(self) -> None:
        """Stop the dispatcher once the queue is empty; calls already sent still complete."""
        self._queue.put(None)
        if self._pool is not None:
            self._pool.shutdown(wait=False)

    def _dispatch(self) -> None:
        while True:
            job = self._queue.get()
            if job is None:
                return
            jobs = [job]
            while len(jobs) < max(1, self.coalesce):  # whatever else is already queued goes with it
                try:
                    more = self._queue.get_nowait()
                except queue.Empty:
                    break
                if more is None:
                    self._queue.put(None)
                    break
                jobs.append(more)
            self._send(jobs)

    def _send(self, jobs: list[_Job]) -> None:
        for job in jobs:
            if not isinstance(job.frames, np.ndarray):
                job.frames = np.stack(job.frames)
        try:
            model = self.model()
            submit_batch = getattr(model, "submit_batch", None)
            if len(jobs) > 1 and self.coalesce > 1 and callable(submit_batch) and all(
                    isinstance(job.goal, str) for job in jobs):
                batch = submit_batch([job.frames for job in jobs], [job.goal for job in jobs])
                batch.add_done_callback(lambda done: self._settle_batch(jobs, done))
                return
        except Exception as error:
            for job in jobs:
                self._failed(job, error)
            return
        for job in jobs:
            try:
                inner = self._submit_one(model, job)
            except Exception as error:
                self._failed(job, error)
                continue
            inner.add_done_callback(lambda done, job=job: self._settle(job, done))

    def _submit_one(self, model: RewardModel, job: _Job) -> concurrent.futures.Future:
        submit = getattr(model, "submit", None)
        if callable(submit):
            return submit(job.frames, job.goal)
        with self._lock:
            if self._pool is None:
                self._pool = concurrent.futures.ThreadPoolExecutor(self.threads, thread_name_prefix="vlreward-score")
        return self._pool.submit(model.score, job.frames, job.goal)

    def _settle_batch(self, jobs: list[_Job], batch: concurrent.futures.Future) -> None:
        error = batch.exception()
        scores = [] if error is not None else list(batch.result())
        if error is None and len(scores) != len(jobs):
            error = ValueError(f"reward model returned {len(scores)} scores for {len(jobs)} trajectories")
        for i, job in enumerate(jobs):
            if error is None:
                job.outer.set_result(scores[i])
            else:
                self._failed(job, error)

    def _settle(self, job: _Job, inner: concurrent.futures.Future) -> None:
        error = inner.exception()
        if error is None:
            job.outer.set_result(inner.result())
        else:
            self._failed(job, error)

    def _failed(self, job: _Job, error: BaseException) -> None:
        left = job.deadline - time.monotonic()
        if isinstance(error, ModelNotReadyError) and left > 0:
            retry = threading.Timer(min(self.poll_s, left), self._queue.put, (job,))
            retry.daemon = True
            retry.start()
        elif isinstance(error, ModelNotReadyError):
            failure = ModelNotReadyError(
                f"reward model not ready after waiting {self.ready_wait_s:.0f} s ({error}); stopping this training "
                "iteration instead of training on missing rewards")
            failure.__cause__ = error
            job.outer.set_exception(failure)
        else:
            job.outer.set_exception(error)


class EpisodeScorer(RLlibCallback):
    """Env-runner callback: take each episode's frames out of its infos and (when `submit` is set) submit them with
    the mission; the episode's `PendingScore` goes to `episode.custom_data[SCORE_KEY]` at its end.

    With `segment` > 0 and a model that scores in segments (`rewards.scores_in_segments`: LIV, the progress
    critic), a running episode's frames go out every `segment` steps (behind frame 0) while sampling goes on, so
    at the end of a `sample()` only the last few frames of each episode are still in flight; the segments' scores
    join into the episode's (`rewards.join_segments`, equal to scoring it whole). Other models get whole episodes.

    Frames come from `info["frame"]` (uint8 [H, W, 3], the reset info holds frame 0), the goal from the reset
    info's `info["mission"]`; segments and episodes queued together share one request (`coalesce`, HTTP only).
    Give it to RLlib as `config.callbacks(functools.partial(EpisodeScorer, ...))`
    (settings do not reach remote env runners as class attributes). Logs `vlreward/submit_s` (time the sampler
    spent submitting, backpressure included), `vlreward/frames_submitted` and `vlreward/frame_bytes_submitted`.
    """

    def __init__(self, *, reward_model_factory: Callable[[], RewardModel] | None = None, submit: bool = True,
                 ready_wait_s: float = 0.0, max_in_flight: int = 64, coalesce: int = 16, segment: int = 0):
        super().__init__()
        if submit and reward_model_factory is None:
            raise ValueError("EpisodeScorer needs a reward_model_factory to submit episodes")
        self.submitter = (EpisodeSubmitter(reward_model_factory, ready_wait_s, max_in_flight, coalesce=coalesce)
                          if submit else None)
        self.segment = segment
        self._segments: bool | None = None  # whether the model scores in segments; asked once, at the first one

    def on_episode_step(self, *, episode, metrics_logger=None, **kwargs) -> None:
        if self.submitter is None or not self.segment or episode.is_done or len(episode) % self.segment:
            return
        if self._segments is None:
            try:
                self._segments = scores_in_segments(self.submitter.model())
            except VLRewardError:  # not reachable yet: whole episodes for now, and their submission says why
                return
        if self._segments:
            start = time.perf_counter()
            first, sent, parts = episode.custom_data.get(SEGMENTS_KEY, (None, 0, []))
            first, frames = self._take_frames(episode, sent, first)
            parts.append(self.submitter.submit(frames, episode.get_infos(0)["mission"]))
            episode.custom_data[SEGMENTS_KEY] = (first, len(episode) + 1, parts)
            self._log(metrics_logger, start, parts[-1])

    def on_episode_end(self, *, episode, metrics_logger=None, **kwargs) -> None:
        start = time.perf_counter()
        if episode.t_started != 0:
            raise ValueError(f"episode {episode.id_} starts at t={episode.t_started}: EpisodeScorer scores whole "
                             "episodes, use batch_mode='complete_episodes'")
        first, sent, parts = episode.custom_data.pop(SEGMENTS_KEY, (None, 0, []))
        first, frames = self._take_frames(episode, sent, first)
        if self.submitter is None:
            return
        parts.append(self.submitter.submit(frames, episode.get_infos(0)["mission"]))  # stacked off this thread
        episode.custom_data[SCORE_KEY] = parts[0] if len(parts) == 1 else joined(parts)
        self._log(metrics_logger, start, parts[-1])

    def _take_frames(self, episode, sent: int, first: np.ndarray | None) -> tuple[np.ndarray, list[np.ndarray]]:
        """Pop the frames not sent yet out of the infos; a later segment goes behind frame 0 (kept as `first`)."""
        frames = [info.pop("frame", None) for info in episode.get_infos()[sent:]]
        if self.submitter is not None and any(frame is None for frame in frames):
            raise KeyError("EpisodeScorer needs info['frame'] at every step (and the reset info): render frames in "
                           "the env (envs.<suite>.make_env does)")
        if sent == 0:
            return frames[0], frames
        return first, [first] + frames

    @staticmethod
    def _log(metrics_logger, start: float, pending: PendingScore) -> None:
        if metrics_logger is not None:
            metrics_logger.log_value("vlreward/submit_s", time.perf_counter() - start, reduce="sum")
            metrics_logger.log_value("vlreward/frames_submitted", pending.num_frames, reduce="sum")
            metrics_logger.log_value("vlreward/frame_bytes_submitted", pending.nbytes, reduce="sum")
