"""Fold every inference-time BatchNorm into the convolution before it."""

from __future__ import annotations

import copy
import itertools

import torch
from torch import nn

from ..model.deform_conv import DeformConv2d


def _fold(conv: nn.Conv2d, bn: nn.BatchNorm2d) -> None:
    """conv <- bn(conv), computed in float64 and stored in the conv's dtype."""
    scale = bn.weight.double() / torch.sqrt(bn.running_var.double() + bn.eps)
    bias = conv.bias.double() if conv.bias is not None else torch.zeros_like(scale)
    weight = conv.weight.double() * scale.view(-1, *([1] * (conv.weight.dim() - 1)))
    conv.weight = nn.Parameter(weight.to(conv.weight.dtype), requires_grad=False)
    new_bias = (bias - bn.running_mean.double()) * scale + bn.bias.double()
    conv.bias = nn.Parameter(new_bias.to(conv.weight.dtype), requires_grad=False)


def _as_conv(module: nn.Module) -> nn.Conv2d | None:
    if isinstance(module, DeformConv2d):
        return module.regular_conv  # the output is linear in the regular weight
    return module if isinstance(module, nn.Conv2d) else None


def fold_batchnorms(model: nn.Module) -> nn.Module:
    """A copy of `model` without BatchNorm layers; the original is left untouched."""
    model = copy.deepcopy(model).eval()
    for module in list(model.modules()):
        pairs = list(getattr(module, "conv_bn_pairs", ()))
        if isinstance(module, nn.Sequential):
            names = list(module._modules)
            pairs += [
                (a, b) for a, b in itertools.pairwise(names) if isinstance(module._modules[b], nn.BatchNorm2d)
            ]
        for conv_name, bn_name in pairs:
            conv, bn = _as_conv(getattr(module, conv_name)), getattr(module, bn_name)
            if conv is None or not isinstance(bn, nn.BatchNorm2d):
                raise TypeError(
                    f"cannot fold {type(bn).__name__} into {type(getattr(module, conv_name)).__name__}"
                )
            _fold(conv, bn)
            setattr(module, bn_name, nn.Identity())
    remaining = [name for name, m in model.named_modules() if isinstance(m, nn.BatchNorm2d)]
    if remaining:
        raise RuntimeError(f"BatchNorm layers left unfolded: {remaining[:3]}")
    return model
