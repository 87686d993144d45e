"""Python clients of a vlreward service: the RewardModel protocol over HTTP, sync and async.

RL code cannot tell `RemoteRewardModel` from a local model. Both clients pool connections, time out, retry
transient failures (connect errors, timeouts, 429, 5xx) with exponential backoff and full jitter, honour
Retry-After, and fail fast on other 4xx, raising vlreward's own error types. A failed score raises: it never
becomes a reward of 0.

Asynchronous scoring keeps rewards off an RL loop's critical path: `RemoteRewardModel.submit(frames, goal)` returns a
`concurrent.futures.Future[Score]` at once (a worker thread sends the request); `AsyncRemoteRewardModel.submit(...)`
returns an `asyncio.Task` to await later. Both bound the requests in flight (`max_in_flight`; the sync `submit`
blocks while that many are unfinished, so memory stays bounded), use the same retry policy, and a failed call
raises from `future.result()` / `await`. `submit_batch` and `submit_steps` do the same for the batch and step routes.
Their requests, latency, retries and failures are Prometheus metrics of the calling
process (`start_metrics_server(port)` exposes them, e.g. on an RL trainer).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import io
import itertools
import json
import random
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

import httpx
import numpy as np
from prometheus_client import Counter, Histogram, start_http_server

from rewards import Goal, GoalEmbedding, InvalidTaskError, ModelNotReadyError, Score, StepState, VLRewardError
from rewards.base import StreamingMixin, goal_kind
from serve.status import ERROR_BY_CODE
from serve.wire import npy_bytes, npz_bytes, pack_states, unpack_states

__all__ = ["AsyncRemoteRewardModel", "RemoteRewardModel", "npy_bytes", "npz_bytes", "start_metrics_server"]

RETRY_STATUSES = frozenset({429, 500, 502, 503, 504})

REQUESTS = Counter("vlreward_client_requests", "reward-service calls by route and outcome", ["route", "outcome"])
LATENCY = Histogram("vlreward_client_request_latency_seconds", "reward-service call latency, retries included",
                    ["route"], buckets=[0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 120])
RETRIES = Counter("vlreward_client_retries", "reward-service attempts retried after a transient failure", ["route"])


def start_metrics_server(port: int, addr: str = "0.0.0.0") -> None:
    """Expose this process's client metrics for Prometheus at http://addr:port/metrics."""
    start_http_server(port, addr)


def choose_model(client, infos: list[dict], model: str | None) -> None:
    """Make `client` stand for `model` (None: the service's default, listed first) among the served `infos` (each
    a /v1/models entry): its name, version, goal kinds, segments and whole entry; unknown_model names the others."""
    info = next((m for m in infos if m["name"] == model), None) if model else infos[0]
    if info is None:
        raise ERROR_BY_CODE["unknown_model"](f"the service does not serve {model!r}; it serves "
                                             f"{', '.join(m['name'] for m in infos)}")
    client.name, client.version, client.goal_kinds = info["name"], info["version"], tuple(info["goal_kinds"])
    client.info = info  # the model's entry in /v1/models (e.g. its expected input, where the service states it)
    client.segments = bool(info.get("segments", False))  # see rewards.scores_in_segments


@dataclass
class Call:
    """One API call: what to send and how to read the answer; both clients run the same calls."""

    method: str
    path: str
    parse: Callable[[dict], Any] = lambda body: body
    data: dict = field(default_factory=dict)
    files: dict = field(default_factory=dict)


def retry_delay(attempt: int, backoff_s: float, retry_after: str | None) -> float:
    """Full-jitter exponential backoff (so many clients do not retry in step), never sooner than Retry-After."""
    delay = random.uniform(0, backoff_s * 2**attempt)
    if retry_after and retry_after.replace(".", "", 1).isdigit():
        delay = max(delay, float(retry_after))
    return delay


class Attempts:
    """The retry policy every client shares (HTTP sync and async, gRPC): what is transient, how long to wait, what
    to count, under the metrics' `route`."""

    def __init__(self, route: str, url: str, retries: int, backoff_s: float):
        self.route, self.url, self.retries, self.backoff_s = route, url, retries, backoff_s
        self.start = time.perf_counter()

    def succeeded(self, result):
        REQUESTS.labels(self.route, "ok").inc()
        LATENCY.labels(self.route).observe(time.perf_counter() - self.start)
        return result

    def failed(self, attempt: int, failure: VLRewardError, transient: bool, retry_after: str | None = None) -> float:
        """The pause before the next attempt; raises `failure` when it is not transient or retries are spent."""
        if not transient or attempt >= self.retries:
            REQUESTS.labels(self.route, "failed").inc()
            raise failure
        RETRIES.labels(self.route).inc()
        return retry_delay(attempt, self.backoff_s, retry_after)

    def http_failed(self, attempt: int, response: httpx.Response | None = None, error: Exception | None = None
                    ) -> float:
        """`failed` for an HTTP error answer (its Retry-After honoured), or a connect error or timeout (`error`)."""
        if response is None:
            return self.failed(attempt, ModelNotReadyError(f"cannot reach {self.url}: {error}"), True)
        return self.failed(attempt, failure_of(response), response.status_code in RETRY_STATUSES,
                           response.headers.get("retry-after"))


