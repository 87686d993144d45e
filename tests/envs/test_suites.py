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


@pytest.mark.parametrize("name", sorted(SUITES))
def test_a_frame_stride_renders_the_reset_every_kth_step_and_the_last_only(name, monkeypatch):
    """`vlreward rl --frame-stride 3`: frames on the reset, steps 3 and 6 and the step a TimeLimit cuts (7); the
    suite's env renders nothing in between (what the stride saves), and the frames are those of an unstrided env."""
    suite = get_suite(name)
    task = suite.resolve([])[0]
    env_class = type(suite.make_env(task, seed=0, render_size=32))
    renders = []
    original = env_class.render
    monkeypatch.setattr(env_class, "render", lambda self: renders.append(1) or original(self))
    strided = make_multitask_env(name, [task], seed=0, render_size=32, max_episode_steps=7, frame_stride=3)
    plain = make_multitask_env(name, [task], seed=0, render_size=32, max_episode_steps=7)
    _, info = strided.reset(seed=5)
    assert np.array_equal(info["frame"], plain.reset(seed=5)[1]["frame"])
    strided.action_space.seed(0)  # none of these 7 actions ends the episode early
    actions = [strided.action_space.sample() for _ in range(7)]
    renders.clear()
    framed = []
    for step, action in enumerate(actions, 1):
        *_, terminated, truncated, info = strided.step(action)
        plain_info = plain.step(action)[-1]
        if "frame" in info:
            framed.append(step)
            assert np.array_equal(info["frame"], plain_info["frame"])
        if terminated or truncated:
            break
    assert framed == [3, 6, 7] and len(renders) == 3 + 7  # the strided env's 3 frames, the plain env's 7
