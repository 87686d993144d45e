"""The progress critic: a head on a frozen pretrained image tower (rewards/backbones.py) that predicts task progress."""

from rewards.progress.load import load_progress, load_progress_critic
from rewards.progress.model import ProgressConfig, ProgressCritic, ProgressHead, progress_loss
from rewards.progress.reward import ProgressReward

__all__ = ["ProgressConfig", "ProgressCritic", "ProgressHead", "ProgressReward", "load_progress",
           "load_progress_critic", "progress_loss"]
