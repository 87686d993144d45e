"""Reward math as pure functions: arrays in, arrays out."""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F


def cosine_similarity(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Row-wise cosine of a [B, D] and b [B, D] (or [D], broadcast) -> [B]."""
    return (F.normalize(a, dim=-1) * F.normalize(b, dim=-1)).sum(-1)


def value_difference_rewards(values: np.ndarray) -> np.ndarray:
    """values [T] -> rewards [T] with r_0 = 0 and r_t = V_t - V_{t-1}; they telescope to V_T - V_0."""
    rewards = np.zeros_like(values)
    rewards[1:] = np.diff(values)
    return rewards


def shared_cross_entropy(logits: torch.Tensor, positives: torch.Tensor) -> torch.Tensor:
    """Cross-entropy of `logits` [N, C] against targets spread evenly over each row's `positives` [N, C] bool,
    minus the targets' entropy, so 0 is a perfect match whatever the number of positives; with one positive a row
    is plain cross-entropy. Shared by LIV's and VLC's same-task positives."""
    targets = positives.float() / positives.sum(1, keepdim=True)
    entropy = -(targets * targets.clamp(min=1e-12).log()).sum(1).mean()
    return F.cross_entropy(logits, targets) - entropy
