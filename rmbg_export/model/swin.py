"""Swin Transformer V1 backbone as BiRefNet uses it (Liu et al., 2021), inference only.

Parameter and buffer names follow the checkpoints (`patch_embed`, `layers.N.blocks.M`, `normN`).
Token grids are zero-padded right/bottom to a multiple of the window after `norm1`; padded tokens
are not masked, only the regions that the cyclic shift brings together are. Every reshape keeps
the batch dimension symbolic (-1) so one trace serves every batch size.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ..architecture import SwinConfig
from .shapes import static_shape

SHIFT_MASK_VALUE = -100.0  # as the Swin reference; exp(-100) vanishes beside the unmasked logits


def relative_position_index(window_size: int) -> torch.Tensor:
    """(N, N) int64 index into the (2w-1)^2 bias table for every pair of tokens in a window."""
    coords = torch.stack(torch.meshgrid(torch.arange(window_size), torch.arange(window_size), indexing="ij"))
    coords = coords.flatten(1)
    relative = (coords[:, :, None] - coords[:, None, :]).permute(1, 2, 0) + (window_size - 1)
    return relative[:, :, 0] * (2 * window_size - 1) + relative[:, :, 1]


def window_partition(x: torch.Tensor, window_size: int) -> torch.Tensor:
    """(B, Hp, Wp, C) -> (B*nW, window_size^2, C), windows in row-major order per image."""
    _, height, width, channels = static_shape(x)
    x = x.view(-1, height // window_size, window_size, width // window_size, window_size, channels)
    return x.permute(0, 1, 3, 2, 4, 5).reshape(-1, window_size * window_size, channels)


def window_reverse(windows: torch.Tensor, window_size: int, height: int, width: int) -> torch.Tensor:
    """(B*nW, window_size^2, C) -> (B, Hp, Wp, C)."""
    channels = static_shape(windows)[-1]
    x = windows.view(-1, height // window_size, width // window_size, window_size, window_size, channels)
    return x.permute(0, 1, 3, 2, 4, 5).reshape(-1, height, width, channels)


def shifted_window_mask(height: int, width: int, window_size: int, shift: int) -> torch.Tensor:
    """(nW, N, N) additive mask separating regions that the cyclic shift made neighbours.

    Built in NumPy so that a trace records it as one constant, not as the ops that made it.
    """
    region = np.zeros((height, width), dtype=np.int64)
    bounds = (slice(0, -window_size), slice(-window_size, -shift), slice(-shift, None))
    for label, (rows, cols) in enumerate((r, c) for r in bounds for c in bounds):
        region[rows, cols] = label
    windows = region.reshape(height // window_size, window_size, width // window_size, window_size)
    windows = windows.transpose(0, 2, 1, 3).reshape(-1, window_size * window_size)
    different = windows[:, None, :] != windows[:, :, None]
    return torch.from_numpy(np.where(different, SHIFT_MASK_VALUE, 0.0).astype(np.float32))


class Mlp(nn.Module):
    def __init__(self, dim: int, hidden_dim: int) -> None:
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden_dim)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(hidden_dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.act(self.fc1(x)))


class WindowAttention(nn.Module):
    """Multi-head self-attention inside windows with a learned relative position bias."""

    def __init__(self, dim: int, window_size: int, num_heads: int) -> None:
        super().__init__()
        self.num_heads = num_heads
        self.scale = (dim // num_heads) ** -0.5
        self.relative_position_bias_table = nn.Parameter(torch.zeros((2 * window_size - 1) ** 2, num_heads))
        self.register_buffer("relative_position_index", relative_position_index(window_size))
        self.qkv = nn.Linear(dim, dim * 3)
        self.proj = nn.Linear(dim, dim)

    def position_bias(self) -> torch.Tensor:
        tokens = self.relative_position_index.shape[0]
        bias = self.relative_position_bias_table[self.relative_position_index.view(-1)]
        return bias.view(tokens, tokens, -1).permute(2, 0, 1)

    def forward(self, x: torch.Tensor, shift_mask: torch.Tensor | None) -> torch.Tensor:
        tokens, channels = static_shape(x)[1:]
        qkv = self.qkv(x).view(-1, tokens, 3, self.num_heads, channels // self.num_heads)
        q, k, v = qkv.permute(2, 0, 3, 1, 4).unbind(0)
        logits = torch.matmul(q * self.scale, k.transpose(-2, -1)) + self.position_bias()
        if shift_mask is not None:
            num_windows = shift_mask.shape[0]
            logits = logits.view(-1, num_windows, self.num_heads, tokens, tokens) + shift_mask.unsqueeze(1)
            logits = logits.view(-1, self.num_heads, tokens, tokens)
        out = torch.matmul(logits.softmax(dim=-1), v)
        return self.proj(out.transpose(1, 2).reshape(-1, tokens, channels))


class SwinBlock(nn.Module):
    def __init__(self, dim: int, num_heads: int, window_size: int, shift: int) -> None:
        super().__init__()
        self.window_size = window_size
        self.shift = shift
        self.norm1 = nn.LayerNorm(dim)
        self.attn = WindowAttention(dim, window_size, num_heads)
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = Mlp(dim, 4 * dim)

    def forward(self, x: torch.Tensor, height: int, width: int, shift_mask: torch.Tensor) -> torch.Tensor:
        channels = static_shape(x)[-1]
        ws = self.window_size
        pad_r, pad_b = (ws - width % ws) % ws, (ws - height % ws) % ws
        y = self.norm1(x).view(-1, height, width, channels)
        if pad_r or pad_b:
            y = F.pad(y, (0, 0, 0, pad_r, 0, pad_b))
        padded_h, padded_w = height + pad_b, width + pad_r
        if self.shift:
            y = torch.roll(y, shifts=(-self.shift, -self.shift), dims=(1, 2))
        windows = self.attn(window_partition(y, ws), shift_mask if self.shift else None)
        y = window_reverse(windows, ws, padded_h, padded_w)
        if self.shift:
            y = torch.roll(y, shifts=(self.shift, self.shift), dims=(1, 2))
        if pad_r or pad_b:
            y = y[:, :height, :width, :]
        x = x + y.reshape(-1, height * width, channels)
        return x + self.mlp(self.norm2(x))


class PatchMerging(nn.Module):
    """2x2 neighbourhood concatenation, LayerNorm, linear reduction to twice the channels."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.reduction = nn.Linear(4 * dim, 2 * dim, bias=False)
        self.norm = nn.LayerNorm(4 * dim)

    def forward(self, x: torch.Tensor, height: int, width: int) -> torch.Tensor:
        channels = static_shape(x)[-1]
        x = x.view(-1, height, width, channels)
        if height % 2 or width % 2:
            x = F.pad(x, (0, 0, 0, width % 2, 0, height % 2))
        x = torch.cat([x[:, 0::2, 0::2], x[:, 1::2, 0::2], x[:, 0::2, 1::2], x[:, 1::2, 1::2]], dim=-1)
        tokens = ((height + 1) // 2) * ((width + 1) // 2)
        return self.reduction(self.norm(x.view(-1, tokens, 4 * channels)))


class SwinStage(nn.Module):
    def __init__(self, dim: int, depth: int, num_heads: int, window_size: int, downsample: bool) -> None:
        super().__init__()
        self.window_size = window_size
        shift = window_size // 2
        self.blocks = nn.ModuleList(
            [SwinBlock(dim, num_heads, window_size, 0 if i % 2 == 0 else shift) for i in range(depth)]
        )
        self.downsample = PatchMerging(dim) if downsample else None
        self._masks: dict[tuple, torch.Tensor] = {}

    def shift_mask(self, height: int, width: int, like: torch.Tensor) -> torch.Tensor:
        ws = self.window_size
        padded = (-(-height // ws) * ws, -(-width // ws) * ws)
        key = (*padded, like.device, like.dtype)
        if key not in self._masks:  # built once per resolution: a constant in exported graphs
            self._masks[key] = shifted_window_mask(*padded, ws, ws // 2).to(like.device, like.dtype)
        return self._masks[key]

    def forward(self, x: torch.Tensor, height: int, width: int) -> torch.Tensor:
        mask = self.shift_mask(height, width, x)
        for block in self.blocks:
            x = block(x, height, width, mask)
        return x


class PatchEmbed(nn.Module):
    def __init__(self, embed_dim: int, patch_size: int = 4) -> None:
        super().__init__()
        self.patch_size = patch_size
        self.proj = nn.Conv2d(3, embed_dim, patch_size, stride=patch_size)
        self.norm = nn.LayerNorm(embed_dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        height, width = static_shape(x)[-2:]
        pad_h, pad_w = -height % self.patch_size, -width % self.patch_size
        if pad_h or pad_w:
            x = F.pad(x, (0, pad_w, 0, pad_h))
        x = self.proj(x)
        _, channels, height, width = static_shape(x)
        tokens = self.norm(x.reshape(-1, channels, height * width).transpose(1, 2))
        return tokens.transpose(1, 2).reshape(-1, channels, height, width)


class SwinTransformer(nn.Module):
    """Returns the four stage outputs as (B, C_i, H/4/2^i, W/4/2^i) maps, each layer-normed."""

    def __init__(self, config: SwinConfig) -> None:
        super().__init__()
        self.num_features = config.num_features
        self.patch_embed = PatchEmbed(config.embed_dim)
        last = len(config.depths) - 1
        self.layers = nn.ModuleList(
            [
                SwinStage(dim, depth, heads, config.window_size, downsample=i < last)
                for i, (dim, depth, heads) in enumerate(
                    zip(self.num_features, config.depths, config.num_heads, strict=True)
                )
            ]
        )
        for i, dim in enumerate(self.num_features):
            self.add_module(f"norm{i}", nn.LayerNorm(dim))

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        x = self.patch_embed(x)
        _, channels, height, width = static_shape(x)
        x = x.reshape(-1, channels, height * width).transpose(1, 2)
        outs = []
        for i, stage in enumerate(self.layers):
            x = stage(x, height, width)
            out = getattr(self, f"norm{i}")(x)
            outs.append(out.view(-1, height, width, self.num_features[i]).permute(0, 3, 1, 2).contiguous())
            if stage.downsample is not None:
                x = stage.downsample(x, height, width)
                height, width = (height + 1) // 2, (width + 1) // 2
        return outs
