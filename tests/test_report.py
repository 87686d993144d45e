"""`vlreward report`: generated blocks are replaced exactly, stale ones fail `--check`, and the committed README and
docs/*.md are what their generators give today (a table that disagrees with its data fails the suite)."""

from __future__ import annotations

import io
import json
from pathlib import Path

import pytest

from rl.experiment import read_runs, summarize
from vlreward.report import (Args, Context, ReportError, bench_runs_table, bench_table, broken_links, models_table,
                             render, report, rl_table)

REPO = Path(__file__).resolve().parents[1]


def echo(arguments, context):
    """A stand-in generator: its arguments, one per line."""
    return "\n".join(arguments)


GENERATORS = {"echo": echo}


def context(tmp_path: Path) -> Context:
    return Context(tmp_path, tmp_path / "doc.md")


def test_a_block_body_is_replaced_and_the_rest_kept_byte_for_byte(tmp_path):
    text = ("# Title\n\nbefore\n"
            "<!-- report: echo a 'b c' -->\nstale line 1\nstale line 2\n<!-- /report -->\n"
            "after\n<!-- report: echo d -->\n<!-- /report -->\nend")
    assert render(text, context(tmp_path), GENERATORS) == (
        "# Title\n\nbefore\n"
        "<!-- report: echo a 'b c' -->\n\na\nb c\n\n<!-- /report -->\n"
        "after\n<!-- report: echo d -->\n\nd\n\n<!-- /report -->\nend")


def test_rendering_twice_changes_nothing(tmp_path):
    once = render("x\n<!-- report: echo a -->\n<!-- /report -->\n", context(tmp_path), GENERATORS)
    assert render(once, context(tmp_path), GENERATORS) == once


@pytest.mark.parametrize("text, message", [
    ("<!-- report: echo a -->\nbody\n", "never closed"),
    ("<!-- report: echo a -->\n<!-- report: echo b -->\n<!-- /report -->\n", "opens inside"),
    ("text\n<!-- /report -->\n", "without an opening"),
    ("<!-- report: nope -->\n<!-- /report -->\n", "unknown generator 'nope'"),
])
def test_malformed_blocks_raise(tmp_path, text, message):
    with pytest.raises(ReportError, match=message):
        render(text, context(tmp_path), GENERATORS)


def write_config(root: Path, name: str, config: dict) -> None:
    folder = root / "rewards" / "checkpoints" / name
    folder.mkdir(parents=True)
    (folder / "config.json").write_text(json.dumps(config))


def test_models_table_shows_heldout_metrics_only_where_a_config_has_them(tmp_path):
    write_config(tmp_path, "a-progress", {"architecture": "progress", "backbone": "patches-8", "image_size": 64,
                                          "text_backbone": "minilm", "heldout": {"data": "fresh seeds", "voc": 0.8333}})
    write_config(tmp_path, "b-liv", {"architecture": "liv", "channels": [16, 32], "image_size": 64})
    assert models_table([], context(tmp_path)) == "\n".join([
        "| model | architecture | image tower | input px | text | held-out set | VOC |",
        "|---|---|---|---|---|---|---|",
        "| `a-progress` | `progress` | `patches-8` | 64 | minilm | fresh seeds | 0.833 |",
        "| `b-liv` | `liv` | CNN 16-32 | 64 | – | – | – |"])


def test_models_table_adds_the_half_size_figures_where_a_config_has_them(tmp_path):
    write_config(tmp_path, "a-progress", {"architecture": "progress", "backbone": "patches-8", "image_size": 64,
                                          "heldout": {"voc": 0.95},
                                          "heldout_half": {"voc": 0.9, "auroc_return": 1.0, "own_task": 0.875}})
    write_config(tmp_path, "b-liv", {"architecture": "liv", "channels": [16, 32], "image_size": 64})
    lines = models_table([], context(tmp_path)).splitlines()
    assert lines[0].endswith("| VOC | VOC / AUROC / own task, frames at half size |")
    assert lines[2].endswith("| 0.950 | 0.900 / 1.000 / 0.875 |") and lines[3].endswith("| – | – |")
    write_config(tmp_path, "c-liv", {"architecture": "liv", "channels": [16, 32], "image_size": 64,
                                     "heldout_policy": {"voc": 0.5, "auroc_return": 0.75}})
    lines = models_table([], context(tmp_path)).splitlines()
    assert lines[0].endswith("frames at half size | VOC / AUROC, RL policies' episodes |")
    assert lines[2].endswith("| 0.900 / 1.000 / 0.875 | – |") and lines[4].endswith("| – | – | 0.500 / 0.750 |")


