"""`bench.rl_overhead`'s render timing: every suite renders its frames through `render()`, which the bench times."""

from __future__ import annotations

import pytest

from bench.rl_overhead import render_cost, time_calls
from envs.suites import get_suite

SUITE_TASKS = [("babyai", "GoToRedBall"), ("metaworld", "drawer-open")]


@pytest.mark.parametrize("env, task", SUITE_TASKS)
def test_render_cost_renders_frames_of_the_asked_size(env, task):
    cost = render_cost(env, task, 64, frames=5)
    assert cost["render"] == "64 px" and cost["frames_per_s"] > 0 and cost["kb_per_frame"] == 64 * 64 * 3 / 1024


@pytest.mark.parametrize("env, task", SUITE_TASKS)
def test_the_timed_render_is_what_fills_info_frame(env, task):
    sampler_env = get_suite(env).make_env(task, seed=0, render_size=32)
    calls = time_calls(type(sampler_env), "render")
    try:
        _, info = sampler_env.reset()
        sampler_env.step(sampler_env.action_space.sample())
    finally:
        setattr(type(sampler_env), "render", calls.inner)
        sampler_env.close()
    assert len(calls) == 2 and info["frame"].shape == (32, 32, 3)
