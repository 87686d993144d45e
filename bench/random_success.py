"""How often does a policy of uniform random actions solve a task? The bound's task selection, measured.

Shaping can only pay where random success is rare: where random actions often succeed, sparse PPO finds the reward
unaided and a dense critic has little left to speed up. The RL payoff work therefore picks tasks by this rate, and
`vlreward report`'s `rl` generator prints it under the table of a runs folder that holds the file written here.

    python -m bench.random_success --env babyai --task KeyCorridorS3R3 --episodes 100 --seed 0 \
        --out docs/results/babyai-keycorridors3r3
"""

from __future__ import annotations

import json
import shlex
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import gymnasium as gym
from tqdm import tqdm

from envs.suites import get_suite
from rewards.args import arg, parse_args

RESULT = "random-success.json"  # the file name `vlreward report` looks for in a runs folder


@dataclass
class Args:
    """Episodes of uniform random actions on one task; writes <out>/random-success.json."""

    env: str = arg("babyai", "environment suite")
    task: str = arg("GoToRedBallNoDists", "task (BabyAI level / Meta-World task)")
    episodes: int = arg(100, "episodes to play")
    seed: int = arg(0, "first seed: episode i resets the env and seeds the action space with seed + i")
    max_episode_steps: int = arg(0, "truncate episodes after this many steps, as the runs beside the result do "
                                 "(`--max-episode-steps`); 0 = the env's own limit")
    out: str = arg("runs/bench/random_success", f"folder for {RESULT}")


def random_episode_succeeds(env: gym.Env, seed: int) -> bool:
    """One episode of `env.action_space.sample()` up to its step limit: is `info["success"]` ever set?"""
    env.action_space.seed(seed)
    env.reset(seed=seed)
    terminated = truncated = False
    while not (terminated or truncated):
        _, _, terminated, truncated, info = env.step(env.action_space.sample())
        if info["success"]:
            return True
    return False


def main(argv: Sequence[str] | None = None) -> Path:
    argv = sys.argv[1:] if argv is None else list(argv)
    args = parse_args(Args, argv)
    suite = get_suite(args.env)
    task = suite.canonical_task(args.task)
    env = suite.make_env(task, seed=args.seed, render_size=0)  # 0: no frames, nothing looks at them
    if args.max_episode_steps:
        env = gym.wrappers.TimeLimit(env, args.max_episode_steps)
    seeds = range(args.seed, args.seed + args.episodes)
    successes = 0
    with tqdm(seeds, desc=task, unit="episode") as bar:
        for seed in bar:
            successes += random_episode_succeeds(env, seed)
            bar.set_postfix(successes=successes)  # the count so far, should a long task be cut short
    env.close()
    result = {"env": args.env, "task": task, "episodes": args.episodes, "successes": successes,
              "max_episode_steps": args.max_episode_steps or None,
              "rate": successes / args.episodes, "seed": args.seed,
              "command": "python -m bench.random_success " + shlex.join(argv)}
    path = Path(args.out) / RESULT
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(result, indent=2) + "\n")
    print(f"{args.env} {task}: {successes} of {args.episodes} random episodes succeed ({result['rate']:.1%}); {path}")
    return path


if __name__ == "__main__":
    main()
