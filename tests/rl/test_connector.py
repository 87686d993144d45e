"""ServiceReward and EpisodeScorer: unit checks on hand-built episodes, then real PPO iterations on BabyAI (local
learner) against the live service: scores submitted by the env runner as episodes end (HTTP and deployment handle),
and the older path with frames in the episodes."""

from __future__ import annotations

import concurrent.futures
import functools
import pickle
import threading
import time

import numpy as np
import pytest
from ray.rllib.connectors.connector_v2 import ConnectorV2
from ray.rllib.connectors.learner import AddColumnsFromEpisodesToTrainBatch, AddOneTsToEpisodesAndTruncate
from ray.rllib.env.single_agent_episode import SingleAgentEpisode

from rewards import InvalidTaskError, InvalidVideoError, ModelNotReadyError
from rewards.base import MAX_TASK_CHARS, GoalEmbedding, Score, goal_digest
from rl.connector import FRAME_STEPS_KEY, SCORE_KEY, EpisodeScorer, ServiceReward
from rl.handle import DeploymentRewardModel
from rl.mix import RewardMix
from rl.rllib_train import build_config
from rl.submission import EpisodeSubmitter, PendingScore
from rl.train import Args, load_reward_model
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
    """Wraps a real RewardModel and records every `score_batch` call (trajectories, goals) and every `submit`
    (frames, goal, the returned future)."""

    def __init__(self, inner):
        self.inner = inner
        self.name, self.goal_kinds, self.version = inner.name, inner.goal_kinds, inner.version
        self.calls: list[tuple[list[np.ndarray], list[str]]] = []
        self.submitted: list[tuple[np.ndarray, str, concurrent.futures.Future]] = []

    def submit(self, frames, goal):
        future = self.inner.submit(frames, goal)
        self.submitted.append((frames, goal, future))
        return future

    def embed_goal(self, goal):
        return self.inner.embed_goal(goal)

    def score(self, frames, goal):
        return self.inner.score(frames, goal)

    def score_batch(self, trajectories, goals):
        self.calls.append((list(trajectories), list(goals)))
        return self.inner.score_batch(trajectories, goals)


class BatchRecordingModel(RecordingModel):
    """A `RecordingModel` that also sends batches without waiting (`submit_batch`, recorded like `score_batch`)."""

    def submit_batch(self, trajectories, goals):
        self.calls.append((list(trajectories), list(goals)))
        return self.inner.submit_batch(trajectories, goals)


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


def _episode(num_steps: int, env_rewards=None, frame_steps=None) -> SingleAgentEpisode:
    """Frames 0, 10, 20, ... grey (on `frame_steps` only, when given: a stride); success on the step with a positive
    env reward."""
    frames = [np.full((4, 4, 3), 10 * t, np.uint8) for t in range(num_steps + 1)]
    rewards = env_rewards if env_rewards is not None else [0.0] * num_steps
    infos = [{"mission": "go to the red ball", "success": t > 0 and rewards[t - 1] > 0,
              **({"frame": f} if frame_steps is None or t in frame_steps else {})} for t, f in enumerate(frames)]
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


@pytest.mark.parametrize("path", ["learner", "env runner, in segments"])
def test_a_strided_episode_gets_each_frames_reward_on_the_step_that_brought_it(path):
    """Frames at steps 0, 2, 4 and the last one, 5 (`vlreward rl --frame-stride 2`): the model scores those four, and
    the dense rewards land on steps 1, 3 and 4 (the step index that brought frame 2, 4 and 5), 0 between."""
    model, frame_steps = SegmentsTestModel(), [0, 2, 4, 5]
    episode = _episode(5, frame_steps=frame_steps)
    if path != "learner":
        raw = SingleAgentEpisode(len_lookback_buffer=0)
        raw.add_env_reset(observation=np.zeros(2, np.float32), infos=episode.get_infos(0))
        scorer = EpisodeScorer(reward_model_factory=lambda: model, segment=3)
        for t in range(1, 6):
            raw.add_env_step(np.zeros(2, np.float32), 0, 0.0, infos=episode.get_infos(t), terminated=t == 5)
            scorer.on_episode_step(episode=raw)
        scorer.on_episode_end(episode=raw)
        episode = raw.to_numpy()
    ServiceReward(reward_model_factory=lambda: model)(rl_module=None, batch={}, episodes=[episode], shared_data={})

    frames = np.stack([np.full((4, 4, 3), 10 * t, np.uint8) for t in frame_steps])
    expected = np.zeros(5)
    expected[[1, 3, 4]] = model.score(frames, "go to the red ball").rewards[1:]
    np.testing.assert_allclose(episode.get_rewards(), expected, rtol=1e-6)


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


