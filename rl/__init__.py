"""RL with vlreward rewards: gymnasium wrappers, Stable-Baselines3 wrappers and an RLlib learner connector (the last
two imported on first use, so wrapper users pay for neither RLlib nor SB3)."""

from rl.mix import MODES, RewardMix
from rl.inputs import MissingInputError
from rl.wrappers import VectorVLReward, VLReward

__all__ = ["MODES", "MissingInputError", "RelabelRollout", "RewardMix", "ServiceReward", "VLReward",
           "VecVLReward", "VectorVLReward"]

_LAZY = {"ServiceReward": "rl.connector", "VecVLReward": "rl.sb3", "RelabelRollout": "rl.sb3"}


def __getattr__(name: str):
    """`rl.ServiceReward` imports RLlib, `rl.VecVLReward`/`rl.RelabelRollout` import SB3, only when asked for."""
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'rl' has no attribute {name!r}")
