"""How well does a critic separate success from failure, before any RL? Prints a table.

    python -m bench.critic_quality --model babyai-liv --data data/babyai
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass

import numpy as np
from tqdm import tqdm

import rewards
from envs.babyai import rollout
from rewards.metrics import auroc, value_order_correlation
from rewards.video import decode_video, read_manifest
from rewards.args import arg, parse_args


@dataclass
class Args:
    """Score held-out dataset videos and fresh rollouts; report VOC and success/failure AUROC of the return."""

    model: str = arg(rewards.DEFAULT_MODEL, "model name or checkpoint directory")
    data: str = arg("", "dataset directory; its val and test splits are scored (empty: skip)")
    levels: list[str] = arg(["GoToRedBall", "GoToLocal"], "BabyAI levels for fresh rollouts")
    first_seed: int = arg(100_000, "fresh rollouts use seeds first_seed.. (never in generated training sets)")
    seeds: int = arg(60, "fresh rollout seeds per level")


def summarise(name: str, scored: list[tuple[bool, rewards.Score]]) -> dict:
    success_returns = np.array([s.episode_return for ok, s in scored if ok])
    failure_returns = np.array([s.episode_return for ok, s in scored if not ok])
    return {
        "set": name, "successes": len(success_returns), "failures": len(failure_returns),
        "return_success": float(success_returns.mean()), "return_failure": float(failure_returns.mean()),
        "auroc": auroc(success_returns, failure_returns),
        "voc": float(np.mean([value_order_correlation(s.values) for ok, s in scored if ok])),
    }


def main(args: Args) -> list[dict]:
    print(json.dumps(asdict(args)))
    model = rewards.load_model(args.model)
    rows = []
    if args.data:
        held_out = [r for r in read_manifest(args.data) if r["split"] in ("val", "test")]
        scored = [(r["success"], model.score(decode_video(r["path"]), r["task"])) for r in tqdm(held_out, desc="dataset")]
        rows.append(summarise("dataset val+test", scored))
    fresh = []
    for level in args.levels:
        for seed in tqdm(range(args.first_seed, args.first_seed + args.seeds), desc=level):
            expert = rollout(level, seed, "expert")
            fresh.append((expert.success, model.score(expert.frames, expert.mission)))
            wanderer = rollout(level, seed, "random")
            if not wanderer.success:  # random successes would blur the comparison
                fresh.append((False, model.score(wanderer.frames, wanderer.mission)))
    rows.append(summarise("fresh expert vs random failures", fresh))

    print(f"\n{'set':34} {'succ':>5} {'fail':>5} {'ret succ':>9} {'ret fail':>9} {'AUROC':>6} {'VOC':>6}")
    for row in rows:
        print(f"{row['set']:34} {row['successes']:5d} {row['failures']:5d} {row['return_success']:9.3f} "
              f"{row['return_failure']:9.3f} {row['auroc']:6.3f} {row['voc']:6.3f}")
    return rows


if __name__ == "__main__":
    main(parse_args(Args))
