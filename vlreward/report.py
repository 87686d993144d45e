"""`vlreward report`: every figure in README.md and docs/*.md is generated from committed data, never typed.

A generated block is an HTML comment that names its generator and sources, the generator's output, and a closing
comment:

    <!-- report: rl docs/results/rl-babyai-gotolocal.csv -->
    (replaced on every run)
    <!-- /report -->

Generators (arguments are split as a shell splits them; paths resolve against the repository root):
- `rl PATH [PATH...]`: the learning-curve table of `rl.experiment.summarize` (THE protocol for RL tables) over
  CSV files or folders of per-run CSVs, a folder's random-policy success when it holds `bench.random_success`'s
  `random-success.json`, and the PNG beside each source when there is one (`x.csv` -> `x.png`, a folder -> its
  `curves.png`).
- `protocol`: the RL protocol's definition, from `rl.experiment`'s docstring and constants.
- `models [FOLDER...]`: the shipped critics (or the checkpoint folders given), one row per `config.json`, with the
  metrics of the config's `heldout` block (see `HELDOUT`) and of its other blocks (`OTHER_HELDOUT`); "–" where a
  config has none.
- `score VIDEO [VIDEO...] --task TEXT [--task TEXT...] [--model NAME]`: the return of each committed video under
  each task, scored in-process by a shipped model.
- `bench JSON [LIST [COLUMN...]]`: a committed benchmark result (`bench.common.write_result`) as a table (its
  `rows`, or another list in it, every column or the ones named), and where it was measured.
- `bench-runs JSON [JSON...] COLUMN [COLUMN...]`: several results of one benchmark, one row each (the scalar
  columns named, where each was measured).

    vlreward report            # rewrite the blocks in place
    vlreward report --check    # exit 1 with a unified diff when a committed block is stale, or a link is broken
"""

from __future__ import annotations

import argparse
import difflib
import json
import os
import re
import shlex
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

from rewards.args import arg

OPEN = re.compile(r"^<!-- report: (?P<spec>.+?) -->$")
CLOSE = "<!-- /report -->"
MISSING = "–"  # a cell with no committed figure behind it
# the keys of a config's `heldout` block shown by `models` (a value of `vlreward eval`'s report.json each), in order
HELDOUT = (("data", "held-out set"), ("voc", "VOC"), ("voc_15", "VOC, 15 frames"), ("auroc_return", "AUROC return"),
           ("own_task", "own task beats another"), ("hard_negatives", "hard negatives"),
           ("paraphrase_change", "paraphrase change"), ("over_reward", "over-reward probes below success"))

# a config's other held-out blocks, each one column of the metrics named: frames rendered at half the size, and
# episodes of learning RL policies (`vlreward rl --record`)
OTHER_HELDOUT = (("heldout_half", "VOC / AUROC / own task, frames at half size", ("voc", "auroc_return", "own_task")),
                 ("heldout_policy", "VOC / AUROC, RL policies' episodes", ("voc", "auroc_return")))


@dataclass
class Args:
    """Regenerate the generated blocks of README.md and docs/*.md from committed data."""

    files: list[str] = arg([], "markdown files (default: README.md and docs/*.md under --root)")
    root: str = arg(".", "repository root: block sources and links resolve against it")
    check: bool = arg(False, "rewrite nothing: print a unified diff and exit 1 when a committed block differs from "
                      "what its generator gives now, or when a relative link does not resolve")


class ReportError(ValueError):
    """Raised when a block is malformed, names an unknown generator, or a source is missing."""


@dataclass(frozen=True)
class Context:
    """Where a block is rendered: the repository root (sources) and the markdown file (relative links)."""

    root: Path
    document: Path

    def source(self, path: str) -> Path:
        """`path` (relative to the root) as an existing path, else `ReportError`."""
        resolved = self.root / path
        if not resolved.exists():
            raise ReportError(f"{self.document.name}: source {path} does not exist")
        return resolved

    def link(self, path: Path) -> str:
        """`path` as a link relative to the document's folder."""
        return Path(os.path.relpath(path, self.document.parent)).as_posix()


# ---------------------------------------------------------------------------------------------------- generators


