"""PPO (RLlib new API stack) on a BabyAI level with rewards from a vlreward `RewardModel`.

The policy sees the env's flat state vector; the frames travel in `info["frame"]` to the `ServiceReward` learner
connector, which scores every finished episode of an iteration in one `score_batch` call (design.md §6b).

    python -m rl.train --task GoToRedBall --reward dense --model babyai-liv --iterations 10
    python -m rl.train --url http://127.0.0.1:8000 --model babyai-liv   # rewards from a running service
"""

from __future__ import annotations

import csv
import dataclasses
import functools
import os
import random
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import torch
from tqdm import tqdm

from rewards.base import RewardModel
from rl.connector import MODES, ServiceReward
from vlreward.args import arg, parse_args

ENV_NAME = "vlreward-babyai"
CURVE_FIELDS = ("iteration", "env_steps", "episode_return_mean", "served_return_mean", "success_rate", "time_s")


@dataclass
class Args:
    """Train PPO on a BabyAI level with video-language rewards."""

    task: str = arg("GoToRedBall", "BabyAI level, short name or gym id")
    reward: str = arg("dense", "which reward the policy is trained on", choices=MODES)
    model: str = arg("babyai-liv", "reward model name or checkpoint directory")
    url: str = arg("", "reward service URL; empty = load the model in-process")
    iterations: int = arg(10, "PPO training iterations")
    seed: int = arg(0, "seed for RLlib, torch, numpy and the envs")
    render_size: int = arg(64, "side of the RGB frames sent to the reward model, pixels")
    max_episode_steps: int = arg(0, "truncate episodes after this many steps; 0 = the level's own limit")
    num_env_runners: int = arg(0, "remote env runners; 0 samples in the driver")
    train_batch_size: int = arg(1000, "env steps per PPO iteration")
    out: str = arg("runs/rl", "folder for curve.csv")


def make_training_env(env_config: dict):
    """RLlib env creator: `envs.babyai.make_env` plus an optional step limit (env_config from `build_config`)."""
    import gymnasium as gym

    from envs.babyai import make_env

    env = make_env(env_config["task"], seed=None, render_size=env_config["render_size"])
    if env_config.get("max_episode_steps"):
        env = gym.wrappers.TimeLimit(env, max_episode_steps=env_config["max_episode_steps"])
    return env


def log_success(*, episode, metrics_logger=None, **kwargs) -> None:
    """on_episode_end callback: 1.0 when any step reported `info["success"]`."""
    success = any(info.get("success", False) for info in episode.get_infos())
    metrics_logger.log_value("success_rate", float(success), window=100)


def load_reward_model(model: str, url: str = "") -> RewardModel:
    """The reward model behind `--model`/`--url`: a `RemoteRewardModel` for a URL, else `rewards.load_model`."""
    if url:
        from serve.client import RemoteRewardModel

        return RemoteRewardModel(url, model)
    from rewards import load_model

    return load_model(model)


def build_config(args: Args, reward_model_factory: Callable[[], RewardModel]):
    """PPOConfig for `args`; `reward_model_factory` is called once inside the learner (unused for "sparse")."""
    from ray.rllib.algorithms.ppo import PPOConfig
    from ray.tune.registry import register_env

    register_env(ENV_NAME, make_training_env)
    minibatch_size = min(128, args.train_batch_size)
    env_config = {"task": args.task, "render_size": args.render_size, "max_episode_steps": args.max_episode_steps}
    config = (
        PPOConfig()
        .environment(ENV_NAME, env_config=env_config)
        .env_runners(num_env_runners=args.num_env_runners, batch_mode="complete_episodes")
        .training(train_batch_size=args.train_batch_size, minibatch_size=minibatch_size, num_epochs=4, lr=3e-4)
        .callbacks(on_episode_end=log_success)
        .debugging(seed=args.seed)
    )
    if args.reward != "sparse":
        config.learners(
            learner_connector=functools.partial(
                _service_reward, reward_model_factory=reward_model_factory, mode=args.reward
            )
        )
    return config


def _service_reward(obs_space, act_space, *, reward_model_factory, mode) -> ServiceReward:
    return ServiceReward(obs_space, act_space, reward_model_factory=reward_model_factory, mode=mode)


def iteration_row(iteration: int, result: dict, time_s: float) -> dict:
    """One row of the learning curve from an `algo.train()` result."""
    env_runners, learners = result.get("env_runners", {}), result.get("learners", {})
    return {
        "iteration": iteration,
        "env_steps": int(env_runners.get("num_env_steps_sampled_lifetime", 0)),
        "episode_return_mean": float(env_runners.get("episode_return_mean", np.nan)),
        "served_return_mean": float(learners.get("vlreward/mean_return", np.nan)),
        "success_rate": float(env_runners.get("success_rate", np.nan)),
        "time_s": time_s,
    }


def train(args: Args, reward_model_factory: Callable[[], RewardModel] | None = None) -> list[dict]:
    """Run `args.iterations` PPO iterations; return and write (`out/curve.csv`) one row per iteration."""
    import ray

    print("args:", dataclasses.asdict(args))
    random.seed(args.seed)
    np.random.seed(args.seed)
    torch.manual_seed(args.seed)  # RLlib seeds its env runners and learner from config.debugging(seed)

    factory = reward_model_factory or functools.partial(load_reward_model, args.model, args.url)
    if not ray.is_initialized():
        ray.init(num_cpus=max(2, args.num_env_runners + 1), include_dashboard=False)
    algo = build_config(args, factory).build_algo()
    rows = []
    try:
        progress = tqdm(range(1, args.iterations + 1), desc="ppo", unit="it")
        for iteration in progress:
            start = time.perf_counter()
            result = algo.train()
            rows.append(iteration_row(iteration, result, time.perf_counter() - start))
            progress.set_postfix(
                steps=rows[-1]["env_steps"],
                ret=f"{rows[-1]['episode_return_mean']:.3f}",
                served=f"{rows[-1]['served_return_mean']:.3f}",
                success=f"{rows[-1]['success_rate']:.2f}",
            )
    finally:
        algo.stop()
    write_curve(rows, Path(args.out) / "curve.csv")
    return rows


def write_curve(rows: Sequence[dict], path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=CURVE_FIELDS)
        writer.writeheader()
        writer.writerows(rows)


def main(argv: Sequence[str] | None = None) -> list[dict]:
    os.environ.setdefault("RAY_AUTH_MODE", "disabled")  # local clusters (design.md §6); a deployed one keeps auth
    args = parse_args(Args, argv)
    return train(args)


if __name__ == "__main__":
    main()
