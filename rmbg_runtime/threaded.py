"""The threaded pipeline shared by `rmbg remove` and `rmbg serve`: the image stages of stages.py,

    decode -> preprocess -> [batched inference] -> postprocess -> render + encode

Decoding, pre/post-processing and encoding run in a bounded thread pool (Pillow and NumPy release
the GIL in the heavy parts); inference runs on the batcher's single worker, which owns the backend.
With images in flight in every stage, throughput is set by the slowest stage, not by their sum.
"""

from __future__ import annotations

import os
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeVar

import numpy as np
from PIL import Image

from .backends import Backend, BackendConfig, open_backend
from .batching import Batcher, BatchObserver, BatchResult
from .errors import BackendError, RmbgError
from .images import DEFAULT_MAX_PIXELS, ImageInput
from .metadata import ModelSpec, read_model_spec
from .stages import OutputOptions, decode, encode, postprocess, preprocess, render

STAGES = ("queue", "decode", "preprocess", "inference", "postprocess", "encode")

T = TypeVar("T")


@dataclass
class Result:
    data: bytes
    size: tuple[int, int]  # the input image's (width, height)
    timings: dict[str, float] = field(default_factory=dict)  # seconds per stage
    batch_size: int = 1


class _Timer:
    def __init__(self, timings: dict[str, float]) -> None:
        self.timings = timings

    def __call__(self, stage: str, work: Callable[[], T]) -> T:
        start = time.perf_counter()
        try:
            return work()
        finally:
            self.timings[stage] = self.timings.get(stage, 0.0) + time.perf_counter() - start


class Abandoned(Exception):
    """The image's request timed out or its client left: `stage` and the ones after it did not run."""

    def __init__(self, stage: str) -> None:
        super().__init__(f"abandoned before {stage}")
        self.stage = stage


def _stop_if(abandoned: threading.Event | None, next_stage: str) -> None:
    if abandoned is not None and abandoned.is_set():
        raise Abandoned(next_stage)


@dataclass
class Prepared:
    """An image decoded and preprocessed, ready for the batcher."""

    image: Image.Image
    tensor: np.ndarray
    timings: dict[str, float]


class _InFlight:
    """The images of one `map_with` call. Once abandoned, their stages not yet started are skipped and
    those still queued for inference are cancelled (the batcher drops them unrun)."""

    def __init__(self) -> None:
        self.abandoned = threading.Event()
        self._queued: set[Future] = set()

    def queued(self, inferred: Future) -> None:
        self._queued.add(inferred)
        inferred.add_done_callback(self._queued.discard)
        if self.abandoned.is_set():  # abandoned while this one was being submitted
            inferred.cancel()

    def abandon(self) -> None:
        self.abandoned.set()
        for inferred in list(self._queued):
            inferred.cancel()


