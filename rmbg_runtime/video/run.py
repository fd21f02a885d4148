"""One clip through the threaded pipeline of threaded.py, streamed frame by frame:

    reader (a thread of its own) -> preprocess (pool) -> the batcher (inference, batched as images are)
    -> postprocess (pool) -> [MaskSmoother, in frame order] -> render (pool) -> writer (in frame order)

Every stage holds a fixed number of frames (DECODE_AHEAD decoded ahead, the pipeline's window, one
render per pool thread, the encoder's own look-ahead), so memory does not grow with the clip's
length. The writer writes under a temporary name and renames it into place after the last frame; a
failure or Ctrl-C anywhere aborts it (nothing is left under the target name) and the frames still in
flight skip their remaining stages.
"""

from __future__ import annotations

import queue
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator
from concurrent.futures import Future
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from ..batching import BatchResult
from ..errors import RmbgError
from ..stages import OutputOptions, postprocess, render
from ..threaded import Pipeline, Prepared
from .io import VideoError, VideoFrame, VideoReader, VideoWriter, open_video, open_writer, output_kind

DECODE_AHEAD = 4  # frames decoded ahead of preprocessing: enough to ride out one slow frame
VIDEO_STAGES = ("decode", "preprocess", "inference", "postprocess", "encode")

Progress = Callable[[int, "int | None"], None]  # (frames written, frames in the clip if the file says)


@dataclass
class VideoReport:
    source: Path
    target: Path
    kind: str
    frames: int
    size: tuple[int, int]  # the frames' (width, height)
    wall_s: float
    # Seconds each stage spent on the clip, summed over its frames (a batch's inference shared among
    # its frames; postprocess includes smoothing and rendering, encode the writer's colour conversion
    # and muxing). The stages overlap, so these add up to more than wall_s.
    stage_s: dict[str, float]

    @property
    def frames_per_s(self) -> float:
        return self.frames / self.wall_s if self.wall_s > 0 else 0.0


def remove_video(
    pipeline: Pipeline,
    src: str | Path,
    dst: str | Path,
    options: OutputOptions,
    *,
    kind: str | None = None,
    smooth: bool = False,
    progress: Progress | None = None,
) -> VideoReport:
    """The clip `src` with its background removed (as `options` says, frame by frame) written to
    `dst`: a video of `kind` (default: the suffix's, see io.OUTPUT_KINDS; a folder of PNG frames
    otherwise). `smooth`: steady the masks over time (temporal.MaskSmoother). Raises
    VideoError for a clip that cannot be read (nothing is written), BackendError as images do."""
    src, dst = Path(src), Path(dst)
    kind = kind or output_kind(dst)
    stage_s = dict.fromkeys(VIDEO_STAGES, 0.0)
    start = time.perf_counter()
    with open_video(src) as reader:
        _check_size(src, reader, pipeline.max_pixels)
        smoother = _smoother() if smooth else None
        total = reader.info.frame_count

        def written(count: int) -> None:
            if progress is not None:
                progress(count, total)

        with open_writer(dst, reader, kind, background=options.background) as writer:
            decoding = _DecodeAhead(reader)
            with decoding as frames:
                count = _stream(pipeline, frames, options, smoother, writer, stage_s, written, src)
            stage_s["decode"] += decoding.decode_s
            closing = time.perf_counter()
        stage_s["encode"] += time.perf_counter() - closing  # the encoder's flush and the rename
    info = reader.info
    return VideoReport(src, dst, kind, count, (info.width, info.height), time.perf_counter() - start, stage_s)


def _check_size(src: Path, reader: VideoReader, max_pixels: int) -> None:
    width, height = reader.info.width, reader.info.height
    if width * height > max_pixels:
        raise VideoError(
            f"{src} has {width}x{height} frames, over the limit of {max_pixels:,} pixels; raise "
            "--max-pixels (max_pixels in Python) if the video is trusted."
        )


def _smoother() -> Callable[[np.ndarray], np.ndarray]:
    from ..temporal import MaskSmoother

    return MaskSmoother()


@dataclass
class _Masked:
    alpha: np.ndarray  # uint8 (H, W) at the frame's size
    stage_s: dict[str, float]


