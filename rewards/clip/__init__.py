"""CLIP backbones as reward models: VLM-RM's goal-baseline reward on HF CLIP, and LIV's public RN50 weights."""

from rewards.clip.goal_baseline import CLIPGoalBaselineReward, GoalBaselineConfig, goal_baseline_reward
from rewards.clip.load import (
    LIVCLIPConfig,
    load_clip_goal_baseline,
    load_liv_openai,
    save_clip_goal_baseline,
    write_config,
)
from rewards.clip.openai_model import OpenAICLIP, OpenAICLIPConfig

__all__ = [
    "CLIPGoalBaselineReward", "GoalBaselineConfig", "LIVCLIPConfig", "OpenAICLIP", "OpenAICLIPConfig",
    "goal_baseline_reward", "load_clip_goal_baseline", "load_liv_openai", "save_clip_goal_baseline", "write_config",
]
