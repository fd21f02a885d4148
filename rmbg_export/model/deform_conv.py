"""Modulated deformable convolution (DCNv2) with torchvision's semantics, in plain PyTorch.

Sampling is bilinear; taps that fall outside the feature map read zeros, exactly as
`torchvision.ops.deform_conv2d` does. Offsets are (dy, dx) pairs per kernel tap, the mask
multiplies each sampled value, there is one offset group, stride 1 and dilation 1.

The eager computation gathers every tap with one `grid_sample` and contracts taps and channels
with one matrix product; it exports with standard ONNX operators only. For export the module can
instead emit ONNX's own `DeformConv` (opset 19), selected with `DeformConv2d.export_mode`.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .precision import Fp32Island
from .shapes import static_shape


def _tap_grid(offset: torch.Tensor, kernel_size: int, padding: int, height: int, width: int) -> torch.Tensor:
    """Normalised `grid_sample` coordinates of every tap, (B, K*Ho, Wo, 2), computed in float32."""
    out_h, out_w = static_shape(offset)[-2:]
    taps = kernel_size * kernel_size
    offset = offset.float()  # coordinates reach ~260 px: fp16 would quantise them to 1/4 px
    dtype = offset.dtype
    rows = torch.arange(out_h, dtype=dtype, device=offset.device)
    cols = torch.arange(out_w, dtype=dtype, device=offset.device)
    kernel = torch.arange(kernel_size, dtype=dtype, device=offset.device)
    # Base position of tap (i, j) at output (ho, wo): (ho - pad + i, wo - pad + j).
    base_y = (kernel.view(-1, 1, 1, 1) + rows.view(1, 1, -1, 1) - padding).expand(-1, kernel_size, -1, -1)
    base_x = (kernel.view(1, -1, 1, 1) + cols.view(1, 1, 1, -1) - padding).expand(kernel_size, -1, -1, -1)
    offset = offset.view(-1, taps, 2, out_h, out_w)
    y = offset[:, :, 0] + base_y.reshape(1, taps, out_h, 1)
    x = offset[:, :, 1] + base_x.reshape(1, taps, 1, out_w)
    # align_corners=False maps pixel p to (2p + 1) / size - 1; it stays finite for 1-pixel maps.
    grid = torch.stack(((2 * x + 1) / width - 1, (2 * y + 1) / height - 1), dim=-1)
    return grid.view(-1, taps * out_h, out_w, 2)


def deform_conv2d(
    x: torch.Tensor,
    offset: torch.Tensor,
    mask: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor | None,
    padding: int,
) -> torch.Tensor:
    """Modulated deformable convolution: x (B, C, H, W), offset (B, 2K, Ho, Wo), mask (B, K, Ho, Wo)."""
    out_channels, in_channels, kernel_size, _ = static_shape(weight)
    taps = kernel_size * kernel_size
    height, width = static_shape(x)[-2:]
    out_h, out_w = static_shape(offset)[-2:]
    grid = _tap_grid(offset, kernel_size, padding, height, width)
    sampled = F.grid_sample(x.float(), grid, mode="bilinear", padding_mode="zeros", align_corners=False)
    # (B, C, K*Ho, Wo) -> (B, C*K, Ho*Wo): channel-major columns match weight.view(O, C*K).
    columns = sampled.view(-1, in_channels, taps, out_h * out_w) * mask.float().view(
        -1, 1, taps, out_h * out_w
    )
    columns = columns.view(-1, in_channels * taps, out_h * out_w).to(x.dtype)
    out = torch.matmul(weight.reshape(out_channels, in_channels * taps), columns)
    out = out.view(-1, out_channels, out_h, out_w)
    if bias is not None:
        out = out + bias.view(1, -1, 1, 1)
    return out


class _OnnxDeformConv(torch.autograd.Function):
    """Computes in PyTorch, exports as one ONNX `DeformConv` node (opset >= 19)."""

    @staticmethod
    def forward(ctx, x, weight, offset, bias, mask, padding: int):  # noqa: ARG004
        return deform_conv2d(x, offset, mask, weight, bias, padding)

    @staticmethod
    def symbolic(g, x, weight, offset, bias, mask, padding: int):
        kernel_size = weight.type().sizes()[-1]
        return g.op(
            "DeformConv",
            x,
            weight,
            offset,
            bias,
            mask,
            kernel_shape_i=[kernel_size, kernel_size],
            pads_i=[padding] * 4,
            strides_i=[1, 1],
            dilations_i=[1, 1],
            group_i=1,
            offset_group_i=1,
        )


class DeformConv2d(nn.Module):
    """DCNv2 layer laid out as BiRefNet's `DeformableConv2d` (same parameter names)."""

    # The fp16 graph computes the sampling in fp32: the tap coordinates reach ~263 px at 1024 input,
    # where fp16's steps are 1/8-1/4 px, and the grid, the sampling and the modulation read them. The
    # offset and modulator convolutions before them and the contraction with the weights after them
    # (the grid_sample form's MatMul) are ordinary fp16 work.
    keep_fp32_in_fp16 = Fp32Island(
        "deformable sampling", fp16_children=("offset_conv", "modulator_conv"), fp16_ops=("MatMul",)
    )

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, padding: int) -> None:
        super().__init__()
        taps = kernel_size * kernel_size
        self.padding = padding
        self.offset_conv = nn.Conv2d(in_channels, 2 * taps, kernel_size, padding=padding)
        self.modulator_conv = nn.Conv2d(in_channels, taps, kernel_size, padding=padding)
        self.regular_conv = nn.Conv2d(in_channels, out_channels, kernel_size, padding=padding, bias=False)
        self.export_mode = "grid_sample"

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        offset = self.offset_conv(x)
        mask = 2.0 * torch.sigmoid(self.modulator_conv(x))
        weight, bias = self.regular_conv.weight, self.regular_conv.bias
        if self.export_mode == "native" and torch.onnx.is_in_onnx_export():
            if bias is None:
                bias = weight.new_zeros(weight.shape[0])
            return _OnnxDeformConv.apply(x, weight, offset, bias, mask, self.padding)
        return deform_conv2d(x, offset, mask, weight, bias, self.padding)
