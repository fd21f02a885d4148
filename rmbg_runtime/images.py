"""Turning what users send (paths, bytes, PIL images, arrays) into one RGB PIL image."""

from __future__ import annotations

import io
import warnings
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

ImageInput = str | Path | bytes | bytearray | Image.Image | np.ndarray

EXIF_ORIENTATION = 0x0112
DEFAULT_MAX_PIXELS = 100_000_000  # a 10000x10000 photo; guards against decompression bombs
IMAGE_SUFFIXES = frozenset({".jpg", ".jpeg", ".jfif", ".png", ".webp", ".bmp", ".tif", ".tiff", ".gif"})


def is_image_file(path: Path) -> bool:
    """Whether a folder entry is one of the image files the tools pick up (by suffix)."""
    return path.is_file() and path.suffix.lower() in IMAGE_SUFFIXES


def describe(source: ImageInput) -> str:
    if isinstance(source, (str, Path)):
        return str(source)
    if isinstance(source, (bytes, bytearray)):
        return f"<{len(source)} bytes>"
    if isinstance(source, np.ndarray):
        return f"<array {source.shape} {source.dtype}>"
    return f"<{type(source).__name__}>"


def load_image(source: ImageInput, *, max_pixels: int = DEFAULT_MAX_PIXELS) -> Image.Image:
    """An RGB image with EXIF orientation applied; first frame of animations."""
    from .errors import ImageError

    name = describe(source)
    if isinstance(source, np.ndarray):
        if source.ndim >= 2:
            _check_pixels(name, source.shape[1], source.shape[0], max_pixels)
        return _from_array(source, name)
    image = source if isinstance(source, Image.Image) else _open(source, name)
    _check_pixels(name, *image.size, max_pixels)
    try:
        image.load()
        if image.getexif().get(EXIF_ORIENTATION, 1) != 1:  # exif_transpose copies even when upright
            image = ImageOps.exif_transpose(image)
        return to_rgb(image)
    except (OSError, ValueError, SyntaxError) as err:
        raise ImageError(f"{name} could not be decoded ({err}); the file is truncated or damaged.") from None


def _check_pixels(name: str, width: int, height: int, max_pixels: int) -> None:
    from .errors import ImageError

    if width * height > max_pixels:
        raise ImageError(
            f"{name} has {width}x{height} pixels, over the limit of {max_pixels:,}; raise max_pixels "
            "if the image is trusted."
        )


def _open(source, name: str) -> Image.Image:
    from .errors import ImageError

    if isinstance(source, (bytes, bytearray)):
        if not source:
            raise ImageError(f"{name} is empty: no image data was given.")
        source = io.BytesIO(source)
    elif not Path(source).is_file():
        raise ImageError(f"{name} does not exist or is not a file.")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)  # our own limit applies
            return Image.open(source)
    except Image.DecompressionBombError:
        raise ImageError(f"{name} is larger than Pillow's decompression-bomb limit; it is refused.") from None
    except UnidentifiedImageError:
        raise ImageError(f"{name} is not an image format Pillow can read.") from None
    except OSError as err:
        raise ImageError(f"{name} could not be opened ({err}).") from None


def to_rgb(image: Image.Image) -> Image.Image:
    """RGB from any Pillow mode; 16- and 32-bit grey is rescaled, not clipped."""
    if image.mode == "RGB":
        return image
    if image.mode.startswith("I") or image.mode == "F":
        values = np.asarray(image, dtype=np.float64)
        top = 65535.0 if image.mode.startswith("I;16") or values.max() > 255 else 255.0
        grey = np.clip(np.rint(values * (255.0 / top)), 0, 255).astype(np.uint8)
        return Image.fromarray(grey, "L").convert("RGB")
    if image.mode == "P" and "transparency" in image.info:
        image = image.convert("RGBA")
    return image.convert("RGB")


def _from_array(array: np.ndarray, name: str) -> Image.Image:
    from .errors import ImageError

    if array.dtype != np.uint8:
        raise ImageError(f"{name} must be uint8 (0-255); convert it with .astype(np.uint8) after scaling.")
    if array.ndim == 2:
        return Image.fromarray(array, "L").convert("RGB")
    if array.ndim == 3 and array.shape[2] in (3, 4):
        return Image.fromarray(np.ascontiguousarray(array[:, :, :3]), "RGB")
    raise ImageError(f"{name} must be HxWx3 (RGB), HxWx4 or HxW; got shape {array.shape}.")
