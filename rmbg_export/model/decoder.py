"""BiRefNet's decoder: deformable-ASPP decoder blocks, lateral connections, image-patch inputs
and the gradient-attention gates (Zheng et al., "Bilateral Reference for High-Resolution
Dichotomous Image Segmentation", 2024).

Module names follow the released checkpoints. The multi-scale supervision heads
(`conv_ms_spvn_*`, `gdt_convs_pred_*`) only serve training; they exist so checkpoints load
strictly and never run here.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..architecture import PATCH_ORDERS
from .deform_conv import DeformConv2d
from .shapes import static_shape

ASPP_KERNELS = (1, 3, 7)
ASPP_CHANNELS = 256
DECODER_INTER_CHANNELS = 64
GRADIENT_CHANNELS = 16


def resize(x: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Every resize inside BiRefNet: bilinear, align_corners=True, no antialias."""
    size = tuple(int(s) for s in size)
    if static_shape(x)[-2:] == size:
        return x  # an identity resize with align_corners=True: skip the graph node
    return F.interpolate(x, size=size, mode="bilinear", align_corners=True)


def image_to_patches(x: torch.Tensor, size: tuple[int, int], order: str) -> torch.Tensor:
    """Cut (B, C, H, W) into a grid of `size` patches stacked on channels.

    legacy: channel = (wg * HG + hg) * C + c (column-major grid, the pre-Nov-2024 code and RMBG-2.0);
    einops: channel = (c * HG + hg) * WG + wg (the official code since 2024-11-05).
    """
    channels, height, width = static_shape(x)[1:]
    patch_h, patch_w = size
    grid_h, grid_w = height // patch_h, width // patch_w
    x = x.view(-1, channels, grid_h, patch_h, grid_w, patch_w)
    if order == "legacy":
        x = x.permute(0, 4, 2, 1, 3, 5)
    elif order == "einops":
        x = x.permute(0, 1, 2, 4, 3, 5)
    else:
        raise ValueError(f"unknown patch order {order!r}; expected one of {PATCH_ORDERS}")
    return x.reshape(-1, channels * grid_h * grid_w, patch_h, patch_w)


