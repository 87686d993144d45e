"""The one protocol by which every learning-curve table is computed, and the plot beside it.

Per run (one reward kind, one seed; one CSV row per PPO iteration):
- a success point at iteration i is the share of successes among the episodes that finished in the trailing
  `SMOOTH` iterations, widened further back until it holds at least `MIN_EPISODES` episodes (no point before a
  run has finished that many). CSVs written before runs counted their episodes have no `episodes` column; their
  points are the trailing mean of `success_rate` (the success share RLlib reports per iteration, measured here to
  equal successes / episodes of the iteration; SB3 rows: the last 100 episodes) and the table says so.
- steps to a threshold T: the env steps of the first point >= T. A run that never gets there is censored: a
  baseline (sparse) run counts its budget (its last row's env steps); a run of a compared kind counts its own
  budget or the baseline's longest, whichever is more. Both are conservative for the kind compared to sparse.
Per reward kind: the median over seeds with a bootstrap 95% interval (resampling seeds); the ratio to the
baseline kind is the ratio of the medians, its interval from resampling the seeds of both kinds.

    python -m rl.experiment docs/results/babyai-unlocklocal      # a folder of <kind>-seed<k>.csv: table + PNG
"""

from __future__ import annotations

import csv
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np

SMOOTH = 3  # iterations pooled into one success point
MIN_EPISODES = 32  # ... at least this many finished episodes per point
THRESHOLDS = (0.7, 0.9)  # success levels whose first reach is compared
TARGET_RATIO = 0.5  # issue 23: a dense kind reaches 0.7 in at most half of sparse's steps (bold only when met)
ORACLE_TARGET_RATIO = 0.35  # ... and a task is chosen where the oracle ("oracle..." kinds) needs at most this
TARGET_SEEDS = 5  # a learned kind's target counts only with this many seeds of it and of the baseline
BOOTSTRAP = 4000  # resamples per interval (seeded: tables regenerate identically)
TASK_SUCCESS = "success_rate/"  # + task: per-task success columns of multi-task runs (rl.train.TASK_SUCCESS)


def task_columns(rows: Sequence[dict]) -> list[str]:
    """The per-task success columns present, in first-seen order."""
    return list(dict.fromkeys(key for row in rows for key in row if key.startswith(TASK_SUCCESS)))


def trailing_mean(values: np.ndarray, window: int = SMOOTH) -> np.ndarray:
    """Mean of the last `window` values at each index (fewer at the start)."""
    sums = np.cumsum(np.concatenate([[0.0], values]))
    starts = np.maximum(np.arange(len(values)) + 1 - window, 0)
    return (sums[1:] - sums[starts]) / (np.arange(len(values)) + 1 - starts)


def counts_episodes(rows: Sequence[dict]) -> bool:
    """Whether the rows count each iteration's finished episodes (else the legacy `success_rate` points)."""
    return all(np.isfinite(row.get("episodes", np.nan)) for row in rows)


def success_points(run: Sequence[dict]) -> tuple[np.ndarray, np.ndarray]:
    """(env steps [I], success point [I]) of one run's rows in iteration order; nan where a point has fewer than
    `MIN_EPISODES` episodes behind it."""
    steps = np.array([row["env_steps"] for row in run], float)
    if not counts_episodes(run):
        return steps, trailing_mean(np.nan_to_num(np.array([row["success_rate"] for row in run], float)))
    episodes = np.cumsum([0.0] + [row["episodes"] for row in run])
    successes = np.cumsum([0.0] + [row["successes"] for row in run])
    points = np.full(len(run), np.nan)
    for i in range(len(run)):
        start = max(i + 1 - SMOOTH, 0)
        while start > 0 and episodes[i + 1] - episodes[start] < MIN_EPISODES:
            start -= 1
        pooled = episodes[i + 1] - episodes[start]
        if pooled >= MIN_EPISODES:
            points[i] = (successes[i + 1] - successes[start]) / pooled
    return steps, points


def reached(run: Sequence[dict], threshold: float) -> bool:
    """Whether the run's latest success point is at `threshold` or above (`vlreward rl --stop-at`)."""
    steps, points = success_points(run)
    return len(points) > 0 and steps_to(steps[-1:], points[-1:], threshold)[1]


