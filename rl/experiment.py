"""Learning curves of the sparse-vs-dense experiment: the seed-averaged curve, the summary table, the PNG."""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np


SMOOTH = 3  # iterations in the trailing mean: one iteration's success rate covers only ~10-20 episodes
TASK_SUCCESS = "success_rate/"  # + task: per-task success columns of multi-task runs (rl.train.TASK_SUCCESS)


def task_columns(rows: Sequence[dict]) -> list[str]:
    """The per-task success columns present, in first-seen order."""
    return list(dict.fromkeys(key for row in rows for key in row if key.startswith(TASK_SUCCESS)))


def trailing_mean(values: np.ndarray, window: int = SMOOTH) -> np.ndarray:
    """Mean of the last `window` values at each index (fewer at the start)."""
    sums = np.cumsum(np.concatenate([[0.0], values]))
    starts = np.maximum(np.arange(len(values)) + 1 - window, 0)
    return (sums[1:] - sums[starts]) / (np.arange(len(values)) + 1 - starts)


def mean_curve(rows: Sequence[dict], reward: str, column: str = "success_rate") -> tuple[np.ndarray, np.ndarray]:
    """(env_steps [I], success rate [I]) of `column`: per iteration the mean over seeds, then a trailing mean over
    `SMOOTH` iterations; cut to the shortest run."""
    runs: dict[int, list[dict]] = {}
    for row in rows:
        if row["reward"] == reward:
            runs.setdefault(row["seed"], []).append(row)
    length = min(len(run) for run in runs.values())
    steps = np.mean([[r["env_steps"] for r in run[:length]] for run in runs.values()], axis=0)
    success = np.mean([[r.get(column, np.nan) for r in run[:length]] for run in runs.values()], axis=0)
    return steps, trailing_mean(np.nan_to_num(success))


def steps_to_reach(steps: np.ndarray, success: np.ndarray, target: float) -> float:
    """Env steps at which the curve first reaches `target` (nan if it never does)."""
    reached = np.flatnonzero(success >= target - 1e-9)
    return float(steps[reached[0]]) if len(reached) else float("nan")


def summarize(rows: Sequence[dict]) -> str:
    """A markdown table: final success, steps to reach sparse's final success (and the ratio to sparse's steps),
    env steps/s, and the share of wall time spent on rewards (gathering frames + waiting on the model)."""
    rewards = list(dict.fromkeys(row["reward"] for row in rows))
    curves = {reward: mean_curve(rows, reward) for reward in rewards}
    target = curves["sparse"][1][-1] if "sparse" in curves else float("nan")
    sparse_steps = curves["sparse"][0][-1] if "sparse" in curves else float("nan")
    lines = [f"| reward | seeds | env steps | final success | steps to sparse's final ({target:.2f}) | ratio to sparse "
             "| env steps/s | reward share of wall time |", "|---|---|---|---|---|---|---|---|"]
    for reward, (steps, success) in curves.items():
        own = [row for row in rows if row["reward"] == reward]
        wall, reward_s = sum(r["time_s"] for r in own), sum(r["reward_s"] for r in own)
        reach = steps_to_reach(steps, success, target)
        total_steps = sum({r["seed"]: r["env_steps"] for r in own}.values())  # each run's last row
        lines.append(f"| {reward} | {len({r['seed'] for r in own})} | {steps[-1]:.0f} | {success[-1]:.2f} | "
                     f"{reach:.0f} | {reach / sparse_steps:.2f} | {total_steps / wall:.0f} | {reward_s / wall:.1%} |")
    tasks = task_columns(rows)
    if tasks:  # one policy over several tasks: final success of each
        lines += ["", "| reward | " + " | ".join(f"final success: {t[len(TASK_SUCCESS):]}" for t in tasks) + " |",
                  "|---|" + "---|" * len(tasks)]
        lines += [f"| {reward} | " + " | ".join(f"{mean_curve(rows, reward, t)[1][-1]:.2f}" for t in tasks) + " |"
                  for reward in rewards]
    return "\n".join(lines)


def plot_curves(rows: Sequence[dict], path: str | Path, title: str) -> Path:
    """Success rate against env steps, one line per reward (`mean_curve`; the band spans the seeds, unsmoothed)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    columns = ["success_rate", *task_columns(rows)]  # all episodes, then one panel per task of a multi-task run
    figure, axes = plt.subplots(1, len(columns), figsize=(6 * len(columns), 3.8), squeeze=False)
    for axis, column in zip(axes[0], columns):
        for reward in dict.fromkeys(row["reward"] for row in rows):
            steps, success = mean_curve(rows, reward, column)
            per_seed = {}
            for row in rows:
                if row["reward"] == reward:
                    per_seed.setdefault(row["seed"], []).append(row.get(column, np.nan))
            band = np.nan_to_num(np.array([run[:len(steps)] for run in per_seed.values()]))
            seeds = len(per_seed)
            axis.plot(steps, success, label=f"{reward} ({seeds} seed{'s' * (seeds > 1)})")
            axis.fill_between(steps, band.min(0), band.max(0), alpha=0.15)
        panel = title if column == "success_rate" else f"{column[len(TASK_SUCCESS):]} (same policy)"
        axis.set(xlabel="env steps", ylabel=f"success rate (mean of {SMOOTH} iterations)", title=panel, ylim=(0, 1.02))
        axis.legend()
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    plt.close(figure)
    return Path(path)


def read_curves(path: str | Path) -> list[dict]:
    """Rows of a `curves.csv` written by `rl.train`, with numbers parsed."""
    import csv

    with open(path, newline="") as f:
        return [{k: v if k == "reward" else float(v) for k, v in row.items()} for row in csv.DictReader(f)]


def main(argv: Sequence[str] | None = None) -> Path:
    """Re-summarise and re-plot curves.csv files; several (e.g. sparse and dense run apart) make one figure."""
    import argparse

    parser = argparse.ArgumentParser(prog="python -m rl.experiment", description=main.__doc__)
    parser.add_argument("curves", nargs="+", help="curves.csv files written by rl.train")
    parser.add_argument("--out", default="", help="PNG to write (default: curves.png beside the first CSV)")
    parser.add_argument("--title", default="", help="plot title (default: the first CSV's folder name)")
    args = parser.parse_args(argv)
    rows = [row for path in args.curves for row in read_curves(path)]
    first = Path(args.curves[0])
    print(summarize(rows))
    plot = plot_curves(rows, args.out or first.with_suffix(".png"), args.title or first.parent.name)
    print(f"plot: {plot}")
    return plot


if __name__ == "__main__":
    main()
