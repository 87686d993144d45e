"""Each limit at its edge (just under passes, just over is refused with the right status) and backpressure,
on a second live app with small limits and a one-slot queue (`tight`)."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import httpx
import numpy as np
import pytest

from rewards.base import MAX_TASK_CHARS
from serve.client import REQUESTS, RETRIES, RemoteRewardModel, npy_bytes

TASK = "go to the red ball"


def frames_of(count, height=64, width=64):
    return np.random.default_rng(count).integers(0, 256, (count, height, width, 3), dtype=np.uint8)


def post(url, frames, **data):
    return httpx.post(f"{url}/v1/score", timeout=60, files={"frames": ("f.npy", npy_bytes(frames))},
                      data={"task": TASK, **data})


def assert_refused(response, status, code):
    assert response.status_code == status, response.text
    assert response.json()["error"]["code"] == code


def test_frame_count_edge(tight):
    assert post(tight.url, frames_of(tight.max_frames)).status_code == 200
    assert_refused(post(tight.url, frames_of(tight.max_frames + 1)), 413, "payload_too_large")


def test_pixels_per_frame_edge(tight):
    assert post(tight.url, frames_of(2, 64, 64)).status_code == 200
    assert_refused(post(tight.url, frames_of(2, 64, 65)), 413, "payload_too_large")


def test_task_length_edge(tight):
    assert post(tight.url, frames_of(2), task="a" * MAX_TASK_CHARS).status_code == 200
    assert_refused(post(tight.url, frames_of(2), task="a" * (MAX_TASK_CHARS + 1)), 422, "invalid_task")


def padded_request(url, body_bytes):
    """A valid score request whose body is exactly `body_bytes` long (an ignored file part pads it)."""
    def build(pad):
        return httpx.Request("POST", f"{url}/v1/score", data={"task": TASK},
                             files={"frames": ("f.npy", npy_bytes(frames_of(2))), "padding": ("pad", b"x" * pad)})

    overhead = len(build(0).read())
    request = build(body_bytes - overhead)
    assert len(request.read()) == body_bytes
    return request


def test_body_size_edge(tight):
    with httpx.Client(timeout=60) as http:
        assert http.send(padded_request(tight.url, tight.max_body_bytes)).status_code == 200
        assert_refused(http.send(padded_request(tight.url, tight.max_body_bytes + 1)), 413, "payload_too_large")


def test_chunked_body_over_the_limit_is_refused(tight):
    """No Content-Length: a well-formed multipart body is counted while it streams in."""
    body = padded_request(tight.url, tight.max_body_bytes + 1)
    content = body.read()

    def chunks():  # a generator body goes out with Transfer-Encoding: chunked
        for start in range(0, len(content), 2**16):
            yield content[start:start + 2**16]

    response = httpx.post(body.url, content=chunks(), headers={"Content-Type": body.headers["Content-Type"]}, timeout=60)
    assert_refused(response, 413, "payload_too_large")
    assert post(tight.url, frames_of(2)).status_code == 200


def test_full_queue_answers_503_with_retry_after_and_admitted_requests_finish(tight):
    """One request in flight and one queued: the rest are refused at once, never left hanging."""
    slow = frames_of(tight.max_frames)
    with ThreadPoolExecutor(12) as pool:
        responses = list(pool.map(lambda _: post(tight.url, slow), range(12)))
    statuses = [r.status_code for r in responses]
    assert set(statuses) <= {200, 503} and 503 in statuses and 200 in statuses, statuses
    refused = [r for r in responses if r.status_code == 503]
    assert all(r.headers.get("retry-after") and r.elapsed.total_seconds() < 5 for r in refused)
    expected = next(r for r in responses if r.status_code == 200).json()["values"]
    assert all(r.json()["values"] == pytest.approx(expected, abs=1e-5) for r in responses if r.status_code == 200)


def test_client_retries_503_until_every_score_lands(tight):
    client = RemoteRewardModel(tight.url, retries=8, backoff_s=0.2)
    retries_before = RETRIES.labels("/v1/score")._value.get()
    frames = frames_of(tight.max_frames)
    with ThreadPoolExecutor(6) as pool:
        scores = list(pool.map(lambda _: client.score(frames, TASK), range(6)))
    assert all(np.allclose(s.values, scores[0].values, atol=1e-5) for s in scores)
    assert RETRIES.labels("/v1/score")._value.get() > retries_before  # some were refused and retried
    assert REQUESTS.labels("/v1/score", "ok")._value.get() >= 6


def test_client_fails_fast_on_4xx(tight):
    client = RemoteRewardModel(tight.url, retries=5, backoff_s=5)
    with pytest.raises(Exception, match="413"):  # 5 retries at 5 s would take minutes: fail-fast does not retry
        client.score(frames_of(tight.max_frames + 1), TASK)

