"""ORCA: ordered coverage alignment against one demo (ICML 2025), plus its frame-level baselines as matchers."""

from rewards.orca.load import load_orca, save_orca
from rewards.orca.reward import MATCHERS, FeaturesConfig, ORCAConfig, ORCAReward

__all__ = ["MATCHERS", "FeaturesConfig", "ORCAConfig", "ORCAReward", "load_orca", "save_orca"]
