import dataclasses
from collections import Counter

import numpy as np
import pytest

from envs.babyai import rollout
from envs.generate import Args, episode_policy, generate, main, split
from rewards.video import decode_video, read_manifest

FIELDS = {"path", "task", "success", "env", "level", "seed", "policy", "num_frames", "split"}


def test_generate_writes_decodable_videos_and_manifest(tmp_path):
    args = Args(tasks=["GoToRedBall", "GoToLocal"], episodes=4, out=str(tmp_path), seed=10, workers=2)
    manifest = generate(args)
    assert manifest == tmp_path / "manifest.jsonl"
    rows = read_manifest(tmp_path)
    assert len(rows) == 4 and all(set(row) == FIELDS for row in rows)
    assert [row["level"] for row in rows] == ["GoToRedBall", "GoToLocal"] * 2
    assert [row["seed"] for row in rows] == [10, 11, 12, 13]
    assert [row["policy"] for row in rows] == ["expert", "expert", "random", "random"]
    assert sorted(p.name for p in (tmp_path / "videos").iterdir()) == [f"{i:05d}.mp4" for i in range(4)]
    for row in rows:
        frames = decode_video(row["path"])
        expected = rollout(row["level"], row["seed"], row["policy"]).frames
        assert frames.shape == (row["num_frames"], 64, 64, 3) == expected.shape
        assert np.abs(frames.astype(int) - expected).mean() < 10
        assert row["task"].startswith("go to") and row["env"] == "babyai"
    assert all(row["success"] for row in rows if row["policy"] == "expert")


@pytest.mark.parametrize(
    "change",
    [{"tasks": ["GoToTheMoon"]}, {"episodes": 0}, {"render_size": 60}, {"env": "metaworld"}, {"workers": 0},
     {"failure_fraction": 1.5}],
)
def test_bad_args_raise_before_writing(tmp_path, change):
    args = dataclasses.replace(Args(episodes=2, out=str(tmp_path / "out")), **change)
    with pytest.raises(ValueError):
        generate(args)
    assert not (tmp_path / "out").exists()


def test_unwritable_out_raises(tmp_path):
    (tmp_path / "file").write_text("")
    with pytest.raises(ValueError, match="writable"):
        generate(Args(episodes=2, out=str(tmp_path / "file" / "out")))


def test_failures_are_spread_and_alternate():
    policies = [episode_policy(j, 0.5) for j in range(6)]
    assert policies == ["expert", "random", "expert", "noisy_expert", "expert", "random"]
    assert {episode_policy(j, 0.0) for j in range(10)} == {"expert"}
    assert Counter(episode_policy(j, 1.0) for j in range(10)) == {"random": 5, "noisy_expert": 5}


def test_split_is_stable_and_roughly_80_10_10():
    counts = Counter(split(seed) for seed in range(2000))
    assert split(123) == split(123)
    assert 1500 < counts["train"] < 1700 and 130 < counts["val"] < 270 and 130 < counts["test"] < 270


def test_main_parses_argv(tmp_path):
    manifest = main(["--tasks", "GoToObj", "--episodes", "2", "--out", str(tmp_path), "--workers", "1"])
    assert [row["level"] for row in read_manifest(manifest.parent)] == ["GoToObj", "GoToObj"]