def test_the_audit_logs_how_the_models_returns_rank_successes_against_failures():
    """The live reward-hacking audit: the model's episode returns (here rising with the episode's length) against
    success. A failure longer than the success is paid more: AUROC 0, every failure over the median success."""
    class Metrics:
        def __init__(self):
            self.logged = {}

        def log_value(self, key, value, **kwargs):
            self.logged[key] = value

    piece, metrics = ServiceReward(reward_model_factory=FrameMeanTestModel, mix=RewardMix()), Metrics()
    episodes = [_episode(3, env_rewards=[0.0, 0.0, 1.0]), _episode(5)]
    piece(rl_module=None, batch={}, episodes=episodes, shared_data={}, metrics=metrics)
    assert (metrics.logged["vlreward/reward_auroc"], metrics.logged["vlreward/false_pay_rate"]) == (0.0, 1.0)
    piece(rl_module=None, batch={}, episodes=[_episode(8, env_rewards=[0.0] * 7 + [1.0])], shared_data={},
          metrics=metrics)  # a longer success: it now ranks above the failure for one pair of two
    assert (metrics.logged["vlreward/reward_auroc"], metrics.logged["vlreward/false_pay_rate"]) == (0.5, 0.0)


def test_the_env_reward_can_be_the_sparse_signal():
    episode = _episode(3, env_rewards=[0.0, 0.0, 0.9])
    episode.custom_data[SCORE_KEY] = PendingScore(_done(_expected_score(4)), 4, 192)
    for info in episode.get_infos():
        info["success"] = False  # an env without a success flag: only its reward says it succeeded
    ServiceReward(mix=RewardMix(mode="dense+sparse", success_bonus=2.0, sparse="env_reward"))(
        rl_module=None, batch={}, episodes=[episode], shared_data={})
    np.testing.assert_allclose(episode.get_rewards(), _expected_dense(4) + [0.0, 0.0, 1.8], rtol=1e-6)


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


# ---------------------------------------------------------------- submission off the critical path (no Ray)


class AnsweredOnceAsked(concurrent.futures.Future):
    """A score still in flight until someone asks for it; the answer comes 0.2 s after the first ask."""

    def __init__(self, score: Score):
        super().__init__()
        self.score, self.timer = score, None

    def result(self, timeout=None):
        if not self.done() and self.timer is None:
            self.timer = threading.Timer(0.2, self.set_result, (self.score,))
            self.timer.start()
        return super().result(timeout)


def _done(score=None, error=None) -> concurrent.futures.Future:
    future = concurrent.futures.Future()
    future.set_exception(error) if error is not None else future.set_result(score)
    return future


def test_a_pending_score_pickles_as_its_outcome_after_waiting_for_it():
    start = time.perf_counter()
    copy = pickle.loads(pickle.dumps(PendingScore(AnsweredOnceAsked(_expected_score(4)), 4, 192)))  # waits first
    assert time.perf_counter() - start >= 0.15 and copy.done() and (copy.num_frames, copy.nbytes) == (4, 192)
    np.testing.assert_allclose(copy.result().rewards, _expected_score(4).rewards)

    failed = pickle.loads(pickle.dumps(PendingScore(_done(error=InvalidVideoError("422: too many pixels")), 4, 192)))
    with pytest.raises(InvalidVideoError, match="too many pixels"):  # the error travels, not a made-up score
        failed.result()


