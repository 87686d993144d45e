"""Ray Serve deployments: thin wrappers that build a plain object in __init__ and delegate to it."""

from __future__ import annotations

import asyncio
import ctypes
import ctypes.util
import time
from types import SimpleNamespace
from typing import Callable, Sequence

import numpy as np
import torch
from ray import serve

from rewards import Goal, InvalidTaskError, OverloadedError, Score, StepState, VLRewardError, load_model
from serve.grpc_api import GrpcRoutes
from serve.guards import Admission, AdmissionGate
from serve.metrics import GatewayMetrics, ModelMetrics
from serve.schemas import EmbedResponse, ModelInfo, ScoreResponse
from serve.service import RewardService


PRECISIONS = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}


def total_frames(items: list[tuple]) -> int:
    """Batch cost is frames, not requests: a 500-frame video weighs 500 one-frame steps."""
    return sum(len(item[0]) for item in items)


def each_or_error(run: Callable[[list], list], items: list) -> list:
    """run(items) as one batch; if bad input in one request fails it, rerun them one by one so only that one fails."""
    try:
        return run(items)
    except VLRewardError:
        results = []
        for item in items:
            try:
                results.append(run([item])[0])
            except VLRewardError as error:
                results.append(error)
        return results


def raised(result):
    """A batch slot's result, raising it when it is the error its request caused."""
    if isinstance(result, Exception):
        raise result
    return result


def trim_heap() -> bool:
    """Hand freed heap memory back to the OS: after a burst of large bodies glibc keeps it in its arenas, and the
    process stays gigabytes large while idle. False where there is no glibc."""
    try:
        return bool(ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6").malloc_trim(0))
    except (OSError, AttributeError):
        return False


class HeapTrimmer:
    """Calls trim_heap (off the event loop) when the last request in flight ends and more than `threshold_bytes`
    came in since the last trim: memory comes back after a burst, and steady small traffic pays nothing."""

    def __init__(self, threshold_bytes: int = 32 * 2**20):
        self.threshold_bytes, self.in_flight, self.received, self.trims = threshold_bytes, 0, 0, 0

    def begin(self, nbytes: int = 0) -> None:
        self.in_flight += 1
        self.received += nbytes

    def end(self) -> None:
        self.in_flight -= 1
        if self.in_flight == 0 and self.received > self.threshold_bytes:
            self.received, self.trims = 0, self.trims + 1
            asyncio.get_running_loop().run_in_executor(None, trim_heap)


class TrimAfterBursts:
    """ASGI middleware: counts body bytes and requests in flight for a HeapTrimmer."""

    def __init__(self, app, trimmer: HeapTrimmer):
        self.app, self.trimmer = app, trimmer

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)

        async def counting_receive():
            message = await receive()
            self.trimmer.received += len(message.get("body", b""))
            return message

        self.trimmer.begin()
        try:
            await self.app(scope, counting_receive, send)
        finally:
            self.trimmer.end()