def rl_table(arguments: Sequence[str], context: Context) -> str:
    """`rl PATH [PATH...]`: `rl.experiment.summarize` over the runs, then the PNG beside each source."""
    from rl.experiment import read_runs, summarize

    if not arguments:
        raise ReportError("rl: give CSV files or folders of per-run CSVs")
    sources = [context.source(path) for path in arguments]
    owner: dict[tuple[str, int], str] = {}  # two sources holding one (kind, seed) would be merged into one run
    rows = []
    for path, source in zip(arguments, sources):
        source_rows = read_runs([source])
        for key in sorted({(row["reward"], int(row["seed"])) for row in source_rows}):
            if key in owner:
                raise ReportError(f"rl: {key[0]} seed {key[1]} is in both {owner[key]} and {path}")
            owner[key] = path
        rows += source_rows
    lines = [summarize(rows)]
    for source in sources:
        if (random_success := source / "random-success.json").is_file():
            lines += ["", _random_policy_sentence(json.loads(random_success.read_text()))]
    for source in sources:
        png = source / "curves.png" if source.is_dir() else source.with_suffix(".png")
        if png.exists():
            lines += ["", f"![{png.stem}]({context.link(png)})"]
    return "\n".join(lines)


def _random_policy_sentence(result: dict) -> str:
    """`bench.random_success`'s result as one sentence: how rare success is before any learning (the bound's
    task selection)."""
    first, episodes = result["seed"], result["episodes"]
    limit = f"{result['max_episode_steps']}-step episodes" if result.get("max_episode_steps") else "the env's own limit"
    return (f"Random policy: {result['successes']} of {episodes} episodes succeed ({100 * result['rate']:.3g}%), "
            f"uniform actions, {limit}, seeds {first}–{first + episodes - 1}.")


def protocol_text(arguments: Sequence[str], context: Context) -> str:
    """`protocol`: the RL protocol's own definition (`rl.experiment`'s docstring, its constants filled in)."""
    import rl.experiment as experiment

    if arguments:
        raise ReportError(f"protocol takes no arguments, got {' '.join(arguments)}")
    constants = {name: value for name, value in vars(experiment).items()
                 if name.isupper() and isinstance(value, (int, float, tuple))}

    def fill(match: re.Match) -> str:
        value = constants.get(match[1])
        return match[0] if value is None else " / ".join(f"{v:g}" for v in value) if isinstance(value, tuple) \
            else f"{value:g}"

    lines, previous = [], ""
    for line in experiment.__doc__.strip().splitlines()[1:]:
        if line.startswith("    "):  # the usage example
            continue
        line = re.sub(r"`([A-Z_]+)`", fill, line)
        if previous.startswith(("- ", "  ")) and line and not line.startswith(("- ", "  ")):
            lines.append("")  # a paragraph after a list, not a continuation of its last item
        lines.append(line)
        previous = line
    threshold, ratio, oracle = experiment.THRESHOLDS[0], experiment.TARGET_RATIO, experiment.ORACLE_TARGET_RATIO
    lines += ["", f"Bold marks a met target and nothing else: a dense kind that reaches {threshold:g} success in at "
              f"most {ratio:g}x the steps sparse needs, over at least {experiment.TARGET_SEEDS} seeds of each, or "
              f"an oracle kind (the task-selection bound, on any number of seeds) in at most {oracle:g}x."]
    return re.sub(r"\n{3,}", "\n\n", "\n".join(lines)).strip()


def _tower(config: dict, folder: Path) -> tuple[str, object]:
    """(image tower, input side) of a checkpoint's config; ORCA's come from its features' config."""
    if "backbone" in config:
        return f"`{config['backbone']}`", config.get("image_size", MISSING)
    if "channels" in config:
        return f"CNN {'-'.join(map(str, config['channels']))}", config.get("image_size", MISSING)
    features = config.get("features") or {}
    features_config = folder / str(features.get("path", "")) / "config.json"
    if features.get("path") and features_config.is_file():
        tower, size = _tower(json.loads(features_config.read_text()), features_config.parent)
        return f"{tower} ({features.get('kind', '?')} features)", size
    return MISSING, config.get("image_size", MISSING)


def _cell(value) -> str:
    if value is None:
        return MISSING
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return str(value)
    return f"{value:.3f}" if isinstance(value, float) else str(value)