def _alpha(prepared: Prepared, batch: BatchResult) -> _Masked:
    """The pipeline's last pooled step for a frame: its alpha (rendered once smoothed, in order)."""
    start = time.perf_counter()
    alpha = postprocess(batch.prob, prepared.image.size)
    stage_s = prepared.timings | {
        "inference": batch.inference_s / batch.batch_size,
        "postprocess": time.perf_counter() - start,
    }
    return _Masked(alpha, stage_s)


def _render(image: Image.Image, alpha: np.ndarray, options: OutputOptions) -> tuple[Image.Image, float]:
    start = time.perf_counter()
    rendered = render(image, alpha, options)
    return rendered, time.perf_counter() - start


def _stream(
    pipeline: Pipeline,
    frames: Iterator[VideoFrame],
    options: OutputOptions,
    smoother: Callable[[np.ndarray], np.ndarray] | None,
    writer: VideoWriter,
    stage_s: dict[str, float],
    written: Callable[[int], None],
    src: Path,
) -> int:
    """Every frame through the pipeline and into `writer`, in order; returns how many."""
    in_pipeline: deque[VideoFrame] = deque()  # handed to the pipeline, alpha not yet taken
    rendering: deque[tuple[VideoFrame, Future]] = deque()
    count = 0

    def images() -> Iterator[Image.Image]:
        for frame in frames:
            in_pipeline.append(frame)
            yield frame.image

    def write_oldest() -> None:
        nonlocal count
        frame, future = rendering.popleft()
        rendered, render_s = future.result()
        stage_s["postprocess"] += render_s
        start = time.perf_counter()
        writer.write(frame, rendered)
        stage_s["encode"] += time.perf_counter() - start
        count += 1
        written(count)

    masks = pipeline.map_with(images(), _alpha)
    try:
        for masked in masks:
            frame = in_pipeline.popleft()
            if isinstance(masked, RmbgError):  # a frame's own failure fails the clip
                raise VideoError(f"{src}, frame {frame.index + 1}: {masked}")
            for stage, seconds in masked.stage_s.items():
                stage_s[stage] += seconds
            alpha = masked.alpha
            if smoother is not None:
                start = time.perf_counter()
                alpha = smoother(alpha)
                stage_s["postprocess"] += time.perf_counter() - start
            rendering.append((frame, pipeline.pool.submit(_render, frame.image, alpha, options)))
            if len(rendering) > pipeline.threads:
                write_oldest()
        while rendering:
            write_oldest()
    finally:
        masks.close()  # the frames still in flight skip their remaining stages
        for _frame, future in rendering:
            future.cancel()
    return count


class _DecodeAhead:
    """The reader's frames, decoded in a thread of their own, at most `depth` frames ahead of their
    consumer (FFmpeg decodes with the GIL released, so decoding overlaps the other stages). Leaving
    the block stops the thread and waits for it, so the reader is never closed under it."""

    _END = object()

    def __init__(self, reader: VideoReader, depth: int = DECODE_AHEAD) -> None:
        self.reader = reader
        self.decode_s = 0.0
        self._queue: queue.Queue = queue.Queue(depth)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._decode, name="rmbg-video-decode", daemon=True)

    def __enter__(self) -> Iterator[VideoFrame]:
        self._thread.start()
        return self._frames()

    def __exit__(self, *exc_info) -> None:
        self._stop.set()
        self._thread.join()

    def _frames(self) -> Iterator[VideoFrame]:
        while (item := self._queue.get()) is not self._END:
            if isinstance(item, BaseException):
                raise item  # the reader's failure (a clip corrupt halfway), in the consumer's thread
            yield item

    def _decode(self) -> None:
        frames = iter(self.reader.frames())
        try:
            while not self._stop.is_set():
                start = time.perf_counter()
                frame = next(frames, None)
                self.decode_s += time.perf_counter() - start
                if frame is None:
                    break
                self._put(frame)
        except BaseException as err:  # noqa: BLE001 - handed to the consumer
            self._put(err)
        finally:
            close = getattr(frames, "close", None)
            if close is not None:
                close()  # in this thread, which ran the reader's generator
            self._put(self._END)

    def _put(self, item: object) -> None:
        """Queue `item`, or drop it once the consumer has stopped."""
        while not self._stop.is_set():
            try:
                self._queue.put(item, timeout=0.05)
                return
            except queue.Full:
                continue