class ModelReplica:
    """One reward model on one replica (GPU when the deployment asks for one).

    Cross-request batching never waits for a batch to fill: with `batch_wait_timeout_s` 0 (the default) a request
    that finds the model idle runs at once, and requests that arrive while a batch runs form the next one.
    """

    def __init__(self, model_name: str, model_root: str | None, goal_cache_size: int, precision: str = "fp32"):
        device = "cuda" if torch.cuda.is_available() else "cpu"
        self.device = device
        self.precision = precision
        model = load_model(model_name, device=device, model_root=model_root)
        self.metrics = ModelMetrics(model.name)
        self.service = RewardService(model, goal_cache_size, on_goal_lookup=self.metrics.goal_lookup)
        self.trimmer = HeapTrimmer()  # its in_flight: the requests in this replica
        self.default_threads = torch.get_num_threads()  # Ray's, from the CPU request (OMP_NUM_THREADS)
        self.threads = self.lone_request_threads = self.default_threads

    def reconfigure(self, config: dict) -> None:
        """Retune cross-request batching and, on CPU, the model's torch threads (user_config) without a restart.

        torch_threads 0 keeps Ray's default (OMP_NUM_THREADS from the CPU request, usually 1 thread); with
        concurrent_batches 2, a batch can run while the previous one still does, each on torch's threads. A batch
        holding the replica's only request runs on lone_request_threads (0: as the others): one client's request
        would leave the other cores idle, while under load batches and HTTP work share them."""
        self.threads = int(config.get("torch_threads") or 0) or self.default_threads
        self.lone_request_threads = int(config.get("lone_request_threads") or 0) or self.threads
        for batched in (self._score_batch, self._step_batch):
            batched.set_max_batch_size(config["max_batch_frames"])
            batched.set_batch_wait_timeout_s(config["batch_wait_timeout_s"])
            set_concurrent_batches(batched, config.get("concurrent_batches", 1))

    async def info(self) -> ModelInfo:
        return self.service.info()

    async def embed(self, goal: Goal) -> EmbedResponse:
        return self.service.embed(goal)

    async def score(self, frames: np.ndarray, goal: Goal) -> ScoreResponse:
        """Embed (and so validate) the goal per request, then join the cross-request batch."""
        self.trimmer.begin(frames.nbytes)
        try:
            score = raised(await self._score_batch((frames, self.service.embed_goal(goal))))
            return ScoreResponse.of(self.service.model, score)
        finally:
            self.trimmer.end()

    async def score_many(self, trajectories: Sequence[np.ndarray], goals: Sequence[Goal]) -> list[ScoreResponse]:
        """Many trajectories in one handle call (a batch request, the RL path): one hop and one queue place for the
        lot, and each still joins the cross-request batch."""
        return list(await asyncio.gather(*(self.score(frames, goal) for frames, goal in zip(trajectories, goals))))

    async def score_steps(self, frames: np.ndarray, goals: Sequence[Goal],
                          states: Sequence[StepState | None]) -> tuple[list[float], list[StepState]]:
        """One new frame per stream; steps of concurrent requests share one model call."""
        self.trimmer.begin(frames.nbytes)
        try:
            rewards, next_states = raised(await self._step_batch((frames, [self.service.embed_goal(g) for g in goals],
                                                                  states)))
        finally:
            self.trimmer.end()
        return rewards.tolist(), next_states

    async def evaluate(self, rows: list[dict]) -> dict:
        """Reward-quality metrics of labelled trajectories (off the event loop: batches keep flowing)."""
        from rewards.evaluate import evaluate

        if "text" not in self.service.model.goal_kinds:
            raise InvalidTaskError(f"{self.service.model.name} takes {'/'.join(self.service.model.goal_kinds)} goals; "
                                   "evaluation over REST needs a text-goal model (use `vlreward eval` for demo models)")
        return await asyncio.to_thread(evaluate, self.service.model, rows, "all", progress=False)

    @serve.batch(max_batch_size=4096, batch_wait_timeout_s=0.0, batch_size_fn=total_frames)
    async def _score_batch(self, items: list[tuple[np.ndarray, Goal]]) -> list[Score]:
        return await asyncio.to_thread(self._timed, items, lambda batch: self.service.score_many(*zip(*batch)))

    @serve.batch(max_batch_size=4096, batch_wait_timeout_s=0.0, batch_size_fn=total_frames)
    async def _step_batch(self, items: list[tuple]) -> list[tuple]:
        return await asyncio.to_thread(self._timed, items, self.service.step_many)

    def _timed(self, items: list, run: Callable[[list], list]) -> list:
        """run(items) under the replica's autocast, off the event loop so the next batch fills meanwhile."""
        if self.device == "cpu":  # this thread's own OpenMP team: a batch running beside it keeps its own
            torch.set_num_threads(self.lone_request_threads if self.trimmer.in_flight == 1 else self.threads)
        start = time.perf_counter()
        # one autocast per call: the context keeps state while entered, and concurrent batches enter it at once
        with torch.autocast(self.device, dtype=PRECISIONS[self.precision], enabled=self.precision != "fp32"):
            results = each_or_error(run, items)
        self.metrics.batch(total_frames(items), time.perf_counter() - start)
        return results


def set_concurrent_batches(batched, count: int) -> None:
    """How many batches of a `@serve.batch` method may run at once. Serve 2.60 takes `max_concurrent_batches` only
    at decoration; its lazy queue wrapper (private; ray is pinned) reads it when the first call builds the queue,
    and the queue holds it in a semaphore (a batch running keeps the one it entered)."""
    lazy = batched.set_max_batch_size.__self__
    lazy.max_concurrent_batches = count
    if lazy._queue is not None and lazy._queue.max_concurrent_batches != count:
        lazy._queue.max_concurrent_batches, lazy._queue.semaphore = count, asyncio.Semaphore(count)


