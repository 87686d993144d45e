"""ServiceReward: unit checks on hand-built episodes, then real PPO iterations on BabyAI with a local learner."""

from __future__ import annotations

import functools

import numpy as np
import pytest
from ray.rllib.connectors.connector_v2 import ConnectorV2
from ray.rllib.connectors.learner import AddColumnsFromEpisodesToTrainBatch, AddOneTsToEpisodesAndTruncate
from ray.rllib.env.single_agent_episode import SingleAgentEpisode

from rewards import ModelNotReadyError
from rewards.base import GoalEmbedding, Score, goal_digest
from rl.connector import ServiceReward
from rl.handle import DeploymentRewardModel
from rl.mix import RewardMix
from rl.train import Args, build_config
from serve.client import RemoteRewardModel


class FrameMeanTestModel:
    """Deterministic stand-in RewardModel: value = mean pixel / 255, reward = value difference (rewards[0] = 0).

    Records every `score_batch` call so tests can check what the connector sent.
    """

    name = "frame-mean-test"
    goal_kinds = ("text",)
    version = "0"

    def __init__(self):
        self.calls: list[tuple[list[np.ndarray], list[str]]] = []

    def embed_goal(self, goal) -> GoalEmbedding:
        return GoalEmbedding("text", np.zeros(1, np.float32), goal_digest(goal))

    def score(self, frames: np.ndarray, goal) -> Score:
        values = frames.reshape(len(frames), -1).mean(axis=1) / 255.0 + 0.01 * len(goal)
        return Score(values, np.concatenate([[0.0], np.diff(values)]))

    def score_batch(self, trajectories, goals) -> list[Score]:
        self.calls.append((list(trajectories), list(goals)))
        return [self.score(frames, goal) for frames, goal in zip(trajectories, goals)]


class RecordingModel:
    """Wraps a real RewardModel and records every `score_batch` call (trajectories, goals)."""

    def __init__(self, inner):
        self.inner = inner
        self.name, self.goal_kinds, self.version = inner.name, inner.goal_kinds, inner.version
        self.calls: list[tuple[list[np.ndarray], list[str]]] = []

    def embed_goal(self, goal):
        return self.inner.embed_goal(goal)

    def score(self, frames, goal):
        return self.inner.score(frames, goal)

    def score_batch(self, trajectories, goals):
        self.calls.append((list(trajectories), list(goals)))
        return self.inner.score_batch(trajectories, goals)