class Pipeline:
    """Stages over one backend, which it owns. Thread-safe; `close()` finishes queued work, stops
    the workers and closes the backend."""

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
    def open(cls, model_dir: str | Path, config: BackendConfig | None = None, **options) -> Pipeline:
        """The export in `model_dir` on the backend `config` describes; `options` as for the
        constructor (`threads`: the CPU-stage pool, not the engine's threads)."""
        spec = read_model_spec(model_dir)
        backend = open_backend(spec, config)
        try:
            return cls(spec, backend, **options)
        except BaseException:
            backend.close()
            raise

    @property
    def admit_limit(self) -> int:
        """Images in flight the batcher accepts; one more is refused with QueueFull."""
        return self.batcher.capacity

    def warm_up(self) -> None:
        """One inference on a blank image through the batcher (the first call builds kernels and
        arenas); raises what the backend raises."""
        self.batcher.submit(np.zeros((3, self.spec.height, self.spec.width), np.float32)).result()

    # ---- stages (each runs in the calling thread) ----------------------------------------------

    def prepare(self, source: ImageInput, abandoned: threading.Event | None = None) -> Prepared:
        """`abandoned`: set when nobody waits for the image any more; the next stage is then skipped."""
        timings: dict[str, float] = {}
        timed = _Timer(timings)
        image = timed("decode", lambda: decode(source, self.max_pixels))
        _stop_if(abandoned, "preprocess")
        tensor = timed("preprocess", lambda: preprocess(image, self.spec))
        return Prepared(image, tensor, timings)

    def finish(
        self,
        prepared: Prepared,
        batch: BatchResult,
        options: OutputOptions,
        abandoned: threading.Event | None = None,
    ) -> Result:
        timings = prepared.timings | {"queue": batch.queued_s, "inference": batch.inference_s}
        timed = _Timer(timings)
        alpha = timed("postprocess", lambda: postprocess(batch.prob, prepared.image.size))
        rendered = timed("postprocess", lambda: render(prepared.image, alpha, options))
        _stop_if(abandoned, "encode")
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
        image yields its RmbgError and the rest continue; a BackendError is raised, since every image
        after it would fail the same way. No pool thread waits on inference: each
        stage hands the image to the next when it is done."""
        return self.map_with(sources, lambda prepared, batch: self.finish(prepared, batch, options), window)

    def map_with(
        self,
        sources: Iterable[ImageInput],
        finish: Callable[[Prepared, BatchResult], T],
        window: int | None = None,
    ) -> Iterator[T | RmbgError]:
        """`map` with `finish` (run in the pool) in place of postprocess, render and encode: the video
        driver takes each frame's alpha this way. Closing the iterator early (the consumer failed or
        was interrupted) drops its images still queued for inference and skips the stages the others
        have not started."""
        window = min(window or 2 * self.max_batch + self.threads, self.batcher.max_queue)
        in_flight = _InFlight()
        pending: deque[Future] = deque()
        try:
            for source in sources:
                pending.append(self._start(source, finish, in_flight))
                if len(pending) >= window:
                    yield pending.popleft().result()
            while pending:
                yield pending.popleft().result()
        finally:
            in_flight.abandon()

    def _start(
        self, source: ImageInput, finish: Callable[[Prepared, BatchResult], T], in_flight: _InFlight
    ) -> Future:
        abandoned = in_flight.abandoned
        done: Future = Future()

        def fail_or_raise(err: BaseException) -> None:
            if isinstance(err, RmbgError) and not isinstance(err, BackendError):
                done.set_result(err)  # the image's own failure: the others go on
            else:
                done.set_exception(err)  # the backend's (or a bug, or abandoned): the consumer stops

        def finished(prepared: Prepared, inferred: Future) -> None:
            try:
                batch = inferred.result()
                _stop_if(abandoned, "postprocess")
                done.set_result(finish(prepared, batch))
            except BaseException as err:  # noqa: BLE001 - handed to the consumer
                fail_or_raise(err)

        def prepared_ready(step: Future) -> None:
            try:
                prepared = step.result()
                _stop_if(abandoned, "inference")
                inferred = self.submit(prepared)
            except BaseException as err:  # noqa: BLE001 - handed to the consumer
                fail_or_raise(err)
                return
            in_flight.queued(inferred)
            inferred.add_done_callback(lambda f: self.pool.submit(finished, prepared, f))

        self.pool.submit(self.prepare, source, abandoned).add_done_callback(prepared_ready)
        return done

    def close(self, *, cancel_queued: bool = False) -> None:
        """Finish the queued images (or cancel them: `cancel_queued`), stop the workers, close the
        backend."""
        self.batcher.close(cancel_queued=cancel_queued)
        self.pool.shutdown(wait=True, cancel_futures=True)
        self.backend.close()

    def __enter__(self) -> Pipeline:
        return self

    def __exit__(self, exc_type, *_rest) -> None:
        """Leaving on an error (a backend failure, an interrupt) cancels the queued images."""
        self.close(cancel_queued=exc_type is not None)
