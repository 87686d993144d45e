"""`vlreward rl --library sb3`: the sparse-vs-dense experiment of `rl.train` with Stable-Baselines3 PPO.

One run per (reward, seed), as `rl.rllib_train.train_run` does with RLlib, and the same curve rows
(`rl.train.CURVE_FIELDS`), one per rollout of `train_batch_size` env steps, so `rl.train.train` writes the same
per-run CSVs, `curves.png` and summary. The envs are the suite's (`envs.suites.make_multitask_env`: frames in
`info["frame"]`, the mission in `info["mission"]`), with the task embedding appended (`TaskObservation`), stepped
as a `DummyVecEnv` of `num_envs` and wrapped in `rl.sb3.VecVLReward`. Dense rewards are relabelled at each
rollout's end by default (`--relabel rollout`: episodes go to the model as they end while sampling goes on);
`--relabel step` scores every vector step and waits for it.

    vlreward rl --library sb3 --env babyai --tasks GoToRedBallNoDists --reward sparse dense --steps 25000
"""

from __future__ import annotations

import random
import time
from collections import deque
from typing import Callable

import numpy as np
import torch
from stable_baselines3 import PPO
from stable_baselines3.common.callbacks import BaseCallback, CallbackList
from stable_baselines3.common.vec_env import DummyVecEnv, VecMonitor

from rewards.base import RewardModel
from rl.experiment import reached
from rl.sb3 import RelabelRollout, VecVLReward
from rl.train import Args, critic_input_size, make_training_env, reward_mix, training_env_config

SUCCESS_WINDOW = 100  # finished episodes in the success rate (as RLlib's `log_success` window)


class CurveRows(BaseCallback):
    """One `rl.train.CURVE_FIELDS` row per rollout, printed as it is made.

    success_rate: episodes with any step reporting `info["is_success"]`, over the last `SUCCESS_WINDOW` finished.
    episode_return_mean: the env's own return (a `VecMonitor` below `envs`), over SB3's last 100 episodes.
    train_return_mean: the return PPO trained on (step rewards + relabelled dense ones, without SB3's value
    bootstrap on truncation) of the episodes that ended in this rollout. time_s: wall time since the previous
    row (the last row also gets the final update's). reward_s, frames: time blocked on the model, frames sent.
    """

    def __init__(self, envs: VecVLReward, reward: str, seed: int, frame_bytes: int,
                 relabel: RelabelRollout | None = None, stop_at: float = 0.0):
        super().__init__()
        self.envs, self.reward, self.seed, self.frame_bytes, self.relabel = envs, reward, seed, frame_bytes, relabel
        self.stop_at = stop_at  # end training once the success point reaches it (`--stop-at`); 0: never
        self._stop = False  # set once per rollout (its row), read at every step
        self.rows: list[dict] = []
        self._successes: deque[bool] = deque(maxlen=SUCCESS_WINDOW)
        self._solved = np.zeros(envs.num_envs, bool)  # per sub-env: its episode reported success
        self._returns = np.zeros(envs.num_envs)  # per sub-env: its episode's trained return so far
        self._rewards: list[np.ndarray] = []  # this rollout's step rewards [n_steps][num_envs]
        self._dones: list[np.ndarray] = []
        self._first_step = 0
        self._mark = self._wait_s = 0.0
        self._frames = 0

    def _on_training_start(self) -> None:
        self._mark, self._wait_s, self._frames = time.perf_counter(), self.envs.wait_s, self.envs.frames_sent

    def _on_rollout_start(self) -> None:
        self._rewards, self._dones, self._first_step = [], [], self.envs.steps
        self._episodes, self._wins = 0, 0  # this rollout's finished episodes and successes (rl.experiment's points)

    def _on_step(self) -> bool:
        # a copy: SB3 adds the value bootstrap of truncated episodes into this array after the callbacks
        self._rewards.append(np.array(self.locals["rewards"], np.float64))
        dones = np.asarray(self.locals["dones"], bool)
        self._dones.append(dones)
        self._solved |= [bool(info.get("is_success", False)) for info in self.locals["infos"]]
        for i in np.flatnonzero(dones):
            self._successes.append(bool(self._solved[i]))
            self._episodes, self._wins = self._episodes + 1, self._wins + bool(self._solved[i])
            self._solved[i] = False
        return not self._stop

    def _on_rollout_end(self) -> None:  # after RelabelRollout's (listed after it)
        rewards = np.stack(self._rewards)  # [n_steps, num_envs]
        if self.relabel is not None and self.relabel.relabels is not None:
            self.relabel.relabels.add_to(rewards, self._first_step)
        finished = []
        for step_rewards, dones in zip(rewards, self._dones):
            self._returns += step_rewards
            finished += list(self._returns[dones])
            self._returns[dones] = 0.0
        now, wait_s, frames = time.perf_counter(), self.envs.wait_s, self.envs.frames_sent
        env_returns = [episode["r"] for episode in self.model.ep_info_buffer]
        row = {
            "reward": self.reward, "seed": self.seed, "iteration": len(self.rows) + 1,
            "env_steps": int(self.num_timesteps),
            "success_rate": float(np.mean(self._successes)) if self._successes else float("nan"),
            "episodes": self._episodes, "successes": self._wins,
            "episode_return_mean": float(np.mean(env_returns)) if env_returns else float("nan"),
            "train_return_mean": float(np.mean(finished)) if finished else float("nan"),
            "time_s": now - self._mark, "reward_s": wait_s - self._wait_s,
            "frames": frames - self._frames, "frame_mb": (frames - self._frames) * self.frame_bytes / 2**20,
            # the live reward-hacking audit, as in RLlib's rows (NaN for sparse runs and step relabelling)
            "reward_auroc": self.envs.audit.reward_auroc if self.envs.audit is not None else float("nan"),
            "false_pay_rate": self.envs.audit.false_pay_rate if self.envs.audit is not None else float("nan"),
        }
        self._mark, self._wait_s, self._frames = now, wait_s, frames
        self.rows.append(row)
        self._stop = bool(self.stop_at) and reached(self.rows, self.stop_at)
        print(f"[sb3 {self.reward} seed {self.seed}] rollout {row['iteration']:3d}  steps {row['env_steps']:6d}  "
              f"success {row['success_rate']:.2f}  train return {row['train_return_mean']:+.3f}  "
              f"{row['time_s']:.1f} s (rewards {row['reward_s']:.2f} s; frames {row['frames']}, "
              f"{row['frame_mb']:.1f} MB)", flush=True)

    def _on_training_end(self) -> None:
        if self.rows:
            self.rows[-1]["time_s"] += time.perf_counter() - self._mark


