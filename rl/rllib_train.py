"""`vlreward rl --library rllib`: one run of the sparse-vs-dense experiment (`rl.train`) with RLlib PPO (new API stack).

By default (`--score-in env-runner`) each env runner submits every finished episode's frames to the reward model as
the episode ends and keeps sampling (`rl.connector.EpisodeScorer`); only the scores reach the learner, whose
`ServiceReward` connector waits only for those still in flight. `--score-in learner` is the older path: frames
ride with the episodes and the connector scores an iteration's episodes in one `score_batch` call (design.md §6b).
"""

from __future__ import annotations

import functools
import math
import random
import time
from typing import Callable

import numpy as np
import torch

from rewards.base import RewardModel
from rl.connector import EpisodeScorer, ServiceReward
from rl.experiment import TASK_SUCCESS, reached
from rl.train import SCORE_IN, Args, make_training_env, reward_mix, training_env_config

ENV_NAME = "vlreward-tasks"


def log_success(*, episode, metrics_logger=None, **kwargs) -> None:
    """on_episode_end callback: 1.0 when any step reported `info["success"]`; per task too when the env names it
    (`info["task"]`: several tasks, `envs.suites.TaskSampler`)."""
    infos = episode.get_infos()
    success = float(any(info.get("success", False) for info in infos))
    metrics_logger.log_value("success_rate", success, window=100)
    metrics_logger.log_value("episodes", 1, reduce="sum")  # this iteration's finished episodes and successes:
    metrics_logger.log_value("successes", success, reduce="sum")  # the protocol's success points (rl.experiment)
    if "task" in infos[0]:
        metrics_logger.log_value(f"{TASK_SUCCESS}{infos[0]['task']}", success, window=100)


def build_config(args: Args, reward: str, seed: int, reward_model_factory: Callable[[], RewardModel]):
    """PPOConfig for one run; `reward_model_factory` is called inside the learner (never for "sparse")."""
    from ray.rllib.algorithms.ppo import PPOConfig
    from ray.rllib.core.rl_module.default_model_config import DefaultModelConfig
    from ray.tune.registry import register_env

    register_env(ENV_NAME, make_training_env)
    mix = reward_mix(args, reward)
    env_config = training_env_config(args, seed, mix.uses_model)
    if args.score_in not in SCORE_IN:
        raise ValueError(f"unknown score_in {args.score_in!r}; valid: {', '.join(SCORE_IN)}")
    in_runner = args.score_in == "env-runner"
    # env-runner path: frames leave the episodes at their end (submitted when the mix needs the model)
    callbacks = (functools.partial(EpisodeScorer, reward_model_factory=reward_model_factory, submit=mix.uses_model,
                                   ready_wait_s=args.ready_wait_s, max_in_flight=args.max_in_flight,
                                   coalesce=args.coalesce, segment=args.segment)
                 if in_runner else None)
    return (
        PPOConfig()
        .environment(ENV_NAME, env_config=env_config)
        .env_runners(num_env_runners=args.num_env_runners, num_envs_per_env_runner=args.num_envs,
                     batch_mode="complete_episodes")
        .training(train_batch_size=args.train_batch_size, minibatch_size=min(128, args.train_batch_size),
                  num_epochs=4, lr=3e-4, entropy_coeff=args.entropy_coeff, lambda_=args.gae_lambda)
        .rl_module(model_config=DefaultModelConfig(fcnet_hiddens=[64, 64]))
        .learners(learner_connector=functools.partial(
            _service_reward, reward_model_factory=None if in_runner else reward_model_factory, mix=mix,
            ready_wait_s=args.ready_wait_s))
        .callbacks(callbacks_class=callbacks, on_episode_end=log_success)
        .debugging(seed=seed)
    )


def _service_reward(obs_space, act_space, **kwargs) -> ServiceReward:
    return ServiceReward(obs_space, act_space, **kwargs)


def iteration_row(reward: str, seed: int, iteration: int, result: dict, time_s: float) -> dict:
    """One row of the learning curve (`rl.train.CURVE_FIELDS`) from an `algo.train()` result."""
    env_runners, learners = result.get("env_runners", {}), result.get("learners", {})
    # time the training loop spent blocked on rewards: gathering + scoring in the learner (learner path), or
    # submitting in the env runners + waiting for what was still in flight in the learner (env-runner path)
    reward_s = sum(float(learners.get(f"vlreward/{key}", 0.0)) for key in ("score_s", "gather_s", "wait_s"))
    reward_s += float(env_runners.get("vlreward/submit_s", 0.0))
    per_task = {key: float(value) for key, value in env_runners.items() if key.startswith(TASK_SUCCESS)}
    return {
        "reward": reward, "seed": seed, "iteration": iteration,
        "env_steps": int(env_runners.get("num_env_steps_sampled_lifetime", 0)),
        "success_rate": float(env_runners.get("success_rate", np.nan)), **per_task,
        "episodes": int(env_runners.get("episodes", 0)), "successes": int(env_runners.get("successes", 0)),
        "episode_return_mean": float(env_runners.get("episode_return_mean", np.nan)),
        "train_return_mean": float(learners.get("vlreward/mean_return", np.nan)),
        "time_s": time_s, "reward_s": reward_s,
        "frames": int(learners.get("vlreward/frames", 0)),
        "frame_mb": float(learners.get("vlreward/frame_bytes", 0.0)) / 2**20,
        # the live reward-hacking audit (rewards.metrics.RewardAudit over the learner's last episodes)
        "reward_auroc": float(learners.get("vlreward/reward_auroc", np.nan)),
        "false_pay_rate": float(learners.get("vlreward/false_pay_rate", np.nan)),
    }


def train_run(args: Args, reward: str, seed: int, reward_model_factory: Callable[[], RewardModel]) -> list[dict]:
    """One PPO run of `args.steps` env steps; one curve row per iteration. Runs on this process's Ray cluster, or
    on a fresh local one of its own (never someone else's `ray start`)."""
    import ray

    if not ray.is_initialized():
        ray.init(address="local", num_cpus=max(2, args.num_env_runners + 1), include_dashboard=False)
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)  # RLlib seeds its env runners and learner from config.debugging(seed)
    return run_iterations(build_config(args, reward, seed, reward_model_factory).build_algo(), reward, seed, args)


def run_iterations(algo, reward: str, seed: int, args: Args) -> list[dict]:
    """Train `algo` for `args.steps` env steps, or until the success point reaches `args.stop_at` (then stop it);
    one printed curve row per iteration."""
    rows: list[dict] = []
    try:
        for iteration in range(1, math.ceil(args.steps / args.train_batch_size) + 1):
            start = time.perf_counter()
            result = algo.train()
            row = iteration_row(reward, seed, iteration, result, time.perf_counter() - start)
            rows.append(row)
            print(f"[{reward} seed {seed}] it {iteration:3d}  steps {row['env_steps']:6d}  "
                  f"success {row['success_rate']:.2f}  train return {row['train_return_mean']:+.3f}  "
                  f"{row['time_s']:.1f} s (rewards {row['reward_s']:.2f} s; frames {row['frames']}, "
                  f"{row['frame_mb']:.1f} MB)", flush=True)
            if row["env_steps"] >= args.steps or (args.stop_at and reached(rows, args.stop_at)):
                break
    finally:
        algo.stop()
    return rows