def failure_of(response: httpx.Response) -> VLRewardError:
    """An error response -> the vlreward error type its JSON code names."""
    body = response.json() if "json" in response.headers.get("content-type", "") else {}
    error = body.get("error", {}) if isinstance(body, dict) else {}
    message = error.get("message") or response.text[:200]
    return ERROR_BY_CODE.get(error.get("code"), VLRewardError)(f"{response.status_code}: {message}")


def to_score(result: dict) -> Score:
    return Score(values=np.asarray(result["values"], np.float32), rewards=np.asarray(result["rewards"], np.float32))


def goal_fields(goal: Goal) -> tuple[dict, dict]:
    """A raw goal as form fields: text as `task`, an image as a PNG `goal_image`, a demo as a .npy `demo`."""
    if isinstance(goal, GoalEmbedding):
        raise InvalidTaskError("send raw goals to a service; it embeds and caches them itself")
    kind = goal_kind(goal)
    if kind == "text":
        return {"task": goal}, {}
    if kind == "demo":
        return {}, {"demo": ("demo.npy", npy_bytes(goal), "application/octet-stream")}
    from PIL import Image

    png = io.BytesIO()
    Image.fromarray(goal).save(png, format="PNG")
    return {}, {"goal_image": ("goal.png", png.getvalue(), "image/png")}


class _Calls:
    """The REST contract (design §5) as Call values, shared by the sync and async clients."""

    name: str | None = None

    def _models(self) -> Call:
        return Call("GET", "/v1/models", lambda body: body["models"])

    def _choose(self, infos: list[dict], model: str | None) -> None:
        choose_model(self, infos, model)

    def _embed(self, goal: Goal) -> Call:
        if not isinstance(goal, str):
            raise InvalidTaskError("the service embeds task strings")
        return Call("POST", "/v1/embed", lambda b: GoalEmbedding(b["kind"], np.asarray(b["vector"], np.float32),
                                                                 b["digest"]), {"task": goal, "model": self.name})

    def _score(self, frames: np.ndarray, goal: Goal) -> Call:
        data, files = goal_fields(goal)
        return Call("POST", "/v1/score", to_score, {**data, "model": self.name},
                    {**files, "frames": ("frames.npy", npy_bytes(frames), "application/octet-stream")})

    def _score_video(self, path: str | Path, goal: Goal) -> Call:
        data, files = goal_fields(goal)
        return Call("POST", "/v1/score", to_score, {**data, "model": self.name},
                    {**files, "video": (Path(path).name, Path(path).read_bytes(), "application/octet-stream")})

    def _score_batch(self, trajectories: Sequence[np.ndarray], goals: Sequence[Goal],
                     successes: Sequence[bool] | None = None) -> Call:
        if not all(isinstance(goal, str) for goal in goals):
            raise InvalidTaskError("the batch route takes task strings; score demo or image goals one at a time")
        reported = {} if successes is None else {"successes": json.dumps([bool(s) for s in successes])}
        return Call("POST", "/v1/score/batch", lambda body: [to_score(r) for r in body["results"]],
                    {"tasks": json.dumps(list(goals)), "model": self.name, **reported},
                    {"trajectories": ("batch.npz", npz_bytes(trajectories), "application/octet-stream")})

    def _score_steps(self, frames: np.ndarray, goals: Sequence[Goal], states: Sequence[StepState | None]) -> Call:
        shared = all(goal is goals[0] for goal in goals)  # e.g. one demo for every stream: sent once
        if shared:
            data, files = goal_fields(goals[0])
        elif all(isinstance(goal, str) for goal in goals):
            data, files = {"tasks": json.dumps(list(goals))}, {}
        else:
            raise InvalidTaskError("streams step with task strings each, or with one shared goal")
        count = len(frames)
        return Call("POST", "/v1/score/step",
                    lambda body: (np.asarray(body["rewards"], np.float32), unpack_states(body["state"], count)),
                    {**data, "state": pack_states(states), "model": self.name},
                    {**files, "frames": ("frames.npy", npy_bytes(frames), "application/octet-stream")})


