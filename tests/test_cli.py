"""The `vlreward` command line, run as a user would (a subprocess)."""

from __future__ import annotations

import subprocess
import sys

import pytest

import rewards


def vlreward(*args: str, timeout: int = 120) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "vlreward.cli", *args], capture_output=True, text=True, timeout=timeout)


@pytest.mark.parametrize("command", [[], ["data", "generate"], ["train"], ["eval"], ["serve"], ["score"], ["models"],
                                     ["rl"]])
def test_help_everywhere(command):
    result = vlreward(*command, "--help")
    assert result.returncode == 0 and "usage: vlreward" in result.stdout


def test_score_in_process_prints_rewards_and_plots(babyai_videos, tmp_path):
    path, episode = babyai_videos["success"][0]
    result = vlreward("score", str(path), "--task", episode.mission, "--plot", str(tmp_path / "curve.png"))
    assert result.returncode == 0, result.stderr
    assert f"model {rewards.DEFAULT_MODEL}  frames {len(episode.frames)}" in result.stdout
    assert (tmp_path / "curve.png").read_bytes().startswith(b"\x89PNG")


def test_score_against_a_goal_image_and_a_demo(babyai_videos, tmp_path):
    import imageio.v2 as imageio

    path, episode = babyai_videos["success"][0]
    imageio.imwrite(tmp_path / "goal.png", episode.frames[-1])
    result = vlreward("score", str(path), "--model", "babyai-liv", "--goal-image", str(tmp_path / "goal.png"))
    assert result.returncode == 0, result.stderr
    assert f"frames {len(episode.frames)}" in result.stdout
    result = vlreward("score", str(path), "--model", "babyai-orca", "--demo", str(path))
    assert result.returncode == 0, result.stderr


def test_score_over_http(service_url, babyai_videos):
    path, episode = babyai_videos["success"][0]
    result = vlreward("score", str(path), "--task", episode.mission, "--url", service_url)
    assert result.returncode == 0, result.stderr
    assert len([line for line in result.stdout.splitlines() if line.strip()[:1].isdigit()]) == len(episode.frames)


def test_score_reports_bad_input_clearly(service_url, tmp_path):
    (tmp_path / "bad.mp4").write_bytes(b"not a video")
    result = vlreward("score", str(tmp_path / "bad.mp4"), "--task", "go to the red ball", "--url", service_url)
    assert result.returncode == 1 and "422: cannot decode the video" in result.stderr


def test_data_generate_rejects_bad_arguments(tmp_path):
    result = vlreward("data", "generate", "--tasks", "GoToTheMoon", "--episodes", "2", "--out", str(tmp_path / "d"))
    assert result.returncode != 0 and "unknown BabyAI level" in result.stderr
    assert not (tmp_path / "d" / "manifest.jsonl").exists()


def test_score_npy_against_a_demo_over_http(service_url, babyai_videos, tmp_path):
    import numpy as np

    episode, demo = babyai_videos["success"][0][1], babyai_videos["success"][1][0]
    np.save(tmp_path / "rollout.npy", episode.frames)
    result = vlreward("score", str(tmp_path / "rollout.npy"), "--demo", str(demo), "--model", "babyai-orca",
                      "--url", service_url)
    assert result.returncode == 0, result.stderr
    assert f"model babyai-orca  frames {len(episode.frames)}" in result.stdout


def test_score_needs_exactly_one_goal(babyai_videos):
    result = vlreward("score", str(babyai_videos["success"][0][0]))
    assert result.returncode == 1 and "exactly one goal" in result.stderr


def test_models_lists_what_a_service_serves(service_url):
    result = vlreward("models", "--url", service_url)
    assert result.returncode == 0, result.stderr
    assert [line.split()[:3] for line in result.stdout.splitlines()[1:]] == [
        ["babyai-liv", "LIVReward", "text,image"], ["babyai-orca", "ORCAReward", "demo"],
        [rewards.DEFAULT_MODEL, "ProgressReward", "text"]]


def test_serve_refuses_a_bad_config_before_starting_ray(tmp_path):
    (tmp_path / "serve.yaml").write_text("models:\n  - model: babyai-liv\n    replicas: 2\n")
    result = vlreward("serve", "--config", str(tmp_path / "serve.yaml"))
    assert result.returncode == 1 and "replicas" in result.stderr
