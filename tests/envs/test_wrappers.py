import doctest

import gymnasium as gym
import minigrid  # noqa: F401  (registers the BabyAI-* ids)
import numpy as np
import pytest

import envs.wrappers
from envs.babyai import make_env
from envs.wrappers import RenderedFrames, TaskObservation, resize_frame
from rewards.text import shared_minilm


def test_docstring_examples_run():
    assert doctest.testmod(envs.wrappers).failed == 0


def test_rendered_frames_stride_size_and_last_step():
    raw = gym.make("BabyAI-GoToRedBall-v0", render_mode="rgb_array", max_steps=7)
    env = RenderedFrames(raw, size=(48, 32), stride=3)
    _, info = env.reset(seed=1)
    assert info["frame"].shape == (48, 32, 3) and info["frame"].dtype == np.uint8
    assert info["frame"].flags.writeable  # torch.from_numpy warns on read-only arrays (PIL's buffer)
    assert np.array_equal(info["frame"], resize_frame(raw.render(), (48, 32)))
    has_frame = []
    for _ in range(7):
        *_, terminated, truncated, info = env.step(0)  # turning left never solves the level
        has_frame.append("frame" in info)
    assert truncated and has_frame == [False, False, True, False, False, True, True]  # step 7 ends the episode


def test_rendered_frames_keeps_native_size_and_checks_arguments():
    env = RenderedFrames(gym.make("BabyAI-GoToRedBall-v0", render_mode="rgb_array"))
    assert env.reset(seed=0)[1]["frame"].shape == (256, 256, 3)
    with pytest.raises(ValueError, match="rgb_array"):
        RenderedFrames(gym.make("BabyAI-GoToRedBall-v0"))
    with pytest.raises(ValueError, match="stride"):
        RenderedFrames(gym.make("BabyAI-GoToRedBall-v0", render_mode="rgb_array"), stride=0)


def test_task_observation_embeds_each_episodes_mission():
    env = TaskObservation(make_env("GoToLocal"))
    missions = {}
    for seed in range(4):
        obs, info = env.reset(seed=seed)
        assert env.observation_space.contains(obs)
        np.testing.assert_array_equal(obs[:-384], make_env("GoToLocal").reset(seed=seed)[0])
        missions[info["mission"]] = obs[-384:]
        obs, *_, info = env.step(2)
        assert np.array_equal(obs[-384:], missions[info["mission"]])  # fixed for the whole episode
    assert len(missions) > 1
    texts = list(missions)
    expected = shared_minilm()(texts).numpy()
    np.testing.assert_allclose(np.stack([missions[t] for t in texts]), expected, atol=1e-5)


def test_task_observation_caches_and_takes_any_encoder():
    calls = []

    def encoder(texts):
        calls.extend(texts)
        return np.array([[len(t), 1.0] for t in texts]) / 100

    env = TaskObservation(make_env("GoToRedBall"), encoder=encoder)
    assert env.observation_space.shape == (151 + 2,)
    missions = [env.reset(seed=seed)[1]["mission"] for seed in (0, 0, 1, 1, 0)]
    assert calls[1:] == list(dict.fromkeys(missions))  # one call per new mission, after the probe for the size
    obs, info = env.reset(seed=2)
    np.testing.assert_allclose(obs[-2:], [len(info["mission"]) / 100, 0.01], rtol=1e-6)


def test_task_observation_rejects_dict_observations():
    with pytest.raises(ValueError, match="flat Box"):
        TaskObservation(gym.make("BabyAI-GoToRedBall-v0"), encoder=lambda texts: np.zeros((1, 4)))
