"""Gymnasium wrappers on real BabyAI episodes with the shipped LIV critic, in-process and through the live service."""

from __future__ import annotations

import doctest

import gymnasium as gym
import numpy as np
import pytest

import rl.wrappers
from envs.babyai import make_env, rollout
from rewards import load_model
from rl.mix import RewardMix
from rl.wrappers import VectorVLReward, VLReward


@pytest.fixture(scope="module")
def liv():
    return load_model("babyai-liv")


@pytest.fixture(params=["in-process", "service"])
def streaming_model(request, liv):
    """The same critic in this process, or behind the live service (one HTTP request per `score_steps` call)."""
    if request.param == "in-process":
        return liv
    from serve.client import RemoteRewardModel

    return RemoteRewardModel(request.getfixturevalue("service_url"), "babyai-liv")


@pytest.fixture(scope="module")
def episode():
    """A noisy expert that succeeds after some wandering: rewards go up and down."""
    return next(e for s in range(20) if (e := rollout("GoToRedBall", s, "noisy_expert")).success and len(e.actions) > 8)


def _replay(env: gym.Env, episode) -> tuple[list[float], list[dict], tuple[bool, bool]]:
    env.reset(seed=episode.seed)
    rewards, infos = [], []
    for action in episode.actions:
        _, reward, terminated, truncated, info = env.step(action)
        rewards.append(reward)
        infos.append(info)
    return rewards, infos, (terminated, truncated)


def test_streamed_rewards_equal_the_offline_score_of_the_same_episode(streaming_model, liv, episode):
    env = VLReward(make_env(episode.task), streaming_model, mix=RewardMix(mode="dense+sparse"))
    rewards, infos, done = _replay(env, episode)
    offline = liv.score(episode.frames, episode.mission).rewards[1:]
    np.testing.assert_allclose(rewards, offline + np.eye(len(offline))[-1], atol=1e-5)  # + 1·success on the last step
    np.testing.assert_allclose([i["vlreward"]["served"] for i in infos], offline, atol=1e-5)
    assert done == (True, False)  # the env's own flags: the success step terminates, nothing truncates


def test_episode_relabelling_scores_once_at_the_end(liv, episode):
    calls = []
    model = type("Counting", (), {"score": lambda self, f, g: calls.append(len(f)) or liv.score(f, g)})()
    rewards, infos, _ = _replay(VLReward(make_env(episode.task), model, relabel="episode"), episode)
    offline = liv.score(episode.frames, episode.mission).rewards[1:]
    assert calls == [len(episode.frames)]  # one call, whole episode
    assert rewards[:-1] == [0.0] * (len(rewards) - 1)
    assert rewards[-1] == pytest.approx(offline.sum(), abs=1e-5)
    np.testing.assert_allclose(infos[-1]["vlreward"]["rewards"], offline, atol=1e-5)  # for a replay buffer


class CountingStreams:
    """A model with every `score_steps` call recorded (the remote client sends one request per call)."""

    def __init__(self, model):
        self.model, self.calls = model, []

    def score_steps(self, frames, goals, states):
        self.calls.append((frames.copy(), list(goals), list(states)))
        return self.model.score_steps(frames, goals, states)


def test_vector_env_sends_one_call_per_step_and_restarts_streams_on_autoreset(streaming_model, liv):
    envs = gym.vector.SyncVectorEnv(
        [lambda s=s: gym.wrappers.TimeLimit(make_env("GoToRedBall", seed=s), max_episode_steps=4 + s) for s in (0, 1)])
    model = CountingStreams(streaming_model)
    envs = VectorVLReward(envs, model)
    _, infos = envs.reset(seed=0)
    frames = [[infos["frame"][i]] for i in range(2)]  # the episode each sub-env is in
    missions = [infos["mission"][i] for i in range(2)]
    episodes_done = 0
    for step in range(12):
        _, rewards, terminated, truncated, infos = envs.step(np.array([2, 1]))
        assert len(model.calls) == step + 2  # reset + one per vector step
        for i in range(2):
            if len(frames[i]) == 0:  # autoreset step: a fresh stream, no step reward
                assert model.calls[-1][2][i] is None and rewards[i] == 0.0
                frames[i], missions[i] = [infos["frame"][i]], infos["mission"][i]
                continue
            frames[i].append(infos["frame"][i])
            expected = liv.score(np.stack(frames[i]), missions[i]).rewards[-1]
            assert rewards[i] == pytest.approx(expected, abs=1e-5)
            if terminated[i] or truncated[i]:
                frames[i], episodes_done = [], episodes_done + 1
    assert episodes_done >= 3


