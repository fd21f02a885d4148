"""The concurrency core in-process and fast: the Batcher (gathering, deadline, cancellation, a full
queue, draining on close, a failing backend) and the Pipeline over it, with real test backends."""

from __future__ import annotations

import io
import threading
import time
from concurrent.futures import CancelledError

import numpy as np
import pytest
from PIL import Image
from recording_backend import GatedBackend, RecordingBackend
from test_contract import v1, write

from rmbg_runtime.batching import Batcher, BatchObserver, QueueFull
from rmbg_runtime.errors import BackendError, ImageError, RmbgError
from rmbg_runtime.metadata import read_model_spec
from rmbg_runtime.stages import OutputOptions
from rmbg_runtime.threaded import Pipeline

SHAPE = (3, 8, 8)


def tensor(value: float = 0.0) -> np.ndarray:
    return np.full(SHAPE, value, np.float32)


def batcher(backend, **options) -> Batcher:
    options = {"max_batch": backend.max_batch, "max_delay_s": 0.0, "max_queue": 4} | options
    return Batcher(backend.run, **options)


def test_waiting_images_are_gathered_into_batches_of_at_most_max_batch():
    backend = GatedBackend(max_batch=2, size=(8, 8))
    worker = batcher(backend, max_delay_s=0.5)
    first = worker.submit(tensor())
    assert backend.entered.wait(5)  # the worker holds image 1; 5 more wait behind it
    futures = [worker.submit(tensor()) for _ in range(5)]
    backend.release()
    results = [f.result(timeout=5) for f in [first, *futures]]
    worker.close()
    assert backend.sizes == [1, 2, 2, 1]
    assert [r.batch_size for r in results] == [1, 2, 2, 2, 2, 1]


def test_a_lone_image_waits_at_most_max_delay_for_company():
    backend = RecordingBackend(max_batch=4, size=(8, 8), seconds=0)
    worker = batcher(backend, max_delay_s=0.2)
    start = time.perf_counter()
    result = worker.submit(tensor()).result(timeout=5)
    waited = time.perf_counter() - start
    worker.close()
    assert 0.2 <= waited < 2.0
    assert result.queued_s >= 0.19 and backend.sizes == [1]


def test_a_cancelled_image_costs_no_inference():
    backend = GatedBackend(max_batch=1, size=(8, 8))
    cancelled: list[int] = []
    worker = batcher(backend, observer=BatchObserver(on_cancelled=cancelled.append))
    running = worker.submit(tensor())
    assert backend.entered.wait(5)
    left, kept = worker.submit(tensor()), worker.submit(tensor())
    assert left.cancel()  # its client went away while it was queued
    backend.release()
    running.result(timeout=5), kept.result(timeout=5)
    worker.close()
    assert backend.sizes == [1, 1] and cancelled == [1]


def test_a_full_queue_refuses_at_once():
    backend = GatedBackend(max_batch=1, size=(8, 8))
    worker = batcher(backend, max_queue=2)
    assert worker.capacity == 3
    running = worker.submit(tensor())
    assert backend.entered.wait(5)
    queued = [worker.submit(tensor()) for _ in range(3)]  # the batch being gathered + max_queue
    with pytest.raises(QueueFull, match=r"3 images are already waiting \(--max-queue 2\)"):
        worker.submit(tensor())
    backend.release()
    for future in [running, *queued]:
        future.result(timeout=5)
    worker.close()


def test_close_finishes_the_queue_then_refuses_new_images():
    backend = GatedBackend(max_batch=2, size=(8, 8))
    worker = batcher(backend)
    futures = [worker.submit(tensor()) for _ in range(5)]
    assert backend.entered.wait(5)
    closing = threading.Thread(target=worker.close)
    closing.start()
    backend.release()
    closing.join(5)
    assert not closing.is_alive()
    assert all(f.done() and f.exception() is None for f in futures)
    assert sum(backend.sizes) == 5
    with pytest.raises(RmbgError, match="the inference worker has stopped"):
        worker.submit(tensor())


def test_close_can_cancel_the_queue_instead():
    backend = GatedBackend(max_batch=1, size=(8, 8))
    worker = batcher(backend)
    running = worker.submit(tensor())
    assert backend.entered.wait(5)
    queued = [worker.submit(tensor()) for _ in range(3)]
    closing = threading.Thread(target=worker.close, kwargs={"cancel_queued": True})
    closing.start()
    time.sleep(0.05)
    backend.release()
    closing.join(5)
    assert running.result(timeout=1).batch_size == 1
    assert all(f.cancelled() for f in queued) and backend.sizes == [1]


