import gymnasium as gym
import numpy as np
import pytest

from envs.babyai import Episode, make_env, paraphrases, remaining_path, rollout


def test_observation_and_info_shapes():
    env = make_env("GoToRedBall", seed=0)
    obs, info = env.reset()
    assert env.action_space == gym.spaces.Discrete(7)
    assert obs.shape == (7 * 7 * 3 + 4,) and obs.dtype == np.float32
    assert env.observation_space.contains(obs)
    assert obs[-4:].sum() == 1.0  # one-hot direction
    assert info["frame"].shape == (64, 64, 3) and info["frame"].dtype == np.uint8
    assert info["mission"] == "go to the red ball" and info["success"] is False

    obs, reward, terminated, truncated, info = env.step(env.action_space.sample())
    assert env.observation_space.contains(obs)
    assert info["frame"].shape == (64, 64, 3) and isinstance(info["success"], bool)


@pytest.mark.parametrize("task, render_size", [("BabyAI-GoToLocal-v0", 32), ("GoTo", 64), ("GoToObj", 48)])
def test_frame_is_resized_exactly(task, render_size):
    _, info = make_env(task, seed=1, render_size=render_size).reset()
    assert info["frame"].shape == (render_size, render_size, 3)


@pytest.mark.parametrize("task", ["GoToRedBall", "KeyCorridorS3R3", "OpenDoor"])
def test_the_frame_is_minigrids_own_unhighlighted_view(task):
    """Pixel for pixel (envs.babyai.TileAtlas lays out MiniGrid's tiles), doors opened and objects moved included."""
    env = make_env(task, seed=3, render_size=70)
    actions = np.random.default_rng(0).integers(0, 6, 80)  # turns, moves, pick-ups, drops and toggles
    for action in (None, *actions):
        info = env.reset()[1] if action is None else env.step(int(action))[-1]
        tile_size = -(-70 // max(env.unwrapped.width, env.unwrapped.height))  # as BabyAIEnv.render sizes its tiles
        frame = env.unwrapped.get_frame(highlight=False, tile_size=tile_size)
        rows = np.arange(70) * frame.shape[0] // 70
        assert np.array_equal(info["frame"], frame[rows][:, np.arange(70) * frame.shape[1] // 70])


def test_unknown_level_lists_valid_names():
    with pytest.raises(ValueError, match="GoToRedBall"):
        make_env("GoToTheMoon")


def test_reset_is_deterministic():
    (obs_a, info_a), (obs_b, info_b) = make_env("GoToLocal", seed=7).reset(), make_env("GoToLocal").reset(seed=7)
    assert np.array_equal(obs_a, obs_b) and np.array_equal(info_a["frame"], info_b["frame"])
    assert info_a["mission"] == info_b["mission"]


@pytest.mark.parametrize("task", ["GoToRedBall", "GoToLocal", "PickupLoc", "PutNextLocal"])
def test_expert_solves(task):
    for seed in range(5):
        episode = rollout(task, seed, "expert")
        assert isinstance(episode, Episode)
        assert episode.success, (task, seed)
        assert episode.frames.shape == (len(episode.actions) + 1, 64, 64, 3)
        assert episode.frames.dtype == np.uint8
        assert episode.task == task and episode.seed == seed and episode.policy == "expert"
        assert episode.success_step == len(episode.actions) and episode.states.shape == (len(episode.frames), 151)


def test_random_fails_mostly():
    episodes = [rollout("GoToRedBall", seed, "random") for seed in range(10)]
    assert sum(e.success for e in episodes) <= 5
    assert {a for e in episodes for a in e.actions} <= {0, 1, 2}  # left, right, forward


def test_rollout_is_deterministic():
    a, b = rollout("GoToLocal", 3, "noisy_expert"), rollout("GoToLocal", 3, "noisy_expert")
    assert np.array_equal(a.actions, b.actions) and np.array_equal(a.frames, b.frames)
    assert not np.array_equal(rollout("GoToLocal", 4, "noisy_expert").frames[0], a.frames[0])


def test_max_steps_and_unknown_policy():
    episode = rollout("GoToRedBall", 0, "random", max_steps=5)
    assert len(episode.actions) == 5 and len(episode.frames) == 6
    with pytest.raises(ValueError, match="other_task"):
        rollout("GoToRedBall", 0, "clairvoyant")


@pytest.mark.parametrize("task", ["GoToLocal", "PickupLoc", "PutNextLocal"])
def test_other_task_is_a_hard_negative(task):
    for seed in range(5):
        episode = rollout(task, seed, "other_task")
        assert episode.policy == "other_task" and not episode.success, (task, seed)
        assert episode.performed and episode.performed != episode.mission
        assert episode.performed.split()[:2] == (["go", "to"] if task == "GoToLocal" else ["pick", "up"])
    assert rollout("GoToObj", 0, "other_task").policy == "random"  # a single object: no other task to do


@pytest.mark.parametrize("mission, second", [("go to the red ball", "walk to the red ball"),
                                             ("pick up a key", "grab a key"),
                                             ("put the blue box next to the red ball", "place the blue box next to the red ball")])
def test_paraphrases_reword_the_verb_only(mission, second):
    sentences = paraphrases(mission)
    assert sentences[:2] == (mission, second) and len(set(sentences)) == 4


def test_a_mission_without_known_verb_has_no_paraphrase():
    assert paraphrases("dance around the ball") == ("dance around the ball",)


@pytest.mark.parametrize("task", ["GoToRedBall", "GoToLocal", "PickupLoc"])
def test_progress_is_the_share_of_the_bots_remaining_path_closed(task):
    for seed in range(3):
        expert = rollout(task, seed, "expert")
        steps = np.diff(expert.progress[: expert.success_step + 1])
        assert expert.progress[0] == 0 and expert.progress[expert.success_step] == 1
        assert (steps > 0).all() and np.ptp(steps) < 1e-4 or task == "PickupLoc"  # GoTo: one action, one share
        assert (np.diff(expert.progress) >= 0).all()
        random = rollout(task, seed, "random")
        assert random.progress.shape == (len(random.frames),) and random.progress.min() >= 0
        assert (random.progress.max() == 1) == random.success  # a random walk may happen to succeed


def test_missions_without_one_object_to_reach_have_no_progress():
    assert rollout("PutNextLocal", 0, "expert").progress is None


def test_progress_info_stacks_in_a_vector_env_of_mixed_missions():
    envs = gym.vector.SyncVectorEnv([lambda: make_env("GoToRedBall", seed=0), lambda: make_env("PutNextLocal", seed=1)])
    envs.reset()
    for _ in range(3):
        *_, infos = envs.step(envs.action_space.sample())
    assert infos["progress"].dtype.kind == "f" and 0 <= infos["progress"][0] <= 1 and np.isnan(infos["progress"][1])
    envs.close()


@pytest.mark.parametrize("task", ["UnlockLocal", "KeyCorridorS3R1", "GoToObjMaze"])
def test_progress_crosses_closed_doors_and_fetches_the_key_of_a_locked_one(task):
    """Multi-room levels: the path toggles closed doors, and a locked door's key is fetched first, so progress
    exists from the reset and reaches 1 on the expert's success."""
    for seed in range(2):
        expert = rollout(task, seed, "expert")
        assert expert.success and expert.progress[0] == 0 and expert.progress[expert.success_step] == 1


def test_carrying_the_key_shortens_the_path_to_a_locked_door():
    env = make_env("UnlockLocal", seed=0)
    env.reset()
    level = env.unwrapped
    without = remaining_path(level)
    key = next(obj for obj in level.grid.grid if obj is not None and obj.type == "key")
    level.grid.set(*key.cur_pos, None)
    level.carrying = key
    assert 0 < remaining_path(level) < without


def test_no_frames_when_render_size_is_0():
    env = make_env("GoToRedBall", seed=0, render_size=0)
    assert "frame" not in env.reset()[1] and "frame" not in env.step(2)[-1]


def test_a_frame_shrunk_by_rescale_frames_is_close_to_the_smaller_render():
    """Training at several frame sizes (`vlreward train --frame-scales`) stands in for smaller renders: BabyAI's
    32 px frame is within 6 grey levels on average of its 64 px frame shrunk to half."""
    from rewards.preprocess import rescale_frames

    big, small = (make_env("GoToLocal", seed=3, render_size=size).reset(seed=3)[1]["frame"] for size in (64, 32))
    shrunk = rescale_frames(big[None], 0.5)[0]
    assert shrunk.shape == small.shape
    assert np.abs(shrunk.astype(int) - small).mean() < 6
