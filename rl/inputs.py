"""What the reward wrappers read from an env: where frames, goals and success come from, with checks that name what
is missing and how to provide it, and warnings given once.

Used by `rl.wrappers` (gymnasium) and `rl.sb3` (Stable-Baselines3).
"""

from __future__ import annotations

import warnings
from typing import Any

import numpy as np

from rewards import Goal, RewardModel
from rl.mix import RewardMix

FRAME_HELP = ("give the env frames: wrap it in envs.wrappers.RenderedFrames(env, size=64) (info['frame']), or make it "
              "with render_mode='rgb_array' (env.render())")
GOAL_HELP = "pass goal=... (goals=[...] for a vector env), or have the env put the task text in info['mission']"


class MissingInputError(ValueError):
    """Raised at reset when an env gives a reward wrapper no frames or no goal; the message says how to add them."""


def goal_of(fixed: Goal | None, obs: Any, info: dict, who: str) -> Goal:
    """The episode's goal: `fixed`, else info["mission"], else obs["mission"] (plain MiniGrid); else raise."""
    if fixed is not None:
        return fixed
    if "mission" in info:
        return info["mission"]
    if isinstance(obs, dict) and isinstance(obs.get("mission"), str):
        return obs["mission"]
    raise MissingInputError(f"{who} found no goal: the env's reset gave no info['mission'] (and no obs['mission']); "
                            f"{GOAL_HELP}")


def reset_frame(info: dict, env, who: str) -> tuple[np.ndarray, bool]:
    """The reset frame and whether frames come from info["frame"] (else from `env.render()`); raise without any."""
    if "frame" in info:
        return check_frame(info["frame"], who), True
    if getattr(env, "render_mode", None) == "rgb_array":
        return check_frame(env.render(), who), False
    raise MissingInputError(f"{who} found no frames: the env's reset gave no info['frame'] and its render_mode is "
                            f"{getattr(env, 'render_mode', None)!r}; {FRAME_HELP}")


def check_frame(frame: Any, who: str) -> np.ndarray:
    frame = np.asarray(frame) if frame is not None else None
    if frame is None or frame.dtype != np.uint8 or frame.ndim != 3 or frame.shape[-1] != 3:
        got = "None" if frame is None else f"{frame.dtype} {list(frame.shape)}"
        raise MissingInputError(f"{who} needs uint8 RGB frames [H, W, 3], got {got}; {FRAME_HELP}")
    return frame


def expected_frame_side(model: RewardModel) -> int | None:
    """The side (px) of the square images the model computes on, when it states one: `image_size` in a remote
    model's /v1/models entry, else the config of the registered model of that name (`rewards.get_config`, so a
    remote client of a shipped critic knows it too), else an in-process critic's own config."""
    from rewards import UnknownModelError, get_config

    info = getattr(model, "info", None)
    candidates = [info.get("image_size") if isinstance(info, dict) else None]
    try:
        candidates.append(get_config(model.name).get("image_size") if isinstance(model.name, str) else None)
    except (UnknownModelError, AttributeError):
        pass
    candidates.append(getattr(getattr(getattr(model, "critic", None), "config", None), "image_size", None))
    return next((side for side in candidates if isinstance(side, int) and side > 0), None)


class InputWarnings:
    """Warnings a wrapper gives once: frames far from the critic's input size, episodes without info["success"]."""

    def __init__(self, model: RewardModel, mix: RewardMix, who: str):
        self.side, self.mix, self.who = expected_frame_side(model), mix, who
        self.frames_checked = self.success_warned = False

    def frame(self, frame: np.ndarray) -> None:
        """Warn once when a frame's side is more than 2x away from the critic's input side."""
        if self.frames_checked or self.side is None or not self.mix.uses_model:
            return
        self.frames_checked = True
        height, width = frame.shape[:2]
        if max(height, width) > 2 * self.side or min(height, width) * 2 < self.side:
            warnings.warn(f"{self.who}: frames are {height}x{width} px but the critic computes on {self.side} px "
                          f"images (it was trained on frames rendered near that size); rendered at another scale the "
                          f"scene looks different to it and rewards degrade: render at about {self.side} px, e.g. "
                          f"envs.wrappers.RenderedFrames(env, size={self.side})", UserWarning, stacklevel=3)

    def success(self, info: dict) -> None:
        """Warn once when the sparse part needs info["success"] and the env does not give it."""
        if self.success_warned or "success" in info or not self.mix.uses_success:
            return
        self.success_warned = True
        warnings.warn(f"{self.who}: the env gives no info['success'], so every step counts as a failure in the "
                      f"{self.mix.mode!r} reward; add info['success'], or use the env's own reward as the sparse "
                      f"signal: RewardMix(mode={self.mix.mode!r}, sparse='env_reward')", UserWarning, stacklevel=3)


def sparse_signal(mix: RewardMix, info: dict, env_reward: float) -> float:
    """The value the sparse part multiplies by `success_bonus`: info["success"] (missing: 0) or the env's reward."""
    return float(env_reward) if mix.sparse == "env_reward" else float(info.get("success", False))
