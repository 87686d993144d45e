"""A replica's batches: how many run at once is set per deployment (ModelSpec.concurrent_batches), and retuned in
place (user_config), on a real Serve replica."""

from __future__ import annotations

import asyncio

from ray import serve

from serve.deployments import set_concurrent_batches


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
