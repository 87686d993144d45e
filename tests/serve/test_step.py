"""POST /v1/score/step: streamed rewards over real HTTP agree with the single form on the same frames."""

from __future__ import annotations

import httpx
import numpy as np
import pytest

import rewards
from serve.client import RemoteRewardModel, npy_bytes


def stream(model, frames, goal):
    state, streamed = None, []
    for frame in frames:
        reward, state = model.score_step(frame, goal, state)
        streamed.append(reward)
    return np.array(streamed)


def test_streamed_text_rewards_equal_the_scored_video(service_url, babyai_videos):
    frames, task = babyai_videos["success"][0][1].frames[:12], babyai_videos["success"][0][1].mission
    remote = RemoteRewardModel(service_url)
    np.testing.assert_allclose(stream(remote, frames, task), remote.score(frames, task).rewards, atol=1e-5)


def test_streamed_orca_rewards_equal_the_scored_prefixes(service_url, babyai_videos):
    demo, frames = babyai_videos["success"][0][1].frames, babyai_videos["success"][1][1].frames[:6]
    remote = RemoteRewardModel(service_url, "babyai-orca")
    expected = [remote.score(frames[: k + 1], demo).rewards[-1] for k in range(len(frames))]
    np.testing.assert_allclose(stream(remote, frames, demo), expected, atol=1e-5)


def test_vector_step_keeps_streams_apart(service_url, babyai_videos):
    """Two streams with different tasks in one request per step, as a vector env sends them."""
    a, b = (babyai_videos[kind][0][1] for kind in ("success", "failure"))
    length = min(len(a.frames), len(b.frames), 8)
    remote = RemoteRewardModel(service_url)
    states, streamed = [None, None], []
    for t in range(length):
        step_rewards, states = remote.score_steps(np.stack([a.frames[t], b.frames[t]]), [a.mission, "open the door"],
                                                  states)
        streamed.append(step_rewards)
    streamed = np.array(streamed)
    np.testing.assert_allclose(streamed[:, 0], remote.score(a.frames[:length], a.mission).rewards, atol=1e-5)
    np.testing.assert_allclose(streamed[:, 1], remote.score(b.frames[:length], "open the door").rewards, atol=1e-5)


@pytest.mark.parametrize("state, code", [("not base64!", "invalid_state"), ("aGVsbG8=", "invalid_state")])
def test_forged_states_are_422_and_the_service_keeps_serving(service_url, random_frames, state, code):
    response = httpx.post(f"{service_url}/v1/score/step", timeout=60, data={"task": "go to the red ball", "state": state},
                          files={"frames": ("f.npy", npy_bytes(random_frames[:1]))})
    assert response.status_code == 422 and response.json()["error"]["code"] == code
    remote = RemoteRewardModel(service_url)
    _, good_state = remote.score_step(random_frames[0], "go to the red ball")
    wrong_shape = {"value": np.zeros(3, np.float32)}
    with pytest.raises(rewards.InvalidStateError, match="value"):
        remote.score_step(random_frames[1], "go to the red ball", wrong_shape)
    assert np.isfinite(remote.score_step(random_frames[1], "go to the red ball", good_state)[0])


def test_step_needs_one_goal_form(service_url, random_frames):
    response = httpx.post(f"{service_url}/v1/score/step", timeout=60,
                          data={"task": "go to the red ball", "tasks": '["a", "b"]'},
                          files={"frames": ("f.npy", npy_bytes(random_frames[:2]))})
    assert response.status_code == 422 and "tasks" in response.json()["error"]["message"]
