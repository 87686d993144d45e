"""Gymnasium wrappers that put a `RewardModel`'s rewards into plain (non-RLlib) training loops.

- `VLReward`: one env; rewards streamed per step (`score_step`, the state held here) or the whole episode scored
  once at its end.
- `VectorVLReward`: a vector env; relabel="step" sends one `score_steps` request for all sub-envs per vector step
  (exact rewards at step time); relabel="episode" never waits while sampling: each finished episode is scored
  asynchronously and `fill()` adds the dense rewards into the rollout's reward buffer before the update.

Where the inputs come from (a missing one raises at reset, saying how to provide it):
- frames: `info["frame"]` when the env's reset info has one (e.g. `envs.wrappers.RenderedFrames`; with a stride,
  steps without a frame get no dense reward and the model sees the subsampled episode), else `env.render()` of an
  `rgb_array` env; frames far from the critic's input size warn once;
- the goal: `goal=` (`goals=`), else `info["mission"]`, else `obs["mission"]` (plain MiniGrid);
- success: `info["success"]`; without it the sparse part warns once — `RewardMix(sparse="env_reward")` uses the
  env's own reward instead.
The wrappers leave `terminated`/`truncated` alone, reset their state in `reset()` and write diagnostics to
`info["vlreward"]`. Normalise with `gymnasium.wrappers.NormalizeReward` on top if needed.
"""

from __future__ import annotations

import time

import gymnasium as gym
import numpy as np

from rewards import Goal, RewardModel, Score
from rl.mix import RewardMix
from rl.inputs import FRAME_HELP, InputWarnings, MissingInputError, check_frame, goal_of, reset_frame, sparse_signal
from rl.relabel import DelayedRewards, Relabels

RELABEL = ("step", "episode")


class VLReward(gym.Wrapper):
    """Replace the env's reward with a video-language reward (plus `success_bonus · success` for "dense+sparse").

    relabel="step": each step with a frame streams it (`model.score_step`) and gets its reward at once: the reward
      `model.score` gives the last frame of the episode so far (for LIV: exactly the offline rewards of the episode).
    relabel="episode": steps get only the sparse part; the step that ends the episode scores all of its frames
      once (`model.score`) and adds the episode's dense return; `info["vlreward"]["rewards"]` then holds the
      per-step rewards for relabelling a replay buffer (0 dense for steps without a frame).

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
            mix.check_streamable("gymnasium.wrappers.NormalizeReward")
        self.model, self.goal, self.mix, self.relabel = model, goal, mix, relabel
        self._warn = InputWarnings(model, mix, "VLReward")
        self._state = None
        self._frames: list[np.ndarray] = []
        self._frame_steps: list[int] = []  # the step (0-based) that brought frames[k + 1]
        self._successes: list[float] = []

    def _frame(self, info: dict) -> np.ndarray | None:
        """This step's frame; None on a frameless step of an env that puts frames in the info (a stride)."""
        if self._info_frames:
            return check_frame(info["frame"], "VLReward") if "frame" in info else None
        return check_frame(self.env.render(), "VLReward")

    def reset(self, *, seed=None, options=None):
        obs, info = self.env.reset(seed=seed, options=options)
        self._frames, self._frame_steps, self._successes, self._state = [], [], [], None
        if self.mix.uses_model:
            self._goal = goal_of(self.goal, obs, info, "VLReward")
            frame, self._info_frames = reset_frame(info, self.env, "VLReward")
            self._warn.frame(frame)
            self._frames = [frame]
            if self.relabel == "step":
                _, self._state = self.model.score_step(frame, self._goal, None)  # frame 0 earns no step reward
        return obs, info

    def step(self, action):
        obs, env_reward, terminated, truncated, info = self.env.step(action)
        self._warn.success(info)
        success = sparse_signal(self.mix, info, env_reward)
        diagnostics: dict = {"env_reward": float(env_reward)}
        frame = self._frame(info) if self.mix.uses_model else None
        if not self.mix.uses_model:
            reward = self.mix.combine(0.0, success)
        elif self.relabel == "step":
            served = 0.0
            if frame is not None:
                start = time.perf_counter()
                served, self._state = self.model.score_step(frame, self._goal, self._state)
                diagnostics["score_s"] = time.perf_counter() - start
            diagnostics["served"] = float(served)
            reward = self.mix.combine(self.mix.scale * served, success)
        else:
            if frame is not None:
                self._frames.append(frame)
                self._frame_steps.append(len(self._successes))
            self._successes.append(success)
            reward = self.mix.combine(0.0, success)
            if terminated or truncated:
                reward += self._score_episode(diagnostics)
        return obs, float(reward), terminated, truncated, {**info, "vlreward": diagnostics}

    def _score_episode(self, diagnostics: dict) -> float:
        """Score the finished episode once; return its dense return, the extra reward of the last step."""
        start = time.perf_counter()
        score: Score = self.model.score(np.stack(self._frames), self._goal)
        dense = np.zeros(len(self._successes))
        dense[self._frame_steps] = self.mix.dense(score)
        diagnostics.update(score_s=time.perf_counter() - start, values=np.asarray(score.values),
                           rewards=np.asarray(self.mix.combine(dense, np.array(self._successes)), np.float32))
        return float(dense.sum())