def test_the_submitter_bounds_calls_in_flight_and_retries_only_an_unready_model():
    release, started = threading.Event(), []

    class SlowModel(FrameMeanTestModel):
        def score(self, frames, goal):
            started.append(1)
            release.wait(5)
            return super().score(frames, goal)

    submitter = EpisodeSubmitter(SlowModel, max_in_flight=2)
    frames = np.zeros((3, 4, 4, 3), np.uint8)
    first = [submitter.submit(frames, "go") for _ in range(2)]
    third = concurrent.futures.ThreadPoolExecutor(1).submit(submitter.submit, frames, "go")
    deadline = time.monotonic() + 10
    while not started and time.monotonic() < deadline:
        time.sleep(0.01)
    time.sleep(0.2)
    assert not third.done()  # two are out (one scoring, one queued behind it): the third waits for a free slot
    release.set()
    assert all(p.result(5).rewards.shape == (3,) for p in first + [third.result(5)])

    attempts = []

    class FlakyModel(FrameMeanTestModel):
        def score(self, frames, goal):
            attempts.append(1)
            if len(attempts) < 3:
                raise ModelNotReadyError("503: warming up")
            return super().score(frames, goal)

    assert EpisodeSubmitter(FlakyModel, ready_wait_s=5.0, poll_s=0.05).submit(frames, "go").result(5) is not None
    assert len(attempts) == 3

    class RejectingModel(FrameMeanTestModel):
        def score(self, frames, goal):
            attempts.append(1)
            raise InvalidVideoError("422: frames of 128x128 exceed 4096 pixels")

    attempts.clear()
    with pytest.raises(InvalidVideoError, match="exceed"):
        EpisodeSubmitter(RejectingModel, ready_wait_s=5.0, poll_s=0.05).submit(frames, "go").result(5)
    assert len(attempts) == 1  # not retried: a rejected episode is not a transient failure

    def down():
        raise ModelNotReadyError("cannot reach http://127.0.0.1:9")

    with pytest.raises(ModelNotReadyError, match="not ready after waiting 0 s .*cannot reach"):
        EpisodeSubmitter(down, ready_wait_s=0.3, poll_s=0.05).submit(frames, "go").result(5)


def test_trajectories_queued_together_go_out_as_one_batch_request():
    gate, requests = threading.Event(), []

    class BatchingModel(FrameMeanTestModel):
        """Like the HTTP client: submit and submit_batch return futures; the first request is held at a gate."""

        def submit(self, frames, goal):
            requests.append(1)
            gate.wait(5)
            return _done(self.score(frames, goal))

        def submit_batch(self, trajectories, goals):
            requests.append(len(trajectories))
            return _done(self.score_batch(trajectories, goals))

    submitter = EpisodeSubmitter(BatchingModel)
    frames = [np.full((2 + i, 4, 4, 3), 10 * i, np.uint8) for i in range(4)]
    pending = [submitter.submit(list(frames[0]), "task 0")]  # lists of frames: stacked off the sampling thread
    while not requests:  # the dispatcher is now held at the gate with the first trajectory
        time.sleep(0.01)
    pending += [submitter.submit(list(f), f"task {i}") for i, f in enumerate(frames[1:], 1)]
    gate.set()
    for i, p in enumerate(pending):
        np.testing.assert_allclose(p.result(5).values, FrameMeanTestModel().score(frames[i], f"task {i}").values)
    assert requests == [1, 3]  # the three queued while the first was out went in one request, in order
    submitter.close()


def test_trajectories_submitted_together_go_out_in_one_call_and_keep_their_order():
    class BatchOnlyModel(FrameMeanTestModel):
        def submit_batch(self, trajectories, goals):
            return _done(self.score_batch(trajectories, goals))

    frames = [np.full((2 + i, 4, 4, 3), 10 * i, np.uint8) for i in range(3)]
    for model in (BatchOnlyModel(), FrameMeanTestModel()):  # a client's submit_batch, an in-process score_batch
        submitter = EpisodeSubmitter(lambda: model, coalesce=1)  # a group is one call whatever `coalesce` says
        pending = submitter.submit_all(frames, ["a", "b", "c"])
        for f, goal, p in zip(frames, "abc", pending):
            np.testing.assert_allclose(p.result(5).values, FrameMeanTestModel().score(f, goal).values)
        assert [len(trajectories) for trajectories, _ in model.calls] == [3]
        submitter.close()


