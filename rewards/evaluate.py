"""Reward quality without RL (design §4.5): score held-out videos and measure how well the reward orders them.

    report = evaluate(rewards.load_model("babyai-liv"), "data/babyai", split="test")
    report["voc"], report["auroc_return"], report["paraphrase"], report["hard_negatives"]

Text-goal models (LIV, VLC, CLIP goal-baseline) are judged on the dataset's videos with their own task:
VOC on successes, success-vs-failure AUROC of the return and of the final value, Pearson correlation with
the manifest's per-frame progress, the return's change under reworded tasks, and how often a video scores
higher for its own task than for another one. Demo-goal models (ORCA and the frame-level matchers) get an
expert success as the demo and are judged on the order they give time-warped copies of it versus failures.
`vlreward eval` wraps this and writes report.json plus PNGs (vlreward/plot.py).
"""

from __future__ import annotations

import re
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable, Sequence

import numpy as np
from tqdm import tqdm

from rewards.base import RewardModel, Score
from rewards.errors import InvalidTaskError
from rewards.metrics import auroc, pearson, relative_change, value_order_correlation
from rewards.video import decode_video, read_manifest
from vlreward.args import arg

Paraphraser = Callable[[dict], Sequence[str]]
ARTICLES = {"a", "an", "the"}


@dataclass
class Args:
    """Evaluate a reward model on a dataset's held-out videos; write report.json and PNG plots."""

    model: str = arg("babyai-liv", "shipped model name or checkpoint directory")
    data: str = arg("data/babyai", "dataset directory with manifest.jsonl (from `vlreward data generate`)")
    out: str = arg("", "folder for report.json and the PNGs (empty: runs/eval/<model>)")
    split: str = arg("test", "manifest split(s) to score: test, val, val+test, or all")
    max_videos: int = arg(0, "score at most this many videos of the split (0: all)")
    batch_size: int = arg(16, "videos decoded and scored together")
    curves_per_group: int = arg(3, "reward curves kept per task group and outcome for the plots")
    device: str = arg("cpu", "torch device of the model")


@dataclass
class _Job:
    """One (video, goal) pair to score; `frames` is None for a manifest video not decoded yet."""

    row: int
    goal: object
    tag: str
    frames: np.ndarray | None = None


def evaluate(model: RewardModel, data: str | Path | Iterable[dict], split: str = "test", *, max_videos: int = 0,
             paraphrases: Paraphraser | None = None, batch_size: int = 16, curves_per_group: int = 3,
             progress: bool = True) -> dict:
    """Score a dataset's videos with `model` and return a JSON-ready report of reward-quality metrics.

    `data` is a dataset directory (manifest.jsonl, design §2) or manifest-like rows: dicts with `task`,
    `success` and either `frames` (uint8 [T, H, W, 3]) or `path`; optional `split`, `env`, `env_task`,
    `kind`/`policy`, `progress` [T], `paraphrases` [str], `performed` (the task a hard negative's video really
    solves), `warp` and `source_frames` (a time-warped replay: the recorded frame shown at each frame).
    Rows without `split` are always scored. `paraphrases(row)` rewords a row's task when the row carries no
    `paraphrases` (e.g. from an env's sentence table).
    The report holds the metrics, `notes` on what was skipped and why, per-video `records` and a few
    `curves` (values per frame) for plots.
    """
    rows = select_rows(data, split, max_videos)
    if not rows:
        raise ValueError(f"no videos in split {split!r}")
    header = {"model": model.name, "version": getattr(model, "version", ""), "goal_kinds": list(model.goal_kinds),
              "split": split, "videos": len(rows)}
    if "text" in model.goal_kinds:
        return {**header, **_evaluate_text(model, rows, paraphrases, batch_size, curves_per_group, progress)}
    if "demo" in model.goal_kinds:
        return {**header, **_evaluate_demo(model, rows, batch_size, curves_per_group, progress)}
    raise InvalidTaskError(f"{model.name} takes {model.goal_kinds} goals; evaluation needs text or demo goals")