def steps_to(steps: np.ndarray, points: np.ndarray, threshold: float) -> tuple[float, bool]:
    """(env steps of the first point >= threshold, True), or (the run's budget, False) when it never gets there."""
    reached = np.flatnonzero(np.nan_to_num(points, nan=-1.0) >= threshold - 1e-9)
    return (float(steps[reached[0]]), True) if len(reached) else (float(steps[-1]), False)


def median_interval(values: Sequence[float], rng: np.random.Generator) -> tuple[float, float, float]:
    """(median, 2.5th, 97.5th percentile of the bootstrap medians) over `values` (one per seed)."""
    values = np.asarray(values, float)
    medians = np.median(rng.choice(values, (BOOTSTRAP, len(values))), axis=1)
    return float(np.median(values)), float(np.percentile(medians, 2.5)), float(np.percentile(medians, 97.5))


def ratio_interval(values: Sequence[float], baseline: Sequence[float], rng: np.random.Generator
                   ) -> tuple[float, float, float]:
    """(median(values) / median(baseline), 95% bootstrap interval), resampling the seeds of both."""
    values, baseline = np.asarray(values, float), np.asarray(baseline, float)
    ratios = (np.median(rng.choice(values, (BOOTSTRAP, len(values))), axis=1)
              / np.median(rng.choice(baseline, (BOOTSTRAP, len(baseline))), axis=1))
    return (float(np.median(values) / np.median(baseline)), float(np.percentile(ratios, 2.5)),
            float(np.percentile(ratios, 97.5)))


def runs_of(rows: Sequence[dict]) -> dict[str, dict[int, list[dict]]]:
    """reward kind -> seed -> that run's rows, in first-seen order."""
    runs: dict[str, dict[int, list[dict]]] = {}
    for row in rows:
        runs.setdefault(row["reward"], {}).setdefault(int(row["seed"]), []).append(row)
    return runs


@dataclass(frozen=True)
class Reach:
    """Steps to one threshold for one reward kind: median over seeds [interval], and the ratio to the baseline."""

    threshold: float
    median: float
    low: float
    high: float
    reached: int  # seeds that got there (the others are censored)
    ratio: tuple[float, float, float] | None  # (ratio, low, high) to the baseline; None for the baseline itself


@dataclass(frozen=True)
class KindResult:
    """The protocol's figures for one reward kind."""

    reward: str
    seeds: int
    budget: float  # median env steps per run
    final: float  # median over seeds of the last success point
    reaches: tuple[Reach, ...]


def compare(rows: Sequence[dict], thresholds: Sequence[float] = THRESHOLDS, baseline: str = "sparse"
            ) -> list[KindResult]:
    """The protocol over all runs in `rows`: one `KindResult` per reward kind, ratios to `baseline` if present."""
    rng = np.random.default_rng(0)
    runs = runs_of(rows)
    runs = {reward: runs[reward] for reward in sorted(runs, key=lambda reward: reward != baseline)}  # baseline first
    curves = {reward: [success_points(run) for run in seeds.values()] for reward, seeds in runs.items()}
    reach_steps = {reward: {t: [steps_to(s, p, t) for s, p in runs_curves] for t in thresholds}
                   for reward, runs_curves in curves.items()}
    if baseline in curves:  # a compared run that never got there did not get there sooner than sparse's budget
        longest = max(s[-1] for s, _ in curves[baseline])
        reach_steps = {reward: {t: [(steps if hit or reward == baseline else max(steps, longest), hit)
                                    for steps, hit in by_seed] for t, by_seed in per_t.items()}
                       for reward, per_t in reach_steps.items()}
    results = []
    for reward, seeds in runs.items():
        reaches = []
        for t in thresholds:
            own = [steps for steps, _ in reach_steps[reward][t]]
            ratio = None
            if reward != baseline and baseline in reach_steps:
                ratio = ratio_interval(own, [steps for steps, _ in reach_steps[baseline][t]], rng)
            reaches.append(Reach(t, *median_interval(own, rng), sum(hit for _, hit in reach_steps[reward][t]), ratio))
        results.append(KindResult(reward, len(seeds), float(np.median([s[-1] for s, _ in curves[reward]])),
                                  float(np.median([np.nan_to_num(p[-1]) for _, p in curves[reward]])), tuple(reaches)))
    return results