class BatchRewardRecorder(ConnectorV2):
    """Copies the REWARDS column per episode id right after RLlib built it from the episodes."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.calls: list[dict[str, np.ndarray]] = []
        self.columns: set[str] = set()

    def __call__(self, *, batch, **kwargs):
        self.columns |= set(batch)
        # each episode's items: already-batched arrays and/or single rewards, in step order
        self.calls.append(
            {
                key[0]: np.concatenate([np.atleast_1d(x) for x in items]).astype(np.float64)
                for key, items in batch["rewards"].items()
            }
        )
        return batch


# ---------------------------------------------------------------- the piece on hand-built episodes (no Ray)


def _episode(num_steps: int, env_rewards=None) -> SingleAgentEpisode:
    """Frames 0, 10, 20, ... grey; success on the step with a positive env reward."""
    frames = [np.full((4, 4, 3), 10 * t, np.uint8) for t in range(num_steps + 1)]
    rewards = env_rewards if env_rewards is not None else [0.0] * num_steps
    infos = [{"frame": f, "mission": "go to the red ball", "success": t > 0 and rewards[t - 1] > 0}
             for t, f in enumerate(frames)]
    return SingleAgentEpisode(
        observations=[np.zeros(2, np.float32)] * (num_steps + 1),
        infos=infos,
        actions=[0] * num_steps,
        rewards=rewards,
        terminated=True,
        len_lookback_buffer=0,
    ).to_numpy()


def _expected_score(episode_frames: int) -> Score:
    frames = np.stack([np.full((4, 4, 3), 10 * t, np.uint8) for t in range(episode_frames)])
    return FrameMeanTestModel().score(frames, "go to the red ball")


def _expected_dense(episode_frames: int) -> np.ndarray:
    return _expected_score(episode_frames).rewards[1:]


@pytest.mark.parametrize("with_extra_step", [False, True])
def test_dense_rewards_skip_the_masked_step(with_extra_step):
    model = FrameMeanTestModel()
    piece = ServiceReward(reward_model_factory=lambda: model, mix=RewardMix(scale=2.0))
    episodes, shared = [_episode(3), _episode(5)], {}
    if with_extra_step:
        AddOneTsToEpisodesAndTruncate()(rl_module=None, batch={}, episodes=episodes, shared_data=shared)
    piece(rl_module=None, batch={}, episodes=episodes, shared_data=shared)

    assert len(model.calls) == 1  # one batched call for all episodes
    trajectories, goals = model.calls[0]
    assert [len(t) for t in trajectories] == [4, 6] and goals == ["go to the red ball"] * 2
    for episode, num_steps in zip(episodes, (3, 5)):
        np.testing.assert_allclose(episode.get_rewards()[:num_steps], 2.0 * _expected_dense(num_steps + 1), rtol=1e-6)
        if with_extra_step:
            assert episode.get_rewards()[-1] == 0.0


def test_dense_plus_sparse_adds_the_success_bonus_and_sparse_makes_no_call():
    episode = _episode(3, env_rewards=[0.0, 0.0, 0.9])
    mix = RewardMix(mode="dense+sparse", success_bonus=2.0)
    ServiceReward(reward_model_factory=FrameMeanTestModel, mix=mix)(
        rl_module=None, batch={}, episodes=[episode], shared_data={}
    )
    np.testing.assert_allclose(episode.get_rewards(), _expected_dense(4) + [0.0, 0.0, 2.0], rtol=1e-6)

    episode = _episode(3, env_rewards=[0.0, 0.0, 0.9])
    ServiceReward(reward_model_factory=lambda: pytest.fail("sparse must not build the model"),
                  mix=RewardMix(mode="sparse", success_bonus=2.0))(
        rl_module=None, batch={}, episodes=[episode], shared_data={}
    )
    np.testing.assert_allclose(episode.get_rewards(), [0.0, 0.0, 2.0])  # the success flag, not the env's 0.9


def test_progress_signal_is_offset_by_the_first_value_and_normalize_divides_by_the_return_std():
    episodes = [_episode(3), _episode(5)]
    piece = ServiceReward(reward_model_factory=FrameMeanTestModel, mix=RewardMix(signal="progress", normalize=True))
    piece(rl_module=None, batch={}, episodes=episodes, shared_data={})
    progress = [(s.values[1:] - s.values[0]) for s in (_expected_score(4), _expected_score(6))]
    std = np.std([p.sum() for p in progress], ddof=1)
    for episode, expected in zip(episodes, progress):
        np.testing.assert_allclose(episode.get_rewards(), expected / std, rtol=1e-5)


def test_bad_inputs_raise():
    with pytest.raises(ValueError, match="valid modes"):
        RewardMix(mode="shaped")

    class ShortModel(FrameMeanTestModel):
        def score_batch(self, trajectories, goals):
            return [Score(s.values[:-1], s.rewards[:-1]) for s in super().score_batch(trajectories, goals)]

    with pytest.raises(ValueError, match="rewards for 4 frames"):
        ServiceReward(reward_model_factory=ShortModel)(rl_module=None, batch={}, episodes=[_episode(3)], shared_data={})

    chunk = _episode(3)
    chunk.t_started = chunk.t = 5  # a later chunk of a longer episode: its first frames are gone
    with pytest.raises(ValueError, match="complete_episodes"):
        ServiceReward(reward_model_factory=FrameMeanTestModel)(
            rl_module=None, batch={}, episodes=[chunk], shared_data={}
        )


def test_an_unready_model_is_waited_for_then_fails_loudly():
    attempts = []

    def flaky_factory():
        attempts.append(1)
        if len(attempts) < 3:
            raise ModelNotReadyError("cannot reach the service")
        return FrameMeanTestModel()

    episode = _episode(3)
    piece = ServiceReward(reward_model_factory=flaky_factory, ready_wait_s=5.0)
    piece.__call__(rl_module=None, batch={}, episodes=[episode], shared_data={})  # waits through two failures
    assert len(attempts) == 3
    np.testing.assert_allclose(episode.get_rewards(), _expected_dense(4), rtol=1e-6)

    def down():
        raise ModelNotReadyError("cannot reach the service")

    episode = _episode(3, env_rewards=[0.0, 0.0, 0.9])
    with pytest.raises(ModelNotReadyError, match="not ready after waiting 0 s"):
        ServiceReward(reward_model_factory=down, ready_wait_s=0.0)(
            rl_module=None, batch={}, episodes=[episode], shared_data={})
    np.testing.assert_allclose(episode.get_rewards(), [0.0, 0.0, 0.9])  # untouched, not zeroed


# ---------------------------------------------------------------- real PPO on BabyAI, local learner


def _small_config(model_factory, pieces: list, ready_wait_s: float = 0.0):
    """Two quick iterations' worth of PPO; the ServiceReward piece lands in `pieces` for inspection."""
    args = Args(tasks=["GoToRedBall"], max_episode_steps=16, train_batch_size=200, num_env_runners=0)
    config = build_config(args, "dense", 0, model_factory).training(minibatch_size=100, num_epochs=1)

    def make_piece(obs_space, act_space):
        pieces.append(ServiceReward(obs_space, act_space, reward_model_factory=model_factory, mix=RewardMix(),
                                    ready_wait_s=ready_wait_s))
        return pieces[-1]

    return config.learners(learner_connector=make_piece)


