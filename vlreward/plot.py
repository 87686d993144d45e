"""PNG plots of reward curves."""

from __future__ import annotations

from pathlib import Path

import numpy as np


def plot_reward_curve(values: np.ndarray, rewards: np.ndarray, title: str, path: str | Path) -> Path:
    """Values and rewards per frame, one figure, written as PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axis = plt.subplots(figsize=(7, 3.5))
    axis.plot(values, label="value V_t", color="tab:blue")
    axis.plot(rewards, label="reward r_t", color="tab:orange")
    axis.axhline(0, color="grey", linewidth=0.5)
    axis.set(xlabel="frame", title=title)
    axis.legend()
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    plt.close(figure)
    return Path(path)