def _last_audit(runs: dict[int, list[dict]], column: str) -> str:
    """Median over seeds of a run's last finite audit figure; "–" for runs without one (sparse)."""
    last = [next((row[column] for row in reversed(run) if np.isfinite(row.get(column, np.nan))), np.nan)
            for run in runs.values()]
    return f"{np.nanmedian(last):.2f}" if np.isfinite(last).any() else "–"


def _steps(value: float) -> str:
    return f"{value / 1000:.1f}k"


def summarize(rows: Sequence[dict], baseline: str = "sparse") -> str:
    """The protocol's markdown table (steps to each threshold, ratio to `baseline`), with env steps/s and the share
    of wall time blocked on rewards; a per-task table for multi-task runs."""
    header = ["reward", "seeds", "steps/run", "final success"]
    for t in THRESHOLDS:
        header += [f"steps to {t:g} (reached)", f"ratio to {baseline} at {t:g}"]
    header += ["env steps/s", "reward share of wall time"]
    audited = any(np.isfinite(row.get("reward_auroc", np.nan)) for row in rows)
    if audited:  # learned-reward runs: the live audit's last figures (rewards.metrics.RewardAudit)
        header += ["reward AUROC (last)", "false-pay rate (last)"]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    results = compare(rows, baseline=baseline)
    baseline_seeds = max((result.seeds for result in results if result.reward == baseline), default=0)
    for result in results:
        own = [row for row in rows if row["reward"] == result.reward]
        wall, reward_s = sum(r["time_s"] for r in own), sum(r["reward_s"] for r in own)
        total_steps = sum(run[-1]["env_steps"] for run in runs_of(own)[result.reward].values())
        cells = [result.reward, str(result.seeds), _steps(result.budget), f"{result.final:.2f}"]
        for reach in result.reaches:
            cells.append(f"{_steps(reach.median)} [{_steps(reach.low)}, {_steps(reach.high)}] "
                         f"({reach.reached}/{result.seeds})")
            if reach.ratio is None:  # the baseline itself, or runs without one
                cells.append("1" if result.reward == baseline else "–")
            else:
                ratio, low, high = reach.ratio
                oracle = result.reward.startswith("oracle")  # the bound: chosen on any number of seeds
                enough = oracle or min(result.seeds, baseline_seeds) >= TARGET_SEEDS
                met = reach.threshold == THRESHOLDS[0] and enough and ratio <= (ORACLE_TARGET_RATIO if oracle
                                                                              else TARGET_RATIO)
                cells.append(f"{'**' * met}{ratio:.2f}{'**' * met} [{low:.2f}, {high:.2f}]")
        cells += [f"{total_steps / wall:.0f}", f"{reward_s / wall:.1%}"]
        if audited:
            cells += [_last_audit(runs_of(own)[result.reward], column) for column in ("reward_auroc", "false_pay_rate")]
        lines.append("| " + " | ".join(cells) + " |")
    if not counts_episodes(rows):
        lines.append(f"\nSuccess points: the trailing mean of {SMOOTH} iterations' success_rate, whatever the episode "
                     "count (these CSVs predate per-iteration episode counts).")
    tasks = task_columns(rows)
    if tasks:  # one policy over several tasks: final success of each (trailing mean of the windowed column)
        lines += ["", "| reward | " + " | ".join(f"final success: {t[len(TASK_SUCCESS):]}" for t in tasks) + " |",
                  "|---|" + "---|" * len(tasks)]
        for reward, seeds in runs_of(rows).items():
            finals = [np.median([trailing_mean(np.nan_to_num([r.get(t, np.nan) for r in run]))[-1]
                                 for run in seeds.values()]) for t in tasks]
            lines.append(f"| {reward} | " + " | ".join(f"{final:.2f}" for final in finals) + " |")
    return "\n".join(lines)


