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
