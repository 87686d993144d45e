import dataclasses
from collections import Counter

import numpy as np
import pytest

from envs.babyai import paraphrases, rollout
from envs.metaworld import TASKS
from envs.generate import MAX_ATTEMPTS, WARPS, Args, episode_kinds, generate, main, make_episode, split, warp_indices
from rewards.video import decode_video, read_manifest

FIELDS = {"path", "task", "paraphrase", "paraphrases", "success", "env", "env_task", "seed", "split", "kind", "policy", "num_frames",
          "progress", "performed", "warp", "speed", "source_frames", "attempt"}
FAILURES = {"random", "noisy_expert", "early_stop", "other_task"}


def test_generate_writes_decodable_videos_and_manifest(tmp_path):
    args = Args(tasks=["GoToRedBall", "GoToLocal"], episodes=4, out=str(tmp_path), seed=10, workers=2)
    manifest = generate(args)
    assert manifest == tmp_path / "manifest.jsonl"
    rows = read_manifest(tmp_path)
    assert len(rows) == 4 and all(set(row) == FIELDS for row in rows)
    assert [row["env_task"] for row in rows] == ["GoToRedBall", "GoToLocal"] * 2
    assert [row["seed"] for row in rows] == [10, 11, 12, 13]
    assert [row["kind"] for row in rows] == ["expert", "expert", "random", "random"]
    assert sorted(p.name for p in (tmp_path / "videos").iterdir()) == [f"{i:05d}.mp4" for i in range(4)]
    for row in rows:
        frames = decode_video(row["path"])
        episode = rollout(row["env_task"], row["seed"], row["policy"], attempt=row["attempt"])
        assert frames.shape == (row["num_frames"], 64, 64, 3) == episode.frames.shape
        assert np.abs(frames.astype(int) - episode.frames).mean() < 10
        assert row["env"] == "babyai" and len(row["progress"]) == row["num_frames"]
        assert row["progress"][0] == 0 and (row["progress"][-1] == 1) == row["success"]
        sentences = paraphrases(episode.mission)  # a task's j-th episode is worded with rewording j
        assert row["task"] == sentences[row["paraphrase"]] and set(row["paraphrases"]) == set(sentences) - {row["task"]}
    assert [row["paraphrase"] for row in rows] == [0, 0, 1, 1] and rows[2]["task"].startswith("walk to")
    assert all(row["success"] for row in rows if row["kind"] == "expert")


@pytest.fixture(scope="module")
def every_kind(tmp_path_factory):
    """One BabyAI set holding every kind, generated twice with the same seed."""
    args = Args(tasks=["PutNextLocal"], episodes=8, seed=3, failure_fraction=0.5, warp_fraction=0.5, workers=2)
    outs = [tmp_path_factory.mktemp(name) for name in ("a", "b")]
    for out in outs:
        generate(dataclasses.replace(args, out=str(out)))
    return outs


def test_every_kind_is_labelled_truthfully(every_kind):
    rows = read_manifest(every_kind[0])
    assert Counter(row["kind"] for row in rows) == {"warped": 4, **dict.fromkeys(FAILURES, 1)}
    assert {row["warp"] for row in rows if row["kind"] == "warped"} == set(WARPS)
    for row in rows:
        assert len(decode_video(row["path"])) == row["num_frames"]
        if row["kind"] in ("early_stop", "other_task"):
            assert not row["success"], row
        elif row["kind"] in FAILURES:  # re-drawn until it fails, up to MAX_ATTEMPTS times
            assert not row["success"] or row["attempt"] == MAX_ATTEMPTS - 1
    for row in rows:
        if row["kind"] == "random":
            assert row["success"] == rollout(row["env_task"], row["seed"], "random", attempt=row["attempt"]).success
    other = next(row for row in rows if row["kind"] == "other_task")
    assert other["performed"].startswith("pick up") and other["performed"] != other["task"]


def test_same_seed_gives_identical_files(every_kind):
    first, second = every_kind
    assert (first / "manifest.jsonl").read_bytes() == (second / "manifest.jsonl").read_bytes()
    for video in sorted((first / "videos").iterdir()):
        assert video.read_bytes() == (second / "videos" / video.name).read_bytes(), video.name


def test_warped_demos_replay_the_expert_states_in_order(every_kind):
    for row in read_manifest(every_kind[0]):
        if row["kind"] != "warped":
            continue
        expert = rollout(row["env_task"], row["seed"], "expert")
        warped, extra = make_episode("babyai", row["env_task"], row["seed"], row["warp"], 64, 0)
        index = np.array(extra["source_frames"])
        assert extra == {k: row[k] for k in extra} and len(index) == row["num_frames"]
        np.testing.assert_array_equal(warped.states, expert.states[index])
        visited = index[np.r_[True, np.diff(index) > 0]]
        assert visited[0] == 0 and visited[-1] == len(expert.frames) - 1 and np.all(np.diff(visited) > 0)
        assert warped.success == expert.success == row["success"]
        frames = decode_video(row["path"])
        assert np.abs(frames.astype(int) - expert.frames[index]).mean() < 10