BATCHING = {"max_batch_frames": 4096, "batch_wait_timeout_s": 0.0, "torch_threads": 0, "lone_request_threads": 0,
            "concurrent_batches": 1}
ModelServer = serve.deployment(max_ongoing_requests=64, user_config=BATCHING)(ModelReplica)


class Draining:
    """What both ingress classes add to their API: an `AdmissionGate` around it, and `drain`, which
    `vlreward serve` calls on SIGTERM or Ctrl-C before it stops Ray."""

    def gate(self, api, retry_after_s: float) -> None:
        self.admission = Admission()
        api.add_middleware(AdmissionGate, admission=self.admission, retry_after_s=retry_after_s)

    async def drain(self, grace_s: float) -> dict:
        """Admit no more HTTP requests here and wait, at most `grace_s`, for those in flight (Admission.drain's
        counts, with this replica's tag)."""
        return {"replica": serve.get_replica_context().replica_tag, **await self.admission.drain(grace_s)}


class LocalHandle:
    """A model replica's own methods behind a deployment handle's face (`await handle.score.remote(...)`): the API
    calls the model in its own process, without a hop or serialisation.

    It keeps the model's queue bounds as a Serve handle does: `max_ongoing` calls run at once, `max_queued` more
    wait (-1: any number), and a call beyond them is refused at once with `OverloadedError`, the JSON 503 the
    gateway path answers. (Serve's proxy would otherwise refuse HTTP requests to the ingress in plain text.)"""

    def __init__(self, replica: ModelReplica, max_ongoing: int, max_queued: int):
        self._replica, self._running = replica, asyncio.Semaphore(max_ongoing)
        self._limit, self._admitted = (max_ongoing + max_queued if max_queued >= 0 else None), 0

    def __getattr__(self, method: str) -> SimpleNamespace:
        call = getattr(self._replica, method)

        async def remote(*args, **kwargs):
            if self._limit is not None and self._admitted >= self._limit:
                raise OverloadedError(f"the model's queue is full ({self._limit} requests admitted)")
            self._admitted += 1
            try:
                async with self._running:
                    return await call(*args, **kwargs)
            finally:
                self._admitted -= 1

        return SimpleNamespace(remote=remote)


@serve.deployment(max_ongoing_requests=1024, user_config=BATCHING)
@serve.ingress()
class ModelIngress(ModelReplica, Draining, GrpcRoutes):
    """The default model's replica is also the HTTP and gRPC ingress (auth, limits, decoding): a request for it takes
    no hop between actors; other models are reached through their ModelServer handles as from the Gateway."""

    def __init__(self, model_name: str, model_root: str | None, goal_cache_size: int, precision: str,
                 queue: dict, other_handles: dict, settings: dict):
        from serve.api import create_api
        from serve.decoding import IsolatedDecoder
        from serve.settings import ApiSettings

        super().__init__(model_name, model_root, goal_cache_size, precision)
        self.decoder = IsolatedDecoder(warm=True)
        handles = {settings["default_model"]: LocalHandle(self, **queue), **other_handles}
        self.api = create_api(handles, ApiSettings(**settings), GatewayMetrics(), self.decoder)
        self.api.add_middleware(TrimAfterBursts, trimmer=self.trimmer)
        self.gate(self.api, settings["retry_after_s"])

    def __serve_build_asgi_app__(self):
        return self.api

    def __del__(self):
        """Serve calls this on a graceful shutdown: stop the decoder children now, not when they notice."""
        self.decoder.close()


@serve.deployment(max_ongoing_requests=256)
@serve.ingress()
class Gateway(Draining, GrpcRoutes):
    """HTTP and gRPC ingress: auth, limits, decoding and validation; scoring goes to the ModelServer handles."""

    def __init__(self, model_handles: dict, settings: dict):
        from serve.api import create_api
        from serve.decoding import IsolatedDecoder
        from serve.settings import ApiSettings

        self.decoder = IsolatedDecoder(warm=True)
        self.api = create_api(model_handles, ApiSettings(**settings), GatewayMetrics(), self.decoder)
        self.api.add_middleware(TrimAfterBursts, trimmer=HeapTrimmer())
        self.gate(self.api, settings["retry_after_s"])

    def __serve_build_asgi_app__(self):
        return self.api

    def __del__(self):
        """Serve calls this on a graceful shutdown: stop the decoder children now, not when they notice."""
        self.decoder.close()
