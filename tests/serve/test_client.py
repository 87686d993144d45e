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


def test_submit_returns_futures_bounded_in_flight_that_match_score(service_url, random_frames):
    from concurrent.futures import Future

    client = RemoteRewardModel(service_url, "babyai-liv", max_in_flight=2)
    expected = client.score(random_frames, "go to the red ball").values
    futures, most = [], 0
    for i in range(8):
        futures.append(client.submit(random_frames[: 2 + i % 4], "go to the red ball"))
        most = max(most, client.in_flight)
    assert all(isinstance(f, Future) for f in futures) and 1 <= most <= 2  # submit blocks at max_in_flight
    for i, future in enumerate(futures):
        np.testing.assert_allclose(future.result(timeout=60).values, expected[: 2 + i % 4], atol=1e-5)
    batch = client.submit_batch([random_frames[:3], random_frames], ["go to the red ball"] * 2).result(timeout=60)
    np.testing.assert_allclose(batch[1].values, expected, atol=1e-5)
    step_rewards, states = client.submit_steps(random_frames[:2], ["go to the red ball"] * 2, [None, None]).result(60)
    assert step_rewards.tolist() == [0.0, 0.0] and len(states) == 2
    assert client.in_flight == 0
    client.close()


def test_a_failed_submit_raises_from_the_future_after_the_same_retries(service_url, random_frames):
    import pickle

    from serve.client import RETRIES

    client = RemoteRewardModel(service_url, "babyai-liv", retries=2, backoff_s=0.01)
    with pytest.raises(rewards.InvalidTaskError):  # a 4xx fails fast, and never becomes a reward of 0
        client.submit(random_frames, " ").result(timeout=60)
    state = pickle.loads(pickle.dumps(client)).__getstate__()  # picklable; the copy rebuilds its connection
    down = RemoteRewardModel.__new__(RemoteRewardModel)
    down.__setstate__({**state, "url": "http://127.0.0.1:9"})
    before = RETRIES.labels("/v1/score")._value.get()
    with pytest.raises(rewards.ModelNotReadyError, match="cannot reach"):
        down.submit(random_frames, "go to the red ball").result(timeout=60)
    assert RETRIES.labels("/v1/score")._value.get() - before == 2  # retried like score(), then raised
    assert down.in_flight == 0
    down.close()
    client.close()


def test_async_submit_returns_awaitables_bounded_in_flight(service_url, random_frames):
    expected = RemoteRewardModel(service_url).score(random_frames, "go to the red ball").values

    async def run():
        async with await AsyncRemoteRewardModel.connect(service_url, max_concurrency=2) as client:
            tasks = [client.submit(random_frames[: 2 + i % 4], "go to the red ball") for i in range(6)]
            assert client.in_flight == 6 and all(isinstance(t, asyncio.Task) for t in tasks)
            batch = client.submit_batch([random_frames], ["go to the red ball"])
            failing = client.submit(random_frames, " ")
            scores = await asyncio.gather(*tasks)
            with pytest.raises(rewards.InvalidTaskError):
                await failing
            steps = await client.submit_steps(random_frames[:1], ["go to the red ball"], [None])
            return scores, await batch, steps

    scores, batch, (step_rewards, _) = asyncio.run(run())
    for i, score in enumerate(scores):
        np.testing.assert_allclose(score.values, expected[: 2 + i % 4], atol=1e-5)
    np.testing.assert_allclose(batch[0].values, expected, atol=1e-5)
    assert step_rewards.tolist() == [0.0]


def test_reported_successes_feed_the_live_reward_audit(service_url, random_frames):
    """The RL side reports each trajectory's success with its frames; /v1/audit ranks the returns the service paid
    against them, per model and task (a task of its own here, so other tests' requests do not mix in)."""
    import httpx

    client = RemoteRewardModel(service_url)
    task = "go to the audited ball"
    trajectories = [random_frames[: 3 + i] for i in range(4)]
    scores = client.score_batch(trajectories, [task] * 4, successes=[True, False, True, False])
    returns = np.array([score.episode_return for score in scores])
    audits = {(a["model"], a["task"]): a for a in httpx.get(f"{service_url}/v1/audit").json()["audits"]}
    audit = audits[(client.name, task)]
    expected = rewards.metrics.RewardAudit()
    for episode_return, success in zip(returns, [True, False, True, False]):
        expected.add(episode_return, success)
    assert (audit["episodes"], audit["successes"]) == (4, 2)
    assert audit["reward_auroc"] == pytest.approx(expected.reward_auroc, abs=1e-4)
    assert audit["false_pay_rate"] == pytest.approx(expected.false_pay_rate, abs=1e-4)
    bad = httpx.post(f"{service_url}/v1/score/batch", data={"tasks": '["x"]', "successes": "[true]"},
                     files={"trajectories": ("b.npz", b"not an npz")})
    assert bad.status_code == 422
    wrong = client._score_batch(trajectories[:1], [task], successes=[True])
    wrong.data["successes"] = "[1]"  # not booleans
    response = httpx.post(f"{service_url}/v1/score/batch", data=wrong.data, files=wrong.files)
    assert response.status_code == 422 and "successes" in response.json()["error"]["message"]
