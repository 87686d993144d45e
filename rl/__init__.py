"""RL with vlreward rewards: gymnasium wrappers, and an RLlib learner connector (imported on first use)."""

from rl.mix import MODES, RewardMix
from rl.wrappers import VectorVLReward, VLReward

__all__ = ["MODES", "RewardMix", "ServiceReward", "VLReward", "VectorVLReward"]


def __getattr__(name: str):
    """`rl.ServiceReward` imports RLlib only when asked for, so wrapper users do not pay for it."""
    if name == "ServiceReward":
        from rl.connector import ServiceReward

        return ServiceReward
    raise AttributeError(f"module 'rl' has no attribute {name!r}")
