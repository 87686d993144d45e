"""OpenAI's ResNet CLIP (RN50 and relatives) in plain torch, keyed like OpenAI's state dicts; no file I/O.

Parameter names match OpenAI's `clip/model.py` exactly, so its weights (and LIV's, which wrap them) load
with `load_state_dict(strict=True)`. Sizes are inferred from the weights as OpenAI's `build_model` does.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F

CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)
# Present in state dicts taken from OpenAI's JIT archives; they are sizes, not weights.
NON_WEIGHT_KEYS = ("input_resolution", "context_length", "vocab_size")


@dataclass(frozen=True)
class OpenAICLIPConfig:
    """Sizes of a ResNet CLIP plus the preprocessing its weights expect (RN50: 224 px, CLIP mean/std)."""

    embed_dim: int = 1024
    image_size: int = 224
    vision_layers: tuple[int, int, int, int] = (3, 4, 6, 3)
    vision_width: int = 64
    context_length: int = 77
    vocab_size: int = 49408
    text_width: int = 512
    text_layers: int = 12
    mean: tuple[float, float, float] = CLIP_MEAN
    std: tuple[float, float, float] = CLIP_STD

    @property
    def vision_heads(self) -> int:
        """OpenAI's fixed rule: 64-wide heads over the width*32 ResNet features."""
        return self.vision_width * 32 // 64

    @property
    def text_heads(self) -> int:
        return self.text_width // 64

    @classmethod
    def from_state_dict(cls, state: dict[str, torch.Tensor]) -> "OpenAICLIPConfig":
        """Infer every size from the weights' shapes, as OpenAI's `build_model` does (KeyError if absent)."""
        if "visual.proj" in state:
            raise ValueError("this is a ViT CLIP; only ResNet CLIP weights are supported")
        grid = round((state["visual.attnpool.positional_embedding"].shape[0] - 1) ** 0.5)
        return cls(
            embed_dim=state["text_projection"].shape[1],
            image_size=grid * 32,
            vision_layers=tuple(_count_blocks(state, f"visual.layer{i}.") for i in range(1, 5)),
            vision_width=state["visual.layer1.0.conv1.weight"].shape[0],
            context_length=state["positional_embedding"].shape[0],
            vocab_size=state["token_embedding.weight"].shape[0],
            text_width=state["ln_final.weight"].shape[0],
            text_layers=_count_blocks(state, "transformer.resblocks."),
        )


def _count_blocks(state: dict, prefix: str) -> int:
    """Number of distinct block indices i in keys `prefix{i}.…`."""
    return len({k[len(prefix):].split(".")[0] for k in state if k.startswith(prefix)})


