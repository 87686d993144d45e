"""Gymnasium wrappers that put a `RewardModel`'s rewards into plain (non-RLlib) training loops.

- `VLReward`: one env; rewards streamed per step (`score_step`, the state held here) or the whole episode scored
  once at its end.
- `VectorVLReward`: a vector env; one `score_steps` call (one HTTP request for a remote model) per vector step.

Both take frames from `info["frame"]` (else `env.render()`), the goal from `goal=` (else `info["mission"]`) and
success from `info["success"]`; both leave `terminated`/`truncated` alone, reset their state in `reset()` and
write diagnostics to `info["vlreward"]`. Normalise with `gymnasium.wrappers.NormalizeReward` on top if needed.
"""

from __future__ import annotations

import time

import gymnasium as gym
import numpy as np

from rewards import Goal, RewardModel, Score
from rl.mix import RewardMix

RELABEL = ("step", "episode")


def _check_streaming_mix(mix: RewardMix) -> None:
    if mix.signal != "rewards" or mix.normalize:
        raise ValueError("streaming rewards support signal='rewards' without normalize; wrap the env in "
                         "gymnasium.wrappers.NormalizeReward to normalise")


class VLReward(gym.Wrapper):
    """Replace the env's reward with a video-language reward (plus `success_bonus · success` for "dense+sparse").

    relabel="step": each step streams its frame (`model.score_step`) and gets its reward at once: the reward
      `model.score` gives the last frame of the episode so far (for LIV: exactly the offline rewards of the episode).
    relabel="episode": steps get only the sparse part; the step that ends the episode scores all of its frames
      once (`model.score`) and adds the episode's dense return; `info["vlreward"]["rewards"]` then holds the
      per-step rewards for relabelling a replay buffer.

    Example:
        >>> from envs.babyai import make_env
        >>> from rewards import load_model
        >>> env = VLReward(make_env("GoToRedBall", seed=1), load_model("babyai-liv"))  # goal: info["mission"]
        >>> obs, info = env.reset()
        >>> obs, reward, terminated, truncated, info = env.step(2)
        >>> sorted(info["vlreward"]), reward == info["vlreward"]["served"]
        (['env_reward', 'score_s', 'served'], True)
    """

    def __init__(self, env: gym.Env, model: RewardModel, goal: Goal | None = None, mix: RewardMix = RewardMix(),
                 relabel: str = "step"):
        super().__init__(env)
        if relabel not in RELABEL:
            raise ValueError(f"unknown relabel {relabel!r}; valid: {', '.join(RELABEL)}")
        if relabel == "step":
            _check_streaming_mix(mix)
        self.model, self.goal, self.mix, self.relabel = model, goal, mix, relabel
        self._state = None
        self._frames: list[np.ndarray] = []
        self._successes: list[float] = []

    def _frame(self, info: dict) -> np.ndarray:
        return info["frame"] if "frame" in info else self.env.render()

    def reset(self, *, seed=None, options=None):
        obs, info = self.env.reset(seed=seed, options=options)
        self._goal = self.goal if self.goal is not None else info["mission"]
        frame = self._frame(info)
        self._frames, self._successes, self._state = [frame], [], None
        if self.relabel == "step" and self.mix.uses_model:
            _, self._state = self.model.score_step(frame, self._goal, None)  # frame 0 earns no step reward
        return obs, info

    def step(self, action):
        obs, env_reward, terminated, truncated, info = self.env.step(action)
        success = float(info.get("success", False))
        diagnostics: dict = {"env_reward": float(env_reward)}
        if not self.mix.uses_model:
            reward = self.mix.combine(0.0, success)
        elif self.relabel == "step":
            start = time.perf_counter()
            served, self._state = self.model.score_step(self._frame(info), self._goal, self._state)
            diagnostics.update(served=float(served), score_s=time.perf_counter() - start)
            reward = self.mix.combine(self.mix.scale * served, success)
        else:
            self._frames.append(self._frame(info))
            self._successes.append(success)
            reward = self.mix.combine(0.0, success)
            if terminated or truncated:
                reward += self._score_episode(diagnostics)
        return obs, float(reward), terminated, truncated, {**info, "vlreward": diagnostics}

    def _score_episode(self, diagnostics: dict) -> float:
        """Score the finished episode once; return its dense return, the extra reward of the last step."""
        start = time.perf_counter()
        score: Score = self.model.score(np.stack(self._frames), self._goal)
        dense = self.mix.dense(score)
        diagnostics.update(score_s=time.perf_counter() - start, values=np.asarray(score.values),
                           rewards=np.asarray(self.mix.combine(dense, np.array(self._successes)), np.float32))
        return float(dense.sum())