def test_bad_settings_raise(liv):
    with pytest.raises(ValueError, match="sparse signal"):
        RewardMix(sparse="reward")
    with pytest.raises(ValueError, match="relabel"):
        VLReward(make_env("GoToRedBall"), liv, relabel="sometimes")
    with pytest.raises(ValueError, match="NormalizeReward"):
        VLReward(make_env("GoToRedBall"), liv, mix=RewardMix(normalize=True))


def test_docstring_examples_run():
    assert doctest.testmod(rl.wrappers, optionflags=doctest.ELLIPSIS).failed == 0


class Recording:
    """A model whose every call is recorded (frame shapes), delegating to the real one."""

    def __init__(self, model):
        self.model, self.shapes, self.critic = model, [], getattr(model, "critic", None)

    def score(self, frames, goal):
        self.shapes.extend(f.shape for f in frames)
        return self.model.score(frames, goal)

    def score_step(self, frame, goal, state):
        self.shapes.append(frame.shape)
        return self.model.score_step(frame, goal, state)


def _plain_minigrid(stride: int | None = 2, max_steps: int = 9):
    """What a new user builds: plain MiniGrid (mission in obs, no info["success"]) with strided 64 px frames."""
    from envs.wrappers import RenderedFrames

    env = gym.make("BabyAI-GoToRedBall-v0", render_mode="rgb_array", max_steps=max_steps)
    return env if stride is None else RenderedFrames(env, size=64, stride=stride)


def _run_recording_frames(env, actions, seed=0):
    obs, info = env.reset(seed=seed)
    frames, rewards, infos = [info["frame"]], [], []
    for action in actions:
        obs, reward, terminated, truncated, info = env.step(action)
        rewards.append(reward)
        infos.append(info)
        if "frame" in info:
            frames.append(info["frame"])
        if terminated or truncated:
            break
    return np.stack(frames), rewards, infos, obs


def test_episode_relabel_over_strided_plain_minigrid_scores_the_subsampled_episode(liv):
    model = Recording(liv)
    env = VLReward(_plain_minigrid(stride=2), model, relabel="episode")  # goal from obs["mission"]
    frames, rewards, infos, obs = _run_recording_frames(env, [0] * 9)  # turning left: truncated after 9 steps
    assert len(frames) == 6 and set(model.shapes) == {(64, 64, 3)}  # reset, steps 2 4 6 8, the last step 9
    offline = liv.score(frames, obs["mission"]).rewards[1:]
    relabelled = infos[-1]["vlreward"]["rewards"]
    assert relabelled.shape == (9,) and relabelled[[0, 2, 4, 6]].tolist() == [0.0] * 4  # steps without a frame
    np.testing.assert_allclose(relabelled[[1, 3, 5, 7, 8]], offline, atol=1e-5)
    assert rewards[-1] == pytest.approx(offline.sum(), abs=1e-5)


def test_streaming_over_strided_frames_scores_only_the_steps_with_a_frame(liv):
    model = Recording(liv)
    env = VLReward(_plain_minigrid(stride=3), model)
    frames, rewards, infos, obs = _run_recording_frames(env, [2, 1, 2, 2, 0, 2, 1, 2, 0])
    assert len(model.shapes) == len(frames) and set(model.shapes) == {(64, 64, 3)}  # no extra full-size renders
    expected = liv.score(frames, obs["mission"]).rewards[1:]
    np.testing.assert_allclose(np.array(rewards)[[2, 5, 8]], expected, atol=1e-5)
    assert np.array(rewards)[[0, 1, 3, 4, 6, 7]].tolist() == [0.0] * 6


def test_vector_env_over_strided_frames_streams_and_relabels(streaming_model, liv):
    def make(seed):
        return lambda: _plain_minigrid(stride=2, max_steps=5 + seed)

    results = {}
    for relabel in ("step", "episode"):
        envs = VectorVLReward(gym.vector.SyncVectorEnv([make(s) for s in (0, 1)]), streaming_model,
                              goals=["go to the red ball"] * 2, relabel=relabel)
        envs.reset(seed=3)
        buffer = np.array([envs.step(np.array([2, 0]))[1] for _ in range(14)])  # no KeyError on frameless steps
        if relabel == "episode":
            assert not buffer.any()  # dense rewards are not paid at step time in this mode
            envs.fill(buffer, first_step=0)
        results[relabel] = buffer
        envs.close()
    np.testing.assert_allclose(results["episode"], results["step"], atol=1e-5)
    assert np.count_nonzero(results["step"]) > 6 and not results["step"][0].any()  # step 1 has no frame


