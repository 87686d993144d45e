"""Shared fixtures: one local Ray cluster and one live Serve application per test session."""

from __future__ import annotations

import os

import numpy as np
import pytest

os.environ.setdefault("RAY_AUTH_MODE", "disabled")  # Ray 2.60 turns token auth on by default
# Serve's proxy binds with SO_REUSEPORT by default: two test sessions on one port would silently share each other's
# connections (requests answered by the other session's apps). Each session takes a free port, and never shares it.
os.environ.setdefault("SERVE_SOCKET_REUSE_PORT_ENABLED", "0")


def _free_port() -> int:
    """A free port of the tests' own range, apart from what services pick (serve.app.free_ports' defaults)."""
    from serve.app import free_ports

    return free_ports(1, 31000, 32000)


SERVE_PORT = int(os.environ.get("VLREWARD_TEST_PORT") or _free_port())
GRPC_PORT = _free_port()


@pytest.fixture
def free_port():
    """`free_port()`: a port nothing listens on, for a server a test starts."""
    return _free_port


@pytest.fixture(scope="session")
def ray_cluster():
    from serve.app import init_ray, stop_local

    init_ray(num_cpus=4, _system_config={"metrics_report_interval_ms": 1000})  # metrics reach Prometheus in ~1 s
    yield
    stop_local()  # HAProxy and its files in /tmp go too


@pytest.fixture(scope="session")
def service_url(ray_cluster):
    """Shipped critics behind the real HTTP (and gRPC: `grpc_url`) ingress, on the session's local Ray: the fast
    small-CNN baseline first (the service's default route), ORCA, and the shipped default critic
    (rewards.DEFAULT_MODEL)."""
    from ray import serve

    from rewards import DEFAULT_MODEL
    from serve.app import ServeArgs, run_local

    # the cluster layout (deploy/serve_config.yaml): a Gateway in front; `vlreward serve`'s tests cover the model one;
    # this Ray started here with HAProxy in front, as `vlreward serve` starts it (serve.app.init_ray, proxy auto)
    yield run_local(ServeArgs(models=["babyai-liv", "babyai-orca", DEFAULT_MODEL], max_frames=512, ingress="gateway",
                              grpc_port=GRPC_PORT), port=SERVE_PORT)
    serve.shutdown()


@pytest.fixture(scope="session")
def grpc_url(service_url):
    """The same service's gRPC port (serve/rpc.py); calls name their Serve application in their metadata."""
    return f"grpc://127.0.0.1:{GRPC_PORT}"


def wait_for_route(url: str, timeout_s: float = 120) -> None:
    """Wait until Serve's proxy routes `url` to its app: serve.run returns once the app runs, and on a loaded machine
    the proxy learns the new route prefix seconds later (until then the app at / answers 404)."""
    import time

    import httpx

    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"{url}/healthz", timeout=10).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.5)
    raise TimeoutError(f"{url} was not routed within {timeout_s} s")


@pytest.fixture(scope="session")
def served_route():
    return wait_for_route


def tight_app(service_url: str, ingress: str):
    """An app on the same Serve with small limits and a one-slot queue, for edges and backpressure."""
    from types import SimpleNamespace

    from ray import serve

    from serve.app import ModelSpec, ServeArgs, build_app

    spec = ModelSpec(model="babyai-liv", num_cpus=0, max_ongoing_requests=1, max_queued_requests=1)
    args = ServeArgs(models=[spec], max_frames=256, max_pixels_per_frame=64 * 64, max_body_bytes=4 * 2**20,
                     retry_after_s=3, body_read_timeout_s=2, max_concurrent_bodies=8, ingress=ingress)
    name = f"tight-{ingress}"
    serve.run(build_app(args), name=name, route_prefix=f"/{name}")
    wait_for_route(f"{service_url}/{name}")
    yield SimpleNamespace(url=f"{service_url}/{name}", **args.model_dump(include={
        "max_frames", "max_pixels_per_frame", "max_body_bytes", "retry_after_s", "body_read_timeout_s",
        "max_concurrent_bodies"}))
    serve.delete(name)


@pytest.fixture(scope="session")
def tight(service_url):
    """The tight app behind a gateway ingress deployment (the cluster layout)."""
    yield from tight_app(service_url, "gateway")


@pytest.fixture(scope="session")
def tight_model_ingress(service_url):
    """The tight app whose model replica is its own ingress (`vlreward serve`'s default layout)."""
    yield from tight_app(service_url, "model")


@pytest.fixture(scope="session")
def babyai_videos(tmp_path_factory):
    """Real mp4 files of held-out GoToRedBall episodes: expert successes and random-policy failures."""
    from envs.babyai import rollout
    from envs.generate import write_video

    folder = tmp_path_factory.mktemp("videos")
    videos = {"success": [], "failure": []}
    for seed in range(100_000, 100_040):
        if len(videos["success"]) < 3:
            episode = rollout("GoToRedBall", seed, "expert")
            videos["success"].append((write_video(folder / f"expert-{seed}.mp4", episode.frames), episode))
        random_episode = rollout("GoToRedBall", seed, "random")
        if not random_episode.success and len(videos["failure"]) < 3:
            videos["failure"].append((write_video(folder / f"random-{seed}.mp4", random_episode.frames), random_episode))
    return videos


@pytest.fixture
def random_frames():
    return np.random.default_rng(0).integers(0, 256, (6, 64, 64, 3), dtype=np.uint8)


def check_streaming_matches_score(model, video: np.ndarray, goal, tolerance: float = 1e-5) -> None:
    """Streaming agrees with offline scoring: step k pays score(video[:k+1]).rewards[k], for one stream and for
    a vector of streams stepped together (whose states must stay separate)."""
    expected = [float(model.score(video[: k + 1], goal).rewards[-1]) for k in range(len(video))]
    state, streamed = None, []
    for frame in video:
        reward, state = model.score_step(frame, goal, state)
        streamed.append(reward)
    np.testing.assert_allclose(streamed, expected, rtol=tolerance, atol=tolerance)
    states, vector = [None, None], []
    for frame in video:  # stream 0 plays the video, stream 1 replays its first frame
        rewards, states = model.score_steps(np.stack([frame, video[0]]), [goal, goal], states)
        vector.append(rewards)
    np.testing.assert_allclose(np.array(vector)[:, 0], expected, rtol=tolerance, atol=tolerance)
    first_only = [float(model.score(video[:1].repeat(k + 1, 0), goal).rewards[-1]) for k in range(len(video))]
    np.testing.assert_allclose(np.array(vector)[:, 1], first_only, rtol=tolerance, atol=tolerance)


@pytest.fixture
def streaming_check():
    return check_streaming_matches_score
