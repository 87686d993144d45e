"""Which reward orders held-out videos best? LIV, VLC, CLIP goal-baseline, ORCA, OT, TemporalOT and DTW on the
same data (rewards/evaluate.py), printed as one markdown table.

    python -m bench.compare_rewards --data data/babyai --split test

Text-goal models are scored against each video's task (VOC on successes, success/failure AUROC, a video's
own task above another task); demo-goal models get each expert success as the demo and must rank its 0.5x
and 2x time-warped copies above failures (the stopped-early first half, and failures of the same task).
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import asdict, dataclass

import rewards
from bench.common import markdown_table, run_identity, write_result
from rewards.evaluate import evaluate
from rewards.orca import ORCAReward
from rewards.args import arg, parse_args

MATCHERS = {"ORCA": "orca", "OT": "ot", "TemporalOT": "temporal_ot", "DTW": "dtw"}
COLUMNS = ["model", "goal", "videos", "VOC", "VOC (15 frames)", "AUROC return", "AUROC final", "own task first",
           "hard negatives", "paraphrase change", "over-reward probes below success", "2x warp > failures",
           "0.5x warp > failures"]


@dataclass
class Args:
    """Evaluate every reward family on one dataset split; print a markdown table and write JSON."""

    data: str = arg("data/babyai", "dataset directory (manifest.jsonl)")
    split: str = arg("test", "manifest split(s): test, val+test, all")
    max_videos: int = arg(0, "at most this many videos of the split (0: all)")
    liv: str = arg("babyai-liv", "LIV model (name or checkpoint dir; empty: skip)")
    vlc: str = arg("babyai-vlc", "VLC model (name or checkpoint dir; empty: skip)")
    clip: str = arg("", "CLIP goal-baseline checkpoint dir (architecture clip_goal_baseline; empty: none on disk)")
    orca: str = arg("babyai-orca", "ORCA checkpoint; OT, TemporalOT and DTW reuse its frozen features")
    out: str = arg("runs/bench/compare_rewards.json", "result JSON")


def models(args: Args) -> tuple[list[tuple[str, object]], list[str]]:
    """(label, model) pairs to evaluate, and notes on the ones that could not run."""
    chosen, notes = [], []
    for label, source in (("LIV", args.liv), ("VLC", args.vlc), ("CLIP goal-baseline", args.clip)):
        if not source:
            notes.append(f"{label}: not run, no checkpoint given" + (
                " (no local HF CLIP folder on this machine; pass --clip DIR)" if label.startswith("CLIP") else ""))
            continue
        try:
            chosen.append((label, rewards.load_model(source)))
        except rewards.UnknownModelError as error:
            notes.append(f"{label}: not run, {error}")
    orca = rewards.load_model(args.orca)
    for label, matcher in MATCHERS.items():  # one feature extractor, one cost matrix definition, four matchers
        chosen.append((label, ORCAReward(f"{orca.name}:{matcher}", dataclasses.replace(orca.config, matcher=matcher),
                                         orca.features, orca.version)))
    return chosen, notes


def row(label: str, report: dict) -> dict:
    warp = report.get("time_warp", {})
    hard = (report.get("hard_negatives") or {}).get("same_video") or {}
    return {
        "model": label, "goal": "/".join(report["goal_kinds"]), "videos": report["videos"],
        "VOC": report.get("voc"), "VOC (15 frames)": report.get("voc_15"), "AUROC return": report.get("auroc_return"),
        "AUROC final": report.get("auroc_final_value"),
        "own task first": (report.get("own_task") or {}).get("ranked_correctly"),
        "hard negatives": hard.get("ranked_correctly"),
        "paraphrase change": (report.get("paraphrase") or {}).get("relative_change"),
        "over-reward probes below success": (report.get("over_reward") or {}).get("all"),
        "2x warp > failures": (warp.get("fast_2x") or warp.get("warp_2.0x") or {}).get("ranked_above_failures"),
        "0.5x warp > failures": (warp.get("slow_0.5x") or warp.get("warp_0.5x") or {}).get("ranked_above_failures"),
    }


def main(args: Args) -> list[dict]:
    print(json.dumps(asdict(args)))
    identity = run_identity()
    chosen, notes = models(args)
    reports = {label: evaluate(model, args.data, args.split, max_videos=args.max_videos) for label, model in chosen}
    rows = [row(label, report) for label, report in reports.items()]
    print(f"\n{identity['device']}, commit {identity['commit']}, {args.data} split {args.split}\n")
    print(markdown_table([{k: "n/a" if v is None else v for k, v in r.items()} for r in rows], COLUMNS))
    for note in notes + sorted({note for report in reports.values() for note in report["notes"]}):
        print(f"- {note}")
    write_result(args.out, args, identity, rows, notes=notes)
    return rows


if __name__ == "__main__":
    main(parse_args(Args))
