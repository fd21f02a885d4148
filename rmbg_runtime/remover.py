"""`Remover`: images in, masks and cut-outs out, through whichever backend the machine offers."""

from __future__ import annotations

import threading
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from PIL import Image, ImageColor

from .backends import Backend, BackendConfig, open_backend
from .errors import RmbgError
from .images import DEFAULT_MAX_PIXELS, IMAGE_INPUT_TYPES, ImageInput, load_image
from .metadata import read_model_spec
from .pipeline import OutputOptions, render
from .processing import postprocess, preprocess, resize_probability


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


class Remover:
    """Background removal with an exported BiRefNet / RMBG-2.0 model.

    Thread-safe: decoding and pre/post-processing run in the calling thread, inference through
    the backend is serialised (TensorRT contexts and their buffers are not re-entrant).
    """

    def __init__(
        self,
        model_dir: str | Path,
        backend: str | BackendConfig | Backend = "auto",
        *,
        device_id: int = 0,
        engine_threads: int | None = None,
        precision: str | None = None,
        verify_files: bool = True,
        max_pixels: int = DEFAULT_MAX_PIXELS,
    ) -> None:
        """`backend`: a name (see `rmbg_runtime.backends.BACKENDS`) with the keyword settings, a whole
        `BackendConfig` (the keywords are then not used), or an already open backend (then owned by
        this Remover: `close()` closes it). `engine_threads`: ONNX Runtime's intra-op threads.
        `precision`: the ONNX graph ONNX Runtime runs (default on the CPU: int8 if exported, else fp32)."""
        self.spec = read_model_spec(model_dir)
        if isinstance(backend, str):
            backend = BackendConfig(backend, device_id, engine_threads, precision, verify_files)
        if isinstance(backend, BackendConfig):
            backend = open_backend(self.spec, backend)
        self.backend = backend
        self.max_pixels = max_pixels
        self._lock = threading.Lock()

    def close(self) -> None:
        """Release the backend's device memory and sessions."""
        self.backend.close()

    def __enter__(self) -> Remover:
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()

    @property
    def backend_name(self) -> str:
        return self.backend.name

    def load(self, image: ImageInput) -> Image.Image:
        return load_image(image, max_pixels=self.max_pixels)

    def _load_all(self, images: Sequence[ImageInput], method: str, single: str) -> list[Image.Image]:
        if isinstance(images, IMAGE_INPUT_TYPES):  # a str is a sequence too: of characters
            raise RmbgError(f"{method} takes a list of images; for one image call {single}(image).")
        return [self.load(im) for im in images]

    def probabilities(self, images: Sequence[Image.Image]) -> list[np.ndarray]:
        """Network-resolution (H, W) probability maps; the backend splits what exceeds its max batch."""
        if not images:
            return []
        batch = np.stack([preprocess(im, self.spec.size, self.spec.mean, self.spec.std) for im in images])
        with self._lock:
            prob = self.backend.run(batch)
        return list(prob[:, 0])

    def predict_mask(self, image: ImageInput) -> np.ndarray:
        """float32 (H, W) alpha in [0, 1] at the image's size."""
        return self.predict_masks([image])[0]

    def predict_masks(self, images: Sequence[ImageInput]) -> list[np.ndarray]:
        loaded = self._load_all(images, "predict_masks", "predict_mask")
        return [
            resize_probability(p, im.size) for p, im in zip(self.probabilities(loaded), loaded, strict=True)
        ]

    def remove_background(
        self,
        image: ImageInput,
        *,
        background: str | Sequence[int] | None = None,
        mask_only: bool = False,
        refine: bool = False,
    ) -> Image.Image:
        return self.remove_backgrounds([image], background=background, mask_only=mask_only, refine=refine)[0]

    def remove_backgrounds(
        self,
        images: Sequence[ImageInput],
        *,
        background: str | Sequence[int] | None = None,
        mask_only: bool = False,
        refine: bool = False,
    ) -> list[Image.Image]:
        """RGBA cut-outs with straight alpha (the model card's 8-bit mask), the mask alone ('L'),
        or the image composited on `background`. `refine` replaces the colours at soft edges by the
        estimated foreground (no background colour bleeding into hair or fur)."""
        color = parse_color(background) if background is not None else None
        options = OutputOptions(mask_only=mask_only, background=color, refine=refine)
        loaded = self._load_all(images, "remove_backgrounds", "remove_background")
        return [
            render(image, postprocess(prob, image.size), options)
            for prob, image in zip(self.probabilities(loaded), loaded, strict=True)
        ]
