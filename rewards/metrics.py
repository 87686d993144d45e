"""Reward-quality metrics that need no RL (design §4.5)."""

from __future__ import annotations

import numpy as np
from scipy.stats import rankdata


def value_order_correlation(values: np.ndarray) -> float:
    """VOC: Spearman correlation of values [T] with frame index (ties share their mean rank); 0 for constant
    values or T < 2."""
    values = np.asarray(values, dtype=float)
    if len(values) < 2 or np.ptp(values) == 0:
        return 0.0
    return float(np.corrcoef(rankdata(values), np.arange(len(values)))[0, 1])


def pearson(a: np.ndarray, b: np.ndarray) -> float:
    """Pearson correlation of two equally long series; 0 when either is constant (nothing to correlate)."""
    a, b = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    if len(a) != len(b):
        raise ValueError(f"series of different lengths: {len(a)} and {len(b)}")
    if len(a) < 2 or np.ptp(a) == 0 or np.ptp(b) == 0:
        return 0.0
    return float(np.corrcoef(a, b)[0, 1])


def auroc(positives: np.ndarray, negatives: np.ndarray) -> float:
    """P(score of a random positive > score of a random negative), ties counted half (Mann-Whitney U / n+n-)."""
    positives, negatives = np.asarray(positives)[:, None], np.asarray(negatives)[None, :]
    return float(((positives > negatives) + 0.5 * (positives == negatives)).mean())


def relative_change(reference: np.ndarray, changed: np.ndarray) -> float:
    """Σ|changed − reference| / Σ|reference|: how much a perturbation (a reworded task) moves the scores,
    relative to their size. A ratio of sums, so a single score near 0 cannot blow it up."""
    reference, changed = np.asarray(reference, dtype=float), np.asarray(changed, dtype=float)
    scale = np.abs(reference).sum()
    return float(np.abs(changed - reference).sum() / scale) if scale > 0 else 0.0


class RewardAudit:
    """A rolling audit of a learned reward against the env's success, over the last `window` episodes: does a policy
    trained on it find episodes the reward pays for that fail (its blind spots)?

    `reward_auroc`: AUROC of the episode return, successes against failures. `false_pay_rate`: the share of failures
    paid more than the median success. Both NaN until the window holds a success and a failure.

        >>> audit = RewardAudit()
        >>> for episode_return, success in [(0.9, True), (0.8, True), (0.1, False), (0.95, False)]:
        ...     audit.add(episode_return, success)
        >>> audit.reward_auroc, audit.false_pay_rate
        (0.5, 0.5)
    """

    def __init__(self, window: int = 256):
        self.window = window
        self.returns: list[float] = []
        self.successes: list[bool] = []

    def add(self, episode_return: float, success: bool) -> None:
        self.returns = [*self.returns, float(episode_return)][-self.window:]
        self.successes = [*self.successes, bool(success)][-self.window:]

    def _split(self) -> tuple[np.ndarray, np.ndarray]:
        returns, successes = np.array(self.returns), np.array(self.successes, bool)
        return returns[successes], returns[~successes]

    @property
    def reward_auroc(self) -> float:
        positives, negatives = self._split()
        return auroc(positives, negatives) if len(positives) and len(negatives) else float("nan")

    @property
    def false_pay_rate(self) -> float:
        positives, negatives = self._split()
        if not (len(positives) and len(negatives)):
            return float("nan")
        return float((negatives > np.median(positives)).mean())
