"""Stable-Baselines3 with vlreward rewards: a `VecEnvWrapper` and a rollout-relabelling callback for PPO/A2C.

`VecVLReward` sits on a `DummyVecEnv` or `SubprocVecEnv` whose envs put frames in `info["frame"]` (BabyAI and
Meta-World from `envs/`, or any env in `envs.wrappers.RenderedFrames`) and the task in `info["mission"]` (or pass
`goals=`). SB3 resets a finished env inside the same `step()`: the terminal frame is in that step's info and the
next episode's first frame in the VecEnv's `reset_infos`. Two modes:

- relabel="step" (exact per-step rewards at step time): every vector step sends all sub-envs' frames (and the
  first frames of episodes that just restarted) in one `score_steps` request and blocks on it. Works with any
  algorithm (PPO, A2C, DQN, SAC...).
- relabel="rollout" (no waiting while sampling; on-policy algorithms only): step rewards hold only the sparse part;
  each finished episode is submitted asynchronously as it ends, and `RelabelRollout` (`envs.relabel_callback()`)
  adds the dense rewards into PPO's rollout buffer at the end of each rollout (unfinished episodes: their prefix)
  and recomputes returns and advantages before the update. The value-bootstrap SB3 adds on time-limit truncation
  is kept. For LIV the rewards equal the streamed ones.

`info["is_success"]` is set from `info["success"]` (SB3 logs `rollout/success_rate`). Put `VecMonitor` above the
wrapper to log served returns in step mode; do not normalise rewards (`VecNormalize(norm_reward=True)`) above it
in rollout mode: relabelled rewards bypass it.

Example (a service running `babyai-liv`: `vlreward serve --models babyai-liv`):
    from stable_baselines3 import PPO
    from stable_baselines3.common.env_util import make_vec_env
    from envs.babyai import make_env
    from rl.sb3 import VecVLReward
    from serve.client import RemoteRewardModel

    venv = make_vec_env(lambda: make_env("GoToRedBall"), n_envs=4)
    envs = VecVLReward(venv, RemoteRewardModel("http://127.0.0.1:8000", "babyai-liv"), relabel="rollout")
    PPO("MlpPolicy", envs, n_steps=256).learn(20_000, callback=envs.relabel_callback())
"""

from __future__ import annotations

import time
from typing import Sequence

import numpy as np
from stable_baselines3.common.callbacks import BaseCallback
from stable_baselines3.common.vec_env import VecEnv, VecEnvWrapper, VecNormalize

from rewards import Goal, RewardModel
from rewards.metrics import RewardAudit
from rl.mix import RewardMix
from rl.inputs import FRAME_HELP, InputWarnings, MissingInputError, check_frame, goal_of, sparse_signal
from rl.relabel import DelayedRewards, Relabels

__all__ = ["RelabelRollout", "VecVLReward"]
MODES = ("step", "rollout")


def _base(venv: VecEnv) -> VecEnv:
    while isinstance(venv, VecEnvWrapper):
        venv = venv.venv
    return venv


