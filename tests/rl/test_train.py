"""Language-conditioned PPO: the task embedding reaches the policy; success per task in the summary; each RL library
is one run function behind `vlreward rl`."""

from __future__ import annotations

import inspect

import numpy as np
import pytest
import torch
from ray.rllib.connectors.connector_v2 import ConnectorV2

from rewards.text import MINILM_DIM, shared_minilm
from rl.experiment import plot_curves, reached, read_curves, summarize
from rl.rllib_train import build_config, iteration_row
from rl.train import CURVE_FIELDS, LIBRARIES, Args, get_train_run, make_training_env, train, write_curves

TASKS = ["GoToRedBallNoDists", "GoToLocal"]  # "go to the red ball" and "go to the <colour> <object>" missions


class ObservationRecorder(ConnectorV2):
    """Last learner connector piece: keeps the observations the policy is trained on, and the missions."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.observations, self.missions = [], set()

    def __call__(self, *, batch, episodes, **kwargs):
        self.observations.append(torch.as_tensor(batch["default_policy"]["obs"]).numpy())
        self.missions |= {episode.get_infos(0)["mission"] for episode in episodes}
        return batch


def test_each_episode_samples_a_task_and_observes_its_embedding():
    env = make_training_env({"env": "babyai", "tasks": TASKS, "seed": 0, "task_embedding": True, "render_size": 64})
    missions = set()
    for _ in range(8):
        obs, info = env.reset()
        assert obs.shape == (7 * 7 * 3 + 4 + MINILM_DIM,) and env.observation_space.contains(obs)
        np.testing.assert_allclose(obs[-MINILM_DIM:], shared_minilm()([info["mission"]])[0].numpy(), atol=1e-6)
        missions.add(info["mission"])
    assert "go to the red ball" in missions and len(missions) >= 3


def test_the_task_embedding_reaches_the_policy_observation(ray_cluster):
    args = Args(tasks=TASKS, max_episode_steps=8, train_batch_size=64)
    config = build_config(args, "sparse", 0, reward_model_factory=None).training(minibatch_size=64, num_epochs=1)
    algo = config.build_algo()
    recorder = ObservationRecorder()
    algo.learner_group.foreach_learner(lambda learner: learner._learner_connector.append(recorder))
    try:
        assert algo.get_module().observation_space.shape == (7 * 7 * 3 + 4 + MINILM_DIM,)
        row = iteration_row("sparse", 0, 1, algo.train(), 1.0)
    finally:
        algo.stop()
    observations = np.concatenate(recorder.observations)
    embeddings = shared_minilm()(sorted(recorder.missions)).numpy()
    # every row the policy trains on ends in the embedding of one of the episodes' missions
    distance = np.abs(observations[:, None, -MINILM_DIM:] - embeddings[None]).max(-1)
    assert distance.min(1).max() < 1e-5
    assert len(set(distance.argmin(1))) >= 2  # several tasks in one batch
    # the iteration's finished episodes (8-step limit: at least 64 / 8) and successes, for rl.experiment's points
    assert row["episodes"] >= 8 and 0 <= row["successes"] <= row["episodes"]


def test_a_multi_task_run_reports_success_per_task(tmp_path):
    def run(reward, success, per_task):
        return [{"reward": reward, "seed": 0, "iteration": i + 1, "env_steps": 1000 * (i + 1), "success_rate": s,
                 "success_rate/GoToLocal": local, "time_s": 1.0, "reward_s": 0.0}
                for i, (s, local) in enumerate(zip(success, per_task))]

    rows = run("sparse", [0.1, 0.2, 0.3], [0.0, 0.1, 0.2]) + run("dense", [0.3, 0.6, 0.9], [0.3, 0.3, 0.6])
    write_curves([dict.fromkeys(CURVE_FIELDS, 0) | row for row in rows], tmp_path / "curves.csv")
    assert open(tmp_path / "curves.csv").readline().strip().endswith(",success_rate/GoToLocal")
    table = summarize(read_curves(tmp_path / "curves.csv")).splitlines()
    # trailing 3-iteration means of the GoToLocal column: 0.10 (sparse) and 0.40 (dense)
    assert table[-4:] == ["| reward | final success: GoToLocal |", "|---|---|", "| sparse | 0.10 |", "| dense | 0.40 |"]
    assert plot_curves(rows, tmp_path / "curves.png", "test").stat().st_size > 1000


def test_ppo_bootstraps_its_advantages_by_default():
    """GAE λ 0.95 (SB3's and most PPO setups'): with RLlib's own 1.0 every kind learned 2x slower (README, RL)."""
    assert build_config(Args(), "sparse", 0, lambda: None).lambda_ == 0.95
    assert build_config(Args(gae_lambda=1.0), "sparse", 0, lambda: None).lambda_ == 1.0


def test_unknown_reward_mode_is_refused():
    with pytest.raises(ValueError, match="valid modes"):
        build_config(Args(), "shaped", 0, reward_model_factory=None)


def test_unknown_score_in_is_refused():
    with pytest.raises(ValueError, match="valid: env-runner, learner"):
        build_config(Args(score_in="driver"), "dense", 0, reward_model_factory=None)


def test_the_reward_share_counts_submitting_and_waiting_on_the_env_runner_path():
    result = {"env_runners": {"num_env_steps_sampled_lifetime": 1000, "vlreward/submit_s": 0.25},
              "learners": {"vlreward/wait_s": 0.5, "vlreward/frames": 900, "vlreward/frame_bytes": 2**20}}
    row = iteration_row("dense", 0, 1, result, 10.0)
    assert (row["reward_s"], row["frames"], row["frame_mb"]) == (0.75, 900, 1.0)
    older = {"env_runners": {}, "learners": {"vlreward/gather_s": 0.125, "vlreward/score_s": 2.0}}
    assert iteration_row("dense", 0, 1, older, 10.0)["reward_s"] == 2.125


@pytest.mark.parametrize("library", sorted(LIBRARIES))
def test_each_library_is_one_run_function_of_the_same_signature(library):
    try:
        run = get_train_run(library)
    except ModuleNotFoundError as missing:  # an optional library that is not installed (sb3: pip install -e '.[sb3]')
        pytest.skip(str(missing))
    assert list(inspect.signature(run).parameters) == ["args", "reward", "seed", "reward_model_factory"]


def test_an_unknown_library_is_refused_with_the_valid_ones():
    with pytest.raises(ValueError, match="valid: rllib, sb3"):
        get_train_run("cleanrl")


def test_vlreward_rl_runs_rllib_through_the_registry(tmp_path, ray_cluster):
    rows = train(Args(tasks=["GoToRedBall"], reward=["sparse"], steps=64, train_batch_size=64, num_envs=2,
                      max_episode_steps=8, out=str(tmp_path)))
    assert [row["iteration"] for row in rows] == [1] and rows[0]["env_steps"] >= 64
    assert read_curves(tmp_path / "sparse-seed0.csv")[0]["env_steps"] == rows[0]["env_steps"]


@pytest.mark.parametrize("library", sorted(LIBRARIES))
def test_a_run_ends_once_its_success_point_reaches_stop_at(library, tmp_path, ray_cluster):
    # a random policy solves GoToRedBallNoDists about a third of the time: the first point (32+ episodes) is > 0.05
    rows = train(Args(library=library, tasks=["GoToRedBallNoDists"], reward=["sparse"], steps=50_000,
                      train_batch_size=512, num_envs=2, stop_at=0.05, out=str(tmp_path)))
    assert reached(rows, 0.05) and not reached(rows[:-1], 0.05)
    assert rows[-1]["env_steps"] < 10_000
