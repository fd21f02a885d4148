"""Temporal smoothing of a clip's alpha mattes (`rmbg remove clip.mp4 --smooth`).

Masks of a static scene flicker: sensor noise and compression change every frame a little, and the
network's mask follows. `MaskSmoother` is a per-pixel exponential moving average whose weight
adapts to the size of the change between the new mask and the smoothed one:

    change = |alpha_t - state|
    weight = min_weight                                  where change <= noise
             1 (the new value, at once)                  where change >= motion
             a linear ramp between them
    state += weight * (alpha_t - state)

Small changes (noise) are averaged over about 1 / min_weight frames; large ones (an edge that
moves, a subject that enters) pass through in the same frame, so motion does not lag. Why this
filter and not a plain EMA or a One Euro filter (Casiez et al. 2012, the cutoff rises with the
signal's speed): a plain EMA lags on every motion by the same ~1 / weight frames; One Euro
estimates the speed from a low-passed derivative, so a step is followed only partly in its first
frames (its derivative filter has to catch up), while the mask's motion is a step per pixel (an
edge crosses it in a frame or two). Measured by benchmarks/flicker.py on a synthetic clip whose
true alpha is known, the change-gated EMA removes as much flicker as One Euro with less error
on motion (figures in its docstring and the README).

The state is one float32 array the size of a frame (it does not grow with the clip); the work is
a few vectorised passes over it (a few ms for a 1080p frame). In and out: uint8 (H, W); the first
frame passes through unchanged, a pixel whose mask never changes stays exactly its value, and the
output is the state rounded to the nearest level.
"""

from __future__ import annotations

import numpy as np

DEFAULT_MIN_WEIGHT = 0.25  # noise averaged over ~4 frames
DEFAULT_NOISE = 8  # levels of 255: changes up to this are treated as noise
DEFAULT_MOTION = 32  # levels: changes from this up pass through at once


class MaskSmoother:
    """One per clip: call it with each frame's uint8 (H, W) alpha in frame order; it returns the
    smoothed uint8 (H, W) alpha."""

    def __init__(
        self,
        min_weight: float = DEFAULT_MIN_WEIGHT,
        noise: float = DEFAULT_NOISE,
        motion: float = DEFAULT_MOTION,
    ) -> None:
        if not 0 < min_weight <= 1:
            raise ValueError(f"min_weight must be in (0, 1], got {min_weight}")
        if not 0 <= noise < motion:
            raise ValueError(f"need 0 <= noise < motion, got noise={noise}, motion={motion}")
        self.min_weight = float(min_weight)
        self.noise = float(noise)
        self.motion = float(motion)
        self._state: np.ndarray | None = None  # float32 (H, W): the smoothed alpha in levels
        self._change: np.ndarray | None = None  # float32 (H, W) scratch, reused every frame
        self._weight: np.ndarray | None = None

    def __call__(self, alpha: np.ndarray) -> np.ndarray:
        alpha = _checked(alpha, None if self._state is None else self._state.shape)
        if self._state is None:
            self._state = alpha.astype(np.float32)
            self._change = np.empty_like(self._state)
            self._weight = np.empty_like(self._state)
            return alpha.copy()
        state, change, weight = self._state, self._change, self._weight
        np.subtract(alpha, state, out=change, dtype=np.float32)  # signed change
        # weight = min_weight + (1 - min_weight) * clip((|change| - noise) / (motion - noise), 0, 1)
        np.abs(change, out=weight)
        weight -= np.float32(self.noise)
        weight *= np.float32((1 - self.min_weight) / (self.motion - self.noise))
        np.clip(weight, 0, np.float32(1 - self.min_weight), out=weight)
        weight += np.float32(self.min_weight)
        change *= weight
        state += change
        return _to_levels(state)


def _checked(alpha: np.ndarray, shape: tuple[int, ...] | None) -> np.ndarray:
    alpha = np.asarray(alpha)
    if alpha.dtype != np.uint8 or alpha.ndim != 2:
        raise ValueError(f"expected a uint8 (H, W) alpha, got {alpha.dtype} {alpha.shape}")
    if shape is not None and alpha.shape != shape:
        raise ValueError(f"frame of shape {alpha.shape} after frames of {shape}: one MaskSmoother per clip")
    return alpha


def _to_levels(state: np.ndarray) -> np.ndarray:
    """Round half up to uint8 (the state stays within [0, 255]: a convex mix of uint8 values)."""
    return (state + np.float32(0.5)).astype(np.uint8)
