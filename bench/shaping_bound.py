"""How much could a perfect critic speed PPO up on a task? Sparse against oracle shaping, side by side.

The critics are judged (issue 15) by how soon PPO with their dense reward reaches the success that PPO with the
success flag alone ends at. This bench measures the ceiling of that comparison: the dense reward of a critic that
is never wrong, the env's own `info["progress"]` (BabyAI: 1 − the expert's remaining path / its path at reset;
Meta-World: 1 − (hand to object + object to target) / the same at reset), paid as potential-based shaping
`γ·p_{t+1} − p_t` with or without the success bonus. Runs are `vlreward rl`'s RLlib PPO (same config, sampler
and curve rows, built by `rl.rllib_train.build_config`), so the table and curves compare with that command's.

    python -m bench.shaping_bound --task GoToRedBallNoDists --steps 30000 --seeds 3 --out runs/bench/bound
"""

from __future__ import annotations

import os
import random
from dataclasses import dataclass
from pathlib import Path

import gymnasium as gym
import numpy as np

from rewards.args import arg, parse_args

KINDS = ("sparse", "oracle", "oracle+sparse")
ENV_NAME = "vlreward-oracle-shaping"


@dataclass
class Args:
    """PPO runs per (reward kind, seed) on one task; the table gives steps to reach sparse's final success."""

    env: str = arg("babyai", "environment suite")
    task: str = arg("GoToRedBallNoDists", "task (BabyAI level / Meta-World task)")
    steps: int = arg(30_000, "env steps per run")
    seeds: int = arg(3, "runs per reward kind")
    seed: int = arg(0, "first seed (seeds seed..seed+seeds-1)")
    kinds: list[str] = arg(list(KINDS), "reward kinds", choices=list(KINDS))
    full_view: bool = arg(False, "BabyAI: also give the policy the whole grid (with the agent), not only its 7x7 "
                          "egocentric view: is the shaping's progress visible to the policy?")
    scale: float = arg(1.0, "scale of the shaping term")
    train_batch_size: int = arg(500, "env steps per PPO iteration")
    max_episode_steps: int = arg(0, "truncate episodes after this many steps (`vlreward rl --max-episode-steps`); "
                                 "0 = the task's own limit")
    entropy_coeff: float = arg(0.01, "PPO's entropy bonus (`vlreward rl --entropy-coeff`)")
    stop_at: float = arg(0.0, "end a run once its success point reaches this (`vlreward rl --stop-at`); 0 = never")
    gae_lambda: float = arg(0.95, "GAE lambda (`vlreward rl --gae-lambda`; 1.0 = RLlib's own default)")
    record: str = arg("", "folder to save some episodes to, as critic training data (`vlreward rl --record`)")
    record_every: int = arg(10, "with --record: save one episode in this many, per env")
    out: str = arg("runs/bench/shaping_bound", "folder for the runs' CSVs (<kind>-seed<k>.csv) and curves.png")


class OracleShaping(gym.Wrapper):
    """reward = success (unless "oracle") + scale·(γ·p_{t+1} − p_t) with p = `info["progress"]` (unless "sparse")."""

    def __init__(self, env: gym.Env, kind: str, scale: float, gamma: float = 0.99):
        super().__init__(env)
        self.kind, self.scale, self.gamma, self._progress = kind, scale, gamma, 0.0

    def reset(self, **kwargs):
        obs, info = self.env.reset(**kwargs)
        self._progress = float(np.nan_to_num(info["progress"]))
        return obs, info

    def step(self, action):
        obs, _, terminated, truncated, info = self.env.step(action)
        progress = float(np.nan_to_num(info["progress"]))
        reward = 0.0 if self.kind == "oracle" else float(info["success"])
        if self.kind != "sparse":
            reward += self.scale * (self.gamma * progress - self._progress)
        self._progress = progress
        return obs, reward, terminated, truncated, info


class FullView(gym.ObservationWrapper):
    """BabyAI: append the whole grid's encoding (object, colour, state per cell; the agent as MiniGrid's
    FullyObsWrapper draws it, with its direction) to the observation, scaled to [0, 1]."""

    def __init__(self, env: gym.Env):
        super().__init__(env)
        grid = env.unwrapped.grid
        size = grid.width * grid.height * 3
        low, high = env.observation_space.low, env.observation_space.high
        self.observation_space = gym.spaces.Box(np.concatenate([low, np.zeros(size, np.float32)]),
                                                np.concatenate([high, np.ones(size, np.float32)]), dtype=np.float32)

    def observation(self, obs):
        from minigrid.core.constants import COLOR_TO_IDX, OBJECT_TO_IDX

        env = self.env.unwrapped
        grid = env.grid.encode().astype(np.float32)
        grid[env.agent_pos[0], env.agent_pos[1]] = (OBJECT_TO_IDX["agent"], COLOR_TO_IDX["red"], env.agent_dir)
        return np.concatenate([obs, (grid / np.array([10.0, 5.0, 3.0], np.float32)).ravel()]).astype(np.float32)


def make_shaped_env(env_config: dict) -> gym.Env:
    from rl.train import make_training_env

    env = make_training_env(env_config)
    if env_config["full_view"]:
        env = FullView(env)
    return OracleShaping(env, env_config["kind"], env_config["scale"])


def run(args: Args, kind: str, seed: int) -> list[dict]:
    """One RLlib PPO run trained on the shaped env reward; `rl.train`'s curve rows."""
    import torch
    from ray.tune.registry import register_env

    from rl.connector import ServiceReward
    from rl.mix import RewardMix
    from rl.train import Args as TrainArgs
    from rl.rllib_train import build_config, run_iterations

    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    register_env(ENV_NAME, make_shaped_env)
    train_args = TrainArgs(env=args.env, tasks=[args.task], train_batch_size=args.train_batch_size,
                           gae_lambda=args.gae_lambda, steps=args.steps, stop_at=args.stop_at,
                           max_episode_steps=args.max_episode_steps, entropy_coeff=args.entropy_coeff,
                           record=args.record, record_every=args.record_every)
    config = build_config(train_args, "sparse", seed, lambda: None)
    env_config = {**config.env_config, "kind": kind, "scale": args.scale, "full_view": args.full_view}
    mix = RewardMix(mode="sparse", sparse="env_reward")  # the env's (shaped) reward, as it is
    config = config.environment(ENV_NAME, env_config=env_config).learners(
        learner_connector=lambda obs_space, act_space: ServiceReward(obs_space, act_space, mix=mix))
    return run_iterations(config.build_algo(), kind, seed, train_args)


def main() -> None:
    args = parse_args(Args)
    os.environ.setdefault("RAY_AUTH_MODE", "disabled")
    import ray

    from rl.experiment import plot_curves, summarize
    from rl.train import written_or_run

    ray.init(address="local", num_cpus=2, include_dashboard=False)
    out, rows = Path(args.out), []
    for seed in range(args.seed, args.seed + args.seeds):
        for kind in args.kinds:
            rows += written_or_run(out, kind, seed, lambda: run(args, kind, seed))
    print(summarize(rows))
    print(f"curves: {plot_curves(rows, out / 'curves.png', f'{args.task}: sparse against oracle shaping')}")


if __name__ == "__main__":
    main()