def test_the_connector_waits_only_for_scores_still_in_flight_and_a_failed_one_fails_the_batch():
    episodes = [_episode(3), _episode(5)]
    episodes[0].custom_data[SCORE_KEY] = PendingScore(_done(_expected_score(4)), 4, 192)
    episodes[1].custom_data[SCORE_KEY] = PendingScore(AnsweredOnceAsked(_expected_score(6)), 6, 288)
    piece = ServiceReward(mix=RewardMix(scale=2.0))  # no model: the scores come with the episodes
    piece(rl_module=None, batch={}, episodes=episodes, shared_data={})
    for episode, num_steps in zip(episodes, (3, 5)):
        np.testing.assert_allclose(episode.get_rewards(), 2.0 * _expected_dense(num_steps + 1), rtol=1e-6)
    assert piece.last_cost["missing"] == 1 and 0.1 <= piece.last_cost["wait_s"] < 5
    assert (piece.last_cost["frames"], piece.last_cost["frame_bytes"]) == (10, 480)

    episodes = [_episode(3, env_rewards=[0.0, 0.0, 0.9]), _episode(3)]
    episodes[0].custom_data[SCORE_KEY] = PendingScore(_done(_expected_score(4)), 4, 192)
    episodes[1].custom_data[SCORE_KEY] = PendingScore(_done(error=ModelNotReadyError("503: queue full")), 4, 192)
    with pytest.raises(ModelNotReadyError, match="queue full") as raised:
        ServiceReward(mix=RewardMix(mode="dense+sparse"))(rl_module=None, batch={}, episodes=episodes, shared_data={})
    assert "instead of training on missing rewards" in "".join(raised.value.__notes__)
    np.testing.assert_allclose(episodes[0].get_rewards(), [0.0, 0.0, 0.9])  # nothing written, nothing zeroed

    episodes[1].custom_data[SCORE_KEY] = PendingScore(concurrent.futures.Future(), 4, 192)  # never answered
    with pytest.raises(TimeoutError, match="did not arrive within 0 s"):
        ServiceReward(collect_timeout_s=0.1)(rl_module=None, batch={}, episodes=episodes, shared_data={})

    del episodes[1].custom_data[SCORE_KEY]
    with pytest.raises(ValueError, match="every env runner needs the EpisodeScorer"):
        ServiceReward()(rl_module=None, batch={}, episodes=episodes, shared_data={})


def test_the_episode_scorer_takes_the_frames_out_and_submits_them_with_the_mission():
    model = FrameMeanTestModel()
    episode = _episode(3)
    EpisodeScorer(reward_model_factory=lambda: model).on_episode_end(episode=episode)
    assert all("frame" not in info for info in episode.get_infos())  # frames do not travel to the learner
    pending = episode.custom_data[SCORE_KEY]
    np.testing.assert_allclose(pending.result(5).rewards, _expected_score(4).rewards)
    assert (pending.num_frames, pending.nbytes) == (4, 4 * 4 * 4 * 3)

    sparse = _episode(3)
    EpisodeScorer(submit=False).on_episode_end(episode=sparse)  # sparse: frames dropped, nothing submitted
    assert SCORE_KEY not in sparse.custom_data and all("frame" not in info for info in sparse.get_infos())


class SegmentsTestModel(FrameMeanTestModel):
    """Frame t's value reads frame t only and rewards are value differences: it may score in segments."""

    segments = True


@pytest.mark.parametrize("num_steps, sent", [(2, [3]), (3, [4]), (7, [4, 4, 2]), (9, [4, 4, 4])])
def test_a_running_episode_goes_out_in_segments_that_join_into_its_whole_score(num_steps, sent):
    model, whole = SegmentsTestModel(), _expected_score(num_steps + 1)
    scorer = EpisodeScorer(reward_model_factory=lambda: model, segment=3)
    frames = [np.full((4, 4, 3), 10 * t, np.uint8) for t in range(num_steps + 1)]
    episode = SingleAgentEpisode(len_lookback_buffer=0)
    episode.add_env_reset(observation=np.zeros(2, np.float32),
                          infos={"frame": frames[0], "mission": "go to the red ball"})
    for t in range(1, num_steps + 1):
        episode.add_env_step(np.zeros(2, np.float32), 0, 0.0, infos={"frame": frames[t]}, terminated=t == num_steps)
        scorer.on_episode_step(episode=episode)
    scorer.on_episode_end(episode=episode)
    assert all("frame" not in info for info in episode.get_infos())
    assert sorted(episode.custom_data) == sorted([SCORE_KEY, FRAME_STEPS_KEY])  # the running episode stays behind
    assert episode.custom_data[FRAME_STEPS_KEY] == list(range(num_steps + 1))
    score = episode.custom_data[SCORE_KEY].result(5)
    np.testing.assert_allclose(score.values, whole.values, atol=1e-12)
    np.testing.assert_allclose(score.rewards, whole.rewards, atol=1e-12)
    # a segment every 3 steps while the episode runs (frames 0-3, then frame 0 + the next 3), the rest at its end
    pieces = [piece for trajectories, _ in model.calls for piece in trajectories]  # in the order they were sent
    assert [len(piece) for piece in pieces] == sent
    assert all(np.array_equal(piece[0], frames[0]) for piece in pieces)  # behind frame 0


