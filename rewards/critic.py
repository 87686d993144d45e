"""Plumbing shared by rewards built on a trained torch critic with a frozen sentence encoder (LIV, VLC)."""

from __future__ import annotations

from collections import OrderedDict
from typing import Sequence

import numpy as np
import torch

from rewards.base import Goal, Score, StreamingMixin
from rewards.errors import InvalidCheckpointError
from rewards.preprocess import embed_in_chunks, preprocess_frames
from rewards.text import shared_minilm


TEXT_CACHE_SIZE = 1024
#: frames per image-encoder pass on a CPU: a cross-request batch of 512 frames in one pass overflows the caches with
#: its activations, and LIV embeds its frames about half as fast again in 64-frame passes (measured on 2 cores, 1 and
#: 2 threads; flat for the small progress critics); a GPU keeps `frames_per_forward`
CPU_FRAMES_PER_PASS = 64


class CriticReward(StreamingMixin):
    """Holds the critic on its device and embeds frames in bounded chunks; subclasses add goals and scoring.

    The critic provides `config.image_size/mean/std`, `encode_images(pixels [B,3,S,S]) -> [B,D]` and
    `encode_text(features) -> [B,D]`; `sentence_encoder` maps texts to those features (MiniLM features, or CLIP
    token ids for the OpenAI-format LIV).
    """

    def __init__(self, name: str, critic: torch.nn.Module, sentence_encoder: torch.nn.Module, version: str,
                 device: str = "cpu", frames_per_forward: int = 512):
        self.name = name
        self.version = version
        self.device = device
        self.critic = critic.to(device).eval()
        self.sentence_encoder = sentence_encoder.to(device)
        self.frames_per_forward = frames_per_forward
        self._text_vectors: OrderedDict[str, torch.Tensor] = OrderedDict()

    @torch.no_grad()
    def embed_frames(self, frames: np.ndarray) -> torch.Tensor:
        """uint8 frames [T, H, W, 3] -> frame embeddings [T, D], in chunks that bound memory."""
        config = self.critic.config

        def encode(chunk):
            return self.critic.encode_images(preprocess_frames(chunk, config.image_size, config.mean, config.std,
                                                               device=self.device))

        passes = min(self.frames_per_forward, CPU_FRAMES_PER_PASS) if self.device == "cpu" else self.frames_per_forward
        return embed_in_chunks(encode, frames, passes)

    def goal_vectors(self, goals: Sequence[Goal]) -> list[torch.Tensor]:
        """Each goal's embedding [D] on the device. A goal several trajectories or streams share (an RL batch, a
        vector env's task) is embedded once per call, and a task sentence once per `TEXT_CACHE_SIZE` distinct
        sentences: a stream scored one step at a time sends its task with every step."""
        embedded: dict = {}
        vectors = []
        for goal in goals:
            if isinstance(goal, str):
                vectors.append(self._text_vector(goal))
                continue
            if id(goal) not in embedded:
                embedded[id(goal)] = torch.from_numpy(self.embed_goal(goal).vector).to(self.device)
            vectors.append(embedded[id(goal)])
        return vectors

    def _text_vector(self, text: str) -> torch.Tensor:
        """A task sentence's embedding from the LRU cache, embedded on a miss."""
        if text in self._text_vectors:
            self._text_vectors.move_to_end(text)
            return self._text_vectors[text]
        vector = self._text_vectors[text] = torch.from_numpy(self.embed_goal(text).vector).to(self.device)
        if len(self._text_vectors) > TEXT_CACHE_SIZE:
            self._text_vectors.popitem(last=False)
        return vector

    def score(self, frames: np.ndarray, goal: Goal) -> Score:
        return self.score_batch([frames], [goal])[0]


def with_text_backbone(reward_cls: type[CriticReward], name: str, critic: torch.nn.Module, version: str,
                       device: str = "cpu") -> CriticReward:
    """`reward_cls` around a loaded critic, with the frozen sentence encoder its config names (MiniLM only): the
    one step every text-critic loader ends with."""
    if critic.config.text_backbone != "all-minilm-l6-v2":
        raise InvalidCheckpointError(f"unknown text backbone {critic.config.text_backbone!r}")
    return reward_cls(name, critic, shared_minilm(device), version=version, device=device)
