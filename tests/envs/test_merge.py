import json

import pytest

from envs.generate import Args, generate
from envs.merge import MergeArgs, merge
from rewards.backbones import load_backbone
from rewards.feature_cache import dataset_features
from rewards.video import decode_video, read_manifest


def test_merge_keeps_every_row_and_video_of_each_dataset(tmp_path):
    for size in (64, 32):
        generate(Args(tasks=["GoToRedBall"], episodes=3, render_size=size, out=str(tmp_path / f"d{size}"), workers=1))
    merge(MergeArgs(data=[str(tmp_path / "d64"), str(tmp_path / "d32")], out=str(tmp_path / "both")))
    rows = read_manifest(tmp_path / "both")
    originals = read_manifest(tmp_path / "d64") + read_manifest(tmp_path / "d32")
    assert [row["seed"] for row in rows] == [row["seed"] for row in originals]  # seeds, hence splits, kept
    assert [json.loads(line)["path"] for line in (tmp_path / "both" / "manifest.jsonl").read_text().splitlines()] == [
        f"videos/{k}-{i:05d}.mp4" for k in range(2) for i in range(3)]
    assert [decode_video(row["path"]).shape[1] for row in rows] == [64] * 3 + [32] * 3
    features = dataset_features(tmp_path / "both", rows, load_backbone("patches-8"), 64)  # one batch per frame size
    assert [f.shape[1:] for f in features] == [(192, 8, 8)] * 6
    with pytest.raises(ValueError, match="already holds a dataset"):
        merge(MergeArgs(data=[str(tmp_path / "d64"), str(tmp_path / "d32")], out=str(tmp_path / "both")))
    with pytest.raises(ValueError, match="no manifest"):
        merge(MergeArgs(data=[str(tmp_path / "d64"), str(tmp_path)], out=str(tmp_path / "other")))