# ---------------------------------------------------------------- real PPO on BabyAI, local learner


class EpisodeRecorder(ConnectorV2):
    """First learner piece: what the episodes bring to the learner (info keys, their pending scores)."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.info_keys: set[str] = set()
        self.pending: list = []

    def __call__(self, *, batch, episodes, **kwargs):
        for episode in episodes:
            self.info_keys |= {key for info in episode.get_infos() for key in info}
            self.pending.append(episode.custom_data.get(SCORE_KEY))
        return batch


def _small_config(model_factory, pieces: list, ready_wait_s: float = 0.0, score_in: str = "env-runner",
                  render_size: int = 0):
    """Two quick iterations' worth of PPO; the ServiceReward piece lands in `pieces` for inspection."""
    args = Args(tasks=["GoToRedBall"], max_episode_steps=16, train_batch_size=200, num_env_runners=0,
                score_in=score_in, ready_wait_s=ready_wait_s, render_size=render_size)
    config = build_config(args, "dense", 0, model_factory).training(minibatch_size=100, num_epochs=1)

    def make_piece(obs_space, act_space):
        factory = model_factory if score_in == "learner" else None  # the env-runner path needs no model here
        pieces.append(ServiceReward(obs_space, act_space, reward_model_factory=factory, mix=RewardMix(),
                                    ready_wait_s=ready_wait_s))
        return pieces[-1]

    return config.learners(learner_connector=make_piece)


def _record_batches(algo) -> tuple[BatchRewardRecorder, EpisodeRecorder]:
    rewards, episodes = BatchRewardRecorder(), EpisodeRecorder()

    def insert(learner):
        learner._learner_connector.insert_after(AddColumnsFromEpisodesToTrainBatch, rewards)
        learner._learner_connector.prepend(episodes)

    algo.learner_group.foreach_learner(insert)
    return rewards, episodes


def _check_async_iteration(result, model, service, piece, rewards, episodes, submitted_before: int) -> None:
    """Each episode's train rewards are the service's score of exactly the frames that episode submitted."""
    batch_rewards = rewards.calls[-1]
    assert list(batch_rewards) == list(piece.last_rewards)  # same episodes, same order
    assert sum(len(r) - 1 for r in batch_rewards.values()) >= 200  # complete episodes fill the batch
    submitted = model.submitted[submitted_before:]
    assert len(submitted) >= len(batch_rewards)  # each finished episode went out as it ended
    by_result = {id(future.result()): (frames, goal) for frames, goal, future in submitted}
    pending = episodes.pending[-len(batch_rewards):]
    assert all(isinstance(p, PendingScore) for p in pending)
    for p, train_rewards in zip(pending, batch_rewards.values()):
        frames, goal = by_result[id(p.result())]
        assert frames.dtype == np.uint8 and frames.shape[1:] == (64, 64, 3)
        assert frames.shape[0] == len(train_rewards)  # T+1 frames for T steps (+1 masked bootstrap reward)
        assert goal in {"go to the red ball", "go to a red ball"}  # GoToRedBall says either
        expected = service.score(frames, goal).rewards[1:]  # scored alone over HTTP, not in the batch
        np.testing.assert_allclose(train_rewards[:-1], expected, rtol=1e-4, atol=1e-5)
        assert train_rewards[-1] == 0.0
    assert any(np.abs(r[:-1]).max() > 0 for r in batch_rewards.values())  # not all zeros
    assert "frame" not in episodes.info_keys and "mission" in episodes.info_keys  # frames stay in the env runner
    assert "infos" not in rewards.columns
    served = np.mean([r[:-1].sum() for r in batch_rewards.values()])
    learners = result["learners"]
    assert learners["vlreward/mean_return"] == pytest.approx(served, rel=1e-5, abs=1e-7)
    assert learners["vlreward/frames"] == sum(p.num_frames for p in pending)
    assert 0 <= learners["vlreward/missing"] <= len(pending) and learners["vlreward/wait_s"] >= 0
    assert result["env_runners"]["vlreward/frames_submitted"] == learners["vlreward/frames"]  # this iteration's
    assert "success_rate" in result["env_runners"]