def select_rows(data: str | Path | Iterable[dict], split: str = "test", max_videos: int = 0) -> list[dict]:
    """The manifest rows (or given rows) of `split` ("test", "val+test", "all"), at most `max_videos` of them."""
    rows = read_manifest(data) if isinstance(data, (str, Path)) else list(data)
    wanted = None if split == "all" else set(split.split("+"))
    rows = [row for row in rows if wanted is None or row.get("split") is None or row["split"] in wanted]
    return rows[:max_videos] if max_videos > 0 else rows


# ---------------------------------------------------------------- text goals


def _evaluate_text(model, rows, paraphrases, batch_size, curves_per_group, progress) -> dict:
    notes = []
    reworded = {i: _paraphrases(row, paraphrases) for i, row in enumerate(rows) if _is_plain_success(row)}
    if not any(reworded.values()):
        reworded = {}
        notes.append("paraphrase: skipped, the manifest has no `paraphrases` and no paraphrase source was given")
    wrong = _wrong_tasks(rows)
    if not wrong:
        notes.append("wrong_task: skipped, the rows hold only one distinct task")

    jobs = []
    for i, row in enumerate(rows):
        jobs.append(_Job(i, row["task"], "task"))
        jobs += [_Job(i, text, f"paraphrase:{k}") for k, text in enumerate(reworded.get(i, []))]
        if i in wrong:
            jobs.append(_Job(i, wrong[i], "wrong_task"))
        if _is_hard_negative(row):
            jobs.append(_Job(i, row["performed"], "performed"))
    scores = _score_jobs(model, rows, jobs, batch_size, progress)
    own = [scores[i, "task"] for i in range(len(rows))]

    success = np.array([bool(row["success"]) for row in rows])
    returns = np.array([s.episode_return for s in own])
    finals = np.array([float(s.values[-1]) for s in own])
    report = {
        "successes": int(success.sum()), "failures": int((~success).sum()),
        "return_success_mean": _mean(returns[success]), "return_failure_mean": _mean(returns[~success]),
        "voc": _mean([value_order_correlation(s.values) for s, row in zip(own, rows) if _is_plain_success(row)]),
        **_separation(returns, finals, success, [_kind(row) for row in rows]),
        "progress_pearson": _progress_pearson(rows, own, notes),
        "paraphrase": _paraphrase_change(reworded, scores),
        "wrong_task": _ranked_pairs([(scores[i, "task"], scores[i, "wrong_task"]) for i in wrong]),
        "hard_negatives": _hard_negatives(rows, scores, notes),
    }
    records = [_record(row, s, _kind(row)) for row, s in zip(rows, own)]
    return {**report, "notes": notes, "records": records,
            "curves": _curves(records, own, curves_per_group)}


def _is_plain_success(row: dict) -> bool:
    """A success recorded at its own pace (not a time-warped replay)."""
    return bool(row["success"]) and not row.get("warp")


def _is_hard_negative(row: dict) -> bool:
    """A failure for its task that really solved another one (`performed`) in the same scene."""
    return not row["success"] and bool(row.get("performed")) and row["performed"] != row["task"]


def _paraphrases(row: dict, source: Paraphraser | None) -> list[str]:
    """Rewordings of the row's task that differ from it: the manifest's own, else from `source`."""
    candidates = row.get("paraphrases") or (list(source(row)) if source else [])
    return [text for text in candidates if text.strip() and text.strip() != row["task"].strip()]


def task_content(task: str) -> tuple[str, ...]:
    """A task's words without articles: "go to a red ball" and "go to the red ball" are one task."""
    return tuple(word for word in re.findall(r"[a-z0-9]+", task.lower()) if word not in ARTICLES)


def task_key(row: dict) -> frozenset:
    """What a row's caption asks, whatever its wording: the content words of its task and its paraphrases."""
    return frozenset(task_content(text) for text in [row["task"], *row.get("paraphrases", ())])


