"""vlreward's reward models and their math: plain torch/numpy, no Ray, no HTTP."""

from rewards.base import GOAL_KINDS, Goal, GoalEmbedding, RewardModel, Score, StepState, goal_digest, goal_kind
from rewards.errors import (
    InvalidCheckpointError,
    InvalidStateError,
    InvalidTaskError,
    InvalidVideoError,
    ModelNotReadyError,
    OverloadedError,
    PayloadTooLargeError,
    RequestTimeoutError,
    UnauthorizedError,
    UnknownModelError,
    VLRewardError,
)
from rewards.registry import DEFAULT_MODEL, get_config, list_models, load_model

__all__ = [
    "DEFAULT_MODEL", "GOAL_KINDS", "Goal", "GoalEmbedding", "InvalidCheckpointError", "InvalidStateError", "InvalidTaskError",
    "InvalidVideoError", "ModelNotReadyError", "OverloadedError", "PayloadTooLargeError",
    "RequestTimeoutError", "UnauthorizedError", "RewardModel", "Score", "StepState", "UnknownModelError", "VLRewardError",
    "get_config", "goal_digest", "goal_kind", "list_models", "load_model",
]