def test_ppo_trains_on_scores_the_env_runner_submitted_over_http(service_url):
    service = RemoteRewardModel(service_url)
    model, pieces = RecordingModel(RemoteRewardModel(service_url)), []
    algo = _small_config(lambda: model, pieces).build_algo()
    rewards, episodes = _record_batches(algo)
    try:
        for _ in range(2):
            before = len(model.submitted)
            result = algo.train()
            assert model.calls == []  # no batched call in the learner: everything was submitted while sampling
            _check_async_iteration(result, model, service, pieces[0], rewards, episodes, before)
    finally:
        algo.stop()


def _one_http_iteration(service_url: str, **args) -> tuple[BatchRewardRecorder, EpisodeRecorder, dict]:
    """One small PPO iteration scored by babyai-liv over HTTP (`Args` overridden by `args`): the recorders and
    the result."""
    return _one_iteration(functools.partial(RemoteRewardModel, service_url, "babyai-liv"), **args)


def _one_iteration(factory, **args) -> tuple[BatchRewardRecorder, EpisodeRecorder, dict]:
    """One small PPO iteration scored by the model `factory` makes (`Args` overridden by `args`)."""
    args = Args(tasks=["GoToRedBall"], max_episode_steps=16, train_batch_size=200, **args)
    algo = build_config(args, "dense", 0, factory).training(minibatch_size=100, num_epochs=1).build_algo()
    rewards, episodes = _record_batches(algo)
    try:
        return rewards, episodes, algo.train()
    finally:
        algo.stop()


def test_episodes_scored_in_segments_train_on_the_same_rewards_as_whole_episodes(service_url):
    """Same seed, same first iteration: segments of 4 steps sent while sampling (babyai-liv scores in segments)
    give PPO the rewards that whole episodes get, and fewer episodes are left in flight when sampling ends."""
    runs = {}
    for segment in (0, 4):
        rewards, _, result = _one_http_iteration(service_url, segment=segment)
        runs[segment] = list(rewards.calls[-1].values()), result
    (whole, whole_result), (parts, parts_result) = runs[0], runs[4]
    assert [len(r) for r in parts] == [len(r) for r in whole]
    for segmented, complete in zip(parts, whole):
        np.testing.assert_allclose(segmented, complete, rtol=1e-4, atol=1e-5)
    sent = parts_result["env_runners"]["vlreward/frames_submitted"]
    assert sent > whole_result["learners"]["vlreward/frames"]  # each later segment carried frame 0 again
    # what the learner got, and no more: a running episode that RLlib drops at the end of a sample() sent segments too
    assert parts_result["learners"]["vlreward/frames"] <= sent


def test_ppo_trains_on_scores_submitted_through_the_deployment_handle(service_url):
    service = RemoteRewardModel(service_url, "babyai-liv")
    model, pieces = RecordingModel(DeploymentRewardModel("babyai-liv")), []
    algo = _small_config(lambda: model, pieces).build_algo()
    rewards, episodes = _record_batches(algo)
    try:
        result = algo.train()
        _check_async_iteration(result, model, service, pieces[0], rewards, episodes, 0)
    finally:
        algo.stop()


def test_a_remote_env_runner_sends_only_the_scores(service_url):
    """With an env runner actor the episodes are pickled: each PendingScore travels as its score (no frames)."""
    rewards, episodes, result = _one_http_iteration(service_url, num_env_runners=1, num_envs=4, url=service_url)
    assert result["learners"]["vlreward/missing"] == 0  # resolved in the env runner before they travelled
    assert "frame" not in episodes.info_keys and all(isinstance(p, PendingScore) for p in episodes.pending)
    assert sum(len(r) - 1 for r in rewards.calls[-1].values()) >= 200
    assert any(np.abs(r[:-1]).max() > 0 for r in rewards.calls[-1].values())
    served = np.mean([r[:-1].sum() for r in rewards.calls[-1].values()])
    assert result["learners"]["vlreward/mean_return"] == pytest.approx(served, rel=1e-5, abs=1e-7)
    assert result["env_runners"]["vlreward/frames_submitted"] == result["learners"]["vlreward/frames"]


