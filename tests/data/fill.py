"""Deterministic weights for architecture conformance checks.

Every floating-point tensor of a checkpoint is filled from its own name alone, so any
implementation that uses the official key names and shapes gets the very same weights.
Integer tensors (index buffers, BatchNorm counters) are left as the model builds them.

Uniform values come from NumPy's PCG64 bit generator seeded with crc32(name); only the
raw 64-bit stream is used, which NumPy keeps stable across releases.
"""

from __future__ import annotations

import zlib

import numpy as np


def _uniform(name: str, count: int) -> np.ndarray:
    """`count` float64 values in [-1, 1), a pure function of `name`."""
    raw = np.random.PCG64(zlib.crc32(name.encode())).random_raw(count)
    return (raw >> np.uint64(11)).astype(np.float64) * (2.0 / 2**53) - 1.0


def fill_value(name: str, shape: tuple[int, ...]) -> np.ndarray:
    """The float32 array that `name` with `shape` gets."""
    count = int(np.prod(shape)) if shape else 1
    u = _uniform(name, count).reshape(shape)
    leaf = name.rsplit(".", 1)[-1]
    if leaf == "running_var":
        v = 1.0 + 0.5 * np.abs(u)
    elif leaf == "running_mean":
        v = 0.1 * u
    elif "relative_position_bias_table" in name:
        v = 0.02 * u
    elif len(shape) >= 2:
        fan_in = int(np.prod(shape[1:]))
        v = u * np.sqrt(3.0 / fan_in)  # std = 1/sqrt(fan_in)
    elif leaf == "weight":
        v = 1.0 + 0.1 * u  # LayerNorm / BatchNorm scale
    else:
        v = 0.02 * u  # biases
    return v.astype(np.float32)


def conformance_state_dict(shapes: dict[str, tuple[tuple[int, ...], str]]) -> dict[str, np.ndarray]:
    """Arrays for every floating-point entry of {name: (shape, dtype)}; others are skipped."""
    return {
        name: fill_value(name, tuple(shape))
        for name, (shape, dtype) in shapes.items()
        if dtype.startswith("float")
    }


def conformance_input(shape: tuple[int, ...], seed_name: str = "input") -> np.ndarray:
    """A normalised-image-like float32 tensor in [-2, 2), a pure function of its name."""
    count = int(np.prod(shape))
    return (2.0 * _uniform(seed_name, count)).astype(np.float32).reshape(shape)