@pytest.fixture(params=["liv", "progress"])
def segment_model(request, streaming_model):
    """A model that scores in segments: LIV (values read frame t alone), in-process or served, and the default
    progress critic in-process (values read frame t against frame 0)."""
    if request.param == "liv":
        return streaming_model
    if streaming_model is not request.getfixturevalue("liv"):
        pytest.skip("the progress critic's served path is the same code as LIV's")
    return load_model("babyai-progress")


def test_vector_episode_mode_fills_the_rewards_streaming_pays(segment_model):
    streaming_model = segment_model

    def make(seed):
        return lambda: gym.wrappers.TimeLimit(make_env("GoToRedBall", seed=seed), max_episode_steps=4 + 3 * seed)

    actions = np.random.default_rng(0).integers(0, 3, (40, 3))
    buffers = {}
    for relabel, segments in (("step", False), ("episode", False), ("episode", True)):
        envs = VectorVLReward(gym.vector.SyncVectorEnv([make(s) for s in range(3)]), streaming_model,
                              mix=RewardMix(mode="dense+sparse"), relabel=relabel, segments=segments)
        envs.reset(seed=5)
        buffer = np.zeros((40, 3))
        for start in (0, 20):  # two rollouts; episodes cross the boundary
            for t in range(start, start + 20):
                buffer[t] = envs.step(actions[t])[1]
            if relabel == "episode":
                envs.fill(buffer[start:start + 20], first_step=start)
        assert envs.steps == 40
        buffers[relabel, segments] = buffer
        if segments:  # pieces of episodes (behind frame 0, one overlapping frame) score the same as whole ones
            assert envs._delayed.frames_sent < 40 * 3 * 1.5
        envs.close()
    np.testing.assert_allclose(buffers["episode", False], buffers["step", False], atol=1e-5)
    np.testing.assert_allclose(buffers["episode", True], buffers["step", False], atol=1e-5)
    assert np.count_nonzero(buffers["step", False]) > 20


def test_segments_are_refused_for_a_model_that_needs_whole_videos():
    vlc = load_model("babyai-vlc")  # a sequence model: frame t's value reads the frames before it
    envs = gym.vector.SyncVectorEnv([lambda: make_env("GoToRedBall", seed=0)])
    with pytest.raises(ValueError, match="babyai-vlc.*cannot score in segments"):
        VectorVLReward(envs, vlc, relabel="episode", segments=True)
    envs.close()


def test_vector_episode_mode_raises_when_scoring_fails(service_url):
    import pickle

    from rewards import ModelNotReadyError
    from serve.client import RemoteRewardModel

    state = pickle.loads(pickle.dumps(RemoteRewardModel(service_url, "babyai-liv", retries=1, backoff_s=0.01)))
    down = RemoteRewardModel.__new__(RemoteRewardModel)
    down.__setstate__({**state.__getstate__(), "url": "http://127.0.0.1:9"})
    envs = VectorVLReward(gym.vector.SyncVectorEnv([lambda: make_env("GoToRedBall", seed=0)] * 2), down,
                          relabel="episode")
    envs.reset(seed=0)
    buffer = np.array([envs.step(np.array([0, 0]))[1] for _ in range(3)])  # sampling never waits on the service
    with pytest.raises(ModelNotReadyError):  # ... and a failed score raises: it never becomes a reward of 0
        envs.fill(buffer, 0)
    envs.close()


def test_missing_frames_or_goal_raise_at_reset_saying_how_to_provide_them(liv):
    from rl.inputs import MissingInputError

    with pytest.raises(MissingInputError, match=r"no frames.*RenderedFrames"):
        VLReward(gym.make("BabyAI-GoToRedBall-v0"), liv).reset(seed=0)  # no render_mode, no info["frame"]
    with pytest.raises(MissingInputError, match=r"no goal.*goal="):
        VLReward(gym.make("CartPole-v1", render_mode="rgb_array"), liv).reset(seed=0)
    envs = gym.vector.SyncVectorEnv([lambda: gym.make("BabyAI-GoToRedBall-v0", render_mode="rgb_array")] * 2)
    with pytest.raises(MissingInputError, match=r"info\['frame'\].*RenderedFrames"):
        VectorVLReward(envs, liv).reset(seed=0)
    obs, _ = VLReward(gym.make("CartPole-v1", render_mode="rgb_array"), liv, goal="balance").reset(seed=0)
    assert obs.shape == (4,)  # given the goal, any rgb_array env works