def test_ppo_scored_over_grpc_trains_on_the_rewards_http_gives(service_url, grpc_url):
    """`vlreward rl --url grpc://...`: the same seed's first iteration, scored through the service's gRPC port by an
    env runner actor (the client pickled to it), trains on the rewards HTTP gives."""
    runs = {url: _one_iteration(functools.partial(load_reward_model, "babyai-liv", url), num_env_runners=1,
                                num_envs=4, url=url) for url in (service_url, grpc_url)}
    (over_http, _, http_result), (over_grpc, _, grpc_result) = runs[service_url], runs[grpc_url]
    assert grpc_result["learners"]["vlreward/missing"] == 0
    assert len(over_grpc.calls[-1]) == len(over_http.calls[-1]) > 0
    for got, want in zip(over_grpc.calls[-1].values(), over_http.calls[-1].values()):
        np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5)
    assert grpc_result["learners"]["vlreward/mean_return"] == pytest.approx(
        http_result["learners"]["vlreward/mean_return"], rel=1e-4, abs=1e-6)


class OverlongTaskClient(RemoteRewardModel):
    """The live HTTP client, sending a task one character over the service's limit: the service answers 422."""

    def submit(self, frames, goal):
        return super().submit(frames, "a" * (MAX_TASK_CHARS + 1))

    def submit_batch(self, trajectories, goals):
        return super().submit_batch(trajectories, ["a" * (MAX_TASK_CHARS + 1)] * len(goals))


def test_an_episode_the_service_rejects_fails_the_iteration(service_url):
    """A real 4xx from the live service fails training with the service's error type; no reward becomes 0."""
    pieces = []
    algo = _small_config(functools.partial(OverlongTaskClient, service_url, "babyai-liv"), pieces).build_algo()
    try:
        with pytest.raises(InvalidTaskError, match="422") as raised:
            algo.train()
        assert "instead of training on missing rewards" in "".join(raised.value.__notes__)
        assert pieces[0].last_rewards == {}  # nothing was written before the failure
    finally:
        algo.stop()


def test_ppo_trains_on_frames_scored_in_the_learner(service_url):
    """The older path (--score-in learner): frames ride with the episodes, one batch request per iteration."""
    service = RemoteRewardModel(service_url)
    model, pieces = BatchRecordingModel(service), []
    algo = _small_config(lambda: model, pieces, score_in="learner").build_algo()
    recorder, _ = _record_batches(algo)
    try:
        for iteration in range(2):
            result = algo.train()
            assert len(model.calls) == iteration + 1 and model.submitted == []  # one submit_batch per iteration
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
            assert result["learners"]["vlreward/frames"] == sum(len(t) for t in trajectories)
            assert result["learners"]["vlreward/frame_bytes"] == sum(t.nbytes for t in trajectories)
    finally:
        algo.stop()


def test_deployment_handle_scores_like_the_http_client(service_url, random_frames):
    """Inside the cluster the connector can skip HTTP: same protocol, same numbers, submitted or batched."""
    handle_model, http_model = DeploymentRewardModel("babyai-liv"), RemoteRewardModel(service_url, "babyai-liv")
    assert (handle_model.name, handle_model.version) == (http_model.name, http_model.version)
    trajectories = [random_frames, random_frames[:3]]
    goals = ["go to the red ball", "open the door"]
    futures = [handle_model.submit(frames, goal) for frames, goal in zip(trajectories, goals)]
    for mine, theirs, future in zip(handle_model.score_batch(trajectories, goals),
                                    http_model.score_batch(trajectories, goals), futures):
        np.testing.assert_allclose(mine.rewards, theirs.rewards, rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(future.result(60).rewards, theirs.rewards, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("score_in", ["env-runner", "learner"])
def test_service_outage_fails_training_instead_of_training_on_zeros(ray_cluster, score_in):
    unreachable = functools.partial(RemoteRewardModel, "http://127.0.0.1:9", retries=1, backoff_s=0.01)
    algo = _small_config(unreachable, [], ready_wait_s=1.0, score_in=score_in).build_algo()
    try:
        with pytest.raises(ModelNotReadyError, match="not ready after waiting 1 s .*cannot reach"):
            algo.train()
    finally:
        algo.stop()
