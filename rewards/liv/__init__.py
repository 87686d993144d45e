"""LIV: language-image value learning (Ma et al., ICML 2023) with a small CPU-trainable image encoder."""

from rewards.liv.model import LIVConfig, LIVCritic, liv_loss
from rewards.liv.reward import LIVReward

__all__ = ["LIVConfig", "LIVCritic", "LIVReward", "liv_loss"]