def test_a_failing_backend_fails_every_image_of_its_batch_as_a_backend_error():
    backend = GatedBackend(max_batch=3, size=(8, 8))
    backend.fail_with = RuntimeError("CUDA error: out of memory")
    worker = batcher(backend, max_delay_s=0.5)
    futures = [worker.submit(tensor()) for _ in range(3)]
    backend.release()
    for future in futures:
        with pytest.raises(
            BackendError, match=r"inference failed \(RuntimeError: CUDA error: out of memory\)"
        ):
            future.result(timeout=5)
    worker.close()


# ---- Pipeline -------------------------------------------------------------------------------------


@pytest.fixture
def spec(tmp_path):
    return read_model_spec(write(tmp_path / "export", v1()))


def image(seed: int) -> bytes:
    rng = np.random.default_rng(seed)
    buffer = io.BytesIO()
    Image.fromarray(rng.integers(0, 255, (12, 20, 3), dtype=np.uint8)).save(buffer, "PNG")
    return buffer.getvalue()


def test_pipeline_map_keeps_order_and_isolates_a_bad_image(spec):
    backend = RecordingBackend(max_batch=2, size=(spec.height, spec.width), seconds=0)
    with Pipeline(spec, backend, max_delay_s=0.01, threads=2) as pipeline:
        results = list(pipeline.map([image(1), b"not an image", image(2)], OutputOptions(mask_only=True)))
    assert isinstance(results[1], ImageError)
    for result in (results[0], results[2]):
        assert result.size == (20, 12)
        assert np.all(np.asarray(Image.open(io.BytesIO(result.data))) == 191)  # 0.75 * 255
    assert backend.closed  # the pipeline owns its backend


def test_pipeline_stops_at_a_backend_failure(spec):
    backend = GatedBackend(max_batch=1, size=(spec.height, spec.width))
    backend.fail_with = RuntimeError("device lost")
    backend.release()
    pipeline = Pipeline(spec, backend, max_delay_s=0.0, threads=2)
    results = pipeline.map([image(i) for i in range(6)], OutputOptions())
    with pytest.raises(BackendError, match="device lost"), pipeline:
        next(results)
    assert backend.closed


def test_pipeline_sizes_and_warm_up(spec):
    backend = RecordingBackend(max_batch=4, size=(spec.height, spec.width), seconds=0)
    with Pipeline(spec, backend, max_batch=8, max_queue=5, threads=3) as pipeline:
        assert pipeline.max_batch == 4  # never more than the backend takes
        assert pipeline.admit_limit == 9 and pipeline.pool._max_workers == 3
        pipeline.warm_up()
    assert backend.sizes == [1]


def test_a_cancelled_image_in_the_pipeline_is_not_run(spec):
    backend = GatedBackend(max_batch=1, size=(spec.height, spec.width))
    with Pipeline(spec, backend, max_delay_s=0.0, threads=2) as pipeline:
        first = pipeline.submit(pipeline.prepare(image(1)))
        assert backend.entered.wait(5)
        second = pipeline.submit(pipeline.prepare(image(2)))
        second.cancel()
        backend.release()
        first.result(timeout=5)
        with pytest.raises(CancelledError):
            second.result(timeout=5)
    assert backend.sizes == [1]


class FirstCallOnly(GatedBackend):
    """Runs its first call at once; every later one waits at the gate until `release()`."""

    def _run_slice(self, batch: np.ndarray) -> np.ndarray:
        if not self.sizes and not self.entered.is_set():
            return RecordingBackend._run_slice(self, batch)
        return super()._run_slice(batch)


def test_a_consumer_that_fails_drops_its_images_still_queued_for_inference(spec):
    """What the video run relies on: a clip that fails (or Ctrl-C) leaves no frames to infer."""
    backend = FirstCallOnly(max_batch=1, size=(spec.height, spec.width))

    def failing_step(_prepared, _batch):
        raise RuntimeError("the consumer's own step failed")

    # One pool thread: the images reach the batcher in order (with two, the second could be ready
    # first, take the free first call and leave the first image at the gate).
    with Pipeline(spec, backend, max_delay_s=0.0, threads=1) as pipeline:
        results = pipeline.map_with([image(i) for i in range(6)], failing_step, window=6)
        with pytest.raises(RuntimeError, match="own step failed"):
            next(results)  # the first image; the second waits at the gate, the rest behind it
        backend.release()
    assert backend.sizes == [1, 1]  # the four queued behind the second were never run
