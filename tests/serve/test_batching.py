"""A replica's batches: how many run at once is set per deployment (ModelSpec.concurrent_batches), and retuned in
place (user_config), on a real Serve replica; and the torch threads each runs on (ModelSpec.lone_request_threads)."""

from __future__ import annotations

import asyncio

import numpy as np
import torch
from ray import serve

from serve.deployments import BATCHING, ModelReplica, set_concurrent_batches


@serve.deployment(max_ongoing_requests=16)
class Sleeper:
    """A batched method that records how many of its batches run at the same time."""

    def __init__(self):
        self.running = self.most = 0

    def reconfigure(self, config: dict) -> None:
        set_concurrent_batches(self.work, config["concurrent_batches"])

    @serve.batch(max_batch_size=1, batch_wait_timeout_s=0.0)
    async def work(self, items: list[int]) -> list[int]:
        self.running += 1
        self.most = max(self.most, self.running)
        await asyncio.sleep(0.2)
        self.running -= 1
        return items

    async def __call__(self, item: int) -> int:
        return await self.work(item)

    def most_at_once(self) -> int:
        most, self.most = self.most, 0
        return most


def test_concurrent_batches_bounds_the_batches_running_at_once_and_retunes_in_place(service_url):
    most = []
    for count in (2, 1, 3):  # the first before any call builds the queue; the others once it exists
        handle = serve.run(Sleeper.options(user_config={"concurrent_batches": count}).bind(), name="batching",
                           route_prefix=None)
        assert [call.result() for call in [handle.remote(i) for i in range(6)]] == list(range(6))
        most.append(handle.most_at_once.remote().result())
    serve.delete("batching")
    assert most == [2, 1, 3]



class ThreadRecorder(ModelReplica):
    """A model replica that notes the torch threads each of its batches ran on."""

    def __init__(self, *args):
        super().__init__(*args)
        self.seen = []

    def _timed(self, items, run):
        return super()._timed(items, lambda batch: (self.seen.append(torch.get_num_threads()), run(batch))[1])

    def threads_seen(self) -> list[int]:
        seen, self.seen = self.seen, []
        return seen

    async def score_together(self, count: int) -> None:
        frames = np.zeros((4, 64, 64, 3), np.uint8)
        await asyncio.gather(*(self.score(frames, "go to the red ball") for _ in range(count)))


def test_a_lone_request_runs_on_lone_request_threads_and_requests_side_by_side_on_torch_threads(service_url):
    config = {**BATCHING, "torch_threads": 1, "lone_request_threads": 2, "concurrent_batches": 2}
    recorder = serve.deployment(ThreadRecorder).options(user_config=config, ray_actor_options={"num_cpus": 0.1})
    handle = serve.run(recorder.bind("babyai-liv", None, 16), name="threads", route_prefix=None)
    try:
        handle.score_together.remote(1).result()
        assert handle.threads_seen.remote().result() == [2]
        handle.score_together.remote(3).result()  # three requests in flight: each batch on one thread
        assert set(handle.threads_seen.remote().result()) == {1}
    finally:
        serve.delete("threads")