def test_models_table_of_given_checkpoint_folders(tmp_path):
    """Variants compared in the docs (committed config.json files, weights not shipped) use the same table."""
    write_config(tmp_path, "a-progress", {"architecture": "progress", "backbone": "patches-8", "image_size": 64,
                                          "heldout": {"voc": 0.95}})
    write_config(tmp_path, "b-liv", {"architecture": "liv", "channels": [16, 32], "image_size": 64})
    lines = models_table(["rewards/checkpoints/b-liv"], context(tmp_path)).splitlines()
    assert len(lines) == 3 and lines[2].startswith("| `b-liv` |")
    with pytest.raises(ReportError, match="does not exist"):
        models_table(["rewards/checkpoints/c-none"], context(tmp_path))


def test_models_table_without_any_heldout_block_has_one_dash_column(tmp_path):
    write_config(tmp_path, "b-liv", {"architecture": "liv", "channels": [16, 32], "image_size": 64})
    assert models_table([], context(tmp_path)).splitlines()[2] == "| `b-liv` | `liv` | CNN 16-32 | 64 | – | – |"


CSV_HEADER = "reward,seed,iteration,env_steps,success_rate,episodes,successes,time_s,reward_s\n"


def write_runs(path: Path, kinds=("sparse", "dense")) -> Path:
    rows = [f"{kind},{seed},{i},{i * 500},{min(1.0, i / 8)},40,{min(40, 5 * i)},1.0,{0.1 * (kind != 'sparse')}\n"
            for kind in kinds for seed in (0, 1) for i in range(1, 11)]
    path.write_text(CSV_HEADER + "".join(rows))
    return path


def test_rl_table_is_the_protocol_table_and_links_the_png_beside_it(tmp_path):
    (tmp_path / "docs" / "results").mkdir(parents=True)
    csv = write_runs(tmp_path / "docs" / "results" / "runs.csv")
    doc = Context(tmp_path, tmp_path / "docs" / "results.md")
    assert rl_table(["docs/results/runs.csv"], doc) == summarize(read_runs([csv]))
    csv.with_suffix(".png").write_bytes(b"\x89PNG")
    assert rl_table(["docs/results/runs.csv"], doc).endswith("\n\n![runs](results/runs.png)")


def test_rl_table_states_the_random_policy_success_of_a_folder_that_measured_it(tmp_path):
    for name in ("measured", "unmeasured"):
        (tmp_path / name).mkdir()
        write_runs(tmp_path / name / "runs.csv")
    (tmp_path / "measured" / "curves.png").write_bytes(b"\x89PNG")
    (tmp_path / "measured" / "random-success.json").write_text(json.dumps(
        {"env": "babyai", "task": "KeyCorridorS3R3", "episodes": 100, "successes": 3, "rate": 0.03, "seed": 0}))
    table = summarize(read_runs([tmp_path / "measured"]))
    assert rl_table(["measured"], context(tmp_path)) == (
        f"{table}\n\nRandom policy: 3 of 100 episodes succeed (3%), uniform actions, the env's own limit, "
        "seeds 0–99.\n\n"
        "![curves](measured/curves.png)")
    assert rl_table(["unmeasured"], context(tmp_path)) == table


def test_rl_table_refuses_a_run_given_twice_and_a_missing_source(tmp_path):
    write_runs(tmp_path / "a.csv")
    write_runs(tmp_path / "b.csv", kinds=("sparse",))
    with pytest.raises(ReportError, match="sparse seed 0 is in both"):
        rl_table(["a.csv", "b.csv"], context(tmp_path))
    with pytest.raises(ReportError, match="does not exist"):
        rl_table(["missing.csv"], context(tmp_path))


