"""The staged pipeline shared by `rmbg remove` and `rmbg serve`.

    decode -> preprocess -> [batched inference] -> postprocess -> render + encode

Decoding, pre/post-processing and encoding run in a bounded thread pool (Pillow and NumPy release
the GIL in the heavy parts); inference runs on the batcher's single worker, which owns the backend.
With images in flight in every stage, throughput is set by the slowest stage, not by their sum.
"""

from __future__ import annotations

import io
import os
import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeVar

import numpy as np
from PIL import Image

from .backends import Backend, open_backend
from .batching import Batcher, BatchObserver, BatchResult
from .errors import RmbgError
from .images import DEFAULT_MAX_PIXELS, ImageInput, load_image
from .metadata import ModelSpec, read_model_spec
from .processing import composite, cut_out, postprocess, preprocess
from .refine import refine_foreground

FORMATS = ("png", "webp")
STAGES = ("queue", "decode", "preprocess", "inference", "postprocess", "encode")
DEFAULT_PNG_COMPRESS_LEVEL = 1  # zlib level 1: ~3-6x faster than 6 on photos for ~10% more bytes

T = TypeVar("T")


@dataclass(frozen=True)
class OutputOptions:
    mask_only: bool = False
    background: tuple[int, ...] | None = None  # RGB, or RGBA (see on_background)
    fmt: str = "png"
    png_compress_level: int = DEFAULT_PNG_COMPRESS_LEVEL
    refine: bool = False  # estimate foreground colours at soft edges (refine.py)


@dataclass
class Result:
    data: bytes
    size: tuple[int, int]  # the input image's (width, height)
    timings: dict[str, float] = field(default_factory=dict)  # seconds per stage
    batch_size: int = 1


def render(image: Image.Image, alpha: np.ndarray, options: OutputOptions) -> Image.Image:
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


class _Timer:
    def __init__(self, timings: dict[str, float]) -> None:
        self.timings = timings

    def __call__(self, stage: str, work: Callable[[], T]) -> T:
        start = time.perf_counter()
        try:
            return work()
        finally:
            self.timings[stage] = self.timings.get(stage, 0.0) + time.perf_counter() - start


@dataclass
class Prepared:
    """An image decoded and preprocessed, ready for the batcher."""

    image: Image.Image
    tensor: np.ndarray
    timings: dict[str, float]


class Pipeline:
    """Stages over one backend. Thread-safe; `close()` finishes queued work and stops the workers."""

    def __init__(
        self,
        spec: ModelSpec,
        backend: Backend,
        *,
        max_batch: int | None = None,
        max_delay_s: float = 0.005,
        max_queue: int = 64,
        threads: int | None = None,
        max_pixels: int = DEFAULT_MAX_PIXELS,
        observer: BatchObserver | None = None,
    ) -> None:
        self.spec, self.backend, self.max_pixels = spec, backend, max_pixels
        self.max_batch = min(max_batch or backend.max_batch, backend.max_batch)
        if self.max_batch < 1:
            raise RmbgError(f"--max-batch {max_batch} must be at least 1.")
        self.threads = threads or min(8, os.cpu_count() or 1)
        self.pool = ThreadPoolExecutor(self.threads, thread_name_prefix="rmbg-cpu")
        self.batcher = Batcher(
            backend.run,
            max_batch=self.max_batch,
            max_delay_s=max_delay_s,
            max_queue=max_queue,
            observer=observer,
        )

    @classmethod
    def open(
        cls,
        model_dir: str | Path,
        backend: str = "auto",
        *,
        device_id: int = 0,
        threads: int | None = None,
        precision: str | None = None,
        **options,
    ) -> Pipeline:
        """The export in `model_dir` on `backend` (`precision`: the ONNX graph ONNX Runtime runs);
        `options` as for the constructor."""
        spec = read_model_spec(model_dir)
        opened = open_backend(spec, backend, device_id=device_id, threads=threads, precision=precision)
        return cls(spec, opened, threads=threads, **options)

    # ---- stages (each runs in the calling thread) ----------------------------------------------

    def prepare(self, source: ImageInput) -> Prepared:
        timings: dict[str, float] = {}
        timed = _Timer(timings)
        image = timed("decode", lambda: load_image(source, max_pixels=self.max_pixels))
        tensor = timed("preprocess", lambda: preprocess(image, self.spec.size, self.spec.mean, self.spec.std))
        return Prepared(image, tensor, timings)

    def finish(self, prepared: Prepared, batch: BatchResult, options: OutputOptions) -> Result:
        timings = prepared.timings | {"queue": batch.queued_s, "inference": batch.inference_s}
        timed = _Timer(timings)
        alpha = timed("postprocess", lambda: postprocess(batch.prob, prepared.image.size))
        rendered = timed("postprocess", lambda: render(prepared.image, alpha, options))
        data = timed("encode", lambda: encode(rendered, options.fmt, options.png_compress_level))
        return Result(data, prepared.image.size, timings, batch.batch_size)

    def submit(self, prepared: Prepared) -> Future:
        """Queue for inference; the future gives a BatchResult (raises QueueFull when full)."""
        return self.batcher.submit(prepared.tensor)

    # ---- whole images ---------------------------------------------------------------------------

    def process(self, source: ImageInput, options: OutputOptions) -> Result:
        """One image through every stage, blocking; call from any thread."""
        prepared = self.prepare(source)
        return self.finish(prepared, self.submit(prepared).result(), options)

    def map(
        self, sources: Iterable[ImageInput], options: OutputOptions, window: int | None = None
    ) -> Iterator[Result | RmbgError]:
        """Results in input order, with up to `window` images in flight across the stages; a failing
        image yields its RmbgError and the rest continue. No pool thread waits on inference: each
        stage hands the image to the next when it is done."""
        window = min(window or 2 * self.max_batch + self.threads, self.batcher.max_queue)
        pending: deque[Future] = deque()
        for source in sources:
            pending.append(self._start(source, options))
            if len(pending) >= window:
                yield pending.popleft().result()
        while pending:
            yield pending.popleft().result()

    def _start(self, source: ImageInput, options: OutputOptions) -> Future:
        done: Future = Future()

        def fail_or_raise(err: BaseException) -> None:
            done.set_result(err) if isinstance(err, RmbgError) else done.set_exception(err)

        def finish(prepared: Prepared, inferred: Future) -> None:
            try:
                done.set_result(self.finish(prepared, inferred.result(), options))
            except BaseException as err:  # noqa: BLE001 - handed to the consumer
                fail_or_raise(err)

        def prepared_ready(step: Future) -> None:
            try:
                prepared = step.result()
                inferred = self.submit(prepared)
            except BaseException as err:  # noqa: BLE001 - handed to the consumer
                fail_or_raise(err)
                return
            inferred.add_done_callback(lambda f: self.pool.submit(finish, prepared, f))

        self.pool.submit(self.prepare, source).add_done_callback(prepared_ready)
        return done

    def close(self) -> None:
        self.batcher.close()
        self.pool.shutdown(wait=True, cancel_futures=True)