def models_table(arguments: Sequence[str], context: Context) -> str:
    """`models [FOLDER...]`: one row per checkpoint folder (default: every shipped one, `rewards/checkpoints/*`),
    its held-out metrics from the config's `heldout` block (a flat dict keyed as `HELDOUT`) or "–"."""
    if arguments:
        folders = [context.source(f"{path}/config.json").parent for path in arguments]
    else:
        folders = sorted(path.parent for path in context.source("rewards/checkpoints").glob("*/config.json"))
    if not folders:
        raise ReportError("models: no rewards/checkpoints/*/config.json")
    configs = {folder.name: json.loads((folder / "config.json").read_text()) for folder in folders}
    folder_of = {folder.name: folder for folder in folders}
    present = [(key, title) for key, title in HELDOUT if any(key in (c.get("heldout") or {}) for c in configs.values())]
    columns = present or [("", "held-out metrics")]
    others = [block for block in OTHER_HELDOUT if any(block[0] in config for config in configs.values())]
    header = ["model", "architecture", "image tower", "input px", "text", *(title for _, title in columns),
              *(title for _, title, _ in others)]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for name, config in configs.items():
        tower, size = _tower(config, folder_of[name])
        heldout = config.get("heldout") or {}
        cells = [f"`{name}`", f"`{config.get('architecture', MISSING)}`", tower, _cell(size),
                 config.get("text_backbone", MISSING), *(_cell(heldout.get(key)) for key, _ in columns)]
        for key, _, metrics in others:
            block = config.get(key) or {}
            cells.append(" / ".join(_cell(block.get(metric)) for metric in metrics) if block else MISSING)
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def bench_table(arguments: Sequence[str], context: Context) -> str:
    """`bench JSON [LIST [COLUMN...]]`: a committed benchmark result's `rows` (or another list of it), every column or
    the ones named, as a table; then the machine, its load and the commit."""
    if not arguments:
        raise ReportError("bench takes one result JSON, then optionally a list of it and columns")
    result = json.loads(context.source(arguments[0]).read_text())
    table, *columns = arguments[1:] or ["rows"]
    if not isinstance(result.get(table), list) or any(c not in result[table][0] for c in columns):
        raise ReportError(f"bench: {arguments[0]} has no list {table!r} with columns {', '.join(columns) or 'any'}")
    where = (f"Measured on {result['device']} ({result['cpu_count']} cores, load average "
             f"{result['load_average_at_start'][0]:.1f} at the start), commit {result['commit']}, {result['time']}.")
    return f"{markdown_table(result[table], columns or None)}\n\n{where}"


def bench_runs_table(arguments: Sequence[str], context: Context) -> str:
    """`bench-runs JSON [JSON...] COLUMN [COLUMN...]`: several committed results of one benchmark (its seeds, say),
    one row each: its file's name, the scalar columns named, then where it was measured (load average, commit)."""
    files = [argument for argument in arguments if argument.endswith(".json")]
    columns = arguments[len(files):]
    if not files or not columns or arguments[:len(files)] != files:
        raise ReportError("bench-runs takes result JSON files, then the columns to show")
    rows = []
    for path in files:
        result = json.loads(context.source(path).read_text())
        if any(column not in result for column in columns):
            raise ReportError(f"bench-runs: {path} has no {', '.join(c for c in columns if c not in result)}")
        rows.append({"result": Path(path).stem, **{column: result[column] for column in columns},
                     "measured": f"load {result['load_average_at_start'][0]:.1f}, commit {result['commit']}"})
    return markdown_table(rows)


def markdown_table(rows: list[dict], columns: list[str] | None = None) -> str:
    """Rows of dicts -> a GitHub markdown table (floats to 3 significant digits): every bench prints its results
    with it, and `bench` blocks render committed results with it."""
    columns = columns or list(rows[0])

    def cell(value) -> str:
        if isinstance(value, float):
            return f"{value:.3g}" if abs(value) < 1000 else f"{value:,.0f}"
        return str(value)

    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(cell(row.get(c, "")) for c in columns) + " |" for row in rows]
    return "\n".join(lines)


