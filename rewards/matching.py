"""Sequence matching against one demo (design §4.2): a cost matrix `cost: [T, N]` in, per-frame rewards `[T]` out.

T learner frames are matched to N demo frames. ORCA is the model; OT, TemporalOT, DTW and Threshold are the
frame-level baselines it is compared with, computed the way the reference (portal-cornell/orca) does.
"""

from __future__ import annotations

import numpy as np
from scipy.special import logsumexp


def cost_matrix(learner_features: np.ndarray, demo_features: np.ndarray, context: int = 3) -> np.ndarray:
    """Cosine distances averaged over a temporal context: [T, D] and [N, D] -> cost [T, N] in [0, 2].

    cost[i, j] = mean over k < context of (1 - cos(learner[i + k], demo[j + k])), indices clipped to the last
    frame, so a frame is compared together with what follows it (a single frame hides which way things move).
    """
    learner = _unit_rows(learner_features)
    demo = _unit_rows(demo_features)
    distance = np.clip(1.0 - learner @ demo.T, 0.0, 2.0)  # rounding can step just outside
    rows, cols = np.arange(len(learner)), np.arange(len(demo))
    shifted = [distance[np.ix_(np.minimum(rows + k, len(learner) - 1), np.minimum(cols + k, len(demo) - 1))]
               for k in range(context)]
    return np.mean(shifted, axis=0)


def orca_step(cost_row: np.ndarray, prev_log_row: np.ndarray | None = None, tau: float = 1.0) -> tuple[float, np.ndarray]:
    """One row of ORCA's coverage DP: cost_row [N] and the previous row's log coverage [N] (None for the first
    learner frame) -> (reward, log coverage [N]). The row is all the state ORCA needs, so rewards can stream.

    With P = exp(-cost/τ), the DP cov[j] = max(prev[j], cov[j-1]·P[j]) for j ≤ N-2 (cov[-1] = 1; prev = 0 for
    the first frame) unrolls in log space to log cov[j] = S[j] + max(0, max_{k≤j}(log prev[k] - S[k])) with
    S[j] = Σ_{m≤j} log P[m]: a cumulative sum and a running max. The last column is not carried forward:
    cov[N-1] = cov[N-2]·P[N-1], which is the reward (the demo covered in order, up to and including its end).
    """
    cost_row = np.asarray(cost_row, dtype=np.float64)
    if cost_row.ndim != 1 or len(cost_row) < 2:
        raise ValueError(f"ORCA needs a cost row over at least 2 demo frames, got shape {list(cost_row.shape)}")
    log_p = -cost_row / tau
    prefix = np.cumsum(log_p[:-1])
    best = 0.0 if prev_log_row is None else np.maximum(0.0, np.maximum.accumulate(prev_log_row[:-1] - prefix))
    log_row = np.empty_like(log_p)
    log_row[:-1] = prefix + best
    log_row[-1] = log_row[-2] + log_p[-1]
    return float(np.exp(log_row[-1])), log_row


def orca(cost: np.ndarray, tau: float = 1.0) -> np.ndarray:
    """ORCA rewards [T] for cost [T, N] (N ≥ 2): r_i = probability that learner frames 0..i covered the demo in order."""
    cost = _check_cost(cost)
    rewards = np.empty(len(cost))
    log_row = None
    for i, cost_row in enumerate(cost):
        rewards[i], log_row = orca_step(cost_row, log_row, tau)
    return rewards


def ot(cost: np.ndarray, eps: float = 0.01, iterations: int = 1000) -> np.ndarray:
    """Entropic OT rewards [T]: r_i = -Σ_j Π̂[i, j]·cost[i, j] with the Sinkhorn plan Π̂ normalised per row."""
    cost = _check_cost(cost)
    plan = _sinkhorn(-cost / eps, iterations)
    return -(plan / plan.sum(1, keepdims=True) * cost).sum(1)


def temporal_ot(cost: np.ndarray, eps: float = 0.01, mask_k: int = 10, iterations: int = 100) -> np.ndarray:
    """TemporalOT rewards [T]: OT restricted to a band of ±mask_k demo frames around the diagonal; plan used as is.

    The diagonal is the even split of the longer sequence over the shorter one (see `diagonal_band`).
    """
    cost = _check_cost(cost)
    log_kernel = np.where(diagonal_band(*cost.shape, mask_k), -cost / eps, -np.inf)
    return -(_sinkhorn(log_kernel, iterations) * cost).sum(1)


