"""The one protocol of every learning-curve table (rl.experiment), on hand-built runs with known answers."""

from __future__ import annotations

import numpy as np

from rl.experiment import (MIN_EPISODES, TARGET_SEEDS, compare, main, mean_curve, median_interval, reached,
                           read_runs, steps_to, success_points, summarize)
from rl.train import CURVE_FIELDS, run_file, write_curves


def run(reward: str, seed: int, successes, episodes=None, steps_per_iteration=1000) -> list[dict]:
    """A run's rows: per iteration, `episodes` finished (default 40) of which `successes` succeeded."""
    episodes = episodes or [40] * len(successes)
    return [{"reward": reward, "seed": seed, "iteration": i + 1, "env_steps": steps_per_iteration * (i + 1),
             "success_rate": np.nan, "episodes": n, "successes": k, "time_s": 10.0,
             "reward_s": 2.0 * (reward != "sparse")} for i, (k, n) in enumerate(zip(successes, episodes))]


def test_a_point_pools_three_iterations_and_widens_until_it_holds_32_episodes():
    rows = run("sparse", 0, successes=[0, 5, 10, 10, 40], episodes=[10, 10, 10, 10, 40])
    steps, points = success_points(rows)
    # 10, 20 and 30 episodes are too few; iteration 4 widens to all four (25 / 40); iteration 5 pools 3..5 (60 / 60)
    assert np.isnan(points[:3]).all() and MIN_EPISODES == 32
    np.testing.assert_allclose(points[3:], [25 / 40, 1.0])
    np.testing.assert_array_equal(steps, [1000, 2000, 3000, 4000, 5000])


def test_steps_to_a_threshold_is_the_first_reach_or_the_censored_budget():
    steps, points = np.array([1000.0, 2000, 3000, 4000]), np.array([np.nan, 0.75, 0.6, 0.95])
    assert steps_to(steps, points, 0.7) == (2000.0, True)  # first reach, not a later dip or the last step
    assert steps_to(steps, points, 0.9) == (4000.0, True)
    assert steps_to(steps, points, 0.99) == (4000.0, False)  # never: the run's budget, censored


def test_a_run_stopped_at_a_threshold_has_its_point_there_and_the_curve_goes_on_with_the_others():
    stopped = run("dense", 0, [0, 30, 38])  # points: 0, 0.375, 0.567 (40-episode iterations pool 32+ at once)
    assert not reached(stopped[:2], 0.5) and reached(stopped, 0.5) and not reached(stopped, 0.9)
    assert not reached([], 0.5)
    longer = run("dense", 1, [0, 0, 0, 40, 40])
    steps, mean, band = mean_curve({0: stopped, 1: longer})
    np.testing.assert_array_equal(steps, [1000, 2000, 3000, 4000, 5000])
    np.testing.assert_allclose(mean[3:], success_points(longer)[1][3:])  # past the stop: the run still going
    assert band.shape == (2, 5)


def test_the_ratio_is_of_median_first_reaches_with_censored_seeds_at_their_budget():
    ok, mid = [30], [20]  # of 40 episodes per iteration: 0.75 and 0.5 success
    rows = (run("sparse", 0, mid * 3 + ok * 8) + run("sparse", 1, mid * 5 + ok * 8) + run("sparse", 2, [0] * 10)
            + run("dense", 0, ok * 8) + run("dense", 1, mid + ok * 8) + run("dense", 2, ok * 8))
    sparse, dense = compare(rows, thresholds=(0.7,))
    # pools of up to 3 iterations (fewer at the start): after k 0.5s the pool reaches 0.75 at the third 0.75, and
    # 0.67 (< 0.7) at the second; a first iteration of 40 episodes is a point of its own
    assert (sparse.reaches[0].median, sparse.reaches[0].reached) == (8000.0, 2)  # 6k, 8k, never (budget 10k)
    assert (dense.reaches[0].median, dense.reaches[0].reached) == (1000.0, 3)  # 1k, 4k, 1k
    ratio, low, high = dense.reaches[0].ratio
    assert ratio == 1000 / 8000 and low <= ratio <= high
    assert sparse.reaches[0].ratio is None and dense.final == 0.75 and sparse.budget == 11000


def test_a_compared_run_that_never_gets_there_counts_at_least_sparses_longest_budget():
    ok = [30]  # 0.75 of 40 episodes
    sparse = run("sparse", 0, [0] * 20)  # never, budget 20k
    short = run("dense", 0, [0] * 5)  # never, within a 5k budget: no sooner than sparse's 20k
    long = run("dense", 1, [0] * 25)  # never, within 25k: its own budget
    fast = run("dense", 2, ok * 3)  # at 1k
    _, dense = compare(sparse + short + long + fast, thresholds=(0.7,))
    assert (dense.reaches[0].median, dense.reaches[0].reached) == (20000.0, 1)  # of 20k, 25k, 1k
    assert dense.reaches[0].ratio[0] == 1.0
    assert compare(short, thresholds=(0.7,))[0].reaches[0].median == 5000.0  # no baseline: its own budget