def mean_curve(runs: dict[int, list[dict]], column: str = "success_rate") -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(env steps [I], mean success point over seeds [I], 95% bootstrap band [2, I]) up to the longest run; past a
    run's end (one stopped by `--stop-at`) the mean is over the runs still going. `column` other than success_rate:
    a per-task column's trailing mean."""
    length = max(len(run) for run in runs.values())
    steps, points = np.full((len(runs), length), np.nan), np.full((len(runs), length), np.nan)
    for i, run in enumerate(runs.values()):
        steps[i, :len(run)], points[i, :len(run)] = success_points(run) if column == "success_rate" else (
            [r["env_steps"] for r in run], trailing_mean(np.nan_to_num([r.get(column, np.nan) for r in run])))
    rng = np.random.default_rng(0)
    resampled = points[rng.integers(len(points), size=(BOOTSTRAP // 4, len(points)))]
    with warnings.catch_warnings():  # all-nan columns: before MIN_EPISODES episodes, or past every run
        warnings.simplefilter("ignore", RuntimeWarning)
        band = (np.nanpercentile(np.nanmean(resampled, axis=1), [2.5, 97.5], axis=0) if np.isfinite(points).any()
                else np.zeros((2, length)))
        return np.nanmean(steps, axis=0), np.nanmean(points, axis=0), band


def plot_curves(rows: Sequence[dict], path: str | Path, title: str) -> Path:
    """Success points against env steps: the mean over seeds per reward kind with its 95% bootstrap band, and the
    protocol's thresholds; one more panel per task of a multi-task run."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    columns = ["success_rate", *task_columns(rows)]
    figure, axes = plt.subplots(1, len(columns), figsize=(6 * len(columns), 3.8), squeeze=False)
    for axis, column in zip(axes[0], columns):
        for reward, runs in runs_of(rows).items():
            steps, mean, band = mean_curve(runs, column)
            axis.plot(steps, mean, label=f"{reward} ({len(runs)} seed{'s' * (len(runs) > 1)})")
            axis.fill_between(steps, band[0], band[1], alpha=0.15)
        for threshold in THRESHOLDS:
            axis.axhline(threshold, color="grey", lw=0.5, ls=":")
        panel = title if column == "success_rate" else f"{column[len(TASK_SUCCESS):]} (same policy)"
        axis.set(xlabel="env steps", ylabel="success (protocol points)", title=panel, ylim=(0, 1.02))
        axis.legend()
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    plt.close(figure)
    return Path(path)


def read_curves(path: str | Path) -> list[dict]:
    """Rows of one curves CSV written by `rl.train` or `bench.shaping_bound`, with numbers parsed."""
    with open(path, newline="") as f:
        return [{k: v if k == "reward" else float(v) if v != "" else np.nan for k, v in row.items()}
                for row in csv.DictReader(f)]


def read_runs(paths: Sequence[str | Path]) -> list[dict]:
    """Rows of every CSV given, a folder standing for the CSVs in it (one per run: `<kind>-seed<k>.csv`)."""
    files = [file for path in map(Path, paths) for file in (sorted(path.glob("*.csv")) if path.is_dir() else [path])]
    return [row for file in files for row in read_curves(file)]


def main(argv: Sequence[str] | None = None) -> Path:
    """Merge runs (folders of per-run CSVs, or CSV files) into the protocol's table and a PNG with interval bands."""
    import argparse

    parser = argparse.ArgumentParser(prog="python -m rl.experiment", description=main.__doc__)
    parser.add_argument("runs", nargs="+", help="folders of <kind>-seed<k>.csv, or curves CSV files")
    parser.add_argument("--out", default="", help="PNG to write (default: curves.png in the first folder)")
    parser.add_argument("--title", default="", help="plot title (default: the first folder's name)")
    args = parser.parse_args(argv)
    first = Path(args.runs[0])
    folder = first if first.is_dir() else first.parent
    print(summarize(read_runs(args.runs)))
    plot = plot_curves(read_runs(args.runs), args.out or folder / "curves.png", args.title or folder.name)
    print(f"plot: {plot}")
    return plot


if __name__ == "__main__":
    main()
