"""Stable-Baselines3 with served rewards: the VecEnv wrapper on real BabyAI envs and real PPO steps, against the live
service (and the same critic in-process for the expected values)."""

from __future__ import annotations

import functools

import gymnasium as gym
import numpy as np
import pytest

pytest.importorskip("stable_baselines3")
from stable_baselines3 import PPO  # noqa: E402
from stable_baselines3.common.callbacks import BaseCallback  # noqa: E402
from stable_baselines3.common.vec_env import DummyVecEnv, SubprocVecEnv, VecNormalize  # noqa: E402

from envs.babyai import make_env, rollout  # noqa: E402
from rewards import load_model  # noqa: E402
from rl.mix import RewardMix  # noqa: E402
from rl.sb3 import RelabelRollout, VecVLReward  # noqa: E402


@pytest.fixture(scope="module")
def liv():
    return load_model("babyai-liv")


@pytest.fixture(scope="module")
def remote(service_url):
    from serve.client import RemoteRewardModel

    return RemoteRewardModel(service_url, "babyai-liv")


def limited(seed: int, steps: int) -> gym.Env:
    return gym.wrappers.TimeLimit(make_env("GoToRedBall", seed=seed), max_episode_steps=steps)


def env_fns(count: int = 3):
    return [functools.partial(limited, seed, 4 + 3 * seed) for seed in range(count)]  # picklable, for subprocesses


class CountingSteps:
    """The remote model with every `score_steps` call counted (one call = one HTTP request)."""

    def __init__(self, model):
        self.model, self.calls = model, []

    def score_steps(self, frames, goals, states):
        self.calls.append(len(frames))
        return self.model.score_steps(frames, goals, states)


def test_step_mode_sends_one_request_per_step_with_the_rewards_streaming_pays(remote, liv):
    expert = next(e for s in range(20) if (e := rollout("GoToRedBall", s, "noisy_expert")).success
                  and 6 < len(e.actions) < 30)
    fns = [functools.partial(limited, expert.seed, 64), *env_fns(3)[1:]]
    model = CountingSteps(remote)
    envs = VecVLReward(DummyVecEnv(fns), model, mix=RewardMix(mode="dense+sparse"))
    envs.reset()
    episodes = [[info["frame"]] for info in envs.reset_infos]
    missions = [info["mission"] for info in envs.reset_infos]  # "go to the red ball", "go to a red ball"...
    successes, restarts = [], 0
    actions = np.random.default_rng(1).integers(0, 3, (len(expert.actions), 3))
    actions[:, 0] = expert.actions
    for t, action in enumerate(actions):
        _, rewards, dones, infos = envs.step(action)
        assert len(model.calls) == t + 2 and model.calls[-1] == 3 + dones.sum()  # + the restarted streams
        for i in range(3):
            episodes[i].append(infos[i]["frame"])
            expected = liv.score(np.stack(episodes[i]), missions[i]).rewards[-1] + infos[i]["success"]
            assert rewards[i] == pytest.approx(expected, abs=1e-5)
            assert infos[i]["is_success"] == infos[i]["success"]
            if dones[i]:
                successes.append(infos[i]["is_success"])
                restarts += 1
                episodes[i] = [envs.reset_infos[i]["frame"]]  # SB3 reset it within the same step
                missions[i] = envs.reset_infos[i]["mission"]
    assert restarts >= 4 and successes.count(True) >= 1 and dones[0] and infos[0]["is_success"]
    envs.close()


@pytest.mark.parametrize("vec_env", [DummyVecEnv, SubprocVecEnv])
def test_rollout_mode_fills_the_same_rewards_later_without_waiting(remote, vec_env):
    def make(relabel, segments=False):
        venv = vec_env(env_fns()) if vec_env is DummyVecEnv else SubprocVecEnv(env_fns(), start_method="spawn")
        return VecVLReward(venv, remote, relabel=relabel, segments=segments)

    actions = np.random.default_rng(0).integers(0, 3, (24, 3))
    step_envs = make("step")
    step_envs.reset()
    expected = np.array([step_envs.step(a)[1] for a in actions])
    step_envs.close()
    assert np.count_nonzero(expected) > 30
    for segments in (False, True):
        rollout_envs = make("rollout", segments)
        rollout_envs.reset()
        buffer = np.zeros((24, 3), np.float32)
        for start in (0, 12):  # two rollouts; episodes cross the boundary
            for t in range(start, start + 12):
                buffer[t] = rollout_envs.step(actions[t])[1]
            assert not buffer[start:start + 12].any()  # nothing dense at step time
            rollout_envs._delayed.collect().add_to(buffer[start:start + 12], start)
        np.testing.assert_allclose(buffer, expected, atol=1e-5)
        rollout_envs.close()


class BufferRewards(BaseCallback):
    """Keeps a copy of the rollout buffer's rewards at each rollout end (after RelabelRollout, listed before it)."""

    def __init__(self):
        super().__init__()
        self.rewards = []

    def _on_step(self) -> bool:
        return True

    def _on_rollout_end(self) -> None:
        buffer = self.model.rollout_buffer
        self.rewards.append(buffer.rewards.copy())
        advantages = buffer.advantages.copy()  # must already be those of the relabelled rewards:
        buffer.compute_returns_and_advantage(last_values=self.locals["values"], dones=self.locals["dones"])
        np.testing.assert_allclose(buffer.advantages, advantages, atol=1e-5)