class RemoteRewardModel(_Calls, StreamingMixin):
    """A model held by a vlreward service, called synchronously. Failures raise (after retries), never 0."""

    remote = True  # computed elsewhere; rebuilt from its state (rl.offload makes the RL side's calls elsewhere)

    def __init__(self, url: str = "http://127.0.0.1:8000", model: str | None = None, token: str | None = None,
                 timeout_s: float = 120.0, retries: int = 3, backoff_s: float = 0.5, max_in_flight: int = 8):
        if max_in_flight < 1:
            raise ValueError(f"max_in_flight must be >= 1, got {max_in_flight}")
        self.url, self.token, self.timeout_s = url.rstrip("/"), token, timeout_s
        self.retries, self.backoff_s, self.max_in_flight = retries, backoff_s, max_in_flight
        self._connect()
        self._choose(self._run(self._models()), model)

    def _connect(self) -> None:
        headers = {"Authorization": f"Bearer {self.token}"} if self.token else {}
        limits = httpx.Limits(max_connections=self.max_in_flight + 4, max_keepalive_connections=self.max_in_flight + 4)
        self.http = httpx.Client(base_url=self.url, headers=headers, timeout=self.timeout_s, limits=limits)
        self._pool: concurrent.futures.ThreadPoolExecutor | None = None  # started by the first submit
        self._slots = threading.BoundedSemaphore(self.max_in_flight)
        self._pool_lock = threading.Lock()
        self._unfinished = 0

    _LOCAL = ("http", "_pool", "_slots", "_pool_lock", "_unfinished")

    def __getstate__(self) -> dict:
        """Picklable (Ray ships configs holding this to workers): connection and workers are rebuilt, not copied."""
        return {k: v for k, v in self.__dict__.items() if k not in self._LOCAL}

    def __setstate__(self, state: dict) -> None:
        self.__dict__.update(state)
        self.__dict__.setdefault("max_in_flight", 8)
        self._connect()

    def close(self) -> None:
        """Wait for submitted calls, then close the worker threads and connections."""
        if self._pool is not None:
            self._pool.shutdown(wait=True)
            self._pool = None
        self.http.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc_info):
        self.close()

    def _submit(self, call: Call) -> concurrent.futures.Future:
        """Run `call` on a worker thread; blocks while `max_in_flight` submitted calls are unfinished."""
        self._slots.acquire()
        with self._pool_lock:
            self._unfinished += 1
            if self._pool is None:
                self._pool = concurrent.futures.ThreadPoolExecutor(self.max_in_flight, "vlreward-client")
            pool = self._pool
        try:
            future = pool.submit(self._run, call)
        except BaseException:
            self._finished(None)
            raise
        future.add_done_callback(self._finished)
        return future

    def _finished(self, _future) -> None:
        with self._pool_lock:
            self._unfinished -= 1
        self._slots.release()

    @property
    def in_flight(self) -> int:
        """Submitted calls not finished yet."""
        return self._unfinished

    def submit(self, frames: np.ndarray, goal: Goal) -> concurrent.futures.Future:
        """`score(frames, goal)` without waiting: a Future of the Score; `.result()` raises what `score` raises.

        The request is built (and the goal checked) here, so a bad goal raises at once; at most `max_in_flight`
        calls run together and this blocks while that many are unfinished. For example, score episodes while
        sampling the next ones, and collect the rewards when the update needs them:

            futures = [model.submit(frames, "go to the red ball") for frames in finished_episodes]
            returns = [future.result().rewards.sum() for future in futures]
        """
        return self._submit(self._score(frames, goal))

    def submit_batch(self, trajectories: Sequence[np.ndarray], goals: Sequence[Goal]) -> concurrent.futures.Future:
        """`score_batch` without waiting: a Future of the list of Scores (one request for all trajectories)."""
        return self._submit(self._score_batch(trajectories, goals))

    def submit_steps(self, frames: np.ndarray, goals: Sequence[Goal],
                     states: Sequence[StepState | None]) -> concurrent.futures.Future:
        """`score_steps` without waiting: a Future of (rewards [B], states)."""
        return self._submit(self._score_steps(frames, goals, states))

    def _run(self, call: Call):
        attempts = Attempts(call.path, self.url, self.retries, self.backoff_s)
        for attempt in itertools.count():
            try:
                response = self.http.request(call.method, call.path, data=call.data or None, files=call.files or None)
            except httpx.TransportError as error:
                time.sleep(attempts.http_failed(attempt, error=error))
                continue
            if response.is_success:
                return attempts.succeeded(call.parse(response.json()))
            time.sleep(attempts.http_failed(attempt, response))

    def embed_goal(self, goal: Goal) -> GoalEmbedding:
        return self._run(self._embed(goal))

    def score(self, frames: np.ndarray, goal: Goal) -> Score:
        return self._run(self._score(frames, goal))

    def score_video(self, path: str | Path, goal: Goal) -> Score:
        """Upload a video file as it is; the service decodes it."""
        return self._run(self._score_video(path, goal))

    def score_batch(self, trajectories: Sequence[np.ndarray], goals: Sequence[Goal],
                    successes: Sequence[bool] | None = None) -> list[Score]:
        """All trajectories in one request: the RL path. `successes` (one per trajectory, optional) feeds the
        service's live reward audit (`GET /v1/audit`)."""
        return self._run(self._score_batch(trajectories, goals, successes))

    def score_steps(self, frames: np.ndarray, goals: Sequence[Goal],
                    states: Sequence[StepState | None]) -> tuple[np.ndarray, list[StepState | None]]:
        """One new frame per stream [B, H, W, 3] in one request (a vector env's step); states as returned before."""
        return self._run(self._score_steps(frames, goals, states))


