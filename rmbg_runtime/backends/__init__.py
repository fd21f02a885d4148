"""Inference backends. Each maps a float32 (B, 3, H, W) batch to (B, 1, H, W) probabilities.

Heavy imports (onnxruntime, tensorrt, cuda-python) happen only when a backend is opened.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from typing import Protocol

import numpy as np

from ..contract import GRAPH_PRECISIONS
from ..errors import BackendUnavailable
from ..metadata import ModelSpec

BACKENDS = ("auto", "tensorrt", "onnxruntime-cuda", "openvino", "onnxruntime-cpu")
PRECISIONS = GRAPH_PRECISIONS  # the ONNX graphs an export may hold (int8: ONNX Runtime CPU)
ALIASES = {
    "trt": "tensorrt",
    "ort-cuda": "onnxruntime-cuda",
    "cuda": "onnxruntime-cuda",
    "ort-cpu": "onnxruntime-cpu",
    "cpu": "onnxruntime-cpu",
    "onnxruntime": "onnxruntime-cpu",
    "ov": "openvino",
}


class Backend(Protocol):
    name: str
    max_batch: int

    def run(self, batch: np.ndarray) -> np.ndarray: ...


def batch_slices(total: int, max_batch: int) -> list[slice]:
    """Consecutive slices of at most max_batch items covering range(total)."""
    return [slice(start, min(start + max_batch, total)) for start in range(0, total, max_batch)]


def open_backend(
    spec: ModelSpec,
    name: str = "auto",
    *,
    device_id: int = 0,
    threads: int | None = None,
    verify_files: bool = True,
    precision: str | None = None,
    cpu_arena: bool = True,
    performance_hint: str = "LATENCY",
) -> Backend:
    """`precision` picks the ONNX graph for ONNX Runtime (PRECISIONS) and the IR for OpenVINO
    (fp32 / int8); TensorRT runs its engine. `cpu_arena=False` turns ONNX Runtime's CPU memory arena
    off (see OnnxRuntimeBackend). `performance_hint`: OpenVINO's LATENCY or THROUGHPUT."""
    name = ALIASES.get(name, name)
    if name not in BACKENDS:
        raise BackendUnavailable(f"backend {name!r} is unknown; choose one of {', '.join(BACKENDS)}.")
    if name == "auto":
        return _open_auto(spec, device_id, threads, verify_files, precision, cpu_arena, performance_hint)
    if name == "openvino":
        return _open_openvino(spec, threads, verify_files, precision, performance_hint)
    if name == "tensorrt":
        from .tensorrt import TensorRTBackend

        return TensorRTBackend(spec, device_id=device_id, verify_files=verify_files)
    from .onnxruntime import OnnxRuntimeBackend

    device = "cuda" if name == "onnxruntime-cuda" else "cpu"
    return OnnxRuntimeBackend(
        spec,
        device=device,
        device_id=device_id,
        threads=threads,
        verify_files=verify_files,
        precision=precision,
        cpu_arena=cpu_arena,
    )


def _open_auto(
    spec: ModelSpec,
    device_id: int,
    threads: int | None,
    verify_files: bool,
    precision: str | None,
    cpu_arena: bool = True,
    performance_hint: str = "LATENCY",
) -> Backend:
    """TensorRT when the export has an engine and TensorRT is installed (a mismatched engine is an
    error, not a reason to run slower), then ONNX Runtime CUDA, then on the CPU OpenVINO when the
    export has IR and OpenVINO is installed (measured faster), else ONNX Runtime CPU."""
    from .onnxruntime import OnnxRuntimeBackend, cuda_provider_available
    from .openvino import openvino_installed
    from .tensorrt import tensorrt_installed

    if spec.engine and tensorrt_installed():
        from .tensorrt import TensorRTBackend

        return TensorRTBackend(spec, device_id=device_id, verify_files=verify_files)

    def onnxruntime(device: str) -> Backend:
        return OnnxRuntimeBackend(
            spec, device, device_id=device_id, threads=threads, verify_files=verify_files,
            precision=precision, cpu_arena=cpu_arena,
        )  # fmt: skip

    def cpu() -> Backend:
        ir_fits = precision is None or precision in spec.openvino_models
        if spec.openvino_models and ir_fits and openvino_installed():
            return _open_openvino(spec, threads, verify_files, precision, performance_hint)
        return onnxruntime("cpu")

    if not cuda_provider_available():
        return cpu()
    return first_that_opens(lambda: onnxruntime("cuda"), cpu)


def _open_openvino(
    spec: ModelSpec, threads: int | None, verify_files: bool, precision: str | None, performance_hint: str
) -> Backend:
    from .openvino import OpenVinoBackend, default_cache_dir

    return OpenVinoBackend(
        spec,
        threads=threads,
        precision=precision,
        verify_files=verify_files,
        performance_hint=performance_hint,
        cache_dir=default_cache_dir(),
    )


def first_that_opens(preferred: Callable[[], Backend], fallback: Callable[[], Backend]) -> Backend:
    """`preferred`, or `fallback` with a warning that names why the preferred one is unavailable.
    Only `auto` falls back: a backend asked for by name keeps failing with its cause."""
    try:
        return preferred()
    except BackendUnavailable as err:
        warnings.warn(f"{err} Running on the CPU instead.", RuntimeWarning, stacklevel=3)
        return fallback()
