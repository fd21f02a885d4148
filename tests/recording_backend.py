"""Backends for the tests of the concurrency core: real objects that keep the Backend protocol
(run, max_batch, close, with-blocks) and record what was asked of them."""

from __future__ import annotations

import threading
import time

import numpy as np

from rmbg_runtime.backends import ClosingBackend, run_in_slices


class RecordingBackend(ClosingBackend):
    """A backend that records each call's batch size and whether two calls ever overlapped (the
    situation a TensorRT context and its buffers cannot survive). Like every backend, it splits a
    batch larger than its max_batch itself."""

    engine_threads = None

    def __init__(self, max_batch: int, size: tuple[int, int] = (256, 256), seconds: float = 0.02) -> None:
        self.name, self.max_batch = "recording", max_batch
        self.size, self.seconds = size, seconds
        self.sizes: list[int] = []
        self.active = self.most_active = 0
        self.closed = False
        self._count = threading.Lock()

    def run(self, batch: np.ndarray) -> np.ndarray:
        return run_in_slices(batch, self.max_batch, self._run_slice)

    def _run_slice(self, batch: np.ndarray) -> np.ndarray:
        with self._count:
            self.active += 1
            self.most_active = max(self.most_active, self.active)
        time.sleep(self.seconds)  # a real call takes time; overlapping callers would meet here
        with self._count:
            self.active -= 1
            self.sizes.append(batch.shape[0])
        return np.full((batch.shape[0], 1, *self.size), 0.75, np.float32)

    def close(self) -> None:
        self.closed = True


class GatedBackend(RecordingBackend):
    """A RecordingBackend whose calls wait until `release()`: work can pile up behind a call in
    progress. `entered` is set once a call has started; `fail_with` makes calls raise it."""

    def __init__(self, max_batch: int, size: tuple[int, int] = (256, 256)) -> None:
        super().__init__(max_batch, size, seconds=0)
        self.gate, self.entered = threading.Event(), threading.Event()
        self.fail_with: BaseException | None = None

    def release(self) -> None:
        self.gate.set()

    def _run_slice(self, batch: np.ndarray) -> np.ndarray:
        self.entered.set()
        if not self.gate.wait(timeout=10):
            raise TimeoutError("the test never released the gate")
        if self.fail_with is not None:
            raise self.fail_with
        return super()._run_slice(batch)
