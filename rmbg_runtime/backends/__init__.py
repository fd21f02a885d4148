"""Inference backends. Each maps a float32 (B, 3, H, W) batch to (B, 1, H, W) probabilities, splits
a batch larger than its `max_batch` itself, and holds its device resources until `close()` (or the
end of a `with` block).

`BackendConfig` is the one description of which backend to open and how; every entry point (the
`rmbg` commands, `rmbg serve`, Triton's network model, `Remover`) builds one and passes it whole.
Heavy imports (onnxruntime, tensorrt, cuda-python) happen only when a backend is opened.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol

import numpy as np

from ..contract import RUN_PRECISIONS
from ..errors import BackendUnavailable
from ..metadata import ModelSpec

BACKENDS = ("auto", "tensorrt", "onnxruntime-cuda", "openvino", "onnxruntime-cpu")
PRECISIONS = RUN_PRECISIONS  # the ONNX graphs an export may hold, and bf16 (OpenVINO only)
ALIASES = {
    "trt": "tensorrt",
    "ort-cuda": "onnxruntime-cuda",
    "cuda": "onnxruntime-cuda",
    "ort-cpu": "onnxruntime-cpu",
    "cpu": "onnxruntime-cpu",
    "onnxruntime": "onnxruntime-cpu",
    "ov": "openvino",
}


@dataclass(frozen=True)
class BackendConfig:
    """Which backend to open and how.

    name: one of BACKENDS or ALIASES. device_id: the GPU. engine_threads: the engine's own intra-op
    threads (ONNX Runtime; None: its default, every core), not the CPU-stage pool. precision: the
    ONNX graph ONNX Runtime runs (PRECISIONS; None: `onnxruntime.default_precision`); TensorRT runs
    its engine. verify_files: check the graph's or engine's SHA-256 against model.json. cpu_arena:
    False turns ONNX Runtime's CPU memory arena off (a server then returns memory between requests).
    engine_options: settings one engine alone understands, by name (room for later backends).
    """

    name: str = "auto"
    device_id: int = 0
    engine_threads: int | None = None
    precision: str | None = None
    verify_files: bool = True
    cpu_arena: bool = True
    engine_options: dict[str, str] = field(default_factory=dict, hash=False, compare=True)

    @property
    def resolved_name(self) -> str:
        return ALIASES.get(self.name, self.name)


class Backend(Protocol):
    name: str
    max_batch: int
    engine_threads: int | None  # intra-op threads the engine runs with, read back; None: its own choice

    def run(self, batch: np.ndarray) -> np.ndarray: ...

    def close(self) -> None:
        """Release the device memory, sessions and contexts; `run` after it raises."""

    def __enter__(self) -> Backend: ...

    def __exit__(self, *exc_info) -> None: ...


class ClosingBackend:
    """`with backend:` closes it at the end of the block (the context-manager half of Backend)."""

    def close(self) -> None:
        pass

    def __enter__(self):
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()


def batch_slices(total: int, max_batch: int) -> list[slice]:
    """Consecutive slices of at most max_batch items covering range(total)."""
    return [slice(start, min(start + max_batch, total)) for start in range(0, total, max_batch)]


def run_in_slices(batch: np.ndarray, max_batch: int, run: Callable[[np.ndarray], np.ndarray]) -> np.ndarray:
    """`run` over slices of at most `max_batch` images, concatenated: how a backend takes any batch."""
    if len(batch) <= max_batch:
        return run(batch)
    return np.concatenate([run(batch[part]) for part in batch_slices(len(batch), max(1, max_batch))])


def open_backend(spec: ModelSpec, config: BackendConfig | None = None) -> Backend:
    """The backend `config` names, opened on the export `spec`; only `auto` falls back."""
    config = config or BackendConfig()
    name = config.resolved_name
    if name not in BACKENDS:
        raise BackendUnavailable(f"backend {name!r} is unknown; choose one of {', '.join(BACKENDS)}.")
    if name == "auto":
        return _open_auto(spec, config)
    if name == "openvino":
        return _open_openvino(spec, config)
    if name == "tensorrt":
        from .tensorrt import TensorRTBackend

        return TensorRTBackend(spec, config)
    from .onnxruntime import OnnxRuntimeBackend

    return OnnxRuntimeBackend(spec, config, device="cuda" if name == "onnxruntime-cuda" else "cpu")


def _open_auto(spec: ModelSpec, config: BackendConfig) -> Backend:
    """TensorRT when the export has an engine and TensorRT is installed (a mismatched engine is an
    error, not a reason to run slower), then ONNX Runtime CUDA, then on the CPU OpenVINO when the
    export has IR and OpenVINO is installed (measured faster), else ONNX Runtime CPU."""
    from .onnxruntime import OnnxRuntimeBackend, cuda_provider_available
    from .openvino import openvino_installed
    from .tensorrt import tensorrt_installed

    if spec.engine and tensorrt_installed():
        from .tensorrt import TensorRTBackend

        return TensorRTBackend(spec, config)

    def onnxruntime(device: str) -> Backend:
        return OnnxRuntimeBackend(spec, config, device=device)

    def cpu() -> Backend:
        ir_fits = config.precision is None or config.precision in spec.openvino_models
        if spec.openvino_models and ir_fits and openvino_installed():
            return _open_openvino(spec, config)
        return onnxruntime("cpu")

    if not cuda_provider_available():
        return cpu()
    return first_that_opens(lambda: onnxruntime("cuda"), cpu)


def _open_openvino(spec: ModelSpec, config: BackendConfig) -> Backend:
    from .openvino import OpenVinoBackend

    return OpenVinoBackend(spec, config)


def first_that_opens(preferred: Callable[[], Backend], fallback: Callable[[], Backend]) -> Backend:
    """`preferred`, or `fallback` with a warning that names why the preferred one is unavailable.
    Only `auto` falls back: a backend asked for by name keeps failing with its cause."""
    try:
        return preferred()
    except BackendUnavailable as err:
        warnings.warn(f"{err} Running on the CPU instead.", RuntimeWarning, stacklevel=3)
        return fallback()