def _wrong_tasks(rows: list[dict]) -> dict[int, str]:
    """For each plain success, another task of the same env (content unlike the task's and its paraphrases'),
    picked with a fixed seed."""
    tasks_by_env = defaultdict(set)
    for row in rows:
        tasks_by_env[row.get("env")].add(row["task"])
    rng = np.random.default_rng(0)
    wrong = {}
    for i, row in enumerate(rows):
        same = task_key(row)
        others = sorted(t for t in tasks_by_env[row.get("env")] if task_content(t) not in same)
        if _is_plain_success(row) and others:
            wrong[i] = others[rng.integers(len(others))]
    return wrong


def _kind(row: dict) -> str:
    """What made the video: expert, random, noisy_expert, early_stop, other_task, warped (or just the outcome)."""
    return str(row.get("kind") or row.get("policy") or ("success" if row["success"] else "failure"))


def _group(row: dict) -> str:
    return str(row.get("env_task") or row.get("level") or row["task"])


def _separation(returns, finals, success, kinds) -> dict:
    """Success-vs-failure AUROC of the return and of the final value, overall and per failure kind."""
    if success.all() or not success.any():
        return {"auroc_return": None, "auroc_final_value": None, "auroc_by_failure_kind": {}}
    by_kind = {}
    for kind in sorted({k for k, ok in zip(kinds, success) if not ok}):
        negative = np.array([k == kind and not ok for k, ok in zip(kinds, success)])
        by_kind[kind] = {"failures": int(negative.sum()), "auroc_return": auroc(returns[success], returns[negative]),
                         "auroc_final_value": auroc(finals[success], finals[negative])}
    return {"auroc_return": auroc(returns[success], returns[~success]),
            "auroc_final_value": auroc(finals[success], finals[~success]), "auroc_by_failure_kind": by_kind}


def _progress_pearson(rows, own, notes) -> float | None:
    """Mean Pearson correlation of values with the manifest's per-frame progress, over videos that have it."""
    pairs = [(s.values, np.asarray(row["progress"], dtype=float)) for row, s in zip(rows, own)
             if row.get("progress") is not None and len(row["progress"]) == len(s.values)]
    if not pairs:
        notes.append("progress_pearson: skipped, the manifest has no per-frame `progress`")
        return None
    return _mean([pearson(values, truth) for values, truth in pairs])


def _paraphrase_change(reworded: dict, scores: dict) -> dict | None:
    """Relative change of the return under each rewording, Σ|R_para − R| / Σ|R| over (video, paraphrase)."""
    pairs = [(scores[i, "task"].episode_return, scores[i, f"paraphrase:{k}"].episode_return)
             for i, texts in reworded.items() for k in range(len(texts))]
    if not pairs:
        return None
    original, changed = np.array(pairs).T
    return {"pairs": len(pairs), "relative_change": relative_change(original, changed),
            "median_abs_change": float(np.median(np.abs(changed - original)))}


def _ranked_pairs(pairs: list[tuple[Score, Score]]) -> dict | None:
    """Fraction of (true, wrong) score pairs where the true one has the higher return."""
    if not pairs:
        return None
    correct = [true.episode_return > wrong.episode_return for true, wrong in pairs]
    return {"pairs": len(pairs), "ranked_correctly": float(np.mean(correct))}


def _hard_negatives(rows, scores, notes) -> dict | None:
    """Hard negatives: videos that really solve another task (`performed`) in this task's scene.

    A hard negative must score lower for the scene's task than for the task it solves (same video), and lower
    than the scene's own expert success (same env and seed) where the dataset has one.
    """
    negatives = [i for i, row in enumerate(rows) if _is_hard_negative(row)]
    if not negatives:
        notes.append("hard_negatives: skipped, no failure row names the task it `performed` instead")
        return None
    same_video = _ranked_pairs([(scores[i, "performed"], scores[i, "task"]) for i in negatives])
    expert = {(row.get("env"), row.get("seed"), row["task"]): i for i, row in enumerate(rows) if _is_plain_success(row)}
    in_scene = [(scores[expert[key], "task"], scores[i, "task"]) for i in negatives
                if (key := (rows[i].get("env"), rows[i].get("seed"), rows[i]["task"])) in expert]
    return {"same_video": same_video, "vs_scene_success": _ranked_pairs(in_scene)}


