"""The gRPC ingress (serve/rpc.py) answers as the HTTP API does: the same scores, the same checks, the same errors."""

from __future__ import annotations

import json

import grpc
import httpx
import numpy as np
import pytest

from rewards import InvalidTaskError, InvalidVideoError, PayloadTooLargeError, UnknownModelError
from serve import rpc
from serve.client import RemoteRewardModel
from serve.grpc_client import GrpcRewardModel, connect
from serve.wire import npy_bytes

TASK = "go to the red ball"


def call(url: str, method: str, request, application: str = "vlreward", token: str | None = None):
    """One raw call (no client retries): the reply, or the grpc.RpcError."""
    with grpc.insecure_channel(url.removeprefix("grpc://")) as channel:
        stub = channel.unary_unary(f"/{rpc.SERVICE}/{method}", request_serializer=lambda m: m.SerializeToString(),
                                   response_deserializer=rpc.REPLIES[method].FromString)
        metadata = [("application", application)] + ([("authorization", f"Bearer {token}")] if token else [])
        try:
            return stub(request, metadata=metadata, timeout=120)
        except grpc.RpcError as error:
            return error


def test_grpc_scores_what_http_scores(service_url, grpc_url, babyai_videos):
    video, episode = babyai_videos["success"][0]
    frames = episode.frames
    over_http, over_grpc = connect(service_url, "babyai-liv"), connect(grpc_url, "babyai-liv")  # one entry, by URL
    assert isinstance(over_http, RemoteRewardModel) and isinstance(over_grpc, GrpcRewardModel)
    assert (over_grpc.name, over_grpc.version, over_grpc.goal_kinds) == (over_http.name, over_http.version,
                                                                         over_http.goal_kinds)
    np.testing.assert_allclose(over_grpc.score(frames, TASK).values, over_http.score(frames, TASK).values, atol=1e-6)
    other = babyai_videos["failure"][0][1].frames
    batch = over_grpc.score_batch([frames, other], [TASK, "go to the blue key"])
    expected = over_http.score_batch([frames, other], [TASK, "go to the blue key"])
    for got, want in zip(batch, expected):
        np.testing.assert_allclose(got.rewards, want.rewards, atol=1e-6)
    np.testing.assert_allclose(over_grpc.embed_goal(TASK).vector, over_http.embed_goal(TASK).vector, atol=1e-6)
    # a video file is media too, decoded as over HTTP
    reply = call(grpc_url, "Score", rpc.ScoreRequest(model="babyai-liv", task=TASK, media=video.read_bytes()))
    assert reply.num_frames == len(over_http.score_video(video, TASK).values)
    np.testing.assert_allclose(over_grpc.score_video(video, TASK).rewards, over_http.score_video(video, TASK).rewards,
                               atol=1e-6)


def test_reported_successes_feed_the_live_audit(service_url, grpc_url):
    task = "go to the purple box over grpc"
    frames = np.random.default_rng(1).integers(0, 256, (4, 64, 64, 3), dtype=np.uint8)
    GrpcRewardModel(grpc_url, "babyai-liv").score_batch([frames, frames], [task], successes=[True, False])
    audits = httpx.get(f"{service_url}/v1/audit", timeout=30).json()["audits"]
    assert [(a["episodes"], a["successes"]) for a in audits if a["task"] == task] == [(2, 1)]


ZEROS = npy_bytes(np.zeros((2, 8, 8, 3), np.uint8))


@pytest.mark.parametrize("method, request_, status, code, error", [
    ("Score", rpc.ScoreRequest(model="no-such-model", task=TASK), grpc.StatusCode.NOT_FOUND, "unknown_model",
     UnknownModelError),
    ("Score", rpc.ScoreRequest(model="babyai-liv", task=TASK, media=b"not a video"),
     grpc.StatusCode.INVALID_ARGUMENT, "invalid_video", InvalidVideoError),
    ("Score", rpc.ScoreRequest(model="babyai-liv", task="  ", media=ZEROS), grpc.StatusCode.INVALID_ARGUMENT,
     "invalid_task", InvalidTaskError),
    ("Score", rpc.ScoreRequest(model="babyai-liv", task=TASK, media=npy_bytes(np.zeros((600, 8, 8, 3), np.uint8))),
     grpc.StatusCode.RESOURCE_EXHAUSTED, "payload_too_large", PayloadTooLargeError),  # over the fixture's 512
    ("ScoreBatch", rpc.BatchScoreRequest(model="babyai-liv", tasks=[TASK]), grpc.StatusCode.INVALID_ARGUMENT,
     "invalid_video", InvalidVideoError),
    ("ScoreBatch", rpc.BatchScoreRequest(model="babyai-liv", trajectories=[ZEROS] * 2, tasks=[TASK] * 3),
     grpc.StatusCode.INVALID_ARGUMENT, "invalid_task", InvalidTaskError),
])
def test_errors_end_the_call_with_the_http_apis_json_body(grpc_url, method, request_, status, code, error):
    failed = call(grpc_url, method, request_)
    assert isinstance(failed, grpc.RpcError) and failed.code() == status
    assert json.loads(failed.details())["error"]["code"] == code
    with pytest.raises(error):  # the client raises vlreward's own error, at once: nothing here is transient
        GrpcRewardModel(grpc_url, "babyai-liv", retries=0)._call(method, request_)
    assert call(grpc_url, "Models", rpc.ModelsRequest()).models[0].name == "babyai-liv"  # and it goes on serving
