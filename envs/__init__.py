"""Environment adapters (gymnasium envs that render RGB frames and carry an instruction) and dataset generation."""

from envs.babyai import Episode, make_env, rollout

__all__ = ["Episode", "make_env", "rollout"]
