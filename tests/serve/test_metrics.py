"""Prometheus metrics: the service's through Ray's metrics agent, the RL-side client's through prometheus-client."""

from __future__ import annotations

import re
import time

import httpx
import pytest

from rewards import UnknownModelError
from serve.client import RemoteRewardModel, start_metrics_server
from serve.grpc_client import GrpcRewardModel
from serve.rpc import ScoreRequest


def sample(text: str, name: str, **labels) -> float:
    """Sum of a metric's samples whose labels include `labels` (0 when absent)."""
    total = 0.0
    for line in text.splitlines():
        match = re.match(rf"{name}\{{(.*)\}} ([0-9.e+-]+)$", line)
        if match and all(f'{k}="{v}"' in match.group(1) for k, v in labels.items()):
            total += float(match.group(2))
    return total


def test_replica_and_ingress_metrics_reach_rays_prometheus_endpoint(service_url, grpc_url, random_frames):
    """Counters grow by what this test sends (other tests share the service, so compare with a snapshot)."""
    import ray

    port = ray._private.worker.global_worker.node.metrics_export_port

    def scrape():
        return httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=10).text

    counters = {  # name, labels -> at least this much growth
        ("ray_vlreward_requests_total", (("route", "/v1/score"), ("status", "200"))): 3,
        ("ray_vlreward_requests_total", (("route", "unmatched"), ("status", "404"))): 1,
        ("ray_vlreward_requests_total", (("route", "grpc:ScoreRequest"), ("status", "200"))): 1,
        ("ray_vlreward_requests_total", (("route", "grpc:ScoreRequest"), ("status", "404"))): 1,
        ("ray_vlreward_frames_scored_total", (("model", "babyai-liv"),)): 3 * len(random_frames),
        ("ray_vlreward_goal_cache_hits_total", (("model", "babyai-liv"),)): 2,
        ("ray_vlreward_goal_cache_misses_total", (("model", "babyai-liv"),)): 1,
        ("ray_vlreward_batch_frames_count", ()): 3,
        ("ray_vlreward_model_latency_seconds_count", ()): 3,
        ("ray_vlreward_decode_latency_seconds_count", ()): 3,
        ("ray_vlreward_request_latency_seconds_count", ()): 4,
    }

    def growth(before, after):
        return {key: sample(after, key[0], **dict(key[1])) - sample(before, key[0], **dict(key[1])) for key in counters}

    before = scrape()
    client = RemoteRewardModel(service_url)
    task = f"go to the red dot {time.monotonic_ns()}"  # new to the cache: one miss, then two hits
    for _ in range(3):
        client.score(random_frames, task)
    httpx.get(f"{service_url}/v1/nope")
    over_grpc = GrpcRewardModel(grpc_url)
    over_grpc.score(random_frames, task)
    with pytest.raises(UnknownModelError):
        over_grpc._call("Score", ScoreRequest(model="nope", task=task))
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        grown = growth(before, scrape())
        if all(grown[key] >= least for key, least in counters.items()):
            break
        time.sleep(1)
    assert {key[0] + str(key[1]): grown[key] for key, least in counters.items() if grown[key] < least} == {}


def test_client_metrics_count_requests_and_failures_on_the_trainers_port(service_url, random_frames, free_port):
    from rewards import InvalidTaskError

    port = free_port()  # for the trainer's metrics server
    start_metrics_server(port, "127.0.0.1")
    client = RemoteRewardModel(service_url)
    client.score(random_frames, "go to the red ball")
    with pytest.raises(InvalidTaskError):
        client.score(random_frames, " ")
    text = httpx.get(f"http://127.0.0.1:{port}/metrics").text
    assert sample(text, "vlreward_client_requests_total", route="/v1/score", outcome="ok") >= 1
    assert sample(text, "vlreward_client_requests_total", route="/v1/score", outcome="failed") >= 1
    assert sample(text, "vlreward_client_request_latency_seconds_count", route="/v1/score") >= 1
