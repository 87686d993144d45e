"""Reward quality without RL (design §4.5): score held-out videos and measure how well the reward orders them.

    report = evaluate(rewards.load_model("babyai-liv"), "data/babyai", split="test")
    report["voc"], report["auroc_return"], report["paraphrase"], report["over_reward"]["all"]

Text-goal models (LIV, VLC, CLIP goal-baseline) are judged on the dataset's videos with their own task:
VOC on successes, success-vs-failure AUROC of the return and of the final value, Pearson correlation with
the manifest's per-frame progress, the return's change under reworded tasks, and how often a success scores
higher for its own task than for another one (`own_task`).
`voc_15` is VOC on the GVL/TOPReward protocol: each success cut to 15 evenly spaced frames and scored as that
clip (published: TOPReward 0.857 on Open X-Embodiment, GVL 0.54).
`over_reward` audits videos that must earn less than a success (target ≥ 0.95 each): it stalls near the start,
loops without finishing, plays backwards, or is another task's success scored with this task.
Demo-goal models (ORCA and the frame-level matchers) get an expert success as the demo and are judged on the
order they give time-warped copies of it versus failures.
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
from rewards.args import arg

Paraphraser = Callable[[dict], Sequence[str]]
ARTICLES = {"a", "an", "the"}


# config.json's held-out blocks: frames at the render size, at half of it, and learning RL policies' episodes
HELDOUT_KEYS = ("heldout", "heldout_half", "heldout_policy")


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
    record: bool = arg(False, "write the held-out figures into the checkpoint's config.json (`heldout`), where the "
                       "README's model table reads them")
    record_as: str = arg("heldout", "config.json key --record writes: `heldout` (frames rendered at the critic's "
                         "size), `heldout_half` (rendered at half of it) or `heldout_policy` (episodes of learning RL "
                         "policies, `vlreward data import`)", choices=list(HELDOUT_KEYS))


def heldout_block(report: dict, data: str, split: str, command: str) -> dict:
    """The flat held-out figures that travel with a checkpoint (config.json's `heldout`): the dataset and split,
    VOC (all frames and 15 sampled), AUROC of the return, own task beats another, the weakest hard-negative kind,
    the paraphrase change, the share of over-reward probes below success, and the command that measured them."""
    hard = [result["ranked_correctly"] for result in (report.get("hard_negatives") or {}).values() if result]
    return {"data": f"{data} ({split})", "voc": report.get("voc"), "voc_15": report.get("voc_15"),
            "auroc_return": report.get("auroc_return"),
            "own_task": (report.get("own_task") or {}).get("ranked_correctly"),
            "hard_negatives": min(hard) if hard else None,
            "paraphrase_change": (report.get("paraphrase") or {}).get("relative_change"),
            "over_reward": (report.get("over_reward") or {}).get("all"), "command": command}


@dataclass
class _Job:
    """One (video, goal) pair to score: row `row`'s video, or `view` of it (a clip or probe) when given.

    A view is made only once the row is decoded, so probes cost no memory beyond their scoring batch.
    """

    row: int
    goal: object
    tag: str
    view: Callable[[np.ndarray], np.ndarray] | None = None


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
        notes.append("own_task: skipped, the rows hold only one distinct task")
    successes = [i for i, row in enumerate(rows) if _is_plain_success(row)]
    other = _other_successes(rows, successes)
    if successes and not other:
        notes.append("over_reward.other_success: skipped, no success of another task")

    jobs = []
    for i, row in enumerate(rows):
        jobs.append(_Job(i, row["task"], "task"))
        jobs += [_Job(i, text, f"paraphrase:{k}") for k, text in enumerate(reworded.get(i, []))]
        if i in wrong:
            jobs.append(_Job(i, wrong[i], "wrong_task"))
        if is_hard_negative(row):
            jobs.append(_Job(i, row["performed"], "performed"))
    for i in successes:
        jobs.append(_Job(i, rows[i]["task"], "clip_15", view=even_clip))
        jobs += [_Job(i, rows[i]["task"], f"probe:{name}", view=make) for name, make in OVER_REWARD_PROBES.items()]
    jobs += [_Job(j, rows[i]["task"], f"task_of:{i}") for i, j in other.items()]  # j's video, i's task
    scores = _score_jobs(model, rows, jobs, batch_size, progress)
    own = [scores[i, "task"] for i in range(len(rows))]

    own_task = _ranked_pairs([(scores[i, "task"], scores[i, "wrong_task"]) for i in wrong])
    success = np.array([bool(row["success"]) for row in rows])
    returns = np.array([s.episode_return for s in own])
    finals = np.array([float(s.values[-1]) for s in own])
    report = {
        "successes": int(success.sum()), "failures": int((~success).sum()),
        "return_success_mean": _mean(returns[success]), "return_failure_mean": _mean(returns[~success]),
        "voc": _mean([value_order_correlation(own[i].values) for i in successes]),
        "voc_15": _mean([value_order_correlation(scores[i, "clip_15"].values) for i in successes]),
        **_separation(returns, finals, success, [_kind(row) for row in rows]),
        "progress_pearson": _progress_pearson(rows, own, notes),
        "paraphrase": _paraphrase_change(reworded, scores),
        "own_task": own_task,
        "hard_negatives": _hard_negatives(rows, scores, notes),
        "over_reward": _over_reward(successes, other, scores),
    }
    records = [_record(row, s, _kind(row)) for row, s in zip(rows, own)]
    return {**report, "notes": notes, "records": records,
            "curves": _curves(records, own, curves_per_group)}


def _is_plain_success(row: dict) -> bool:
    """A success recorded at its own pace (not a time-warped replay)."""
    return bool(row["success"]) and not row.get("warp")


def is_hard_negative(row: dict) -> bool:
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


def _asks_otherwise(key: frozenset, task: str) -> bool:
    """Whether `task` asks something else than a row with task_key `key` (neither its task nor a paraphrase)."""
    return task_content(task) not in key


def _wrong_tasks(rows: list[dict]) -> dict[int, str]:
    """For every plain success, another task, picked with a fixed seed: one of its env's (the harder contrast),
    or of the other envs' when its env has no other task."""
    tasks_by_env = defaultdict(set)
    for row in rows:
        tasks_by_env[row.get("env")].add(row["task"])
    every_task = set().union(*tasks_by_env.values())
    rng = np.random.default_rng(0)
    wrong = {}
    for i, row in enumerate(rows):
        key = task_key(row)
        others = (sorted(t for t in tasks_by_env[row.get("env")] if _asks_otherwise(key, t))
                  or sorted(t for t in every_task if _asks_otherwise(key, t)))
        if _is_plain_success(row) and others:
            wrong[i] = others[rng.integers(len(others))]
    return wrong


def _other_successes(rows: list[dict], successes: list[int]) -> dict[int, int]:
    """For each success, the next success (in row order, wrapping round) of another task: its video, scored with
    this success's task, must earn less than this success."""
    keys = {i: task_key(rows[i]) for i in successes}
    other = {}
    for k, i in enumerate(successes):
        after = successes[k + 1:] + successes[:k]
        j = next((j for j in after if _asks_otherwise(keys[i], rows[j]["task"])), None)
        if j is not None:
            other[i] = j
    return other


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


def _ranked_pairs(pairs: list[tuple[Score, Score]], name: str = "ranked_correctly") -> dict | None:
    """Fraction of (true, wrong) score pairs where the true one has the strictly higher return."""
    if not pairs:
        return None
    correct = [true.episode_return > wrong.episode_return for true, wrong in pairs]
    return {"pairs": len(pairs), name: float(np.mean(correct))}


def _over_reward(successes, other, scores) -> dict | None:
    """Per probe, how often it earns strictly less than the success it was made from (for other_success: than
    the success whose task it was scored with); `all` pools every probe's pairs."""
    if not successes:
        return None
    pairs = {name: [(scores[i, "task"], scores[i, f"probe:{name}"]) for i in successes] for name in OVER_REWARD_PROBES}
    pairs["other_success"] = [(scores[i, "task"], scores[j, f"task_of:{i}"]) for i, j in other.items()]
    pooled = _ranked_pairs([pair for some in pairs.values() for pair in some], "below_success")
    by_probe = {name: _ranked_pairs(some, "below_success") for name, some in pairs.items()}
    return {"all": pooled["below_success"], **by_probe}


def _hard_negatives(rows, scores, notes) -> dict | None:
    """Hard negatives: videos that really solve another task (`performed`) in this task's scene.

    A hard negative must score lower for the scene's task than for the task it solves (same video), and lower
    than the scene's own expert success (same env and seed) where the dataset has one.
    """
    negatives = [i for i, row in enumerate(rows) if is_hard_negative(row)]
    if not negatives:
        notes.append("hard_negatives: skipped, no failure row names the task it `performed` instead")
        return None
    same_video = _ranked_pairs([(scores[i, "performed"], scores[i, "task"]) for i in negatives])
    expert = {(row.get("env"), row.get("seed"), row["task"]): i for i, row in enumerate(rows) if _is_plain_success(row)}
    in_scene = [(scores[expert[key], "task"], scores[i, "task"]) for i in negatives
                if (key := (rows[i].get("env"), rows[i].get("seed"), rows[i]["task"])) in expert]
    return {"same_video": same_video, "vs_scene_success": _ranked_pairs(in_scene)}


# ---------------------------------------------------------------- videos made from a video


def even_clip(frames: np.ndarray, count: int = 15) -> np.ndarray:
    """`count` frames spread evenly over a video [T, H, W, 3] (all T when fewer): the clip GVL and TOPReward score,
    so a model with temporal context is judged on what it would see under their protocol."""
    if len(frames) < count:
        return frames
    return frames[np.linspace(0, len(frames) - 1, count).round().astype(int)]


def stalled(frames: np.ndarray) -> np.ndarray:
    """Stuck near the start: the first fifth of a video [T, H, W, 3], then its last frame held to length T."""
    return frames[np.minimum(np.arange(len(frames)), max(1, len(frames) // 5) - 1)]


def looped(frames: np.ndarray) -> np.ndarray:
    """Busy but never done: frames 0..T//2, back to 0, and forward to T//2 again (about 1.5 T frames)."""
    half = np.arange(len(frames) // 2 + 1)
    return frames[np.concatenate([half, half[-2::-1], half[1:]])]


def backwards(frames: np.ndarray) -> np.ndarray:
    """The video played in reverse (a copy: models may need positive strides)."""
    return frames[::-1].copy()


# Videos made from a success that a reward must pay less than the success itself (over_reward in evaluate()).
OVER_REWARD_PROBES: dict[str, Callable[[np.ndarray], np.ndarray]] = {
    "stall": stalled, "loop": looped, "reversed": backwards}


def time_warps(demo: np.ndarray) -> dict[str, np.ndarray]:
    """Copies of a demo [N, H, W, 3] at other speeds: every frame twice (0.5x) and every other frame (2x)."""
    fast = demo[::2] if (len(demo) - 1) % 2 == 0 else np.concatenate([demo[::2], demo[-1:]])
    return {"slow_0.5x": np.repeat(demo, 2, axis=0), "fast_2x": fast}


# ---------------------------------------------------------------- demo goals


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
        videos = [job.view(frames[job.row]) if job.view else frames[job.row] for job in chunk]
        results = model.score_batch(videos, [job.goal for job in chunk])
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

    keys = ["videos", "successes", "failures", "demos", "voc", "voc_15", "auroc_return", "auroc_final_value",
            "progress_pearson"]
    lines = [f"{key:24} {show(report[key])}" for key in keys if key in report]
    if report.get("paraphrase"):
        lines.append(f"{'paraphrase change':24} {show(report['paraphrase']['relative_change'])}")
    if report.get("own_task"):
        lines.append(f"{'own task beats another':24} {show(report['own_task']['ranked_correctly'])}")
    for name, result in (report.get("hard_negatives") or {}).items():
        if result:
            lines.append(f"{'hard neg. ' + name:24} {show(result['ranked_correctly'])}")
    for name, result in (report.get("over_reward") or {}).items():  # "all" is a fraction; each probe a dict
        value = result if name == "all" else (result or {}).get("below_success")
        lines.append(f"{'over-reward ' + name:24} {show(value)}")
    for kind, result in report.get("time_warp", {}).items():
        lines.append(f"{kind + ' above failures':24} {show(result['ranked_above_failures'])}")
    return "\n".join(lines + [f"note: {note}" for note in report["notes"]])