def test_the_interval_spans_the_seeds_median_and_collapses_for_equal_seeds():
    rng = np.random.default_rng(0)
    assert median_interval([5.0, 5.0, 5.0], rng) == (5.0, 5.0, 5.0)
    median, low, high = median_interval([1.0, 2.0, 3.0, 10.0, 11.0], rng)
    assert median == 3.0 and 1.0 <= low < median < high <= 11.0


def five(rows: list[dict]) -> list[dict]:
    """The run's rows as seeds 0..4 (TARGET_SEEDS runs with the same curve)."""
    return [{**row, "seed": seed} for seed in range(TARGET_SEEDS) for row in rows]


def test_bold_marks_only_a_met_target():
    fast = run("dense", 0, [30] * 6)  # reaches 0.7 at 1k
    slow = run("dense", 0, [0] * 3 + [30] * 6)  # at 6k
    sparse = run("sparse", 0, [0] * 7 + [30] * 3)  # at 10k
    assert "**0.10**" in summarize(five(sparse) + five(fast))
    assert "| 0.10 [0.10, 0.10] |" in summarize(five(sparse) + fast)  # under 5 seeds of a kind: not a met target
    assert "**" not in summarize(five(sparse) + five(slow)) and "| 0.60 [0.60, 0.60] |" in summarize(sparse + slow)
    oracle = run("oracle+sparse", 0, [0] * 3 + [30] * 6)[:1] + run("oracle+sparse", 0, [30] * 9)[1:]  # at 4k
    assert "| 0.40 [0.40, 0.40] |" in summarize(sparse + oracle)  # the bound's target is 0.35: not bold


def test_csvs_without_episode_counts_read_success_rate_and_say_so():
    rows = [{"reward": "sparse", "seed": 0, "iteration": i + 1, "env_steps": 1000 * (i + 1), "success_rate": s,
             "time_s": 1.0, "reward_s": 0.0} for i, s in enumerate([0.5, 0.8, 0.8, 0.8])]
    _, points = success_points(rows)
    np.testing.assert_allclose(points, [0.5, 0.65, 0.7, 0.8])  # trailing means of 3
    assert "predate per-iteration episode counts" in summarize(rows)


def test_the_merge_command_turns_a_folder_of_runs_into_the_table_and_a_png(tmp_path, capsys):
    for reward, seed, successes in [("sparse", 0, [0, 10, 30, 30, 30]), ("dense", 0, [30] * 5)]:
        write_curves([dict.fromkeys(CURVE_FIELDS, 0) | row for row in run(reward, seed, successes)],
                     tmp_path / "babyai-task" / run_file(reward, seed))
    assert sorted(p.name for p in (tmp_path / "babyai-task").iterdir()) == ["dense-seed0.csv", "sparse-seed0.csv"]
    assert len(read_runs([tmp_path / "babyai-task"])) == 10
    plot = main([str(tmp_path / "babyai-task")])
    assert plot == tmp_path / "babyai-task" / "curves.png" and plot.read_bytes().startswith(b"\x89PNG")
    table = capsys.readouterr().out.splitlines()
    # sparse (the baseline) first; its points 0, 0.12, 0.33, 0.58, 0.75 reach 0.7 at 5k; dense's first point at 1k; neither reaches 0.9
    assert table[2].startswith("| sparse | 1 | 5.0k | 0.75 | 5.0k [5.0k, 5.0k] (1/1) | 1 | 5.0k [5.0k, 5.0k] (0/1) |")
    assert table[3].startswith("| dense | 1 | 5.0k | 0.75 | 1.0k [1.0k, 1.0k] (1/1) | 0.20 [0.20, 0.20] | "
                               "5.0k [5.0k, 5.0k] (0/1) | 1.00 [1.00, 1.00] | 100 | 20.0% |")


def test_learned_reward_runs_report_the_audits_last_figures():
    sparse = run("sparse", 0, [30] * 3)
    dense = [row | {"reward_auroc": auroc, "false_pay_rate": pay}
             for row, auroc, pay in zip(run("dense", 0, [30] * 3), [0.5, 0.9, np.nan], [0.4, 0.1, np.nan])]
    table = summarize(sparse + dense).splitlines()
    assert table[0].endswith("| reward AUROC (last) | false-pay rate (last) |")
    assert table[2].endswith("| – | – |") and table[3].endswith("| 0.90 | 0.10 |")