class VectorVLReward(gym.vector.VectorWrapper):
    """`VLReward`'s streaming form for a vector env: one `model.score_steps` call per vector step.

    The env must autoreset on the next step (gymnasium's default): a sub-env that ended is reset during the
    following `step()`, which returns its reset observation with reward 0; here its stream restarts (state None)
    and its reward stays 0, the served reward of a first frame being no step's reward.

    Example:
        >>> from envs.babyai import make_env
        >>> from rewards import load_model
        >>> envs = gym.vector.SyncVectorEnv([lambda: make_env("GoToRedBall", seed=s) for s in (1, 2)])
        >>> envs = VectorVLReward(envs, load_model("babyai-liv"))
        >>> obs, infos = envs.reset(seed=1)
        >>> obs, rewards, terminated, truncated, infos = envs.step(np.array([2, 2]))
        >>> rewards.shape, infos["vlreward"]["served"].shape
        ((2,), (2,))
    """

    def __init__(self, env: gym.vector.VectorEnv, model: RewardModel, goals: list[Goal] | None = None,
                 mix: RewardMix = RewardMix()):
        super().__init__(env)
        _check_streaming_mix(mix)
        mode = env.metadata.get("autoreset_mode", gym.vector.AutoresetMode.NEXT_STEP)
        if mode != gym.vector.AutoresetMode.NEXT_STEP:
            raise ValueError(f"VectorVLReward needs autoreset_mode NEXT_STEP, the env uses {mode}")
        self.model, self.fixed_goals, self.mix = model, goals, mix
        self._states: list = [None] * self.num_envs
        self._goals: list = [None] * self.num_envs
        self._ended = np.zeros(self.num_envs, bool)

    def _frames_and_goals(self, infos: dict, restarted: np.ndarray) -> np.ndarray:
        frames = np.asarray(infos["frame"])
        for i in np.flatnonzero(restarted):
            self._goals[i] = self.fixed_goals[i] if self.fixed_goals is not None else infos["mission"][i]
            self._states[i] = None
        return frames

    def reset(self, *, seed=None, options=None):
        obs, infos = self.env.reset(seed=seed, options=options)
        self._ended[:] = False
        frames = self._frames_and_goals(infos, np.ones(self.num_envs, bool))
        if self.mix.uses_model:
            _, self._states = self.model.score_steps(frames, self._goals, self._states)
        return obs, infos

    def step(self, actions):
        obs, env_rewards, terminated, truncated, infos = self.env.step(actions)
        restarted = self._ended.copy()
        self._ended = np.logical_or(terminated, truncated)
        success = np.asarray(infos.get("success", np.zeros(self.num_envs)), np.float64) * ~restarted
        served = np.zeros(self.num_envs)
        diagnostics = {"env_reward": np.asarray(env_rewards, np.float64)}
        if self.mix.uses_model:
            frames = self._frames_and_goals(infos, restarted)
            start = time.perf_counter()
            served, self._states = self.model.score_steps(frames, self._goals, self._states)
            served = np.where(restarted, 0.0, np.asarray(served, np.float64))
            diagnostics.update(served=served, score_s=time.perf_counter() - start)
        rewards = np.asarray(self.mix.combine(self.mix.scale * served, success), np.float64)
        return obs, rewards, terminated, truncated, {**infos, "vlreward": diagnostics}
