"""Prometheus metrics recorded inside Serve replicas through Ray's metrics (exported as `ray_vlreward_*`).

Ray collects them per replica (tagged with deployment and replica) on each node's metrics port; a
`prometheus_client` registry inside a replica would not be collected. Counters gain a `_total` suffix.
"""

from __future__ import annotations

import time
from contextlib import contextmanager

from ray.serve.metrics import Counter, Gauge, Histogram

LATENCY_BUCKETS_S = [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0]
FRAME_BUCKETS = [1, 4, 16, 64, 128, 256, 512, 1024, 2048, 4096, 8192]


@contextmanager
def timer(observe):
    """Call observe(seconds) with the time the block took, also when it raises."""
    start = time.perf_counter()
    try:
        yield
    finally:
        observe(time.perf_counter() - start)


class GatewayMetrics:
    """What the HTTP ingress sees: requests by route and status, time spent decoding uploads, the live audit."""

    def __init__(self):
        self.requests = Counter("vlreward_requests", "HTTP requests by route and status", ("route", "status"))
        self.request_seconds = Histogram("vlreward_request_latency_seconds", "HTTP request latency",
                                         LATENCY_BUCKETS_S, ("route",))
        self.decode_seconds = Histogram("vlreward_decode_latency_seconds", "time to decode one uploaded video or .npy",
                                        LATENCY_BUCKETS_S)
        self.audit = AuditGauges()

    def request(self, route: str, status: int, seconds: float) -> None:
        self.requests.inc(tags={"route": route, "status": str(status)})
        self.request_seconds.observe(seconds, tags={"route": route})

    def decode(self, seconds: float) -> None:
        self.decode_seconds.observe(seconds)


class CountRequests:
    """ASGI middleware, outermost: each HTTP request's matched route, status and seconds into GatewayMetrics (401s,
    408s and 413s too). Plain ASGI rather than Starlette's `BaseHTTPMiddleware`, which moves every response through a
    stream and a task of its own."""

    def __init__(self, app, metrics: GatewayMetrics):
        self.app, self.metrics = app, metrics

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        start, status = time.perf_counter(), 500  # an exception that escapes becomes Starlette's 500

        async def noting_status(message):
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, noting_status)
        finally:
            route = scope.get("route")  # the matched template, so ids in paths cannot explode the tags
            self.metrics.request(getattr(route, "path", "unmatched"), status, time.perf_counter() - start)


class AuditGauges:
    """The live audit's figures per model and task (serve/audit.py): AUROC of paid returns, false-pay rate."""

    def __init__(self):
        self.auroc = Gauge("vlreward_reward_auroc", "AUROC of episode returns, reported successes against failures",
                           ("model", "task"))
        self.false_pay = Gauge("vlreward_false_pay_rate", "share of reported failures paid more than the median "
                               "success", ("model", "task"))

    def set(self, model: str, task: str, auroc: float, false_pay_rate: float) -> None:
        tags = {"model": model, "task": task}
        if auroc == auroc:  # NaN until the task has a success and a failure
            self.auroc.set(auroc, tags=tags)
            self.false_pay.set(false_pay_rate, tags=tags)


class ModelMetrics:
    """What a model replica sees: frames scored, cross-request batch sizes, model latency, goal-cache lookups."""

    def __init__(self, model: str):
        self.tags = {"model": model}
        self.frames = Counter("vlreward_frames_scored", "frames scored (trajectory frames and streamed steps)", ("model",))
        self.batch_frames = Histogram("vlreward_batch_frames", "frames per cross-request batch", FRAME_BUCKETS, ("model",))
        self.model_seconds = Histogram("vlreward_model_latency_seconds", "time of one batched model call",
                                       LATENCY_BUCKETS_S, ("model",))
        self.cache_hits = Counter("vlreward_goal_cache_hits", "goal embeddings served from the cache", ("model",))
        self.cache_misses = Counter("vlreward_goal_cache_misses", "goal embeddings computed", ("model",))

    def batch(self, frames: int, seconds: float) -> None:
        self.frames.inc(frames, tags=self.tags)
        self.batch_frames.observe(frames, tags=self.tags)
        self.model_seconds.observe(seconds, tags=self.tags)

    def goal_lookup(self, hit: bool) -> None:
        (self.cache_hits if hit else self.cache_misses).inc(tags=self.tags)
