"""The model card's pre- and post-processing, in NumPy and Pillow.

Sizes follow Pillow's convention everywhere: (width, height).
"""

from __future__ import annotations

import numpy as np
from PIL import Image

from . import contract

IMAGENET_MEAN = np.array(contract.IMAGENET_MEAN, dtype=np.float32)
IMAGENET_STD = np.array(contract.IMAGENET_STD, dtype=np.float32)


def preprocess(
    image: Image.Image,
    size: tuple[int, int],
    mean: np.ndarray = IMAGENET_MEAN,
    std: np.ndarray = IMAGENET_STD,
) -> np.ndarray:
    """float32 (3, H, W): Pillow bilinear resize to `size` (aspect not kept), /255, normalise."""
    rgb = image if image.mode == "RGB" else image.convert("RGB")  # convert() copies even RGB
    resized = rgb.resize(size, Image.Resampling.BILINEAR)
    pixels = np.asarray(resized, dtype=np.float32) / np.float32(255)  # as ToTensor: divide, not multiply
    normalised = (pixels - np.asarray(mean, np.float32)) / np.asarray(std, np.float32)
    return np.ascontiguousarray(normalised.transpose(2, 0, 1))


def postprocess(prob: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """uint8 (H, W) alpha at `size`: probability -> 8 bits (truncated, as ToPILImage) -> Pillow's
    default (bicubic) resize, exactly the model card's path."""
    prob = np.asarray(prob, dtype=np.float32).squeeze()
    if prob.ndim != 2:
        raise ValueError(f"expected one (H, W) probability map, got shape {np.shape(prob)}")
    levels = (prob * np.float32(255)).astype(np.uint8)
    return np.asarray(Image.fromarray(levels, "L").resize(size, Image.Resampling.BICUBIC))


def resize_probability(prob: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """float32 (H, W) alpha in [0, 1] at `size`, without the 8-bit step (bicubic, clipped)."""
    prob = np.asarray(prob, dtype=np.float32).squeeze()
    resized = np.asarray(Image.fromarray(prob, "F").resize(size, Image.Resampling.BICUBIC))
    return np.clip(resized, 0.0, 1.0)


def cut_out(image: Image.Image, alpha: np.ndarray) -> Image.Image:
    """RGBA with straight (not premultiplied) alpha."""
    rgba = image.convert("RGB")
    rgba.putalpha(Image.fromarray(alpha, "L"))
    return rgba


def composite(image: Image.Image, alpha: np.ndarray, background: tuple[int, int, int]) -> Image.Image:
    """The image over a solid colour, blended by alpha; RGB."""
    canvas = Image.new("RGB", image.size, background)
    canvas.paste(image.convert("RGB"), (0, 0), Image.fromarray(alpha, "L"))
    return canvas
