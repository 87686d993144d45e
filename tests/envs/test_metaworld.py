import numpy as np
import pytest

from envs.metaworld import SAME_SCENE, TASKS, make_env, rollout, task_name

SIZE = 64  # small frames keep MuJoCo rendering cheap


@pytest.fixture(scope="module")
def reach_env():
    env = make_env("reach", seed=0, render_size=SIZE)
    yield env
    env.close()


def project(env, point: np.ndarray) -> np.ndarray:
    """(row, col) of a world point in the returned (rotated upright) frame, from the camera's pose and fovy."""
    model, data, cam = env.env.model, env.env.data, env.camera
    local = data.cam_xmat[cam].reshape(3, 3).T @ (point - data.cam_xpos[cam])  # camera looks along -z, y up
    focal = SIZE / 2 / np.tan(np.radians(model.cam_fovy[cam]) / 2)
    raw_row, raw_col = SIZE / 2 - focal * local[1] / -local[2], SIZE / 2 + focal * local[0] / -local[2]
    return np.array([SIZE - 1 - raw_row, SIZE - 1 - raw_col])


def test_task_table():
    assert len(TASKS) >= 10
    for task, sentences in TASKS.items():
        assert len(sentences) >= 4 and len(set(sentences)) == len(sentences), task
    assert all(task in TASKS and other in TASKS and other != task for task, other in SAME_SCENE.items())
    assert task_name("drawer-open-v3") == "drawer-open"
    with pytest.raises(ValueError, match="drawer-open"):
        task_name("make-coffee")


def test_spaces_and_info(reach_env):
    obs, info = reach_env.reset(seed=3)
    assert obs.shape == (39,) and obs.dtype == np.float32 and reach_env.observation_space.contains(obs)
    assert info["frame"].shape == (SIZE, SIZE, 3) and info["frame"].dtype == np.uint8
    assert info["mission"] == TASKS["reach"][0] and info["success"] is False and info["progress"] == 0.0
    obs, reward, terminated, truncated, info = reach_env.step(reach_env.action_space.sample())
    assert obs.dtype == np.float32 and isinstance(info["success"], bool) and 0 <= info["progress"] <= 1
    assert make_env("reach", seed=0, render_size=SIZE, paraphrase=2).reset()[1]["mission"] == TASKS["reach"][2]


def test_seed_picks_the_scene(reach_env):
    goal_a = reach_env.reset(seed=3)[0][-3:]
    goal_b = reach_env.reset(seed=4)[0][-3:]
    assert not np.allclose(goal_a, goal_b)
    np.testing.assert_array_equal(reach_env.reset(seed=3)[0][-3:], goal_a)
    np.testing.assert_array_equal(reach_env.reset()[0][-3:], goal_b)  # no seed: the next scene
    np.testing.assert_array_equal(reach_env.reset(seed=53)[0][-3:], reach_env.reset(seed=53)[0][-3:])


def test_frames_are_upright_and_show_the_gripper(reach_env):
    reach_env.reset(seed=0)
    frame = reach_env.render().astype(int)
    assert frame.std() > 20 and len(np.unique(frame.reshape(-1, 3), axis=0)) > 100  # a scene, not a blank
    # upright: the wooden table top (brown: red > green > blue) fills the lower half, not the upper
    brown = (frame[..., 0] > frame[..., 1] + 15) & (frame[..., 1] > frame[..., 2] + 5)
    assert brown[SIZE // 2:].mean() > 3 * brown[: SIZE // 2].mean()
    # the gripper's cyan fingers sit where the camera model projects the gripper; moved off-centre, that spot
    # is far from where an image that is not rotated upright would show them
    for _ in range(25):
        reach_env.step(np.array([1.0, 0.0, 0.0, -1.0], np.float32))  # hand to +x, gripper open
    frame = reach_env.render().astype(int)
    rows, cols = np.nonzero((frame[..., 1] > 150) & (frame[..., 2] > 150) & (frame[..., 0] < 100))
    assert len(rows) >= 2
    fingers, expected = np.array([rows.mean(), cols.mean()]), project(reach_env, reach_env.env.tcp_center)
    assert np.linalg.norm(fingers - expected) < 4, (fingers, expected)
    assert np.linalg.norm(fingers - (SIZE - 1 - expected)) > 12


@pytest.mark.parametrize("task", ["reach", "button-press", "plate-slide"])
def test_expert_succeeds_with_rising_progress(task):
    env = make_env(task, render_size=SIZE)
    for seed in range(2):
        episode = rollout(task, seed, "expert", env=env, max_steps=120)
        assert episode.success and episode.success_step is not None, (task, seed)
        assert len(episode.frames) == len(episode.states) == len(episode.actions) + 1 == episode.success_step + 11
        assert episode.frames.shape[1:] == (SIZE, SIZE, 3) and episode.actions.shape[1:] == (4,)
        assert episode.progress[0] == 0 and episode.progress[episode.success_step] == 1
        assert np.corrcoef(episode.progress, np.arange(len(episode.progress)))[0, 1] > 0.5
    env.close()


def test_failures_fail_and_hard_negatives_say_what_they_did():
    env = make_env("drawer-close", render_size=SIZE)
    random = rollout("drawer-close", 0, "random", env=env, max_steps=40)
    assert not random.success and len(random.actions) == 40 and np.abs(random.actions).max() <= 1
    other = rollout("drawer-close", 0, "other_task", env=env, max_steps=60)
    assert not other.success and other.performed == TASKS["drawer-open"][0] and other.mission == TASKS["drawer-close"][0]
    env.close()
    assert rollout("button-press", 0, "other_task", render_size=SIZE, max_steps=5).policy == "random"  # no partner


def test_rollout_is_deterministic(reach_env):
    a, b = (rollout("reach", 7, "noisy_expert", env=reach_env, max_steps=20) for _ in range(2))
    assert np.array_equal(a.frames, b.frames) and np.array_equal(a.states, b.states)
    c = rollout("reach", 7, "noisy_expert", env=reach_env, max_steps=20, attempt=1)
    assert not np.array_equal(a.actions, c.actions)


def test_no_frames_and_no_renderer_when_render_size_is_0():
    env = make_env("drawer-open", seed=0, render_size=0)
    assert env.renderer is None and "frame" not in env.reset()[1] and "frame" not in env.step(np.zeros(4))[-1]
    env.close()


def test_coarse_meshes_draw_the_same_scene_with_fewer_triangles():
    """The welded render meshes keep the picture (under one grey level off on average, the gripper where the full
    meshes draw it) with a fraction of the triangles; physics keeps the full model."""
    full, coarse = (make_env("drawer-open", seed=3, render_size=SIZE, render_mesh_cell=cell) for cell in (0, 0.01))
    rng = np.random.default_rng(0)
    for env in (full, coarse):
        env.reset()
    for _ in range(20):
        action = rng.uniform(-1, 1, 4).astype(np.float32)
        (full_obs, *_), (coarse_obs, *_) = full.step(action), coarse.step(action)
    assert np.array_equal(full_obs, coarse_obs)
    difference = np.abs(full.render().astype(int) - coarse.render().astype(int))
    assert difference.mean() < 1.5, difference.mean()
    assert coarse.renderer.model.mesh_facenum.sum() < 0.3 * coarse.env.model.mesh_facenum.sum()
    assert full.renderer.model is full.env.model
    full.close(), coarse.close()
