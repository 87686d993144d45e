"""One dataset from several (`vlreward data merge`): e.g. the same episodes rendered at two sizes, so a critic
trains on frames as both renders deliver them.

    vlreward data generate --episodes 8000 --render-size 64 --out data/babyai-64-8k
    vlreward data generate --episodes 8000 --render-size 32 --out data/babyai-32-8k
    vlreward data merge --data data/babyai-64-8k data/babyai-32-8k --out data/babyai-64-32-8k

Videos are hard-linked where the file system allows (copied otherwise) as `videos/<k>-<name>` for the k-th input;
rows keep their seeds, so a scene's copies share one train/val/test split.
"""

from __future__ import annotations

import json
import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

from rewards.args import arg, parse_args


@dataclass
class MergeArgs:
    """Merge datasets (manifest.jsonl + videos/) into one."""

    data: list[str] = arg([], "dataset folders to merge, in order")
    out: str = arg("data/merged", "new dataset folder (must not hold a manifest yet)")


def merge(args: MergeArgs) -> Path:
    """Write `args.out` with every input's videos and rows; returns the manifest path."""
    if len(args.data) < 2:
        raise ValueError(f"merge takes at least two datasets, got {args.data}")
    out = Path(args.out)
    if (out / "manifest.jsonl").exists():
        raise ValueError(f"{out} already holds a dataset; merge writes a new one")
    inputs = [Path(folder) for folder in args.data]
    for folder in inputs:
        if not (folder / "manifest.jsonl").is_file():
            raise ValueError(f"{folder} has no manifest.jsonl")
    (out / "videos").mkdir(parents=True, exist_ok=True)
    rows = []
    for k, folder in enumerate(inputs):
        for line in (folder / "manifest.jsonl").read_text().splitlines():
            row = json.loads(line)
            path = f"videos/{k}-{Path(row['path']).name}"
            _link_or_copy(folder / row["path"], out / path)
            rows.append({**row, "path": path})
    manifest = out / "manifest.jsonl"
    tmp = manifest.with_suffix(".jsonl.tmp")
    tmp.write_text("".join(json.dumps(row) + "\n" for row in rows))
    os.replace(tmp, manifest)
    print(f"{len(rows)} rows from {len(inputs)} datasets -> {manifest}")
    return manifest


def _link_or_copy(source: Path, target: Path) -> None:
    target.unlink(missing_ok=True)
    try:
        os.link(source, target)
    except OSError:  # another file system, or one without hard links
        shutil.copyfile(source, target)


def main(argv: Sequence[str] | None = None) -> Path:
    return merge(parse_args(MergeArgs, argv))