def make_vec_env(args: Args, seed: int, render_size: int) -> VecMonitor:
    """`args.num_envs` envs of the suite (sub-env i seeded seed + i) in a DummyVecEnv, under a VecMonitor."""

    def make(i: int):
        return lambda: make_training_env({**training_env_config(args, seed + i, True), "render_size": render_size})

    return VecMonitor(DummyVecEnv([make(i) for i in range(args.num_envs)]))


def train_run(args: Args, reward: str, seed: int, reward_model_factory: Callable[[], RewardModel]) -> list[dict]:
    """One SB3 PPO run of `args.steps` env steps ; one curve row per rollout.

    The model comes from `reward_model_factory` (not called for "sparse"). PPO's settings follow the RLlib run's:
    a [64, 64] MLP, lr 3e-4, entropy 0.01, 4 epochs of minibatches of 128, rollouts of `train_batch_size` steps.
    """
    mix = reward_mix(args, reward)
    if mix.normalize:
        raise ValueError("--normalize is not supported with --library sb3 (VecVLReward relabels unnormalised "
                         "rewards); use --reward-scale")
    if args.train_batch_size < args.num_envs:
        raise ValueError(f"--train-batch-size {args.train_batch_size} is below --num-envs {args.num_envs}")
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)  # PPO(seed=) seeds these again, the action space and the sub-envs (seed + i)
    render_size = args.render_size or critic_input_size(args.model)
    model = reward_model_factory() if mix.uses_model else None
    relabel = args.relabel if mix.uses_model else "step"  # sparse: nothing to relabel
    if relabel == "step" and model is not None and not hasattr(model, "score_steps"):
        raise ValueError(f"--relabel step needs a model with score_steps; {type(model).__name__} has none: use "
                         f"--relabel rollout")
    envs = VecVLReward(make_vec_env(args, seed, render_size), model, mix=mix, relabel=relabel)
    n_steps = args.train_batch_size // args.num_envs
    ppo = PPO("MlpPolicy", envs, n_steps=n_steps, batch_size=min(128, n_steps * args.num_envs), n_epochs=4,
              learning_rate=3e-4, ent_coef=args.entropy_coeff, gae_lambda=args.gae_lambda,
              policy_kwargs={"net_arch": [64, 64]}, seed=seed, device="cpu")
    relabel_callback = envs.relabel_callback() if relabel == "rollout" else None
    curves = CurveRows(envs, reward, seed, frame_bytes=render_size * render_size * 3, relabel=relabel_callback,
                      stop_at=args.stop_at)
    try:
        ppo.learn(args.steps, callback=CallbackList([c for c in (relabel_callback, curves) if c is not None]))
    finally:
        envs.close()
    return curves.rows
