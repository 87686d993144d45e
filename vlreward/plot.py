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


def plot_evaluation(report: dict, out: str | Path) -> list[Path]:
    """PNGs for an evaluation report (rewards/evaluate.py): per task group, the value curves of a few successes
    (blue) and failures (red); and histograms of the return and the final value, successes against failures."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    written = []
    groups = sorted({curve["group"] for curve in report["curves"]})
    for group in groups:
        figure, axis = plt.subplots(figsize=(7, 3.5))
        for curve in (c for c in report["curves"] if c["group"] == group):
            axis.plot(curve["values"], color="tab:blue" if curve["success"] else "tab:red", alpha=0.8,
                      label=f"{'success' if curve['success'] else 'failure'}: {curve['kind']}")
        handles, labels = axis.get_legend_handles_labels()
        unique = dict(zip(labels, handles))
        axis.legend(unique.values(), unique.keys(), fontsize=7)
        axis.set(xlabel="frame", ylabel="value V_t", title=f"{report['model']}: {group}")
        figure.tight_layout()
        written.append(_save(figure, out / f"curves_{_slug(group)}.png"))

    figure, axes = plt.subplots(1, 2, figsize=(9, 3.5))
    for axis, key in zip(axes, ("return", "final_value")):
        values = np.array([record[key] for record in report["records"]])
        success = np.array([record["success"] for record in report["records"]])
        bins = np.histogram_bin_edges(values, bins=30)
        axis.hist(values[success], bins=bins, alpha=0.6, color="tab:blue", label=f"success ({success.sum()})")
        axis.hist(values[~success], bins=bins, alpha=0.6, color="tab:red", label=f"failure ({(~success).sum()})")
        axis.set(xlabel=key.replace("_", " "), ylabel="videos")
        axis.legend(fontsize=8)
    figure.suptitle(f"{report['model']} on {report['split']}")
    figure.tight_layout()
    written.append(_save(figure, out / "histogram.png"))
    return written


def _save(figure, path: Path) -> Path:
    import matplotlib.pyplot as plt

    figure.savefig(path, dpi=110)
    plt.close(figure)
    return path


def _slug(text: str) -> str:
    return "".join(c if c.isalnum() else "_" for c in text).strip("_")[:60] or "group"