def test_missing_success_warns_once_and_the_env_reward_can_be_the_sparse_signal(liv, episode):
    def run(mix):
        env = VLReward(_plain_minigrid(stride=None, max_steps=64), liv, mix=mix)
        env = gym.wrappers.TimeLimit(env, 64)
        env.reset(seed=episode.seed)
        rewards = [env.step(a)[1:] for a in episode.actions]
        return [r for r, *_ in rewards], rewards[-1][-1]

    with pytest.warns(UserWarning, match=r"no info\['success'\].*sparse='env_reward'") as caught:
        default, info = run(RewardMix(mode="dense+sparse"))
    assert sum("info['success']" in str(w.message) for w in caught) == 1  # once, not every step
    env_reward = info["vlreward"]["env_reward"]
    assert env_reward > 0  # plain MiniGrid pays 1 - 0.9 steps/max_steps on success
    with_env, info = run(RewardMix(mode="dense+sparse", sparse="env_reward", success_bonus=2.0))
    assert with_env[-1] == pytest.approx(default[-1] + 2.0 * env_reward, abs=1e-5)
    np.testing.assert_allclose(with_env[:-1], default[:-1], atol=1e-6)


def test_frames_unlike_the_critics_warn_once(streaming_model, liv):
    import warnings

    with pytest.warns(UserWarning, match=r"256x256 px.*64 px.*RenderedFrames\(env, size=64\)") as caught:
        env = VLReward(_plain_minigrid(stride=None), streaming_model, goal="go to the red ball")  # 256 px renders
        env.reset(seed=0)
        env.step(2)
        env.reset(seed=1)
    assert sum("critic computes" in str(w.message) for w in caught) == 1
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        env = VLReward(_plain_minigrid(stride=1), liv)  # 64 px, as the critic was trained
        env.reset(seed=0)
        env.step(2)
    assert not [w for w in caught if "critic computes" in str(w.message)]


def test_potential_signal_is_discounted_value_difference():
    from rewards.base import Score
    from rl.mix import RewardMix

    values = np.array([0.1, 0.4, 0.9, 0.9])
    score = Score(values=values, rewards=np.r_[0.0, np.diff(values)])
    dense = RewardMix(signal="potential", gamma=0.9).dense(score)
    np.testing.assert_allclose(dense, 0.9 * values[1:] - values[:-1])
    discounted = sum(0.9 ** t * r for t, r in enumerate(dense))
    assert discounted == pytest.approx(0.9 ** 3 * values[-1] - values[0])  # telescopes: the policy's optimum stays
    assert dense[-1] < 0  # hovering at the goal's value costs (1 - gamma) * V a step


def test_the_live_audit_keeps_each_ended_episodes_model_return_and_success(liv, episode):
    """`DelayedRewards.audit` (the vector and SB3 paths' reward-hacking audit) gets an episode once it has ended and
    its last part is scored: its model return, the sum of the score's rewards as RLlib's audit takes it."""
    from rl.relabel import DelayedRewards

    delayed = DelayedRewards(liv, RewardMix(mode="dense"), num_envs=2, segments=True, segment=4)
    frames, goal = episode.frames, episode.mission
    for i in range(2):
        delayed.start(i, frames[0], goal)
    for step, frame in enumerate(frames[1:]):
        for i in range(2):
            delayed.add(i, step, frame)
        delayed.send()
    delayed.end(0, True)
    delayed.collect()  # sub-env 1 still runs: its prefix is scored, not audited
    whole = float(np.sum(liv.score(frames, goal).rewards))
    assert delayed.audit.returns == pytest.approx([whole], abs=1e-4) and delayed.audit.successes == [True]
    delayed.add(1, len(frames), frames[0])
    delayed.end(1, False)
    delayed.collect()
    assert delayed.audit.successes == [True, False]
    assert delayed.audit.reward_auroc == (1.0 if whole > delayed.audit.returns[1] else 0.0)
    delayed.close()
