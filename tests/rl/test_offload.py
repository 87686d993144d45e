"""rl.offload: a service client's calls made from a helper process answer as the client does, and a helper that
dies fails its calls instead of scoring them."""

import os
import signal

import numpy as np
import pytest

from rewards import InvalidVideoError, VLRewardError
from rl.offload import HelperProcessModel
from rl.submission import EpisodeSubmitter
from serve.client import RemoteRewardModel
from serve.grpc_client import GrpcRewardModel

TASK = "go to the red ball"


@pytest.fixture
def trajectories():
    rng = np.random.default_rng(7)
    return [rng.integers(0, 256, (length, 64, 64, 3), np.uint8) for length in (5, 9)]


@pytest.mark.parametrize("transport", ["http", "grpc"])
def test_calls_from_the_helper_answer_as_the_client_does(service_url, grpc_url, trajectories, transport):
    client = (RemoteRewardModel(service_url, "babyai-liv") if transport == "http" else
              GrpcRewardModel(grpc_url, "babyai-liv"))
    helper = HelperProcessModel(client)
    try:
        assert (helper.name, helper.goal_kinds, helper.segments) == (client.name, client.goal_kinds, client.segments)
        expected = client.score_batch(trajectories, [TASK, TASK])
        batch = helper.submit_batch(trajectories, [TASK, TASK]).result(60)
        one = helper.submit(trajectories[1], TASK).result(60)
        for got, want in zip([*batch, one], [*expected, expected[1]]):
            np.testing.assert_allclose(got.rewards, want.rewards, atol=1e-6)
        with pytest.raises(InvalidVideoError):  # the service's 4xx, raised as the client raises it
            helper.submit(trajectories[0][..., :2], TASK).result(60)
    finally:
        helper.close()
        client.close()
    assert helper._process.poll() == 0  # closed: the helper answered what was in flight and exited


def test_a_helper_that_dies_fails_its_calls_in_flight_and_later(service_url, trajectories):
    helper = HelperProcessModel(RemoteRewardModel(service_url, "babyai-liv"))
    helper.submit(trajectories[0], TASK).result(60)  # started and answering
    os.kill(helper._process.pid, signal.SIGSTOP)  # the next call (small enough to fit the pipe) stays in flight...
    in_flight = helper.submit(trajectories[0][:2], TASK)
    os.kill(helper._process.pid, signal.SIGKILL)  # ...until the helper is killed
    with pytest.raises(VLRewardError, match=r"helper process exited \(code -9\)"):
        in_flight.result(30)
    with pytest.raises(VLRewardError, match="exited"):
        helper.submit(trajectories[0], TASK)


def test_the_submitter_puts_a_service_client_behind_a_helper_and_stops_it_on_close(service_url, trajectories):
    submitter = EpisodeSubmitter(lambda: RemoteRewardModel(service_url, "babyai-liv"))
    pending = submitter.submit_all(trajectories, [TASK, TASK])
    assert [len(p.result(60).rewards) for p in pending] == [5, 9]
    helper = submitter.model()
    assert isinstance(helper, HelperProcessModel)
    submitter.close()
    assert helper._process.wait(timeout=30) == 0
