"""Dynamic batching: one worker thread owns the backend and gathers queued images into batches.

Callers (server requests, the CLI's folder pipeline) submit one preprocessed image each and get a
`concurrent.futures.Future`. The worker takes what is queued, waits at most `max_delay_s` for more
up to `max_batch`, and runs one backend call. A future cancelled while still queued (a client that
went away) is dropped before inference and costs nothing.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass, field

import numpy as np

from .errors import BackendError, RmbgError


class QueueFull(RmbgError):
    """More images are waiting than the batcher admits."""


def as_backend_error(err: BaseException) -> BaseException:
    """What a failed backend call means to its callers: the images were checked before they were
    queued, so whatever `run` raises is the backend's failure, not theirs (interrupts pass as they are)."""
    if isinstance(err, BackendError) or not isinstance(err, Exception):
        return err
    if isinstance(err, RmbgError):
        return BackendError(str(err))
    detail = str(err).splitlines()[0][:200] if str(err) else ""
    return BackendError(
        f"inference failed ({type(err).__name__}{': ' + detail if detail else ''}); check the device and "
        "its free memory, then restart."
    )


@dataclass
class BatchResult:
    """What a caller's future resolves to: its probability map and how its time was spent."""

    prob: np.ndarray  # (H, W) float32 at network resolution
    queued_s: float
    inference_s: float
    batch_size: int


@dataclass
class _Item:
    tensor: np.ndarray
    future: Future
    queued_at: float = field(default_factory=time.perf_counter)


@dataclass
class BatchObserver:
    """Hooks for metrics; each is called from the worker thread."""

    on_batch: Callable[[int, float], None] = lambda _size, _seconds: None
    on_cancelled: Callable[[int], None] = lambda _count: None
    on_queue_depth: Callable[[int], None] = lambda _depth: None


class Batcher:
    def __init__(
        self,
        run: Callable[[np.ndarray], np.ndarray],
        *,
        max_batch: int,
        max_delay_s: float = 0.005,
        max_queue: int = 64,
        observer: BatchObserver | None = None,
    ) -> None:
        if max_batch < 1 or max_queue < 1 or max_delay_s < 0:
            raise ValueError("max_batch and max_queue must be >= 1 and max_delay_s >= 0")
        self._run, self.max_batch, self.max_delay_s, self.max_queue = run, max_batch, max_delay_s, max_queue
        self._observer = observer or BatchObserver()
        self._queue: deque[_Item] = deque()
        self._wake = threading.Condition()
        self._closed = False
        self._worker = threading.Thread(target=self._loop, name="rmbg-inference", daemon=True)
        self._worker.start()

    @property
    def capacity(self) -> int:
        """Images admitted at once: the batch being gathered plus `max_queue` waiting behind it."""
        return self.max_queue + self.max_batch

    def submit(self, tensor: np.ndarray) -> Future:
        """Queue one (3, H, W) image; raises QueueFull when `max_queue` images wait beyond the batch
        being gathered."""
        future: Future = Future()
        with self._wake:
            if self._closed:
                raise RmbgError("the inference worker has stopped; no new images are accepted.")
            if len(self._queue) >= self.capacity:
                waiting = len(self._queue)
                raise QueueFull(f"{waiting} images are already waiting (--max-queue {self.max_queue}).")
            self._queue.append(_Item(tensor, future))
            self._observer.on_queue_depth(len(self._queue))
            self._wake.notify()
        return future

    def close(self, timeout: float | None = None, *, cancel_queued: bool = False) -> None:
        """Finish what is queued (or cancel it: `cancel_queued`), then stop the worker."""
        with self._wake:
            self._closed = True
            if cancel_queued:
                for item in self._queue:
                    item.future.cancel()
            self._wake.notify()
        self._worker.join(timeout)

    def _take_batch(self) -> list[_Item] | None:
        with self._wake:
            while not self._queue and not self._closed:
                self._wake.wait()
            if not self._queue:
                return None  # closed and drained
            deadline = time.perf_counter() + self.max_delay_s
            while len(self._queue) < self.max_batch and not self._closed:
                left = deadline - time.perf_counter()
                if left <= 0:
                    break
                self._wake.wait(left)
            batch = [self._queue.popleft() for _ in range(min(self.max_batch, len(self._queue)))]
            self._observer.on_queue_depth(len(self._queue))
        live = [item for item in batch if item.future.set_running_or_notify_cancel()]
        if len(live) < len(batch):
            self._observer.on_cancelled(len(batch) - len(live))
        return live

    def _loop(self) -> None:
        while (batch := self._take_batch()) is not None:
            if batch:
                self._infer(batch)

    def _infer(self, batch: list[_Item]) -> None:
        start = time.perf_counter()
        try:
            probs = self._run(np.stack([item.tensor for item in batch]))
        except BaseException as err:  # noqa: BLE001 - every waiting caller must hear of it
            failure = as_backend_error(err)
            for item in batch:
                item.future.set_exception(failure)
            return
        seconds = time.perf_counter() - start
        self._observer.on_batch(len(batch), seconds)
        for item, prob in zip(batch, probs, strict=True):
            item.future.set_result(BatchResult(prob[0], start - item.queued_at, seconds, len(batch)))
