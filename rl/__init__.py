"""RLlib integration: rewards from a vlreward `RewardModel` inside PPO training episodes."""

from rl.connector import MODES, ServiceReward

__all__ = ["MODES", "ServiceReward"]
