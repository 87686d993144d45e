"""How served scores and the success flag become the reward a policy trains on (shared by connector and wrappers)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np

from rewards.base import Score

MODES = ("sparse", "dense", "dense+sparse")
SIGNALS = ("rewards", "progress", "potential")
SPARSE = ("success", "env_reward")


@dataclass(frozen=True)
class RewardMix:
    """The reward for step t (frame t -> frame t+1).

    mode: "sparse" = `success_bonus · success` (no model call), "dense" = the served signal,
      "dense+sparse" = both added (VLC's `dense + 50·success`).
    sparse: what `success` is: "success" = `info["success"]` (the default: it means the same thing in every suite,
      while Meta-World's own reward is hand-shaped); "env_reward" = the env's own reward, for envs without
      `info["success"]` whose reward is sparse (plain MiniGrid pays 1 − 0.9·steps/max_steps on success).
    signal: "rewards" = the model's dense reward r_{t+1} (LIV: V_{t+1} − V_t); "progress" = V_{t+1} − V_0, the value
      offset by the episode's first value (VLC's per-step reward); "potential" = γ·V_{t+1} − V_t, potential-based
      shaping with the value as potential (Ng et al. 1999): its discounted sum is γ^T·V_T − V_0, so it does not
      change which policy is optimal, and each step spent short of the goal costs (1 − γ)·V.
    scale: per-model reward scale applied to the dense part (critics differ by orders of magnitude).
    normalize: divide the dense part by the running std of dense episode returns (VLC).
    """

    mode: str = "dense"
    signal: str = "rewards"
    success_bonus: float = 1.0
    scale: float = 1.0
    normalize: bool = False
    sparse: str = "success"
    gamma: float = 0.99  # the "potential" signal's discount: the policy's own

    def __post_init__(self):
        if self.sparse not in SPARSE:
            raise ValueError(f"unknown sparse signal {self.sparse!r}; valid: {', '.join(SPARSE)}")
        if self.mode not in MODES:
            raise ValueError(f"unknown reward mode {self.mode!r}; valid modes: {', '.join(MODES)}")
        if self.signal not in SIGNALS:
            raise ValueError(f"unknown reward signal {self.signal!r}; valid signals: {', '.join(SIGNALS)}")

    def check_streamable(self, normalizer: str) -> None:
        """Rewards paid at step time can only be the model's own per-step reward, unnormalised: the other signals
        and normalising need whole episodes. `normalizer` names what to normalise with instead. The sparse mode
        pays no dense part, so any signal streams."""
        if self.uses_model and (self.signal != "rewards" or self.normalize):
            raise ValueError(f"streaming rewards support signal='rewards' without normalize; normalise with {normalizer}")

    @property
    def uses_model(self) -> bool:
        return self.mode != "sparse"

    @property
    def uses_success(self) -> bool:
        """Whether the reward reads `info["success"]`."""
        return self.mode != "dense" and self.sparse == "success"

    def dense(self, score: Score) -> np.ndarray:
        """Scaled dense reward [T] for steps 0..T-1 from the score of the episode's T+1 frames."""
        values = np.asarray(score.values, np.float64)
        if self.signal == "progress":
            return self.scale * (values[1:] - values[0])
        if self.signal == "potential":
            return self.scale * (self.gamma * values[1:] - values[:-1])
        return self.scale * np.asarray(score.rewards[1:], np.float64)

    def combine(self, dense: np.ndarray | float, success: np.ndarray | float) -> np.ndarray | float:
        """Final reward from an already scaled (and normalised) dense part and the success flag(s)."""
        reward = dense if self.uses_model else 0.0 * success
        return reward + self.success_bonus * success if self.mode != "dense" else reward


class RunningStd:
    """Running standard deviation of a scalar stream (Welford); 1.0 until two values were seen."""

    def __init__(self):
        self.count, self.mean, self._m2 = 0, 0.0, 0.0

    def update(self, values: Sequence[float]) -> None:
        for value in values:
            self.count += 1
            delta = value - self.mean
            self.mean += delta / self.count
            self._m2 += delta * (value - self.mean)

    @property
    def std(self) -> float:
        return max(float(np.sqrt(self._m2 / (self.count - 1))), 1e-8) if self.count > 1 else 1.0
