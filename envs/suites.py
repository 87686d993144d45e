"""Environment suites as a registry: what data generation, RL training and the CLI need of a suite, in one place.

A new suite is one module with a `SUITE = EnvSuite(...)` and one line in `SUITES`. Suites load on first use
(Meta-World imports MuJoCo), so asking for BabyAI never pays for Meta-World.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from typing import Callable, Sequence

import gymnasium as gym
import numpy as np

from envs.episode import Episode
from envs.wrappers import FrameStride

# suite name -> the module that defines its SUITE
SUITES = {"babyai": "envs.babyai", "metaworld": "envs.metaworld"}


@dataclass(frozen=True)
class EnvSuite:
    """One suite's tasks, sentences, envs, experts and progress labels.

    Every env it makes renders frames into `info["frame"]`, puts the instruction in `info["mission"]`, success in
    `info["success"]` and progress toward it (0..1, NaN where unknown) in `info["progress"]`.
    """

    name: str
    default_tasks: tuple[str, ...]  # what `vlreward data generate` uses without --tasks
    canonical_task: Callable[[str], str]  # a short name or gym id -> the canonical name; ValueError lists valid ones
    sentences: Callable[[str, str], tuple[str, ...]]  # (task, an episode's mission) -> sentence and paraphrases
    make_env: Callable[..., gym.Env]  # make_env(task, seed=None, render_size=...) -> a gymnasium env
    env_class: type[gym.Env]  # the class of what make_env returns: its `render` draws the frames
    rollout: Callable[..., Episode]  # rollout(task, seed, policy, render_size=, max_steps=, attempt=) -> Episode
    policies: tuple[str, ...]  # the scripted policies rollout knows: expert, random, noisy_expert, other_task
    render_size: int  # the suite's native frame side
    max_steps: int | None  # step limit of a generated episode (None: the env's own)

    def resolve(self, tasks: Sequence[str]) -> list[str]:
        """Canonical names of `tasks` (the suite's defaults when empty)."""
        return [self.canonical_task(task) for task in (tasks or self.default_tasks)]


def get_suite(name: str) -> EnvSuite:
    """The registered suite `name`; ValueError names the valid ones."""
    if name not in SUITES:
        raise ValueError(f"unknown environment suite {name!r}; valid suites: {', '.join(SUITES)}")
    return importlib.import_module(SUITES[name]).SUITE


class TaskSampler(gym.Env):
    """One env over several tasks: each reset picks one at random (their spaces must agree); every info names it
    (`info["task"]`), so success can be counted per task.

    A seeded reset reseeds the choice too, so the sub-envs of a vector env (seeds s, s+1, ...) differ.
    """

    def __init__(self, envs: Sequence[gym.Env], seed: int | None, names: Sequence[str]):
        self.envs, self.names, self.rng = list(envs), list(names), np.random.default_rng(seed)
        self.observation_space, self.action_space = self.envs[0].observation_space, self.envs[0].action_space
        self.index = 0
        self.env = self.envs[0]

    def reset(self, *, seed=None, options=None):
        if seed is not None:
            self.rng = np.random.default_rng(seed)
        self.index = int(self.rng.integers(len(self.envs)))
        self.env = self.envs[self.index]
        obs, info = self.env.reset(seed=seed, options=options)
        return obs, {**info, "task": self.names[self.index]}

    def step(self, action):
        obs, reward, terminated, truncated, info = self.env.step(action)
        return obs, reward, terminated, truncated, {**info, "task": self.names[self.index]}

    def render(self):
        return self.env.render()

    def close(self):
        for env in self.envs:
            env.close()


def make_multitask_env(suite: str, tasks: Sequence[str], seed: int | None = None, render_size: int | None = None,
                       max_episode_steps: int = 0, frame_stride: int = 1) -> gym.Env:
    """The suite's env of one task, or a `TaskSampler` over several; `max_episode_steps` > 0 truncates episodes.
    `render_size` None: the suite's frame side; 0: no frames (a run that needs no reward model renders nothing).
    `frame_stride` > 1: frames on every `frame_stride`-th step only (and the reset and last step: `FrameStride`)."""
    spec = get_suite(suite)
    size = spec.render_size if render_size is None else render_size
    renderers = [spec.make_env(task, seed=seed, render_size=size) for task in tasks]
    envs = [gym.wrappers.TimeLimit(env, max_episode_steps=max_episode_steps) for env in renderers] \
        if max_episode_steps else renderers
    env = envs[0] if len(envs) == 1 else TaskSampler(envs, seed, tasks)
    return FrameStride(env, frame_stride, renderers) if frame_stride > 1 and size else env