def dtw(cost: np.ndarray) -> np.ndarray:
    """DTW rewards [T]: r_i = -(mean cost of the cells of row i on the optimal warping path).

    Row by row, acc[j] = cost[j] + min(acc[j-1], m[j]) with m[j] = min(prev[j-1], prev[j]) unrolls to
    acc[j] = S[j] + min_{k≤j}(m[k] - S[k-1]) with S the row's cumulative cost, so only rows are looped over.
    """
    cost = _check_cost(cost)
    acc = np.empty_like(cost)
    prev = np.concatenate([[0.0], np.full(cost.shape[1], np.inf)])  # acc[-1, -1] = 0: the path starts at (0, 0)
    for i, cost_row in enumerate(cost):
        prefix = np.cumsum(cost_row)
        acc[i] = prefix + np.minimum.accumulate(np.minimum(prev[:-1], prev[1:]) - (prefix - cost_row))
        prev = np.concatenate([[np.inf], acc[i]])
    rows, cols = _warping_path(acc)
    return -np.bincount(rows, cost[rows, cols], len(cost)) / np.bincount(rows, minlength=len(cost))


def threshold(cost: np.ndarray, threshold: float = 0.9) -> np.ndarray:
    """Subgoal-tracking rewards [T]: r_i = (P[i, k] + k) / N for the current subgoal k, P = exp(-cost);
    k moves to the next demo frame (at most N-1) once P[i, k] exceeds `threshold`."""
    probability = np.exp(-_check_cost(cost))
    rewards = np.empty(len(probability))
    subgoal, last = 0, probability.shape[1] - 1
    for i, row in enumerate(probability):
        rewards[i] = (row[subgoal] + subgoal) / probability.shape[1]
        if row[subgoal] > threshold:
            subgoal = min(subgoal + 1, last)
    return rewards


def diagonal_band(num_rows: int, num_cols: int, k: int) -> np.ndarray:
    """bool [T, N]: True within ±k columns of the diagonal of a T x N matrix.

    The diagonal splits the longer sequence evenly over the shorter one, the remainder going to the last
    frames of the shorter one; for T ≥ N this is the reference's `bordered_identity_like`. For T < N each
    row owns a run of N // T (or one more) columns and the band extends k past both ends of that run.
    """
    if num_rows >= num_cols:
        low = high = np.repeat(np.arange(num_cols), _even_split(num_rows, num_cols))
    else:
        row_of_col = np.repeat(np.arange(num_rows), _even_split(num_cols, num_rows))
        low = np.searchsorted(row_of_col, np.arange(num_rows), "left")
        high = np.searchsorted(row_of_col, np.arange(num_rows), "right") - 1
    cols = np.arange(num_cols)
    return (cols >= low[:, None] - k) & (cols <= high[:, None] + k)


def _even_split(longer: int, shorter: int) -> np.ndarray:
    """How many of `longer` items each of `shorter` bins gets [shorter]; the last `longer % shorter` get one more."""
    counts = np.full(shorter, longer // shorter)
    counts[shorter - longer % shorter:] += 1
    return counts


def _sinkhorn(log_kernel: np.ndarray, iterations: int, tolerance: float = 1e-9) -> np.ndarray:
    """Log-domain Sinkhorn with uniform marginals: log_kernel [T, N] (-cost/ε, -inf where masked) -> plan [T, N].

    Working with log scalings keeps exp(-cost/ε) from underflowing at ε = 0.01; stops early once the
    column marginals are within `tolerance` (rows are exact after each pass).
    """
    log_a = np.full(log_kernel.shape[0], -np.log(log_kernel.shape[0]))
    log_b = np.full(log_kernel.shape[1], -np.log(log_kernel.shape[1]))
    u = np.zeros_like(log_a)
    for step in range(iterations):
        v = log_b - logsumexp(log_kernel + u[:, None], axis=0)
        u = log_a - logsumexp(log_kernel + v[None, :], axis=1)
        if step % 10 == 0 and np.linalg.norm(np.exp(log_kernel + u[:, None] + v).sum(0) - np.exp(log_b)) < tolerance:
            break
    return np.exp(log_kernel + u[:, None] + v)


def _warping_path(acc: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Backtrack the DTW path from (T-1, N-1) to (0, 0) through accumulated costs acc [T, N]; ties prefer the diagonal."""
    i, j = acc.shape[0] - 1, acc.shape[1] - 1
    path = [(i, j)]
    while (i, j) != (0, 0):
        if i == 0:
            j -= 1
        elif j == 0:
            i -= 1
        else:
            step = int(np.argmin([acc[i - 1, j - 1], acc[i - 1, j], acc[i, j - 1]]))
            i, j = (i - 1, j - 1) if step == 0 else (i - 1, j) if step == 1 else (i, j - 1)
        path.append((i, j))
    rows, cols = np.array(path).T
    return rows, cols


def _check_cost(cost: np.ndarray) -> np.ndarray:
    cost = np.asarray(cost, dtype=np.float64)
    if cost.ndim != 2 or 0 in cost.shape:
        raise ValueError(f"cost must be a non-empty [T, N] matrix, got shape {list(cost.shape)}")
    return cost


def _unit_rows(features: np.ndarray) -> np.ndarray:
    features = np.asarray(features, dtype=np.float64)
    return features / np.maximum(np.linalg.norm(features, axis=1, keepdims=True), 1e-12)
