"""The async client against the live service, and the retry policy both clients share."""

from __future__ import annotations

import asyncio

import numpy as np
import pytest

import rewards
from serve.client import AsyncRemoteRewardModel, RemoteRewardModel, retry_delay


def test_async_client_scores_concurrently_like_the_sync_client(service_url, random_frames):
    expected = RemoteRewardModel(service_url).score(random_frames, "go to the red ball").values

    async def run():
        async with await AsyncRemoteRewardModel.connect(service_url, max_concurrency=3) as client:
            scores = await asyncio.gather(*(client.score(random_frames[: 2 + i % 4], "go to the red ball")
                                            for i in range(12)))
            rewards_, states = await client.score_steps(random_frames[:2], ["go to the red ball"] * 2, [None, None])
            with pytest.raises(rewards.InvalidTaskError):
                await client.score(random_frames, "")
            return scores, rewards_

    scores, step_rewards = asyncio.run(run())
    for i, score in enumerate(scores):
        np.testing.assert_allclose(score.values, expected[: 2 + i % 4], atol=1e-5)
    assert step_rewards.tolist() == [0.0, 0.0]  # a stream's first frame pays nothing under LIV


def test_async_client_raises_when_the_service_is_down():
    async def run():
        await AsyncRemoteRewardModel.connect("http://127.0.0.1:9", retries=2, backoff_s=0.01)

    with pytest.raises(rewards.ModelNotReadyError, match="cannot reach"):
        asyncio.run(run())


def test_retry_delays_are_jittered_exponential_and_respect_retry_after():
    delays = [retry_delay(3, 0.5, None) for _ in range(200)]
    assert 0 <= min(delays) and max(delays) <= 0.5 * 2**3 and len(set(delays)) > 150  # full jitter, no lockstep
    assert all(retry_delay(0, 0.5, "2") >= 2 for _ in range(20))
