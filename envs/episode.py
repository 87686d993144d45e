"""One recorded episode and the loop that records it, shared by every env adapter."""

from __future__ import annotations

import dataclasses
from typing import Any, Callable

import gymnasium as gym
import numpy as np

# policy(obs, info) -> an action, or None to end the episode (e.g. a hard negative that finished its own task)
Policy = Callable[[np.ndarray, dict], Any]


@dataclasses.dataclass(frozen=True)
class Episode:
    """One recorded episode: T actions and T+1 frames/states, the initial ones first.

    `success` is what the env reported (at any step); `success_step` is the first frame index at which it did.
    `progress` is the env's ground-truth task progress per frame in [0, 1], where the env has one.
    A hard negative (policy "other_task") sets `performed` to the mission its policy actually pursued.
    """

    frames: np.ndarray  # uint8 [T+1, H, W, 3]
    states: np.ndarray  # float32 [T+1, D], the policy's observations
    actions: np.ndarray  # [T] (discrete) or [T, A] (continuous)
    mission: str
    success: bool
    task: str
    seed: int
    policy: str
    success_step: int | None = None
    progress: np.ndarray | None = None  # float32 [T+1]
    performed: str | None = None


def record(
    env: gym.Env,
    seed: int,
    make_policy: Callable[[gym.Env], Policy],
    max_steps: int | None = None,
    steps_after_success: int | None = None,
) -> tuple[list[np.ndarray], list[np.ndarray], list[Any], list[dict]]:
    """Reset `env` with `seed`, then act until termination, truncation, `max_steps` actions, the policy
    returning None, or `steps_after_success` steps after the first success (None: keep going).

    `make_policy(env)` runs after the reset (a planner such as BabyAI's bot reads the initial state).
    Returns per-frame lists (frames, states, infos; T+1 each, the reset first) and the T actions.
    """
    obs, info = env.reset(seed=seed)
    policy = make_policy(env)
    frames, states, actions, infos = [info["frame"]], [obs], [], [info]
    while max_steps is None or len(actions) < max_steps:
        action = policy(obs, info)
        if action is None:
            break
        obs, _, terminated, truncated, info = env.step(action)
        frames.append(info["frame"])
        states.append(obs)
        actions.append(action)
        infos.append(info)
        success_step = first_success(infos) if steps_after_success is not None else None
        if terminated or truncated or (success_step is not None and len(actions) - success_step >= steps_after_success):
            break
    return frames, states, actions, infos


def first_success(infos: list[dict]) -> int | None:
    """Index of the first frame whose info reports success, or None."""
    return next((t for t, info in enumerate(infos) if info["success"]), None)
