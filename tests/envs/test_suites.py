"""The suite registry: every suite gives what data generation and RL training look up, with the same contract."""

import math

import numpy as np
import pytest

from envs.suites import SUITES, TaskSampler, get_suite, make_multitask_env


def test_unknown_suite_names_the_valid_ones():
    with pytest.raises(ValueError, match="babyai, metaworld"):
        get_suite("atari")


@pytest.mark.parametrize("name", sorted(SUITES))
def test_every_suite_keeps_the_env_contract(name):
    suite = get_suite(name)
    task = suite.resolve([])[0]
    assert suite.canonical_task(task) == task and set(suite.policies) >= {"expert", "random"}
    env = suite.make_env(task, seed=3, render_size=suite.render_size)
    _, info = env.reset(seed=3)
    assert info["frame"].shape == (suite.render_size, suite.render_size, 3) and info["frame"].dtype == np.uint8
    assert isinstance(info["mission"], str) and info["mission"] in suite.sentences(task, info["mission"])
    _, _, _, _, info = env.step(env.action_space.sample())
    assert isinstance(info["success"], bool) and (math.isnan(info["progress"]) or 0 <= info["progress"] <= 1)
    env.close()
    episode = suite.rollout(task, 3, "expert", render_size=suite.render_size, max_steps=suite.max_steps)
    assert episode.success and episode.frames.shape[1:] == (suite.render_size, suite.render_size, 3)


def test_unknown_task_names_the_valid_ones():
    with pytest.raises(ValueError, match="GoToRedBall"):
        get_suite("babyai").resolve(["GoToTheMoon"])


def test_multitask_env_samples_tasks_per_reset_and_reseeds_the_choice():
    env = make_multitask_env("babyai", ["GoToRedBall", "PickupLoc"], seed=0, max_episode_steps=5)
    assert isinstance(env, TaskSampler)
    infos = [env.reset(seed=seed)[1] for seed in range(12)]
    assert {info["mission"].split()[0] for info in infos} == {"go", "pick"}
    assert all(info["task"] == ("GoToRedBall" if info["mission"].startswith("go") else "PickupLoc") for info in infos)
    first = [env.reset(seed=7)[1]["mission"] for _ in range(2)]
    assert first[0] == first[1]
    truncated = False
    for _ in range(5):
        *_, truncated, info = env.step(env.action_space.sample())
    assert truncated and info["task"] == ("GoToRedBall" if first[0].startswith("go") else "PickupLoc")
