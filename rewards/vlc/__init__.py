"""Video-Language Critic (Alakuijala et al., TMLR 2025): a causal transformer scoring partial videos against text."""

from rewards.vlc.load import load_vlc, load_vlc_critic
from rewards.vlc.model import VideoLanguageCritic, VLCConfig, vlc_loss
from rewards.vlc.reward import VLCReward

__all__ = ["VLCConfig", "VLCReward", "VideoLanguageCritic", "load_vlc", "load_vlc_critic", "vlc_loss"]
