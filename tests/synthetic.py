"""A deterministic synthetic matting set: textured foregrounds with soft, hairy edges composited on
varied backgrounds, with the exact alpha and the exact foreground colours known."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Composite:
    image: np.ndarray  # uint8 (H, W, 3): foreground * alpha + background * (1 - alpha), rounded
    alpha: np.ndarray  # float32 (H, W) in [0, 1]
    foreground: np.ndarray  # float32 (H, W, 3) in [0, 1]
    background: np.ndarray  # float32 (H, W, 3) in [0, 1]

    @property
    def alpha_u8(self) -> np.ndarray:
        return np.rint(self.alpha * 255).astype(np.uint8)


def _texture(rng, yy, xx, base) -> np.ndarray:
    waves = sum(
        np.sin(xx * rng.uniform(0.02, 0.15) + yy * rng.uniform(0.02, 0.15) + rng.uniform(0, 6))
        for _ in range(3)
    )
    return np.clip(base[None, None] + 0.08 * waves[..., None] * rng.uniform(0.5, 1, 3), 0, 1)


def composite(seed: int, height: int = 192, width: int = 256) -> Composite:
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
    cy, cx = height * rng.uniform(0.4, 0.6), width * rng.uniform(0.4, 0.6)
    ry, rx = height * rng.uniform(0.22, 0.3), width * rng.uniform(0.22, 0.3)
    distance = np.sqrt(((yy - cy) / ry) ** 2 + ((xx - cx) / rx) ** 2)
    softness = rng.uniform(0.04, 0.1)
    body = 1 / (1 + np.exp((distance - 1) / softness))
    angle = np.arctan2(yy - cy, xx - cx)
    strands = 0.5 + 0.5 * np.cos(angle * rng.integers(40, 90) + rng.uniform(0, 6))  # hair around the edge
    hair = np.clip(1.35 - distance, 0, 1) * np.where(distance > 1, strands**3, 1)
    alpha = np.clip(np.maximum(body, 0.9 * hair * (distance < 1.35)), 0, 1).astype(np.float32)
    fg_colour, bg_colour = rng.uniform(0.1, 0.9, 3), rng.uniform(0.1, 0.9, 3)
    while np.abs(fg_colour - bg_colour).sum() < 0.8:  # a background that visibly bleeds
        bg_colour = rng.uniform(0, 1, 3)
    foreground = _texture(rng, yy, xx, fg_colour).astype(np.float32)
    background = _texture(rng, yy, xx, bg_colour)
    gradient = (xx / width)[..., None] * rng.uniform(-0.2, 0.2, 3)
    background = np.clip(background + gradient, 0, 1).astype(np.float32)
    image = foreground * alpha[..., None] + background * (1 - alpha[..., None])
    return Composite(np.rint(image * 255).astype(np.uint8), alpha, foreground, background)


def soft_band(alpha: np.ndarray, low: float = 0.05, high: float = 0.95) -> np.ndarray:
    return (alpha > low) & (alpha < high)
