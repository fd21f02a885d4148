"""The deformable convolution against a direct float64 loop over taps (torchvision semantics)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from rmbg_export.model.deform_conv import DeformConv2d, deform_conv2d


def bilinear_zero_padded(img: np.ndarray, y: float, x: float) -> np.ndarray:
    """torchvision's bilinear_interpolate: zero outside, each corner read only if inside."""
    height, width = img.shape[-2:]
    if y <= -1 or y >= height or x <= -1 or x >= width:
        return np.zeros(img.shape[0])
    y0, x0 = math.floor(y), math.floor(x)
    ly, lx = y - y0, x - x0
    out = np.zeros(img.shape[0])
    for yy, xx, wgt in (
        (y0, x0, (1 - ly) * (1 - lx)),
        (y0, x0 + 1, (1 - ly) * lx),
        (y0 + 1, x0, ly * (1 - lx)),
        (y0 + 1, x0 + 1, ly * lx),
    ):
        if 0 <= yy < height and 0 <= xx < width:
            out += wgt * img[:, yy, xx]
    return out


def reference(x, offset, mask, weight, bias, pad):
    batch, _, _, _ = x.shape
    out_ch, _, k, _ = weight.shape
    out_h, out_w = offset.shape[-2:]
    out = np.zeros((batch, out_ch, out_h, out_w))
    for b in range(batch):
        for ho in range(out_h):
            for wo in range(out_w):
                acc = np.zeros(out_ch)
                for i in range(k):
                    for j in range(k):
                        tap = i * k + j
                        y = ho - pad + i + offset[b, 2 * tap, ho, wo]
                        xx = wo - pad + j + offset[b, 2 * tap + 1, ho, wo]
                        sample = bilinear_zero_padded(x[b], y, xx) * mask[b, tap, ho, wo]
                        acc += weight[:, :, i, j] @ sample
                out[b, :, ho, wo] = acc + bias
    return out


def random_case(kernel_size: int) -> tuple[np.ndarray, ...]:
    """(x, offset, mask, weight, bias) of a small deformable convolution, seeded by its kernel size."""
    rng = np.random.default_rng(kernel_size)
    batch, ch, out_ch, height, width = 2, 3, 4, 6, 5
    taps = kernel_size * kernel_size
    x = rng.standard_normal((batch, ch, height, width))
    # Offsets up to +-4 px push many taps past the border (partly and wholly outside).
    offset = rng.uniform(-4, 4, (batch, 2 * taps, height, width))
    mask = rng.uniform(0, 2, (batch, taps, height, width))
    weight = rng.standard_normal((out_ch, ch, kernel_size, kernel_size))
    bias = rng.standard_normal(out_ch)
    return x, offset, mask, weight, bias


@pytest.mark.parametrize("kernel_size", [1, 3, 5, 7])
def test_matches_direct_loop(kernel_size):
    x, offset, mask, weight, bias = random_case(kernel_size)
    pad = kernel_size // 2
    expected = reference(x, offset, mask, weight, bias, pad)
    got = deform_conv2d(*(torch.from_numpy(a).float() for a in (x, offset, mask, weight, bias)), pad)
    np.testing.assert_allclose(got.double().numpy(), expected, atol=2e-5, rtol=1e-5)


def test_integer_offsets_on_the_border_read_zeros_beyond():
    """A tap moved exactly one pixel past the edge reads zero; one on the edge reads the pixel."""
    x = torch.arange(1, 10, dtype=torch.float32).view(1, 1, 3, 3)
    weight = torch.ones(1, 1, 1, 1)
    mask = torch.ones(1, 1, 3, 3)
    offset = torch.zeros(1, 2, 3, 3)
    offset[0, 1] = 1.0  # dx = +1: the right column samples x = 3, outside
    out = deform_conv2d(x, offset, mask, weight, None, 0)[0, 0]
    torch.testing.assert_close(out[:, :2], x[0, 0, :, 1:])
    assert torch.all(out[:, 2] == 0)


def test_module_uses_modulator_as_twice_sigmoid():
    torch.manual_seed(0)
    layer = DeformConv2d(4, 5, 3, padding=1).eval()
    x = torch.randn(1, 4, 7, 7)
    with torch.no_grad():
        offset = layer.offset_conv(x)
        mask = 2 * torch.sigmoid(layer.modulator_conv(x))
        expected = deform_conv2d(x, offset, mask, layer.regular_conv.weight, None, 1)
        torch.testing.assert_close(layer(x), expected)