def test_ppo_trains_on_relabelled_rollouts_equal_to_streamed_rewards(remote):
    def train(relabel):
        envs = VecVLReward(DummyVecEnv(env_fns(4)[:4]), remote, mix=RewardMix(mode="dense+sparse"), relabel=relabel)
        ppo = PPO("MlpPolicy", envs, n_steps=32, batch_size=64, n_epochs=1, seed=0, device="cpu")
        buffer = BufferRewards()
        callbacks = [envs.relabel_callback(), buffer] if relabel == "rollout" else [buffer]
        ppo.learn(32 * 4 * 2, callback=callbacks)
        envs.close()
        return buffer.rewards, callbacks[0]

    streamed, _ = train("step")
    relabelled, relabel = train("rollout")
    assert isinstance(relabel, RelabelRollout) and relabel.relabelled == 2 * 32 * 4  # every step got its reward
    np.testing.assert_allclose(relabelled[0], streamed[0], atol=1e-4)  # same policy, same actions, same rewards
    assert np.count_nonzero(relabelled[1]) > 32 and len(relabelled) == len(streamed) == 2


def test_bad_setups_raise(remote):
    from minigrid.wrappers import ImgObsWrapper

    from envs.wrappers import RenderedFrames
    from rl.inputs import MissingInputError

    with pytest.raises(ValueError, match="relabel"):
        VecVLReward(DummyVecEnv(env_fns(1)), remote, relabel="episode")
    bare = DummyVecEnv([lambda: ImgObsWrapper(gym.make("BabyAI-GoToRedBall-v0"))])  # no frames, no mission in info
    with pytest.raises(MissingInputError, match="RenderedFrames"):
        VecVLReward(bare, remote).reset()
    framed = DummyVecEnv([lambda: RenderedFrames(ImgObsWrapper(gym.make("BabyAI-GoToRedBall-v0",
                                                                        render_mode="rgb_array")), 64)])
    with pytest.raises(MissingInputError, match="goals="):
        VecVLReward(framed, remote).reset()
    envs = VecVLReward(DummyVecEnv(env_fns(2)), remote, relabel="rollout")
    with pytest.raises(ValueError, match="norm_reward"):
        PPO("MlpPolicy", VecNormalize(envs), n_steps=8, batch_size=8).learn(16, callback=envs.relabel_callback())


def test_vlreward_rl_library_sb3_writes_the_curves_of_sparse_and_dense(tmp_path, monkeypatch):
    """`train(Args(library="sb3"))`: SB3 PPO runs of sparse and dense (relabelled per rollout, in-process critic)
    write the same per-run CSVs and curves.png as the RLlib runs. The potential signal, which needs whole episodes,
    must not stop the sparse run (it streams, paying no dense part)."""
    import csv

    from rl.train import CURVE_FIELDS, Args, train

    args = Args(library="sb3", tasks=["GoToRedBall"], reward=["sparse", "dense"], model="babyai-liv", url="",
                signal="potential", steps=512, num_envs=4, train_batch_size=256, max_episode_steps=16, out=str(tmp_path))
    rows = train(args)
    written = []
    for name in ("sparse-seed0.csv", "dense-seed0.csv"):
        with open(tmp_path / name, newline="") as f:
            reader = csv.DictReader(f)
            assert tuple(reader.fieldnames) == CURVE_FIELDS
            written += list(reader)
    assert len(written) == len(rows) == 4 and [r["reward"] for r in written] == ["sparse"] * 2 + ["dense"] * 2
    for reward in ("sparse", "dense"):
        run = [row for row in rows if row["reward"] == reward]
        assert [row["env_steps"] for row in run] == [256, 512] and [row["iteration"] for row in run] == [1, 2]
        assert all(0.0 <= row["success_rate"] <= 1.0 and row["time_s"] > 0 for row in run)  # 16-step episodes end
        assert all(np.isfinite(row["train_return_mean"]) for row in run)
        assert all(row["episodes"] == 16 and 0 <= row["successes"] <= 16 for row in run)  # 4 envs x 64 / 16 steps
    sparse, dense = rows[:2], rows[2:]
    assert all(row["frames"] == 0 and row["reward_s"] == 0 for row in sparse)  # no model, no frames sent
    assert all(row["frames"] >= 256 and row["frame_mb"] > 0 for row in dense)  # every step's frame + resets
    # the live audit: none without a model; with one, finite once a success and a failure have ended
    assert all(np.isnan(row["reward_auroc"]) and np.isnan(row["false_pay_rate"]) for row in sparse)
    assert all("reward_auroc" in row and "false_pay_rate" in row for row in dense)
    assert (tmp_path / "curves.png").read_bytes().startswith(b"\x89PNG")
    # the same command again goes on from the runs written: nothing reruns
    monkeypatch.setattr("rl.sb3_train.train_run", lambda *a: pytest.fail("a written run must not rerun"))
    again = train(args)
    assert [(r["reward"], r["env_steps"]) for r in again] == [(r["reward"], r["env_steps"]) for r in rows]


def test_vlreward_rl_has_the_library_flag():
    from vlreward.cli import build_parser

    rl = build_parser()._subparsers._group_actions[0].choices["rl"]
    assert "--library {rllib,sb3}" in rl.format_help() and "--relabel {rollout,step}" in rl.format_help()


def test_sb3_runs_refuse_normalize_before_loading_a_model():
    from rl.sb3_train import train_run
    from rl.train import Args

    def no_model():
        raise AssertionError("the model must not load")

    with pytest.raises(ValueError, match="--normalize"):
        train_run(Args(library="sb3", normalize=True), "dense", 0, no_model)
