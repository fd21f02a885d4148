"""Static shapes for tracing.

Exported graphs have a symbolic batch and fixed H and W, so every other size is a constant. Reading
sizes through `int()` makes the tracer record them as constants instead of Shape/Gather/Concat
chains; reshapes then keep only the batch as -1.
"""

from __future__ import annotations

import warnings

import torch


def static_shape(x: torch.Tensor) -> tuple[int, ...]:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", torch.jit.TracerWarning)
        return tuple(int(d) for d in x.shape)