def test_ppo_trains_on_rewards_from_the_live_service(service_url):
    service = RemoteRewardModel(service_url)
    model, pieces = RecordingModel(service), []
    algo = _small_config(lambda: model, pieces).build_algo()
    recorder = BatchRewardRecorder()
    algo.learner_group.foreach_learner(
        lambda learner: learner._learner_connector.insert_after(AddColumnsFromEpisodesToTrainBatch, recorder)
    )
    try:
        for iteration in range(2):
            result = algo.train()
            assert len(model.calls) == iteration + 1  # exactly one score_batch call per iteration
            trajectories, goals = model.calls[-1]
            batch_rewards = recorder.calls[-1]
            assert list(batch_rewards) == list(pieces[0].last_rewards)  # same episodes, same order
            assert sum(len(r) - 1 for r in batch_rewards.values()) >= 200  # complete episodes fill the batch
            for frames, goal, rewards in zip(trajectories, goals, batch_rewards.values()):
                assert frames.dtype == np.uint8 and frames.shape[1:] == (64, 64, 3)
                assert frames.shape[0] == len(rewards)  # T+1 frames for T steps (+1 masked bootstrap reward)
                assert goal in {"go to the red ball", "go to a red ball"}  # GoToRedBall says either
                expected = service.score(frames, goal).rewards[1:]  # scored alone over HTTP, not in the batch
                np.testing.assert_allclose(rewards[:-1], expected, rtol=1e-4, atol=1e-5)
                assert rewards[-1] == 0.0
            assert any(np.abs(r[:-1]).max() > 0 for r in batch_rewards.values())  # not all zeros
            assert "infos" not in recorder.columns  # frames stay out of the train batch
            served = np.mean([r[:-1].sum() for r in batch_rewards.values()])
            assert result["learners"]["vlreward/mean_return"] == pytest.approx(served, rel=1e-5, abs=1e-7)
            assert "success_rate" in result["env_runners"]
            assert result["learners"]["vlreward/frames"] == sum(len(t) for t in trajectories)
            assert result["learners"]["vlreward/frame_bytes"] == sum(t.nbytes for t in trajectories)
    finally:
        algo.stop()


def test_deployment_handle_scores_like_the_http_client(service_url, random_frames):
    """Inside the cluster the connector can skip HTTP: same protocol, same numbers."""
    handle_model, http_model = DeploymentRewardModel("babyai-liv"), RemoteRewardModel(service_url, "babyai-liv")
    assert (handle_model.name, handle_model.version) == (http_model.name, http_model.version)
    trajectories = [random_frames, random_frames[:3]]
    goals = ["go to the red ball", "open the door"]
    for mine, theirs in zip(handle_model.score_batch(trajectories, goals), http_model.score_batch(trajectories, goals)):
        np.testing.assert_allclose(mine.rewards, theirs.rewards, rtol=1e-5, atol=1e-6)


def test_service_outage_fails_training_instead_of_training_on_zeros(ray_cluster):
    unreachable = functools.partial(RemoteRewardModel, "http://127.0.0.1:9", retries=1, backoff_s=0.01)
    algo = _small_config(unreachable, [], ready_wait_s=1.0).build_algo()
    try:
        with pytest.raises(ModelNotReadyError, match="not ready after waiting 1 s .*cannot reach"):
            algo.train()
    finally:
        algo.stop()