def _column(infos: dict, key: str, num_envs: int) -> tuple[np.ndarray | None, np.ndarray]:
    """A vector info key and the mask of sub-envs that set it this step (gymnasium's `_key`)."""
    if key not in infos:
        return None, np.zeros(num_envs, bool)
    return infos[key], np.asarray(infos.get(f"_{key}", np.ones(num_envs, bool)), bool)


class VectorVLReward(gym.vector.VectorWrapper):
    """`VLReward` for a vector env: all sub-envs' frames go to the model together.

    relabel="step" (exact per-step rewards at step time): one `model.score_steps` call (one HTTP request for a
      remote model) per vector step carries every sub-env that has a frame; the step blocks on it.
    relabel="episode" (no waiting while sampling; dense rewards later): step rewards hold only the sparse part
      (`success_bonus · success`, for "dense+sparse"); each finished episode is submitted as it ends (one request
      per vector step for all episodes that ended in it) and the service scores it while the envs keep stepping.
      Before an update, `fill(rewards, first_step)` scores each unfinished episode's prefix, waits for what is
      still in flight and adds the dense rewards into the rollout's reward buffer [T, num_envs]; `collect()` gives
      them as (step, env, reward) arrays. `steps` counts vector steps (the row a step goes to is
      `steps_at_step_time - first_step`). They are `model.score` of the episode (or prefix): the streamed rewards
      for critics whose reward at step k reads only frames up to k (LIV, VLC, progress; ORCA within 1e-3).
      segments=True (models that score in segments, `rewards.scores_in_segments`: LIV, the progress critics) also
      sends unfinished episodes in pieces while they run, so `fill` waits only for the last few steps
      (see `rl.relabel.DelayedRewards`).

    The env must autoreset on the next step (gymnasium's default): a sub-env that ended is reset during the
    following `step()`, which returns its reset observation with reward 0; here its stream restarts and its reward
    stays 0, the served reward of a first frame being no step's reward. Frames come from `info["frame"]` of each
    sub-env (e.g. `RenderedFrames`, any stride); `wait_s` sums the time spent blocked on the model.

    Example:
        >>> from envs.babyai import make_env
        >>> from rewards import load_model
        >>> seeds = (1, 2)
        >>> envs = gym.vector.SyncVectorEnv([lambda s=s: make_env("GoToRedBall", seed=s) for s in seeds])  # s=s!
        >>> envs = VectorVLReward(envs, load_model("babyai-liv"))
        >>> obs, infos = envs.reset()  # each sub-env's first reset uses its own seed
        >>> [np.array_equal(obs[i], make_env("GoToRedBall", seed=s).reset()[0]) for i, s in enumerate(seeds)]
        [True, True]
        >>> obs, rewards, terminated, truncated, infos = envs.step(np.array([2, 2]))
        >>> rewards.shape, infos["vlreward"]["served"].shape
        ((2,), (2,))
    """

    def __init__(self, env: gym.vector.VectorEnv, model: RewardModel, goals: list[Goal] | None = None,
                 mix: RewardMix = RewardMix(), relabel: str = "step", segments: bool = False):
        super().__init__(env)
        if relabel not in RELABEL:
            raise ValueError(f"unknown relabel {relabel!r}; valid: {', '.join(RELABEL)}")
        if relabel == "step":
            mix.check_streamable("gymnasium.wrappers.NormalizeReward")
        elif mix.normalize:
            raise ValueError("VectorVLReward does not normalise; normalise the filled rewards in the algorithm")
        mode = env.metadata.get("autoreset_mode", gym.vector.AutoresetMode.NEXT_STEP)
        if mode != gym.vector.AutoresetMode.NEXT_STEP:
            raise ValueError(f"VectorVLReward needs autoreset_mode NEXT_STEP, the env uses {mode}")
        self.model, self.fixed_goals, self.mix, self.relabel = model, goals, mix, relabel
        self._warn = InputWarnings(model, mix, "VectorVLReward")
        self._delayed = (DelayedRewards(model, mix, self.num_envs, segments=segments) if relabel == "episode" else
                         None)
        self._states: list = [None] * self.num_envs
        self._goals: list = [None] * self.num_envs
        self._ended = np.zeros(self.num_envs, bool)
        self._solved = np.zeros(self.num_envs, bool)  # per sub-env: a step of its episode succeeded
        self.steps, self._wait_s = 0, 0.0

    @property
    def wait_s(self) -> float:
        """Seconds spent blocked on the model (step mode: every call; episode mode: full submits and fills)."""
        return self._wait_s + (self._delayed.wait_s if self._delayed is not None else 0.0)

    def _goal(self, i: int, obs, infos: dict) -> Goal:
        missions, has = _column(infos, "mission", self.num_envs)
        info = {"mission": missions[i]} if has[i] else {}
        sub_obs = {"mission": obs["mission"][i]} if isinstance(obs, dict) and "mission" in obs else None
        return goal_of(self.fixed_goals[i] if self.fixed_goals is not None else None, sub_obs, info, "VectorVLReward")

    def reset(self, *, seed=None, options=None):
        obs, infos = self.env.reset(seed=seed, options=options)
        self._ended[:] = self._solved[:] = False
        if not self.mix.uses_model:
            return obs, infos
        frames, has = _column(infos, "frame", self.num_envs)
        if not has.all():
            raise MissingInputError(f"VectorVLReward found no info['frame'] for sub-envs {np.flatnonzero(~has)}"
                                    f" at reset: {FRAME_HELP}, inside each sub-env's make function")
        self._goals = [self._goal(i, obs, infos) for i in range(self.num_envs)]
        self._warn.frame(check_frame(frames[0], "VectorVLReward"))
        self._states = [None] * self.num_envs
        if self._delayed is not None:
            for i in range(self.num_envs):
                self._delayed.start(i, frames[i], self._goals[i])
        else:
            start = time.perf_counter()
            _, self._states = self.model.score_steps(np.asarray(frames), self._goals, self._states)
            self._wait_s += time.perf_counter() - start
        return obs, infos

    def step(self, actions):
        obs, env_rewards, terminated, truncated, infos = self.env.step(actions)
        restarted = self._ended.copy()
        self._ended = np.logical_or(terminated, truncated)
        step, self.steps = self.steps, self.steps + 1
        if self.mix.uses_success and "success" not in infos:
            self._warn.success(infos)
        if self.mix.sparse == "env_reward":
            success = np.asarray(env_rewards, np.float64) * ~restarted
        else:
            values, has = _column(infos, "success", self.num_envs)
            success = np.where(has & ~restarted, np.asarray(values if values is not None else 0, np.float64), 0.0)
        self._solved = (self._solved & ~restarted) | (success > 0)
        served = np.zeros(self.num_envs)
        diagnostics = {"env_reward": np.asarray(env_rewards, np.float64)}
        if self.mix.uses_model:
            frames, has_frame = _column(infos, "frame", self.num_envs)
            for i in np.flatnonzero(restarted):
                self._goals[i], self._states[i] = self._goal(i, obs, infos), None
            if self._delayed is not None:
                self._record(step, frames, has_frame, restarted)  # dense rewards come with fill()
            else:
                served = self._stream(frames, has_frame, restarted) if has_frame.any() else served
                diagnostics["served"] = served
        rewards = np.asarray(self.mix.combine(self.mix.scale * served, success), np.float64)
        return obs, rewards, terminated, truncated, {**infos, "vlreward": diagnostics}

    def _stream(self, frames: np.ndarray, has_frame: np.ndarray, restarted: np.ndarray) -> np.ndarray:
        """One `score_steps` call for every sub-env with a frame; restarted streams pay nothing."""
        rows = np.flatnonzero(has_frame)
        start = time.perf_counter()
        paid, states = self.model.score_steps(np.asarray(frames)[rows], [self._goals[i] for i in rows],
                                              [self._states[i] for i in rows])
        self._wait_s += time.perf_counter() - start
        served = np.zeros(self.num_envs)
        for row, i in enumerate(rows):
            self._states[i] = states[row]
            served[i] = 0.0 if restarted[i] else float(paid[row])
        return served

    def _record(self, step: int, frames: np.ndarray, has_frame: np.ndarray, restarted: np.ndarray) -> None:
        for i in range(self.num_envs):
            if restarted[i] and not has_frame[i]:
                raise MissingInputError(f"VectorVLReward: sub-env {i} reset without an info['frame']; {FRAME_HELP}")
            if restarted[i]:
                self._delayed.start(i, frames[i], self._goals[i])
            elif has_frame[i]:
                self._delayed.add(i, step, frames[i])
            if self._ended[i]:
                self._delayed.end(i, bool(self._solved[i]))
        self._delayed.send()

    def collect(self) -> Relabels:
        """Episode mode: score what is not scored yet, wait for it, and return the dense rewards of every step
        sampled since the last collect (steps counted by `steps`)."""
        if self._delayed is None:
            raise ValueError("collect() is for relabel='episode'; relabel='step' pays rewards at step time")
        return self._delayed.collect()

    def fill(self, rewards: np.ndarray, first_step: int) -> np.ndarray:
        """Episode mode: add the dense rewards into `rewards` [T, num_envs] (row 0 = vector step `first_step`),
        in place; returns it."""
        self.collect().add_to(rewards, first_step)
        return rewards

    def close(self, **kwargs):
        if self._delayed is not None:
            self._delayed.close()
        return super().close(**kwargs)
