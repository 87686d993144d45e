"""A trajectory scores the same whatever it is batched with: alone, and inside batches of 2, 8 and 64 of other
trajectories of other lengths and goals; in-process (RewardService.score_many, the replica's batch call) and over
HTTP through the cross-request batch of a live service."""

from __future__ import annotations

import asyncio

import httpx
import numpy as np
import pytest

import rewards
from serve.service import RewardService
from serve.wire import npy_bytes, npz_bytes

BATCHES = [2, 8, 64]
TOLERANCE = 1e-5
TASKS = ["go to the red ball", "pick up the blue key", "open the yellow door"]


def trajectory(index: int) -> np.ndarray:
    rng = np.random.default_rng(index)
    return rng.integers(0, 256, (int(rng.integers(2, 13)), 64, 64, 3), dtype=np.uint8)


def goal_for(model, index: int):
    return trajectory(10_000 + index) if "demo" in model.goal_kinds else TASKS[index % len(TASKS)]


@pytest.mark.parametrize("name", [n for n in rewards.list_models() if n.startswith("babyai")])
def test_in_process_batches_do_not_change_a_score(name):
    service = RewardService(rewards.load_model(name))
    target, goal = trajectory(0), goal_for(service.model, 0)
    alone = service.score_many([target], [goal])[0]
    for size in BATCHES:
        others = list(range(1, size))
        position = size // 2  # somewhere in the middle, between trajectories of other lengths
        trajectories = [trajectory(i) for i in others]
        goals = [goal_for(service.model, i) for i in others]
        trajectories.insert(position, target)
        goals.insert(position, goal)
        batched = service.score_many(trajectories, goals)[position]
        np.testing.assert_allclose(batched.values, alone.values, atol=TOLERANCE, rtol=0, err_msg=f"batch {size}")
        np.testing.assert_allclose(batched.rewards, alone.rewards, atol=TOLERANCE, rtol=0, err_msg=f"batch {size}")


def test_over_http_the_cross_request_batch_does_not_change_a_score(service_url):
    """The same trajectory alone, then among 2, 8 and 64 requests sent at once (the replica batches them)."""
    target = trajectory(0)
    alone = httpx.post(f"{service_url}/v1/score", files={"frames": ("t.npy", npy_bytes(target))},
                       data={"task": TASKS[0], "model": "babyai-liv"}, timeout=120).json()
    version = next(m["version"] for m in httpx.get(f"{service_url}/v1/models", timeout=60).json()["models"]
                   if m["name"] == "babyai-liv")
    assert alone["version"] == version

    async def concurrently(size: int) -> list[dict]:
        async with httpx.AsyncClient(base_url=service_url, timeout=300) as http:
            sends = [http.post("/v1/score", files={"frames": ("t.npy", npy_bytes(trajectory(i) if i else target))},
                               data={"task": TASKS[i % len(TASKS)], "model": "babyai-liv"}) for i in range(size)]
            return [response.json() for response in await asyncio.gather(*sends)]

    for size in BATCHES:
        together = asyncio.run(concurrently(size))[0]
        assert together["version"] == version
        np.testing.assert_allclose(together["values"], alone["values"], atol=TOLERANCE, rtol=0)
        np.testing.assert_allclose(together["rewards"], alone["rewards"], atol=TOLERANCE, rtol=0)
    # the batch route fans out into the same cross-request batch
    body = npz_bytes([target] + [trajectory(i) for i in range(1, 8)])
    batch = httpx.post(f"{service_url}/v1/score/batch", files={"trajectories": ("b.npz", body)},
                       data={"tasks": '["go to the red ball"]', "model": "babyai-liv"}, timeout=120).json()
    np.testing.assert_allclose(batch["results"][0]["values"], alone["values"], atol=TOLERANCE, rtol=0)
    assert {r["version"] for r in batch["results"]} == {version}