# ---------------------------------------------------------------- demo goals


def time_warps(demo: np.ndarray) -> dict[str, np.ndarray]:
    """Copies of a demo [N, H, W, 3] at other speeds: every frame twice (0.5x) and every other frame (2x)."""
    fast = demo[::2] if (len(demo) - 1) % 2 == 0 else np.concatenate([demo[::2], demo[-1:]])
    return {"slow_0.5x": np.repeat(demo, 2, axis=0), "fast_2x": fast}


def replayed_demo(row: dict, frames: np.ndarray) -> np.ndarray | None:
    """The recording a time-warped row replays (frame k of it shows recorded frame `source_frames[k]`), or None
    if the replay dropped recorded frames (a fast warp) and the recording cannot be rebuilt."""
    source = np.asarray(row.get("source_frames") or [], dtype=np.int64)
    if len(source) != len(frames) or not np.array_equal(np.unique(source), np.arange(source.max(initial=-1) + 1)):
        return None
    return frames[np.searchsorted(source, np.arange(source.max() + 1))]


def _evaluate_demo(model, rows, batch_size, curves_per_group, progress, min_demo_frames: int = 4,
                   failures_per_demo: int = 3) -> dict:
    """Demos and their time-warped copies (positives) against failures (negatives), each scored against the demo.

    A demo is a plain expert success (positives: its 0.5x and 2x copies made here) or the recording a manifest
    warp row replays (positive: that row). Negatives: the demo's first half (stopped early) and up to
    `failures_per_demo` failures of the same task group.
    """
    notes = []
    failures_by_group = defaultdict(list)
    for i, row in enumerate(rows):
        if not row["success"]:
            failures_by_group[_group(row)].append(i)
    candidates = [i for i, row in enumerate(rows) if row["success"]
                  and (row.get("warp") or row.get("num_frames", min_demo_frames) >= min_demo_frames)]
    if not candidates:
        raise ValueError(f"no successful video of at least {min_demo_frames} frames to use as a demo")

    scored = []  # (demo row, positive?, kind, Score)
    for d in tqdm(candidates, desc=f"eval {model.name}", disable=not progress):
        row, frames = rows[d], _load(rows[d])
        if row.get("warp"):
            demo = replayed_demo(row, frames)
            positives = {f"warp_{row['warp']}": frames}
        else:
            demo, positives = frames, time_warps(frames)
        if demo is None or len(demo) < min_demo_frames:
            continue
        negatives = {"stopped_early": demo[: len(demo) // 2]}
        negatives |= {f"{_kind(rows[i])}#{i}": _load(rows[i])
                      for i in failures_by_group[_group(row)][:failures_per_demo]}
        items = [(True, k, v) for k, v in positives.items()] + [(False, k, v) for k, v in negatives.items()]
        for start in range(0, len(items), batch_size):
            chunk = items[start:start + batch_size]
            results = model.score_batch([video for _, _, video in chunk], [demo] * len(chunk))
            scored += [(d, positive, kind.split("#")[0], score) for (positive, kind, _), score in zip(chunk, results)]
    if not any(row.get("warp") for row in rows):
        notes.append("time warps: the manifest has none; only the 0.5x and 2x copies made here")

    report = _warp_ranking(scored)
    records = [{"group": _group(rows[d]), "task": rows[d]["task"], "kind": kind, "success": positive,
                "return": s.episode_return, "final_value": float(s.values[-1])} for d, positive, kind, s in scored]
    return {**report, "notes": notes, "records": records,
            "curves": _curves(records, [s for *_, s in scored], curves_per_group)}


def _warp_ranking(scored) -> dict:
    """Per positive kind: how often its final reward beats each negative of the same demo; means per kind."""
    by_demo = defaultdict(lambda: ([], []))
    for d, positive, kind, score in scored:
        by_demo[d][0 if positive else 1].append((kind, float(score.values[-1])))
    positive_kinds = sorted({kind for _, positive, kind, _ in scored if positive})
    ranking = {}
    for kind in positive_kinds:
        wins = [p > n for pos, neg in by_demo.values() for k, p in pos if k == kind for _, n in neg]
        ranking[kind] = {"pairs": len(wins), "ranked_above_failures": _mean(wins)}
    finals = defaultdict(list)
    for _, _, kind, score in scored:
        finals[kind].append(float(score.values[-1]))
    positives = [s for _, positive, _, s in scored if positive]
    negatives = [float(s.values[-1]) for _, positive, _, s in scored if not positive]
    return {"demos": len(by_demo), "time_warp": ranking,
            "final_reward_mean": {kind: _mean(values) for kind, values in sorted(finals.items())},
            "auroc_final_value": auroc([float(s.values[-1]) for s in positives], negatives) if negatives else None,
            "voc": _mean([value_order_correlation(s.values) for s in positives])}


# ---------------------------------------------------------------- shared


def _load(row: dict) -> np.ndarray:
    return row["frames"] if row.get("frames") is not None else decode_video(row["path"])


def _score_jobs(model, rows, jobs, batch_size, progress) -> dict[tuple[int, str], Score]:
    """Score every job; videos are decoded `batch_size` rows at a time and dropped after scoring."""
    by_row = defaultdict(list)
    for job in jobs:
        by_row[job.row].append(job)
    order = sorted(by_row)
    scores = {}
    for start in tqdm(range(0, len(order), batch_size), desc=f"eval {model.name}", disable=not progress,
                      unit_scale=batch_size):
        chunk = [job for i in order[start:start + batch_size] for job in by_row[i]]
        frames = {i: _load(rows[i]) for i in order[start:start + batch_size]}
        results = model.score_batch([frames[job.row] for job in chunk], [job.goal for job in chunk])
        scores.update({(job.row, job.tag): score for job, score in zip(chunk, results)})
    return scores


def _record(row: dict, score: Score, kind: str) -> dict:
    return {"path": row.get("path", ""), "group": _group(row), "task": row["task"],
            "kind": kind, "success": bool(row["success"]), "return": score.episode_return,
            "final_value": float(score.values[-1])}


def _curves(records: list[dict], scores: list[Score], per_group: int) -> list[dict]:
    """The values of the first `per_group` successes and failures of each group, for plotting."""
    taken = defaultdict(int)
    curves = []
    for record, score in zip(records, scores):
        key = (record["group"], record["success"])
        if taken[key] < per_group:
            taken[key] += 1
            curves.append({**record, "values": score.values.tolist()})
    return curves


def _mean(values) -> float | None:
    values = np.asarray(values, dtype=float)
    return float(values.mean()) if values.size else None


def summary(report: dict) -> str:
    """The report's headline numbers, one per line (what `vlreward eval` prints)."""
    def show(value):
        return "n/a" if value is None else f"{value:.3f}" if isinstance(value, float) else str(value)

    keys = ["videos", "successes", "failures", "demos", "voc", "auroc_return", "auroc_final_value",
            "progress_pearson"]
    lines = [f"{key:24} {show(report[key])}" for key in keys if key in report]
    if report.get("paraphrase"):
        lines.append(f"{'paraphrase change':24} {show(report['paraphrase']['relative_change'])}")
    if report.get("wrong_task"):
        lines.append(f"{'wrong task ranked below':24} {show(report['wrong_task']['ranked_correctly'])}")
    for name, result in (report.get("hard_negatives") or {}).items():
        if result:
            lines.append(f"{'hard neg. ' + name:24} {show(result['ranked_correctly'])}")
    for kind, result in report.get("time_warp", {}).items():
        lines.append(f"{kind + ' above failures':24} {show(result['ranked_above_failures'])}")
    return "\n".join(lines + [f"note: {note}" for note in report["notes"]])