class ASPPBranch(nn.Module):
    """Deformable convolution -> BN -> ReLU."""

    conv_bn_pairs = (("atrous_conv", "bn"),)

    def __init__(self, in_channels: int, kernel_size: int) -> None:
        super().__init__()
        self.atrous_conv = DeformConv2d(in_channels, ASPP_CHANNELS, kernel_size, padding=kernel_size // 2)
        self.bn = nn.BatchNorm2d(ASPP_CHANNELS)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.relu(self.bn(self.atrous_conv(x)))


class ASPPDeformable(nn.Module):
    """Deformable atrous spatial pyramid: 1x1 branch, deformable 1/3/7 branches, image pooling."""

    conv_bn_pairs = (("conv1", "bn1"),)

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.aspp1 = ASPPBranch(channels, 1)
        self.aspp_deforms = nn.ModuleList([ASPPBranch(channels, k) for k in ASPP_KERNELS])
        self.global_avg_pool = nn.Sequential(
            nn.AdaptiveAvgPool2d((1, 1)),
            nn.Conv2d(channels, ASPP_CHANNELS, 1, bias=False),
            nn.BatchNorm2d(ASPP_CHANNELS),
            nn.ReLU(inplace=True),
        )
        self.conv1 = nn.Conv2d(ASPP_CHANNELS * (2 + len(ASPP_KERNELS)), channels, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """relu(bn1(conv1(cat(branches)))), computed without the concatenation.

        conv1 is a 1x1 convolution, so it distributes over the concatenated branches: summing one
        projection per branch skips a (B, 1280, H, W) tensor (335 MB at 1024 input, a fifth of
        ONNX Runtime's CPU time). The image-pooling branch is projected at 1x1 and broadcast,
        which is what resizing a 1x1 map with align_corners=True does.
        """
        branches = [self.aspp1(x), *(branch(x) for branch in self.aspp_deforms), self.global_avg_pool(x)]
        weights = self.conv1.weight.split(ASPP_CHANNELS, dim=1)
        out = sum(F.conv2d(branch, weight) for branch, weight in zip(branches, weights, strict=True))
        if self.conv1.bias is not None:  # present once BatchNorm is folded for export
            out = out + self.conv1.bias.view(1, -1, 1, 1)
        return F.relu(self.bn1(out))


class DecoderBlock(nn.Module):
    """BiRefNet's BasicDecBlk: conv3x3 -> BN -> ReLU -> deformable ASPP -> conv3x3 -> BN."""

    conv_bn_pairs = (("conv_in", "bn_in"), ("conv_out", "bn_out"))
    keep_float_in_int8 = (("conv_out of every decoder block", ("conv_out",)),)  # onnx/int8.py says why

    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__()
        inter = DECODER_INTER_CHANNELS
        self.conv_in = nn.Conv2d(in_channels, inter, 3, padding=1)
        self.dec_att = ASPPDeformable(inter)
        self.conv_out = nn.Conv2d(inter, out_channels, 3, padding=1)
        self.bn_in = nn.BatchNorm2d(inter)
        self.bn_out = nn.BatchNorm2d(out_channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.relu(self.bn_in(self.conv_in(x)))
        return self.bn_out(self.conv_out(self.dec_att(x)))


class LateralBlock(nn.Module):
    def __init__(self, channels: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(x)


class SimpleConvs(nn.Module):
    """Two 3x3 convolutions without activation, embedding stacked image patches."""

    def __init__(self, in_channels: int, out_channels: int, inter_channels: int = 64) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, inter_channels, 3, padding=1)
        self.conv_out = nn.Conv2d(inter_channels, out_channels, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv_out(self.conv1(x))


def _gradient_convs(channels: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(channels, GRADIENT_CHANNELS, 3, padding=1),
        nn.BatchNorm2d(GRADIENT_CHANNELS),
        nn.ReLU(inplace=True),
    )


def _head(in_channels: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(in_channels, 1, 1))


class Decoder(nn.Module):
    """Top-down decoder. `channels` are the four encoder widths, deepest first."""

    keep_float_in_int8 = (  # onnx/int8.py says why
        ("input-patch blocks", ("ipt_blk1", "ipt_blk2", "ipt_blk3", "ipt_blk4", "ipt_blk5")),
        ("prediction head conv_out1", ("conv_out1",)),
    )

    def __init__(self, channels: tuple[int, int, int, int], patch_order: str) -> None:
        super().__init__()
        if patch_order not in PATCH_ORDERS:
            raise ValueError(f"unknown patch order {patch_order!r}; expected one of {PATCH_ORDERS}")
        self.patch_order = patch_order
        c4, c3, c2, c1 = channels
        ipt_out = [c // 8 for c in channels]
        self.ipt_blk5 = SimpleConvs(2**10 * 3, ipt_out[0])
        self.ipt_blk4 = SimpleConvs(2**8 * 3, ipt_out[0])
        self.ipt_blk3 = SimpleConvs(2**6 * 3, ipt_out[1])
        self.ipt_blk2 = SimpleConvs(2**4 * 3, ipt_out[2])
        self.ipt_blk1 = SimpleConvs(2**0 * 3, ipt_out[3])

        self.decoder_block4 = DecoderBlock(c4 + ipt_out[0], c3)
        self.decoder_block3 = DecoderBlock(c3 + ipt_out[0], c2)
        self.decoder_block2 = DecoderBlock(c2 + ipt_out[1], c1)
        self.decoder_block1 = DecoderBlock(c1 + ipt_out[2], c1 // 2)
        self.conv_out1 = _head(c1 // 2 + ipt_out[3])

        self.lateral_block4 = LateralBlock(c3)
        self.lateral_block3 = LateralBlock(c2)
        self.lateral_block2 = LateralBlock(c1)

        # Training-only multi-scale supervision (kept for strict checkpoint loading).
        self.conv_ms_spvn_4 = nn.Conv2d(c3, 1, 1)
        self.conv_ms_spvn_3 = nn.Conv2d(c2, 1, 1)
        self.conv_ms_spvn_2 = nn.Conv2d(c1, 1, 1)

        self.gdt_convs_4 = _gradient_convs(c3)
        self.gdt_convs_3 = _gradient_convs(c2)
        self.gdt_convs_2 = _gradient_convs(c1)
        self.gdt_convs_pred_4 = _head(GRADIENT_CHANNELS)  # training only
        self.gdt_convs_pred_3 = _head(GRADIENT_CHANNELS)
        self.gdt_convs_pred_2 = _head(GRADIENT_CHANNELS)
        self.gdt_convs_attn_4 = _head(GRADIENT_CHANNELS)
        self.gdt_convs_attn_3 = _head(GRADIENT_CHANNELS)
        self.gdt_convs_attn_2 = _head(GRADIENT_CHANNELS)

    def with_patches(self, p: torch.Tensor, image: torch.Tensor, embed: SimpleConvs) -> torch.Tensor:
        """Concatenate `p` with the embedded image patches of p's spatial size."""
        size = static_shape(p)[-2:]
        return torch.cat((p, embed(resize(image_to_patches(image, size, self.patch_order), size))), dim=1)

    @staticmethod
    def gate(p: torch.Tensor, convs: nn.Module, attn: nn.Module) -> torch.Tensor:
        return p * torch.sigmoid(attn(convs(p)))

    def forward(self, image: torch.Tensor, x1, x2, x3, x4) -> torch.Tensor:
        p4 = self.decoder_block4(self.with_patches(x4, image, self.ipt_blk5))
        p4 = self.gate(p4, self.gdt_convs_4, self.gdt_convs_attn_4)
        p3 = resize(p4, static_shape(x3)[-2:]) + self.lateral_block4(x3)

        p3 = self.decoder_block3(self.with_patches(p3, image, self.ipt_blk4))
        p3 = self.gate(p3, self.gdt_convs_3, self.gdt_convs_attn_3)
        p2 = resize(p3, static_shape(x2)[-2:]) + self.lateral_block3(x2)

        p2 = self.decoder_block2(self.with_patches(p2, image, self.ipt_blk3))
        p2 = self.gate(p2, self.gdt_convs_2, self.gdt_convs_attn_2)
        p1 = resize(p2, static_shape(x1)[-2:]) + self.lateral_block2(x1)

        p1 = self.decoder_block1(self.with_patches(p1, image, self.ipt_blk2))
        p1 = resize(p1, static_shape(image)[-2:])
        return self.conv_out1(self.with_patches(p1, image, self.ipt_blk1))
