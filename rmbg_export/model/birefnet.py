"""BiRefNet: a Swin V1 encoder run at full and half resolution, a squeeze block and the decoder."""

from __future__ import annotations

import torch
from torch import nn

from ..architecture import SWIN_CONFIGS
from .decoder import Decoder, DecoderBlock, resize
from .shapes import static_shape
from .swin import SwinTransformer


class BiRefNet(nn.Module):
    """Maps a normalised (B, 3, H, W) batch, H and W multiples of 32, to logits (B, 1, H, W)."""

    def __init__(self, backbone: str, patch_order: str) -> None:
        super().__init__()
        if backbone not in SWIN_CONFIGS:
            raise ValueError(f"unknown backbone {backbone!r}; expected one of {sorted(SWIN_CONFIGS)}")
        self.backbone = backbone
        self.patch_order = patch_order
        self.bb = SwinTransformer(SWIN_CONFIGS[backbone])
        # Full- and half-resolution features are concatenated on channels: widths double.
        channels = tuple(2 * c for c in reversed(self.bb.num_features))
        context = sum(channels[1:])  # x1..x3 resized to x4's size and stacked before x4
        self.squeeze_module = nn.Sequential(DecoderBlock(channels[0] + context, channels[0]))
        self.decoder = Decoder(channels, patch_order)

    def encode(self, x: torch.Tensor) -> list[torch.Tensor]:
        height, width = static_shape(x)[-2:]
        full = self.bb(x)
        half = self.bb(resize(x, (height // 2, width // 2)))
        features = [
            torch.cat((f, resize(h, static_shape(f)[-2:])), dim=1) for f, h in zip(full, half, strict=True)
        ]
        x1, x2, x3, x4 = features
        size = static_shape(x4)[-2:]
        x4 = torch.cat((resize(x1, size), resize(x2, size), resize(x3, size), x4), dim=1)
        return [x1, x2, x3, self.squeeze_module(x4)]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.decoder(x, *self.encode(x))


def create_model(backbone: str, patch_order: str) -> BiRefNet:
    """An eval-mode BiRefNet whose state_dict has the official key names, shapes and dtypes."""
    return BiRefNet(backbone, patch_order).eval()