def score_table(arguments: Sequence[str], context: Context) -> str:
    """`score VIDEO [VIDEO...] --task TEXT [--task TEXT...] [--model NAME]`: each video's return under each task."""
    parser = argparse.ArgumentParser(prog="score", add_help=False, exit_on_error=False)
    parser.add_argument("videos", nargs="+")
    parser.add_argument("--task", action="append", required=True)
    parser.add_argument("--model", default=None)
    try:
        options = parser.parse_args(arguments)
    except (argparse.ArgumentError, SystemExit) as error:
        raise ReportError(f"score: {error}; usage: score VIDEO... --task TEXT... [--model NAME]") from None

    import transformers

    import rewards
    from rewards.video import decode_video

    transformers.utils.logging.disable_progress_bar()  # the sentence encoder's loading bar is no part of a report
    model = rewards.load_model(options.model or rewards.DEFAULT_MODEL)
    header = ["video", "frames", *(f'return for "{task}"' for task in options.task)]
    lines = [f"`{model.name}` (weights `{model.version}`), in-process:", "",
             "| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for video in options.videos:
        frames = decode_video(str(context.source(video)))
        returns = [f"{model.score(frames, task).episode_return:+.2f}".replace("-0.00", "+0.00")
                   for task in options.task]
        lines.append(f"| [{Path(video).name}]({context.link(context.root / video)}) | {len(frames)} | "
                     + " | ".join(returns) + " |")
    return "\n".join(lines)


GENERATORS: dict[str, Callable[[Sequence[str], Context], str]] = {
    "rl": rl_table, "protocol": protocol_text, "models": models_table, "score": score_table, "bench": bench_table,
    "bench-runs": bench_runs_table}


# -------------------------------------------------------------------------------------------------------- blocks


def render(text: str, context: Context, generators: dict = GENERATORS) -> str:
    """`text` with every generated block's body replaced by its generator's output (one blank line either side)."""
    lines, out, number = text.splitlines(keepends=True), [], 0
    while number < len(lines):
        line = lines[number]
        opening = OPEN.match(line.rstrip("\n"))
        out.append(line)
        number += 1
        if opening is None:
            if line.rstrip("\n") == CLOSE:
                raise ReportError(f"{context.document}:{number}: {CLOSE} without an opening <!-- report: ... -->")
            continue
        start = number
        while number < len(lines) and lines[number].rstrip("\n") != CLOSE:
            if OPEN.match(lines[number].rstrip("\n")):
                raise ReportError(f"{context.document}:{number + 1}: a block opens inside the block of line {start}")
            number += 1
        if number == len(lines):
            raise ReportError(f"{context.document}:{start}: block never closed with {CLOSE}")
        name, *arguments = shlex.split(opening["spec"])
        if name not in generators:
            raise ReportError(f"{context.document}:{start}: unknown generator {name!r}; valid: {', '.join(generators)}")
        out.append("\n" + generators[name](arguments, context).strip("\n") + "\n\n")
        out.append(lines[number])
        number += 1
    return "".join(out)


LINK = re.compile(r"\[[^\]]*\]\(([^)\s]+)\)")


def anchor(heading: str) -> str:
    """GitHub's anchor for a markdown heading: lower case, punctuation dropped, spaces to hyphens."""
    text = re.sub(r"[`*_]|\[([^\]]*)\]\([^)]*\)", r"\1", heading.strip().lower())
    return re.sub(r"[^\w\- ]", "", text).replace(" ", "-")


def anchors(text: str) -> set[str]:
    """Anchors of a markdown text's headings (outside code fences)."""
    found, fenced = set(), False
    for line in text.splitlines():
        if line.startswith("```"):
            fenced = not fenced
        elif not fenced and line.startswith("#"):
            found.add(anchor(line.lstrip("#")))
    return found


def broken_links(path: Path, text: str) -> list[str]:
    """Relative links of the markdown `text` of `path` (outside code fences) whose file or heading does not exist."""
    broken, fenced = [], False
    for number, line in enumerate(text.splitlines(), 1):
        if line.startswith("```"):
            fenced = not fenced
            continue
        for target in [] if fenced else LINK.findall(line):
            if re.match(r"[a-z]+:", target):  # http(s), mailto: not checked here
                continue
            file, _, fragment = target.partition("#")
            resolved = path.parent / file
            if file and not resolved.exists():
                broken.append(f"{path}:{number}: {target} (no such file)")
            elif fragment and (not file or resolved.suffix == ".md") and \
                    fragment not in anchors(resolved.read_text() if file else text):
                broken.append(f"{path}:{number}: {target} (no such heading)")
    return broken


def documents(root: Path) -> list[Path]:
    """README.md and docs/*.md under `root`."""
    return [path for path in [root / "README.md", *sorted((root / "docs").glob("*.md"))] if path.is_file()]


def report(args: Args, out=sys.stdout) -> int:
    """Regenerate (or, with `check`, compare) every block; returns the exit status (1: stale or broken)."""
    root = Path(args.root).resolve()
    paths = [Path(file).resolve() for file in args.files] if args.files else documents(root)
    stale, broken = [], []
    for path in paths:
        text = path.read_text()
        new = render(text, Context(root, path))
        broken += broken_links(path, new)
        if new == text:
            continue
        stale.append(path)
        if args.check:
            name = os.path.relpath(path, root)
            out.writelines(difflib.unified_diff(text.splitlines(keepends=True), new.splitlines(keepends=True),
                                                f"a/{name}", f"b/{name}"))
        else:
            path.write_text(new)
            print(f"rewrote {os.path.relpath(path, root)}", file=out)
    for line in broken:
        print(f"broken link: {line}", file=out)
    if args.check and stale:
        print(f"stale: {', '.join(os.path.relpath(p, root) for p in stale)} (run `vlreward report`)", file=out)
    return int(bool(broken) or (args.check and bool(stale)))