@pytest.mark.parametrize("warp, low, high", [("slow", 0.5, 0.8), ("fast", 1.5, 2.0), ("varying", 0.5, 2.0)])
def test_warp_speeds(warp, low, high):
    for seed in range(5):
        index = warp_indices(100, warp, np.random.default_rng(seed))
        assert index[0] == 0 and index[-1] == 99 and np.all(np.diff(index) >= 0)
        assert low - 0.05 <= 99 / (len(index) - 1) <= high + 0.05
    pauses = warp_indices(20, "pause", np.random.default_rng(0))
    assert np.array_equal(np.unique(pauses), np.arange(20)) and 20 + 9 <= len(pauses) <= 20 + 24


def test_early_stop_ends_before_success():
    for seed in range(4):
        episode, extra = make_episode("babyai", "PutNextLocal", seed, "early_stop", 64, 0)
        expert = rollout("PutNextLocal", seed, "expert")
        assert not episode.success and extra["kind"] == "early_stop"
        assert 1 <= len(episode.frames) <= expert.success_step
        np.testing.assert_array_equal(episode.frames, expert.frames[: len(episode.frames)])


def test_metaworld_set(tmp_path):
    args = Args(env="metaworld", tasks=["reach", "button-press-v3"], episodes=4, out=str(tmp_path), seed=0,
                warp_fraction=0.5, failure_fraction=0.5, failures=["random"], max_steps=70, workers=2)
    rows = read_manifest(generate(args).parent)
    assert [(row["env_task"], row["kind"]) for row in rows] == [
        ("reach", "random"), ("button-press", "random"), ("reach", "warped"), ("button-press", "warped")]
    for row in rows:
        assert len(decode_video(row["path"])) == row["num_frames"] == len(row["progress"])
        assert row["env"] == "metaworld" and row["success"] == (row["kind"] == "warped")
        assert row["task"] == TASKS[row["env_task"]][row["paraphrase"]]
        assert set(row["paraphrases"]) == set(TASKS[row["env_task"]]) - {row["task"]}
    assert [row["paraphrase"] for row in rows] == [0, 0, 1, 1]  # a task's j-th episode: sentence j
    for row in rows[2:]:
        assert row["progress"][0] == 0 and row["progress"][-1] == 1


@pytest.mark.parametrize(
    "change",
    [{"tasks": ["GoToTheMoon"]}, {"env": "metaworld", "tasks": ["GoToRedBall"]}, {"env": "minecraft"},
     {"episodes": 0}, {"render_size": 63}, {"workers": 0}, {"failure_fraction": 1.5},
     {"failure_fraction": 0.6, "warp_fraction": 0.6}, {"failures": ["teleport"]}, {"max_steps": -1}],
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


def test_kinds_are_spread_and_cycle():
    args = Args(failure_fraction=0.5)
    assert episode_kinds(6, args) == ["expert", "random", "expert", "noisy_expert", "expert", "early_stop"]
    assert set(episode_kinds(10, Args(failure_fraction=0.0))) == {"expert"}
    kinds = episode_kinds(40, Args(failure_fraction=0.25, warp_fraction=0.5))
    assert Counter(kinds) == {"expert": 10, "random": 3, "noisy_expert": 3, "early_stop": 2, "other_task": 2,
                              "slow": 5, "fast": 5, "pause": 5, "varying": 5}
    assert kinds[:20].count("expert") == 5  # every prefix keeps the shares


def test_split_is_stable_and_roughly_80_10_10():
    counts = Counter(split(seed) for seed in range(2000))
    assert split(123) == split(123)
    assert 1500 < counts["train"] < 1700 and 130 < counts["val"] < 270 and 130 < counts["test"] < 270


def test_main_parses_argv(tmp_path):
    manifest = main(["--tasks", "GoToObj", "--episodes", "2", "--out", str(tmp_path), "--workers", "1"])
    assert [row["env_task"] for row in read_manifest(manifest.parent)] == ["GoToObj", "GoToObj"]


def test_write_video_is_safe_while_ray_threads_are_busy(ray_cluster, tmp_path):
    """Videos are written in processes that run Ray (the test session, the service, RL trainers): encoding must
    not fork with handlers while gRPC threads are in use (that aborted the child under load)."""
    import threading

    import ray

    from envs.generate import write_video

    @ray.remote(num_cpus=0)
    def echo(value):
        return value

    stop = threading.Event()

    def keep_grpc_busy():
        while not stop.is_set():
            ray.get([echo.remote(i) for i in range(8)])

    busy = threading.Thread(target=keep_grpc_busy)
    busy.start()
    try:
        frames = np.zeros((8, 34, 30, 3), np.uint8)
        for t in range(8):  # a square that moves: content an encoder keeps
            frames[t, 4:14, 2 + 3 * t:12 + 3 * t] = (220, 40, 40)
        for i in range(20):
            decoded = decode_video(write_video(tmp_path / f"{i}.mp4", frames))
            assert decoded.shape == frames.shape
    finally:
        stop.set()
        busy.join()
    assert np.abs(decoded.astype(int) - frames).mean() < 4


def test_write_video_pads_odd_sides_and_keeps_pixels(tmp_path):
    from envs.generate import write_video

    frames = np.zeros((5, 33, 31, 3), np.uint8)
    frames[:, :16] = (200, 30, 30)
    decoded = decode_video(write_video(tmp_path / "odd.mp4", frames))
    assert decoded.shape == (5, 34, 32, 3)
    assert np.abs(decoded[:, :33, :31].astype(int) - frames).mean() < 4
