"""Reward-quality metrics that need no RL (design §4.5)."""

from __future__ import annotations

import numpy as np


def value_order_correlation(values: np.ndarray) -> float:
    """VOC: Spearman correlation of values [T] with frame index; 0 for constant values or T < 2."""
    if len(values) < 2 or np.ptp(values) == 0:
        return 0.0
    ranks = np.argsort(np.argsort(values, kind="stable"), kind="stable").astype(float)
    return float(np.corrcoef(ranks, np.arange(len(values)))[0, 1])


def auroc(positives: np.ndarray, negatives: np.ndarray) -> float:
    """P(score of a random positive > score of a random negative), ties counted half (Mann-Whitney U / n+n-)."""
    positives, negatives = np.asarray(positives)[:, None], np.asarray(negatives)[None, :]
    return float(((positives > negatives) + 0.5 * (positives == negatives)).mean())
