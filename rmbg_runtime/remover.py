"""`Remover`: images in, masks and cut-outs out, through whichever backend the machine offers."""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from PIL import Image

from .backends import Backend, BackendConfig, ClosingBackend, open_backend
from .errors import RmbgError
from .images import DEFAULT_MAX_PIXELS, IMAGE_INPUT_TYPES, ImageInput
from .metadata import read_model_spec
from .processing import resize_probability
from .stages import OutputOptions, decode, parse_color, postprocess, preprocess, render

if TYPE_CHECKING:
    from .video.run import VideoReport


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
        return decode(image, self.max_pixels)

    def _load_all(self, images: Sequence[ImageInput], method: str, single: str) -> list[Image.Image]:
        if isinstance(images, IMAGE_INPUT_TYPES):  # a str is a sequence too: of characters
            raise RmbgError(f"{method} takes a list of images; for one image call {single}(image).")
        return [self.load(im) for im in images]

    def probabilities(self, images: Sequence[Image.Image]) -> list[np.ndarray]:
        """Network-resolution (H, W) probability maps; the backend splits what exceeds its max batch."""
        if not images:
            return []
        batch = np.stack([preprocess(im, self.spec) for im in images])
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

    def remove_background_video(
        self,
        src: str | Path,
        dst: str | Path,
        *,
        background: str | Sequence[int] | None = None,
        mask_only: bool = False,
        refine: bool = False,
        smooth: bool = False,
        kind: str | None = None,
        threads: int | None = None,
        progress: Callable[[int, int | None], None] | None = None,
    ) -> VideoReport:
        """The video `src` with its background removed, frame by frame, written to `dst`: `.webm` (VP9
        with alpha), `.mov` (ProRes 4444 with alpha), `.mp4` (H.264 on `background`, white by
        default) or any other name as a folder of RGBA PNG frames (`kind` overrides the suffix). The
        audio, frame timing and rotation are kept. `smooth` steadies the masks over time; `threads`:
        the CPU stages' pool; `progress(frames_written, frames_in_clip_or_None)`. Streams through
        the same pipeline as `rmbg remove` (frames batched up to the backend's max batch), so memory
        does not grow with the clip; on any failure nothing is left at `dst`. Needs the video extra:
        pip install "rmbg-toolkit[video]"."""
        from .threaded import Pipeline
        from .video.run import remove_video
        from .video_formats import check_video_support

        check_video_support()
        color = parse_color(background) if background is not None else None
        options = OutputOptions(mask_only=mask_only, background=color, refine=refine)
        shared = _SharedBackend(self.backend, self._lock)
        with Pipeline(self.spec, shared, threads=threads, max_pixels=self.max_pixels) as pipeline:
            return remove_video(pipeline, src, dst, options, kind=kind, smooth=smooth, progress=progress)


class _SharedBackend(ClosingBackend):
    """A Remover's backend lent to a Pipeline: its calls take the Remover's lock, and closing the
    pipeline leaves it open."""

    def __init__(self, backend: Backend, lock: threading.Lock) -> None:
        self._backend, self._lock = backend, lock
        self.name, self.max_batch = backend.name, backend.max_batch
        self.engine_threads = backend.engine_threads

    def run(self, batch: np.ndarray) -> np.ndarray:
        with self._lock:
            return self._backend.run(batch)