class AsyncRemoteRewardModel(_Calls):
    """The same client for asyncio code, with at most `max_concurrency` requests in flight.

    Create it with `await AsyncRemoteRewardModel.connect(url, model)`; close it with `await client.aclose()`.
    """

    def __init__(self, url: str, token: str | None = None, timeout_s: float = 120.0, retries: int = 3,
                 backoff_s: float = 0.5, max_concurrency: int = 16):
        self.url, self.retries, self.backoff_s = url.rstrip("/"), retries, backoff_s
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        limits = httpx.Limits(max_connections=max_concurrency, max_keepalive_connections=max_concurrency)
        self.http = httpx.AsyncClient(base_url=self.url, headers=headers, timeout=timeout_s, limits=limits)
        self.slots = asyncio.Semaphore(max_concurrency)
        self.max_in_flight = max_concurrency
        self._tasks: set[asyncio.Task] = set()  # strong references: asyncio keeps only weak ones

    @classmethod
    async def connect(cls, url: str = "http://127.0.0.1:8000", model: str | None = None, **options):
        client = cls(url, **options)
        try:
            client._choose(await client._run(client._models()), model)
        except BaseException:
            await client.aclose()
            raise
        return client

    async def aclose(self) -> None:
        """Wait for submitted calls (their failures stay with their tasks), then close the connections."""
        if self._tasks:
            await asyncio.wait(set(self._tasks))
        await self.http.aclose()

    def _submit(self, coroutine) -> asyncio.Task:
        task = asyncio.ensure_future(coroutine)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    @property
    def in_flight(self) -> int:
        """Submitted calls not finished yet (at most `max_concurrency` of them send at a time; the rest queue)."""
        return len(self._tasks)

    def submit(self, frames: np.ndarray, goal: Goal) -> asyncio.Task:
        """`score(frames, goal)` without waiting: an asyncio Task of the Score, to await when the reward is needed.

        Call it inside a running event loop. The request is built (and the goal checked) here; at most
        `max_concurrency` requests are sent together, the rest wait for a slot; awaiting raises what `score` raises.
        """
        return self._submit(self._run(self._score(frames, goal)))

    def submit_batch(self, trajectories: Sequence[np.ndarray], goals: Sequence[Goal]) -> asyncio.Task:
        """`score_batch` without waiting: a Task of the list of Scores."""
        return self._submit(self._run(self._score_batch(trajectories, goals)))

    def submit_steps(self, frames: np.ndarray, goals: Sequence[Goal],
                     states: Sequence[StepState | None]) -> asyncio.Task:
        """`score_steps` without waiting: a Task of (rewards [B], states)."""
        return self._submit(self._run(self._score_steps(frames, goals, states)))

    async def __aenter__(self):
        return self

    async def __aexit__(self, *exc_info):
        await self.aclose()

    async def _run(self, call: Call):
        attempts = Attempts(call.path, self.url, self.retries, self.backoff_s)
        for attempt in itertools.count():
            try:
                async with self.slots:
                    response = await self.http.request(call.method, call.path, data=call.data or None,
                                                       files=call.files or None)
            except httpx.TransportError as error:
                await asyncio.sleep(attempts.http_failed(attempt, error=error))
                continue
            if response.is_success:
                return attempts.succeeded(call.parse(response.json()))
            await asyncio.sleep(attempts.http_failed(attempt, response))

    async def embed_goal(self, goal: Goal) -> GoalEmbedding:
        return await self._run(self._embed(goal))

    async def score(self, frames: np.ndarray, goal: Goal) -> Score:
        return await self._run(self._score(frames, goal))

    async def score_video(self, path: str | Path, goal: Goal) -> Score:
        return await self._run(self._score_video(path, goal))

    async def score_batch(self, trajectories: Sequence[np.ndarray], goals: Sequence[Goal]) -> list[Score]:
        return await self._run(self._score_batch(trajectories, goals))

    async def score_steps(self, frames: np.ndarray, goals: Sequence[Goal],
                          states: Sequence[StepState | None]) -> tuple[np.ndarray, list[StepState | None]]:
        return await self._run(self._score_steps(frames, goals, states))