class VecVLReward(VecEnvWrapper):
    """Video-language rewards for an SB3 VecEnv: one request for all sub-envs per step, or relabelled per rollout.

    Args:
        venv: a DummyVecEnv/SubprocVecEnv (wrappers below this one are fine) of envs with `info["frame"]`.
        model: a RewardModel: `serve.client.RemoteRewardModel` for a service, or an in-process one; None when
            `mix` is "sparse" (no model call).
        goals: a fixed goal per sub-env; None reads `info["mission"]` at each reset.
        mix: how the dense signal and success combine (`rl.mix.RewardMix`).
        relabel: "step" or "rollout" (see the module docstring).
        segments: rollout mode, for models that score in segments (`rewards.scores_in_segments`: LIV, the
            progress critics): unfinished episodes also go to the service in pieces while they run, so the
            rollout's end waits only for the last few steps (`rl.relabel.DelayedRewards`).

    `steps` counts vector steps; `wait_s` sums the seconds spent blocked on the model; `frames_sent` counts the
    frames sent to it.
    """

    def __init__(self, venv: VecEnv, model: RewardModel | None, goals: Sequence[Goal] | None = None,
                 mix: RewardMix = RewardMix(), relabel: str = "step", segments: bool = False):
        super().__init__(venv)
        if relabel not in MODES:
            raise ValueError(f"unknown relabel {relabel!r}; valid: {', '.join(MODES)}")
        if relabel == "step":
            mix.check_streamable("VecNormalize")
        elif mix.normalize:
            raise ValueError("VecVLReward relabels unnormalised rewards; normalise with VecNormalize in step mode")
        if model is None and mix.uses_model:
            raise ValueError(f"the {mix.mode!r} reward needs a reward model (model=None only for 'sparse')")
        if goals is not None and len(goals) != self.num_envs:
            raise ValueError(f"goals has {len(goals)} entries for {self.num_envs} envs")
        self.model, self.fixed_goals, self.mix, self.relabel = model, goals, mix, relabel
        self._warn = InputWarnings(model, mix, "VecVLReward")
        self._delayed = (DelayedRewards(model, mix, self.num_envs, segments=segments) if relabel == "rollout" else
                         None)
        self._goals: list = [None] * self.num_envs
        self._states: list = [None] * self.num_envs
        self.steps, self._wait_s, self._frames_sent = 0, 0.0, 0
        self._solved = np.zeros(self.num_envs, bool)  # per sub-env: a step of its episode succeeded

    @property
    def wait_s(self) -> float:
        return self._wait_s + (self._delayed.wait_s if self._delayed is not None else 0.0)

    @property
    def audit(self) -> RewardAudit | None:
        """The live reward audit (rollout mode; None in step mode)."""
        return self._delayed.audit if self._delayed is not None else None

    @property
    def frames_sent(self) -> int:
        return self._frames_sent + (self._delayed.frames_sent if self._delayed is not None else 0)

    def _reset_info(self, i: int) -> dict:
        return _base(self.venv).reset_infos[i]

    def _start(self, i: int, info: dict) -> np.ndarray:
        """A new episode in sub-env i: its goal and first frame (raising, naming what is missing)."""
        if "frame" not in info:
            raise MissingInputError(f"VecVLReward found no info['frame'] in sub-env {i}'s reset info: {FRAME_HELP}, "
                                    f"inside the env function given to the VecEnv")
        self._goals[i] = goal_of(self.fixed_goals[i] if self.fixed_goals is not None else None, None, info,
                                 "VecVLReward")
        self._states[i] = None
        frame = check_frame(info["frame"], "VecVLReward")
        if self._delayed is not None:
            self._delayed.start(i, frame, self._goals[i])
        return frame

    def reset(self):
        obs = self.venv.reset()
        self.reset_infos = list(_base(self.venv).reset_infos)
        if self.mix.uses_model:
            frames = [self._start(i, self._reset_info(i)) for i in range(self.num_envs)]
            self._warn.frame(frames[0])
            if self._delayed is None:
                self._score_steps(frames, list(self._goals), [None] * self.num_envs, range(self.num_envs))
        return obs

    def _score_steps(self, frames, goals, states, envs) -> np.ndarray:
        start = time.perf_counter()
        paid, new_states = self.model.score_steps(np.stack(frames), goals, states)
        self._wait_s += time.perf_counter() - start
        self._frames_sent += len(frames)
        for i, state in zip(envs, new_states):
            self._states[i] = state
        return np.asarray(paid, np.float64)

    def step_wait(self):
        obs, env_rewards, dones, infos = self.venv.step_wait()
        infos = list(infos)
        step, self.steps = self.steps, self.steps + 1
        self.reset_infos = list(_base(self.venv).reset_infos)
        success = np.zeros(self.num_envs)
        for i, info in enumerate(infos):
            self._warn.success(info)
            success[i] = sparse_signal(self.mix, info, env_rewards[i])
            if "success" in info:
                info["is_success"] = bool(info["success"])
        served = np.zeros(self.num_envs)
        self._solved |= success > 0
        if self.mix.uses_model:
            served = self._served(step, infos, dones)
            for i, info in enumerate(infos):  # rollout mode: the dense part comes at the rollout's end
                info["vlreward"] = {"env_reward": float(env_rewards[i]),
                                    **({"served": float(served[i])} if self._delayed is None else {})}
        self._solved &= ~np.asarray(dones, bool)
        rewards = np.asarray(self.mix.combine(self.mix.scale * served, success), np.float32)
        return obs, rewards, dones, infos

    def _served(self, step: int, infos: list[dict], dones: np.ndarray) -> np.ndarray:
        """Step mode: the dense rewards of this step (one request); rollout mode: zeros, the episodes recorded."""
        has_frame = np.array(["frame" in info for info in infos])
        if self._delayed is not None:
            for i in range(self.num_envs):
                if has_frame[i]:
                    self._delayed.add(i, step, check_frame(infos[i]["frame"], "VecVLReward"))
                if dones[i]:
                    self._delayed.end(i, bool(self._solved[i]))
                    self._start(i, self._reset_info(i))
            self._delayed.send()
            return np.zeros(self.num_envs)
        continuing = list(np.flatnonzero(has_frame))
        restarted = list(np.flatnonzero(dones))
        frames = [infos[i]["frame"] for i in continuing]
        goals = [self._goals[i] for i in continuing]
        states = [self._states[i] for i in continuing]
        for i in restarted:  # the next episode's first frame starts a new stream in the same request
            frames.append(self._start(i, self._reset_info(i)))
            goals.append(self._goals[i])
            states.append(None)
        if not frames:
            return np.zeros(self.num_envs)
        paid = self._score_steps(frames, goals, states, continuing + restarted)  # restarts last: their state wins
        served = np.zeros(self.num_envs)
        served[continuing] = paid[: len(continuing)]
        return served

    def relabel_callback(self) -> "RelabelRollout":
        """The callback that fills this wrapper's dense rewards into the rollout buffer (relabel="rollout")."""
        return RelabelRollout(self)

    def close(self) -> None:
        if self._delayed is not None:
            self._delayed.close()
        self.venv.close()


