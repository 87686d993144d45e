"""Environment adapters (gymnasium envs that render RGB frames and carry an instruction) and dataset generation.

`envs.metaworld` is imported on its own (it loads MuJoCo and an EGL context).
"""

from envs.babyai import Episode, make_env, rollout
from envs.wrappers import RenderedFrames, TaskObservation

__all__ = ["Episode", "RenderedFrames", "TaskObservation", "make_env", "rollout"]
