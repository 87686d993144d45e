"""Shared fixtures: one local Ray cluster and one live Serve application per test session."""

from __future__ import annotations

import os

import numpy as np
import pytest

os.environ.setdefault("RAY_AUTH_MODE", "disabled")  # Ray 2.60 turns token auth on by default
SERVE_PORT = int(os.environ.get("VLREWARD_TEST_PORT", "8123"))


@pytest.fixture(scope="session")
def ray_cluster():
    import ray

    from serve.app import init_ray

    init_ray(num_cpus=4)
    yield
    ray.shutdown()


@pytest.fixture(scope="session")
def service_url(ray_cluster):
    """The shipped default critic behind the real HTTP ingress, on the session's local Ray."""
    from ray import serve

    from serve.app import ServeArgs, run_local

    yield run_local(ServeArgs(models=["babyai-liv", "babyai-orca"], max_frames=512), port=SERVE_PORT)
    serve.shutdown()


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
