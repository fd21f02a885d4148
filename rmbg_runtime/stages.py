"""The image stages, as pure functions, in the order every driver runs them:

    decode -> preprocess -> [backend.run] -> postprocess -> render -> encode

`Remover` (in-process), the threaded `Pipeline` (`rmbg remove`, `rmbg serve`) and the Triton
pre/post models drive these and nothing else; the model card's arithmetic lives in processing.py,
decoding in images.py. Rendering (cut-out, mask, compositing on a colour) is decided here alone.
"""

from __future__ import annotations

import io
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageColor

from . import processing
from .contract import ModelSpec
from .errors import RmbgError
from .images import DEFAULT_MAX_PIXELS, ImageInput, load_image
from .processing import composite, cut_out
from .refine import refine_foreground

FORMATS = ("png", "webp")
DEFAULT_PNG_COMPRESS_LEVEL = 1  # zlib level 1: ~3-6x faster than 6 on photos for ~10% more bytes


@dataclass(frozen=True)
class OutputOptions:
    mask_only: bool = False
    background: tuple[int, ...] | None = None  # RGB, or RGBA (see on_background)
    fmt: str = "png"
    png_compress_level: int = DEFAULT_PNG_COMPRESS_LEVEL
    refine: bool = False  # estimate foreground colours at soft edges (refine.py)


def decode(source: ImageInput, max_pixels: int = DEFAULT_MAX_PIXELS) -> Image.Image:
    """One RGB image from a path, bytes, a PIL image or an array (images.load_image)."""
    return load_image(source, max_pixels=max_pixels)


def preprocess(image: Image.Image, spec: ModelSpec) -> np.ndarray:
    """float32 (3, H, W): the image as the export's network takes it (size, mean, std)."""
    return processing.preprocess(image, spec.size, spec.mean, spec.std)


def postprocess(prob: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """uint8 (H, W) alpha at the image's `size` from one network-resolution probability map."""
    return processing.postprocess(prob, size)


def render(image: Image.Image, alpha: np.ndarray, options: OutputOptions) -> Image.Image:
    """The mask ('L'), the cut-out (RGBA, straight alpha) or the image on a colour."""
    if options.mask_only:
        return Image.fromarray(alpha, "L")
    if options.refine:
        image = refine_foreground(image, alpha)
    if options.background is None:
        return cut_out(image, alpha)
    return on_background(image, alpha, options.background)


def on_background(image: Image.Image, alpha: np.ndarray, color: tuple[int, ...]) -> Image.Image:
    """The cut-out over a colour (r, g, b) or (r, g, b, a), the one rule for the API, the CLI and
    the server: a translucent colour (a < 255) gives RGBA, the cut-out over it by Porter-Duff
    "over" (Pillow's alpha_composite, as rembg's `bgc`); an opaque one gives RGB."""
    if len(color) == 4 and color[3] < 255:
        return Image.alpha_composite(Image.new("RGBA", image.size, tuple(color)), cut_out(image, alpha))
    return composite(image, alpha, tuple(color[:3]))


def encode(image: Image.Image, fmt: str, png_compress_level: int = DEFAULT_PNG_COMPRESS_LEVEL) -> bytes:
    buffer = io.BytesIO()
    if fmt == "webp":
        # exact: keep colours under alpha 0. method 0 / quality 0 is libwebp's fastest lossless
        # effort: 16x faster than Pillow's default (method 4, quality 80) on a 12 MP cut-out for
        # 6% more bytes (benchmarks/cpu_stages.py).
        image.save(buffer, "WEBP", lossless=True, exact=True, method=0, quality=0)
    elif fmt == "png":
        image.save(buffer, "PNG", optimize=False, compress_level=png_compress_level)
    else:
        raise RmbgError(f"output format {fmt!r} is unknown; use one of {', '.join(FORMATS)}.")
    return buffer.getvalue()


def parse_color(color: str | Sequence[int]) -> tuple[int, ...]:
    """(r, g, b) for an opaque colour, (r, g, b, a) for a translucent one (a < 255): a name,
    #rgb, #rrggbb, #rrggbbaa, or three or four values in 0-255."""
    if isinstance(color, str):
        try:
            rgba = ImageColor.getcolor(color, "RGBA")
        except ValueError:
            raise RmbgError(
                f"background colour {color!r} is not a colour name, #rrggbb or #rrggbbaa."
            ) from None
    else:
        try:
            values = tuple(int(c) for c in color)
        except (TypeError, ValueError):
            values = ()
        if len(values) not in (3, 4) or not all(0 <= c <= 255 for c in values):
            raise RmbgError(
                f"background colour {color!r} must be three or four values in 0-255 (r, g, b[, a])."
            )
        rgba = (*values, 255)[:4]
    return tuple(rgba[:3]) if rgba[3] == 255 else tuple(rgba)