def test_check_fails_with_a_diff_until_the_file_is_regenerated(tmp_path):
    write_config(tmp_path, "b-liv", {"architecture": "liv", "channels": [16, 32], "image_size": 64})
    doc = tmp_path / "README.md"
    doc.write_text("# x\n<!-- report: models -->\n| typed | table |\n<!-- /report -->\n")
    out = io.StringIO()
    assert report(Args(root=str(tmp_path), check=True), out) == 1
    assert "-| typed | table |" in out.getvalue() and "+| `b-liv` |" in out.getvalue()
    assert "typed" in doc.read_text()  # --check writes nothing
    assert report(Args(root=str(tmp_path)), io.StringIO()) == 0
    out = io.StringIO()
    assert report(Args(root=str(tmp_path), check=True), out) == 0, out.getvalue()
    assert "`b-liv`" in doc.read_text()


def test_broken_links_are_found(tmp_path):
    (tmp_path / "other.md").write_text("# A heading\n")
    text = ("[ok](other.md#a-heading) [web](https://example.com) [self](#here)\n# Here\n"
            "[gone](missing.md) [bad anchor](other.md#nope)\n```\n[in code](nowhere.md)\n```\n")
    assert broken_links(tmp_path / "doc.md", text) == [
        f"{tmp_path / 'doc.md'}:3: missing.md (no such file)",
        f"{tmp_path / 'doc.md'}:3: other.md#nope (no such heading)"]


def test_committed_readme_and_docs_are_what_their_generators_give():
    out = io.StringIO()
    assert report(Args(root=str(REPO), check=True), out) == 0, (
        f"stale generated blocks or broken links; run `vlreward report`:\n{out.getvalue()}")


def test_readme_is_a_guide_not_a_notebook():
    assert len((REPO / "README.md").read_text().splitlines()) <= 400


def test_bench_block_is_the_results_table_and_where_it_ran(tmp_path):
    result = {"args": {}, "device": "cpu (x86_64)", "cpu_count": 2, "torch_threads": 1,
              "load_average_at_start": [0.25, 0.5, 0.5], "commit": "abc1234", "time": "2026-12-07T04:00:00Z",
              "rows": [{"model": "a", "frames/s, 1 thread": 2800.0, "x a": 1.0},
                       {"model": "b", "frames/s, 1 thread": 1400.0, "x a": 0.5}]}
    (tmp_path / "speed.json").write_text(json.dumps(result))
    assert bench_table(["speed.json"], context(tmp_path)).splitlines() == [
        "| model | frames/s, 1 thread | x a |", "|---|---|---|", "| a | 2,800 | 1 |", "| b | 1,400 | 0.5 |", "",
        "Measured on cpu (x86_64) (2 cores, load average 0.2 at the start), commit abc1234, 2026-12-07T04:00:00Z."]
    assert bench_table(["speed.json", "rows", "model", "x a"], context(tmp_path)).splitlines()[:4] == [
        "| model | x a |", "|---|---|", "| a | 1 |", "| b | 0.5 |"]
    with pytest.raises(ReportError, match="one result JSON"):
        bench_table([], context(tmp_path))
    with pytest.raises(ReportError, match="no list 'rows' with columns speed"):
        bench_table(["speed.json", "rows", "speed"], context(tmp_path))


def test_bench_runs_block_is_one_row_per_result(tmp_path):
    for seed, errors in ((1, 0), (2, 3)):
        (tmp_path / f"fuzz-seed{seed}.json").write_text(json.dumps(
            {"args": {"seed": seed}, "load_average_at_start": [1.25, 1.0, 1.0], "commit": "abc1234",
             "requests_sent": 2500, "server_errors": errors}))
    assert bench_runs_table(["fuzz-seed1.json", "fuzz-seed2.json", "requests_sent", "server_errors"],
                            context(tmp_path)).splitlines() == [
        "| result | requests_sent | server_errors | measured |", "|---|---|---|---|",
        "| fuzz-seed1 | 2500 | 0 | load 1.2, commit abc1234 |", "| fuzz-seed2 | 2500 | 3 | load 1.2, commit abc1234 |"]
    with pytest.raises(ReportError, match="then the columns"):
        bench_runs_table(["fuzz-seed1.json"], context(tmp_path))
    with pytest.raises(ReportError, match="has no seed"):
        bench_runs_table(["fuzz-seed1.json", "seed"], context(tmp_path))
