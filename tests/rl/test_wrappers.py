"""Gymnasium wrappers on real BabyAI episodes with the shipped LIV critic, in-process and through the live service."""

from __future__ import annotations

import doctest

import gymnasium as gym
import numpy as np
import pytest

import rl.wrappers
from envs.babyai import make_env, rollout
from rewards import load_model
from rl.mix import RewardMix
from rl.wrappers import VectorVLReward, VLReward


@pytest.fixture(scope="module")
def liv():
    return load_model("babyai-liv")


@pytest.fixture(params=["in-process", "service"])
def streaming_model(request, liv):
    """The same critic in this process, or behind the live service (one HTTP request per `score_steps` call)."""
    if request.param == "in-process":
        return liv
    from serve.client import RemoteRewardModel

    return RemoteRewardModel(request.getfixturevalue("service_url"), "babyai-liv")


@pytest.fixture(scope="module")
def episode():
    """A noisy expert that succeeds after some wandering: rewards go up and down."""
    return next(e for s in range(20) if (e := rollout("GoToRedBall", s, "noisy_expert")).success and len(e.actions) > 8)


def _replay(env: gym.Env, episode) -> tuple[list[float], list[dict], tuple[bool, bool]]:
    env.reset(seed=episode.seed)
    rewards, infos = [], []
    for action in episode.actions:
        _, reward, terminated, truncated, info = env.step(action)
        rewards.append(reward)
        infos.append(info)
    return rewards, infos, (terminated, truncated)


def test_streamed_rewards_equal_the_offline_score_of_the_same_episode(streaming_model, liv, episode):
    env = VLReward(make_env(episode.task), streaming_model, mix=RewardMix(mode="dense+sparse"))
    rewards, infos, done = _replay(env, episode)
    offline = liv.score(episode.frames, episode.mission).rewards[1:]
    np.testing.assert_allclose(rewards, offline + np.eye(len(offline))[-1], atol=1e-5)  # + 1·success on the last step
    np.testing.assert_allclose([i["vlreward"]["served"] for i in infos], offline, atol=1e-5)
    assert done == (True, False)  # the env's own flags: the success step terminates, nothing truncates


def test_episode_relabelling_scores_once_at_the_end(liv, episode):
    calls = []
    model = type("Counting", (), {"score": lambda self, f, g: calls.append(len(f)) or liv.score(f, g)})()
    rewards, infos, _ = _replay(VLReward(make_env(episode.task), model, relabel="episode"), episode)
    offline = liv.score(episode.frames, episode.mission).rewards[1:]
    assert calls == [len(episode.frames)]  # one call, whole episode
    assert rewards[:-1] == [0.0] * (len(rewards) - 1)
    assert rewards[-1] == pytest.approx(offline.sum(), abs=1e-5)
    np.testing.assert_allclose(infos[-1]["vlreward"]["rewards"], offline, atol=1e-5)  # for a replay buffer


class CountingStreams:
    """A model with every `score_steps` call recorded (the remote client sends one request per call)."""

    def __init__(self, model):
        self.model, self.calls = model, []

    def score_steps(self, frames, goals, states):
        self.calls.append((frames.copy(), list(goals), list(states)))
        return self.model.score_steps(frames, goals, states)


def test_vector_env_sends_one_call_per_step_and_restarts_streams_on_autoreset(streaming_model, liv):
    envs = gym.vector.SyncVectorEnv(
        [lambda s=s: gym.wrappers.TimeLimit(make_env("GoToRedBall", seed=s), max_episode_steps=4 + s) for s in (0, 1)])
    model = CountingStreams(streaming_model)
    envs = VectorVLReward(envs, model)
    _, infos = envs.reset(seed=0)
    frames = [[infos["frame"][i]] for i in range(2)]  # the episode each sub-env is in
    missions = [infos["mission"][i] for i in range(2)]
    episodes_done = 0
    for step in range(12):
        _, rewards, terminated, truncated, infos = envs.step(np.array([2, 1]))
        assert len(model.calls) == step + 2  # reset + one per vector step
        for i in range(2):
            if len(frames[i]) == 0:  # autoreset step: a fresh stream, no step reward
                assert model.calls[-1][2][i] is None and rewards[i] == 0.0
                frames[i], missions[i] = [infos["frame"][i]], infos["mission"][i]
                continue
            frames[i].append(infos["frame"][i])
            expected = liv.score(np.stack(frames[i]), missions[i]).rewards[-1]
            assert rewards[i] == pytest.approx(expected, abs=1e-5)
            if terminated[i] or truncated[i]:
                frames[i], episodes_done = [], episodes_done + 1
    assert episodes_done >= 3


def test_bad_settings_raise(liv):
    with pytest.raises(ValueError, match="relabel"):
        VLReward(make_env("GoToRedBall"), liv, relabel="sometimes")
    with pytest.raises(ValueError, match="NormalizeReward"):
        VLReward(make_env("GoToRedBall"), liv, mix=RewardMix(normalize=True))


def test_docstring_examples_run():
    assert doctest.testmod(rl.wrappers, optionflags=doctest.ELLIPSIS).failed == 0