def _conv_bn(in_channels: int, out_channels: int, kernel: int, stride: int = 1) -> tuple[nn.Conv2d, nn.BatchNorm2d]:
    conv = nn.Conv2d(in_channels, out_channels, kernel, stride=stride, padding=kernel // 2, bias=False)
    return conv, nn.BatchNorm2d(out_channels)


class Bottleneck(nn.Module):
    """1x1 -> 3x3 -> avgpool(stride) -> 1x1 (x4 channels); strides are avgpools, not strided convs (anti-aliased)."""

    expansion = 4

    def __init__(self, in_channels: int, planes: int, stride: int = 1):
        super().__init__()
        out_channels = planes * self.expansion
        self.conv1, self.bn1 = _conv_bn(in_channels, planes, 1)
        self.conv2, self.bn2 = _conv_bn(planes, planes, 3)
        self.avgpool = nn.AvgPool2d(stride) if stride > 1 else nn.Identity()
        self.conv3, self.bn3 = _conv_bn(planes, out_channels, 1)
        self.downsample = None
        if stride > 1 or in_channels != out_channels:
            # OpenAI's key names: downsample.0 (conv), downsample.1 (bn); its parameter-free avgpool is self.avgpool.
            self.downsample = nn.Sequential(*_conv_bn(in_channels, out_channels, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = F.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(self.avgpool(out)))
        identity = x if self.downsample is None else self.downsample(self.avgpool(x))
        return F.relu(out + identity)


class AttentionPool2d(nn.Module):
    """Pools a feature map by letting its mean token attend over (mean token + every position)."""

    def __init__(self, grid: int, width: int, heads: int, output_dim: int):
        super().__init__()
        self.positional_embedding = nn.Parameter(torch.randn(grid * grid + 1, width) / width**0.5)
        self.k_proj = nn.Linear(width, width)
        self.q_proj = nn.Linear(width, width)
        self.v_proj = nn.Linear(width, width)
        self.c_proj = nn.Linear(width, output_dim)
        self.heads = heads

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        """features [B, C, H, W] -> pooled [B, output_dim]."""
        tokens = features.flatten(2).transpose(1, 2)  # [B, HW, C]
        tokens = torch.cat([tokens.mean(1, keepdim=True), tokens], 1) + self.positional_embedding
        batch, length, width = tokens.shape

        def split(x: torch.Tensor) -> torch.Tensor:  # [B, L, C] -> [B, heads, L, C / heads]
            return x.view(batch, -1, self.heads, width // self.heads).transpose(1, 2)

        # Only the mean token's output is kept, so only its query is needed.
        pooled = F.scaled_dot_product_attention(split(self.q_proj(tokens[:, :1])), split(self.k_proj(tokens)),
                                                split(self.v_proj(tokens)))
        return self.c_proj(pooled.transpose(1, 2).reshape(batch, width))


class ModifiedResNet(nn.Module):
    """CLIP's ResNet: 3-conv stem + avgpool, anti-aliased bottleneck stages, attention pooling."""

    def __init__(self, config: OpenAICLIPConfig):
        super().__init__()
        width = config.vision_width
        self.conv1, self.bn1 = _conv_bn(3, width // 2, 3, stride=2)
        self.conv2, self.bn2 = _conv_bn(width // 2, width // 2, 3)
        self.conv3, self.bn3 = _conv_bn(width // 2, width, 3)
        self.avgpool = nn.AvgPool2d(2)
        channels = width
        for index, blocks in enumerate(config.vision_layers):
            planes, stride = width * 2**index, 1 if index == 0 else 2
            stage = [Bottleneck(channels, planes, stride)]
            channels = planes * Bottleneck.expansion
            stage += [Bottleneck(channels, planes) for _ in range(blocks - 1)]
            setattr(self, f"layer{index + 1}", nn.Sequential(*stage))
        self.attnpool = AttentionPool2d(config.image_size // 32, channels, config.vision_heads, config.embed_dim)

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        """pixels [B, 3, S, S] -> image embeddings [B, embed_dim] (S = config.image_size)."""
        x = pixels
        for conv, bn in ((self.conv1, self.bn1), (self.conv2, self.bn2), (self.conv3, self.bn3)):
            x = F.relu(bn(conv(x)))
        x = self.avgpool(x)
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        return self.attnpool(x)


def quick_gelu(x: torch.Tensor) -> torch.Tensor:
    """CLIP's GELU approximation x·σ(1.702x); the weights were trained with it."""
    return x * torch.sigmoid(1.702 * x)


class MLP(nn.Module):
    def __init__(self, width: int):
        super().__init__()
        self.c_fc = nn.Linear(width, width * 4)
        self.c_proj = nn.Linear(width * 4, width)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.c_proj(quick_gelu(self.c_fc(x)))


class ResidualAttentionBlock(nn.Module):
    """Pre-norm transformer block: x + attn(ln_1(x)), then x + mlp(ln_2(x))."""

    def __init__(self, width: int, heads: int):
        super().__init__()
        self.attn = nn.MultiheadAttention(width, heads, batch_first=True)
        self.ln_1 = nn.LayerNorm(width)
        self.mlp = MLP(width)
        self.ln_2 = nn.LayerNorm(width)

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """x [B, L, width]; mask [L, L] additive (causal)."""
        h = self.ln_1(x)
        x = x + self.attn(h, h, h, need_weights=False, attn_mask=mask)[0]
        return x + self.mlp(self.ln_2(x))


class Transformer(nn.Module):
    def __init__(self, width: int, layers: int, heads: int):
        super().__init__()
        self.resblocks = nn.ModuleList(ResidualAttentionBlock(width, heads) for _ in range(layers))

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        for block in self.resblocks:
            x = block(x, mask)
        return x


class OpenAICLIP(nn.Module):
    """Image encoder (ModifiedResNet) and causal text transformer into one embedding space."""

    def __init__(self, config: OpenAICLIPConfig):
        super().__init__()
        self.config = config
        self.visual = ModifiedResNet(config)
        self.transformer = Transformer(config.text_width, config.text_layers, config.text_heads)
        self.token_embedding = nn.Embedding(config.vocab_size, config.text_width)
        self.positional_embedding = nn.Parameter(torch.randn(config.context_length, config.text_width) * 0.01)
        self.ln_final = nn.LayerNorm(config.text_width)
        self.text_projection = nn.Parameter(torch.randn(config.text_width, config.embed_dim) / config.text_width**0.5)
        # Unused by rewards (they compare raw cosines) but part of the format, so strict loading works.
        self.logit_scale = nn.Parameter(torch.tensor(2.6593))  # log(1 / 0.07)
        causal = torch.full((config.context_length, config.context_length), float("-inf")).triu(1)
        self.register_buffer("causal_mask", causal, persistent=False)

    def encode_images(self, pixels: torch.Tensor) -> torch.Tensor:
        """pixels [B, 3, S, S] (CLIP-normalised) -> image embeddings [B, embed_dim], unnormalised."""
        return self.visual(pixels)

    def encode_text(self, tokens: torch.Tensor) -> torch.Tensor:
        """token ids [B, context_length] -> text embeddings [B, embed_dim], unnormalised.

        Read at the end-of-text token, which by OpenAI's convention has the highest id, so argmax finds it.
        """
        tokens = tokens.to(self.token_embedding.weight.device)
        x = self.token_embedding(tokens) + self.positional_embedding
        x = self.ln_final(self.transformer(x, self.causal_mask))
        return x[torch.arange(len(x), device=x.device), tokens.argmax(-1)] @ self.text_projection


class ContextTokenizer(nn.Module):
    """texts -> OpenAI-layout token ids [B, context_length]: <start> BPE <end>, zero-padded, cut to fit keeping <end>.

    Wraps an HF `CLIPTokenizer` (the same BPE as OpenAI's). It has no weights; it is an nn.Module only so
    LIVReward can move it to a device like its sentence encoder.
    """

    def __init__(self, tokenizer, context_length: int):
        super().__init__()
        self.tokenizer = tokenizer
        self.context_length = context_length

    def forward(self, texts: list[str]) -> torch.Tensor:
        ids = self.tokenizer(texts, truncation=True, max_length=self.context_length)["input_ids"]
        tokens = torch.zeros(len(texts), self.context_length, dtype=torch.long)
        for row, sequence in zip(tokens, ids):
            row[: len(sequence)] = torch.tensor(sequence)
        return tokens
