"""A transformers `CLIPModel` and its tokenizer behind two calls: pixels or texts in, embeddings out."""

from __future__ import annotations

import torch
import torch.nn as nn


class HFCLIP(nn.Module):
    """Any HF CLIP (ViT-B/32, ViT-L/14, …); embeddings are unnormalised, as the model returns them."""

    def __init__(self, model, tokenizer):
        super().__init__()
        self.model = model.eval().requires_grad_(False)
        self.tokenizer = tokenizer

    @property
    def image_size(self) -> int:
        return self.model.config.vision_config.image_size

    def encode_images(self, pixels: torch.Tensor) -> torch.Tensor:
        """pixels [B, 3, S, S] (CLIP-normalised, S = image_size) -> image embeddings [B, D]."""
        return self.model.get_image_features(pixel_values=pixels).pooler_output

    def encode_texts(self, texts: list[str]) -> torch.Tensor:
        """texts (B of them) -> text embeddings [B, D]; prompts longer than the context are cut."""
        max_length = self.model.config.text_config.max_position_embeddings
        tokens = self.tokenizer(texts, padding=True, truncation=True, max_length=max_length, return_tensors="pt")
        return self.model.get_text_features(**tokens.to(self.model.device)).pooler_output
