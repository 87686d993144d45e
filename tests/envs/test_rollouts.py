import json

import decord
import gymnasium as gym
import numpy as np
import pytest

from envs.babyai import make_env
from envs.rollouts import KEEP_AFTER_SUCCESS, ImportArgs, RecordEpisodes, import_rollouts, rollout_episode
from rewards.progress.train import progress_targets


def limited(steps: int) -> gym.Env:
    return gym.wrappers.TimeLimit(make_env("GoToRedBall", render_size=32), max_episode_steps=steps)


def run_episodes(env, count: int, seed: int = 0) -> list[tuple[int, bool]]:
    """`count` random episodes; (frames, success) of each."""
    rng = np.random.default_rng(seed)
    episodes = []
    for k in range(count):
        env.reset(seed=seed + k)
        frames, done, success = 1, False, False
        while not done:
            *_, terminated, truncated, info = env.step(int(rng.integers(3)))
            frames, done, success = frames + 1, terminated or truncated, success or info["success"]
        episodes.append((frames, success))
    return episodes


def test_recorded_episodes_import_as_labelled_rows(tmp_path):
    env = RecordEpisodes(limited(12), tmp_path / "rec", every=2, task="GoToRedBall")
    episodes = run_episodes(env, 5)
    recorded = episodes[::2]  # episodes 0, 2 and 4 of this env
    assert len(list((tmp_path / "rec").glob("*.npz"))) == len(recorded)

    args = ImportArgs(rollouts=str(tmp_path / "rec"), env="babyai", out=str(tmp_path / "data"), seed=7)
    import_rollouts(args)
    import_rollouts(args)  # a second import appends, numbering on
    rows = [json.loads(line) for line in (tmp_path / "data" / "manifest.jsonl").read_text().splitlines()]
    assert [row["path"] for row in rows] == [f"videos/rollout-{n:05d}.mp4" for n in range(6)]
    assert [row["seed"] for row in rows] == list(range(7, 13))
    assert len({row["task"] for row in rows}) > 1
    assert sorted((row["num_frames"], row["success"]) for row in rows[:3]) == sorted(recorded)
    for row in rows:
        assert row["kind"] == "rollout" and row["env_task"] == "GoToRedBall"
        assert "red ball" in row["task"]  # worded with the task's sentences in turn
        assert len(decord.VideoReader(str(tmp_path / "data" / row["path"]))) == row["num_frames"]
        targets = progress_targets(row, row["num_frames"])  # the env's progress, never time along the recording
        np.testing.assert_allclose(targets, row["progress"])


def test_a_successful_rollout_is_cut_after_its_success(tmp_path):
    success = np.zeros(40, bool)
    success[5:] = True
    np.savez(tmp_path / "a.npz", frames=np.zeros((40, 8, 8, 3), np.uint8), progress=np.linspace(0, 1, 40),
             success=success, mission="press the button", task="button-press")
    episode = rollout_episode(tmp_path / "a.npz", seed=3)
    assert episode.success and episode.success_step == 5 and len(episode.frames) == 5 + KEEP_AFTER_SUCCESS + 1
    assert len(episode.progress) == len(episode.frames) and episode.task == "button-press"


def test_strided_frames_are_not_recorded(tmp_path):
    env = RecordEpisodes(limited(6), tmp_path, every=1, task="GoToRedBall")
    env.reset(seed=0)
    env.step(0)  # an info without a frame, as a strided render leaves
    env._infos[-1] = {key: value for key, value in env._infos[-1].items() if key != "frame"}
    for _ in range(5):
        env.step(0)
    assert not list(tmp_path.glob("*.npz"))


def test_import_without_recordings_says_so(tmp_path):
    with pytest.raises(ValueError, match="no recorded episodes"):
        import_rollouts(ImportArgs(rollouts=str(tmp_path), env="babyai", out=str(tmp_path / "data")))
