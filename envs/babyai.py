"""BabyAI (MiniGrid) adapter: state-vector observations for the policy, RGB frames and the mission for the reward.

The policy sees the 7x7 egocentric grid encoding (cheap to learn from); the reward model sees full top-down
frames in `info["frame"]`, as ORCA and VLC do on Meta-World (design.md §6).
"""

from __future__ import annotations

import contextlib
import dataclasses
import io
import math
import re

import gymnasium as gym
import minigrid  # noqa: F401  (registers the BabyAI-* ids)
import numpy as np
from minigrid.core.actions import Actions
from minigrid.utils.baby_ai_bot import BabyAIBot

# short name ("GoToRedBall") -> gym id ("BabyAI-GoToRedBall-v0")
_LEVELS = {re.sub(r"^BabyAI-|-v\d+$", "", env_id): env_id for env_id in gym.registry if env_id.startswith("BabyAI-")}
# max value of each image channel (object index, colour index, door state), so the scaled obs lies in [0, 1]
_IMAGE_MAX = np.array([10.0, 5.0, 2.0], dtype=np.float32)
# random actions only move and turn: a realistic failure wanders around instead of toggling or dropping things
_MOVE_ACTIONS = np.array([Actions.left, Actions.right, Actions.forward])
POLICIES = {"expert": 0.0, "random": 1.0, "noisy_expert": 0.5}  # policy -> default probability of a random action


def level_name(task: str) -> str:
    """Canonical short level name for a short name or a full gym id; ValueError lists the valid names."""
    name = re.sub(r"^BabyAI-|-v\d+$", "", task)
    if name not in _LEVELS:
        raise ValueError(f"unknown BabyAI level {task!r}; valid names: {', '.join(sorted(_LEVELS))}")
    return name


class BabyAIEnv(gym.Wrapper):
    """Flat float32 state observations plus `info["frame"]`, `info["mission"]` and `info["success"]`.

    Observation: the 7x7x3 egocentric grid encoding scaled to [0, 1], then a one-hot direction (151 values).
    `terminated`/`truncated` are the MiniGrid ones, untouched. BabyAI pays a positive reward only on the step
    that solves the mission, so that is when `success` is True.
    """

    def __init__(self, env: gym.Env, seed: int | None = None, render_size: int = 64):
        super().__init__(env)
        self.render_size = render_size
        self.observation_space = gym.spaces.Box(0.0, 1.0, (7 * 7 * 3 + 4,), np.float32)
        self._first_seed = seed  # used by the first reset() that passes no seed

    def reset(self, *, seed=None, options=None):
        if seed is None:
            seed, self._first_seed = self._first_seed, None
        with contextlib.redirect_stdout(io.StringIO()):  # BabyAI prints every rejected level sample
            obs, info = self.env.reset(seed=seed, options=options)
        return self._observation(obs), self._info(info, success=False)

    def step(self, action):
        obs, reward, terminated, truncated, info = self.env.step(action)
        return self._observation(obs), reward, terminated, truncated, self._info(info, success=reward > 0)

    def _observation(self, obs: dict) -> np.ndarray:
        image = (obs["image"] / _IMAGE_MAX).astype(np.float32).ravel()
        return np.concatenate([image, np.eye(4, dtype=np.float32)[obs["direction"]]])

    def _info(self, info: dict, success: bool) -> dict:
        return {**info, "frame": self.render_frame(), "mission": self.unwrapped.mission, "success": bool(success)}

    def render_frame(self) -> np.ndarray:
        """Top-down RGB view without the agent-view highlight: uint8 [render_size, render_size, 3]."""
        env = self.unwrapped
        tile_size = max(1, math.ceil(self.render_size / max(env.width, env.height)))
        frame = env.get_frame(highlight=False, tile_size=tile_size)
        # nearest-neighbour resize; a no-op for the 8x8 levels at 64 px
        rows = np.arange(self.render_size) * frame.shape[0] // self.render_size
        cols = np.arange(self.render_size) * frame.shape[1] // self.render_size
        return frame[rows][:, cols]


def make_env(task: str, seed: int | None = None, render_size: int = 64) -> gym.Env:
    """A BabyAI level ("GoToRedBall" or "BabyAI-GoToRedBall-v0") as a `BabyAIEnv`; `seed` seeds the first reset."""
    env = gym.make(_LEVELS[level_name(task)])
    env.action_space.seed(seed)
    return BabyAIEnv(env, seed=seed, render_size=render_size)


@dataclasses.dataclass(frozen=True)
class Episode:
    """One recorded episode; `frames` is uint8 [T+1, H, W, 3] with the initial frame first, `actions` has T entries."""

    frames: np.ndarray
    mission: str
    success: bool
    actions: list[int]
    level: str
    seed: int
    policy: str


def rollout(
    task: str,
    seed: int,
    policy: str = "expert",
    render_size: int = 64,
    max_steps: int | None = None,
    action_noise: float | None = None,
) -> Episode:
    """Run one episode, deterministic in (task, seed, policy).

    Policies: "expert" (`BabyAIBot`), "random" (uniform over left/right/forward), "noisy_expert" (the expert,
    but with probability `action_noise`, default 0.5, a random move instead). Stops at termination,
    truncation or after `max_steps` actions.
    """
    if policy not in POLICIES:
        raise ValueError(f"unknown policy {policy!r}; valid policies: {', '.join(POLICIES)}")
    noise = POLICIES[policy] if action_noise is None else action_noise
    env = make_env(task, render_size=render_size)
    rng = np.random.default_rng(seed)
    _, info = env.reset(seed=seed)
    bot = BabyAIBot(env) if policy != "random" else None
    frames, actions, success = [info["frame"]], [], False
    while max_steps is None or len(actions) < max_steps:
        # the bot must see every step, including the random ones, to keep its map and plan current
        expert_action = bot.replan(actions[-1] if actions else None) if bot else None
        action = int(rng.choice(_MOVE_ACTIONS)) if rng.random() < noise else int(expert_action)
        _, _, terminated, truncated, info = env.step(action)
        frames.append(info["frame"])
        actions.append(action)
        success = success or info["success"]
        if terminated or truncated:
            break
    env.close()
    return Episode(np.stack(frames), info["mission"], success, actions, level_name(task), seed, policy)
