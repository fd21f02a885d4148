"""Turning what users send (paths, bytes, PIL images, arrays) into one RGB PIL image."""

from __future__ import annotations

import io
import threading
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import BinaryIO

import numpy as np
from PIL import (
    BmpImagePlugin,
    IcnsImagePlugin,
    IcoImagePlugin,
    Image,
    ImageOps,
    PngImagePlugin,
    UnidentifiedImageError,
)

from .errors import ImageError, RmbgError

ImageInput = str | Path | bytes | bytearray | Image.Image | np.ndarray
IMAGE_INPUT_TYPES = (str, Path, bytes, bytearray, Image.Image, np.ndarray)  # for isinstance

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
    """An RGB image with EXIF orientation applied; first frame of animations. Anything that is not a
    usable image (missing, damaged, over `max_pixels`) raises ImageError, whatever Pillow raised."""
    name = describe(source)
    if isinstance(source, np.ndarray):
        if source.ndim >= 2:
            _check_pixels(name, (source.shape[1], source.shape[0]), max_pixels)
        return _from_array(source, name)
    if isinstance(source, Image.Image):
        return _decoded(source, name, max_pixels)
    _allow_in_pillow(max_pixels)
    with _stream(source, name) as stream:
        return _decoded(_open(stream, name, max_pixels), name, max_pixels)


def _decoded(image: Image.Image, name: str, max_pixels: int) -> Image.Image:
    try:
        _check_pixels(name, _size_to_decode(image), max_pixels)
        image.load()
        _check_pixels(name, image.size, max_pixels)  # the decoder's own size is the one that counts
        if image.getexif().get(EXIF_ORIENTATION, 1) != 1:  # exif_transpose copies even when upright
            image = ImageOps.exif_transpose(image)
        return to_rgb(image)
    except RmbgError:
        raise
    except Exception as err:  # noqa: BLE001 - damaged files make Pillow raise almost anything
        raise _damaged(name, err) from None


def _damaged(name: str, err: Exception) -> ImageError:
    # Pillow's plugins raise OSError, ValueError, SyntaxError, EOFError, struct.error, IndexError,
    # TypeError... on damaged input; every one of them is this image's fault, not the program's.
    if isinstance(err, Image.DecompressionBombError):
        return ImageError(f"{name} is over Pillow's decompression-bomb limit ({err}); it is refused.")
    detail = str(err) or type(err).__name__
    return ImageError(f"{name} could not be decoded ({detail}); the file is truncated or damaged.")


def _check_pixels(name: str, size: tuple[int, int], max_pixels: int) -> None:
    width, height = size
    if width < 1 or height < 1:
        raise ImageError(f"{name} is {width}x{height}: it has no pixels.")
    if width * height > max_pixels:
        raise ImageError(
            f"{name} has {width}x{height} pixels, over the limit of {max_pixels:,}; raise --max-pixels "
            "(max_pixels in Python) if the image is trusted."
        )


_pillow_limit_lock = threading.Lock()


def _allow_in_pillow(max_pixels: int) -> None:
    """Pillow has its own bomb limit, one process-wide number (it refuses over twice
    Image.MAX_IMAGE_PIXELS, 179 MP by default). Our per-call limit, checked from the header before
    decoding, is the one that governs, so Pillow's is raised to at least it: raised only, under a
    lock, so that concurrent calls with different limits never lower it under one another."""
    with _pillow_limit_lock:
        if Image.MAX_IMAGE_PIXELS is not None and Image.MAX_IMAGE_PIXELS < max_pixels:
            Image.MAX_IMAGE_PIXELS = max_pixels


@contextmanager
def _stream(source: str | Path | bytes | bytearray, name: str) -> Iterator[BinaryIO]:
    if isinstance(source, (bytes, bytearray)):
        if not source:
            raise ImageError(f"{name} is empty: no image data was given.")
        yield io.BytesIO(source)
        return
    try:
        stream = open(source, "rb")  # closed below, after decoding
    except OSError as err:
        raise ImageError(f"{name} does not exist or cannot be read ({err.strerror or err}).") from None
    with stream:
        yield stream


def _open(stream: BinaryIO, name: str, max_pixels: int) -> Image.Image:
    """Pillow's lazy open (the header only), after checking the one format that decodes in it."""
    try:
        _check_icon_entry(stream, name, max_pixels)
        stream.seek(0)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)  # our own limit applies
            return Image.open(stream)
    except RmbgError:
        raise
    except UnidentifiedImageError:
        raise ImageError(
            f"{name} is not an image format Pillow can read (or its header is damaged)."
        ) from None
    except Exception as err:  # noqa: BLE001 - see _damaged
        raise _damaged(name, err) from None


ICO_MAGIC = b"\0\0\1\0"
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def _check_icon_entry(stream: BinaryIO, name: str, max_pixels: int) -> None:
    """Pillow's ICO plugin decodes the icon's largest entry inside Image.open, and an entry may hold
    a PNG of any size whatever the directory declares: read that entry's own header first."""
    if stream.read(4) != ICO_MAGIC:
        return
    stream.seek(0)
    icon = IcoImagePlugin.IcoFile(stream)
    if not icon.entry:
        raise ImageError(f"{name} is an icon file without images.")
    entry = icon.entry[0]  # sorted largest first: the one Image.open loads
    stream.seek(entry.offset)
    is_png = stream.read(8) == PNG_MAGIC
    stream.seek(entry.offset)
    if is_png:
        size = PngImagePlugin.PngImageFile(stream).size  # reads the chunks up to the pixel data
    else:
        width, height = BmpImagePlugin.DibImageFile(stream).size
        size = (width, height // 2)  # an icon's bitmap holds the colours and the AND mask
    _check_pixels(name, size, max_pixels)


def _size_to_decode(image: Image.Image) -> tuple[int, int]:
    """The size `load()` will produce: an ICNS entry may hold a PNG or JPEG 2000 of any size (opened
    here, not decoded); every other format decodes at its header's size (first frame, first page)."""
    if isinstance(image, IcnsImagePlugin.IcnsImageFile) and image._im is None:
        return image.icns.getimage(image.best_size).size
    return image.size


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
    if array.dtype != np.uint8:
        raise ImageError(f"{name} must be uint8 (0-255); convert it with .astype(np.uint8) after scaling.")
    if array.ndim == 2:
        return Image.fromarray(array, "L").convert("RGB")
    if array.ndim == 3 and array.shape[2] in (3, 4):
        return Image.fromarray(np.ascontiguousarray(array[:, :, :3]), "RGB")
    raise ImageError(f"{name} must be HxWx3 (RGB), HxWx4 or HxW; got shape {array.shape}.")