class RelabelRollout(BaseCallback):
    """At the end of each rollout of an on-policy algorithm (PPO, A2C), wait for the dense rewards of the rollout's
    steps from a `VecVLReward(relabel="rollout")`, add them into `rollout_buffer.rewards` and recompute returns and
    advantages, before the update. `wait_s` sums the time spent waiting; `relabelled` counts rewards added;
    `relabels` holds the last rollout's (`rl.relabel.Relabels`)."""

    def __init__(self, envs: VecVLReward, verbose: int = 0):
        super().__init__(verbose)
        if envs.relabel != "rollout":
            raise ValueError("RelabelRollout needs VecVLReward(relabel='rollout')")
        self.envs, self.wait_s, self.relabelled, self._first_step = envs, 0.0, 0, 0
        self.relabels: Relabels | None = None

    def _on_training_start(self) -> None:
        env = self.training_env
        while env is not self.envs:
            if isinstance(env, VecNormalize) and env.norm_reward:
                raise ValueError("VecNormalize(norm_reward=True) above VecVLReward(relabel='rollout') would leave "
                                 "the relabelled rewards unnormalised; use norm_reward=False")
            if not isinstance(env, VecEnvWrapper):
                raise ValueError("the algorithm's env is not (a wrapper of) this callback's VecVLReward")
            env = env.venv
        if not hasattr(self.model, "rollout_buffer"):
            raise ValueError(f"rollout relabelling needs an on-policy algorithm (PPO, A2C), not "
                             f"{type(self.model).__name__}; use VecVLReward(relabel='step')")

    def _on_rollout_start(self) -> None:
        self._first_step = self.envs.steps

    def _on_step(self) -> bool:
        return True

    def _on_rollout_end(self) -> None:
        start = time.perf_counter()
        self.relabels = self.envs._delayed.collect()  # noqa: SLF001 (the wrapper's own scorer)
        self.wait_s += time.perf_counter() - start
        buffer = self.model.rollout_buffer
        self.relabelled += self.relabels.add_to(buffer.rewards, self._first_step)
        buffer.compute_returns_and_advantage(last_values=self.locals["values"], dones=self.locals["dones"])
