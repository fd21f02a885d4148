"""TensorRT backend: `tensorrt` plus `cuda.bindings.runtime` (cuda-python), no torch.

Device and pinned host buffers (backends/cuda.py) are allocated once at the profile's maximum batch;
each call copies in, sets the input shape, checks the output shape, enqueues on a non-default stream
and copies out. Larger batches are split. Loading refuses an engine built for another GPU or
TensorRT version, or whose bytes differ from what the export recorded.

NOT YET RUN on a GPU (no TensorRT on the development and CI machines): the decisions (refusals,
splitting, shape checks, use after close) are tested on CPU; the CUDA / TensorRT calls must be
checked first where they exist (scripts/gpu_check.py, pytest -m gpu).
"""

from __future__ import annotations

import importlib.util
import threading

import numpy as np

from ..contract import EngineRecord, ModelSpec
from ..errors import BackendError, BackendUnavailable, ModelError, RmbgError
from ..metadata import verify_file
from . import BackendConfig, ClosingBackend, run_in_slices
from .cuda import DeviceBuffers, check, gpu_name, import_cudart

REBUILD = "rebuild it on this machine with `rmbg-export SOURCE --output DIR`"
INSTALL = (
    "pip install 'rmbg-toolkit[trt-cu12]' (CUDA 12) or '[trt-cu13]' (CUDA 13, driver R580+) with "
    "--extra-index-url https://pypi.nvidia.com (TensorRT comes from NVIDIA's index)"
)
_LOGGER = None
_LOGGER_LOCK = threading.Lock()


def tensorrt_installed() -> bool:
    return importlib.util.find_spec("tensorrt") is not None


def tensorrt_logger(trt):
    """The process's one TensorRT logger: TensorRT keeps a single logger pointer per process, so the
    builder and every runtime must share it."""
    global _LOGGER
    with _LOGGER_LOCK:
        if _LOGGER is None:
            _LOGGER = trt.Logger(trt.Logger.WARNING)
        return _LOGGER


def engine_mismatches(recorded: EngineRecord, current: dict) -> list[str]:
    """What differs between the machine an engine was built on and this one."""
    problems = []
    for key, label in (
        ("tensorrt_version", "TensorRT"),
        ("gpu_name", "GPU"),
        ("compute_capability", "compute capability"),
    ):
        built_for = getattr(recorded, key)
        if str(built_for) != str(current.get(key)):
            problems.append(f"{label} {built_for} (this machine: {current.get(key)})")
    return problems


def refusal_sentence(engine_name: str, problems: list[str]) -> str:
    return f"{engine_name} was built for {', '.join(problems)}; {REBUILD}."


def check_output_shape(actual, expected: tuple[int, ...]) -> None:
    """The engine's output shape for the input just set must be what the buffers hold."""
    if tuple(int(d) for d in actual) != tuple(expected):
        raise BackendError(
            f"the engine's output shape {tuple(actual)} is not the expected {tuple(expected)}; {REBUILD}."
        )


class TensorRTBackend(ClosingBackend):
    def __init__(self, spec: ModelSpec, config: BackendConfig | None = None) -> None:
        """`config`'s device_id and verify_files apply; TensorRT runs its engine's precision with
        its own threads, so engine_threads, precision and cpu_arena do not."""
        config = config or BackendConfig()
        device_id = config.device_id
        record = spec.engine
        if record is None:
            raise ModelError(f"{spec.folder} has no TensorRT engine (exported with --onnx-only); {REBUILD}.")
        path = spec.folder / record.path
        if config.verify_files:
            verify_file(path, record.sha256)
        trt, cudart = self._import()
        check(cudart.cudaSetDevice(device_id), f"cudaSetDevice({device_id})")
        current = self.device_facts(cudart, device_id) | {"tensorrt_version": trt.__version__}
        problems = engine_mismatches(record, current)
        if problems:
            raise ModelError(refusal_sentence(path.name, problems))
        self.name = f"tensorrt ({record.precision}, {current['gpu_name']})"
        self.input_name, self.output_name = spec.input_name, spec.output_name
        self.max_batch = record.max_batch
        self.engine_threads: int | None = None  # TensorRT runs on the GPU; no intra-op threads to set
        self.image_shape = (3, spec.height, spec.width)
        self.mask_shape = (1, spec.height, spec.width)
        self._buffers: DeviceBuffers | None = None
        self._load(trt, cudart, path, record)

    @staticmethod
    def _import():
        try:
            import tensorrt as trt
        except ImportError:
            raise BackendUnavailable(f"TensorRT is not installed; {INSTALL}.") from None
        return trt, import_cudart()

    @staticmethod
    def device_facts(cudart, device_id: int) -> dict:
        props = check(cudart.cudaGetDeviceProperties(device_id), "cudaGetDeviceProperties")
        return {"gpu_name": gpu_name(props), "compute_capability": f"{props.major}.{props.minor}"}

    def _load(self, trt, cudart, path, record: EngineRecord) -> None:
        logger = tensorrt_logger(trt)
        if record.plugins:
            trt.init_libnvinfer_plugins(logger, "")
        self._runtime = trt.Runtime(logger)
        self._engine = self._runtime.deserialize_cuda_engine(path.read_bytes())
        if self._engine is None:
            raise ModelError(f"TensorRT could not load {path.name}; {REBUILD}.")
        names = {self._engine.get_tensor_name(i) for i in range(self._engine.num_io_tensors)}
        if {self.input_name, self.output_name} - names:
            raise ModelError(f"{path.name} lacks tensors {self.input_name}/{self.output_name}; {REBUILD}.")
        for name in (self.input_name, self.output_name):
            if self._engine.get_tensor_dtype(name) != trt.DataType.FLOAT:
                raise ModelError(
                    f"{path.name} has a non-float32 tensor {name!r}, against model.json; {REBUILD}."
                )
        self._context = self._engine.create_execution_context()
        if self._context is None:
            raise RmbgError(
                f"TensorRT could not create an execution context for {path.name} (GPU memory is short); "
                "free the GPU or rebuild with a smaller --max-batch."
            )
        shapes = {self.input_name: self.image_shape, self.output_name: self.mask_shape}
        self._buffers = DeviceBuffers(cudart, shapes, self.max_batch)
        for name, address in self._buffers.device.items():
            self._context.set_tensor_address(name, address)

    def run(self, batch: np.ndarray) -> np.ndarray:
        if self._buffers is None or self._buffers.closed:
            raise BackendError("this TensorRT backend was closed; open a new one.")
        batch = np.ascontiguousarray(batch, dtype=np.float32)
        if batch.shape[1:] != self.image_shape:
            raise RmbgError(f"input batch {batch.shape} does not match the engine's (N, {self.image_shape}).")
        return run_in_slices(batch, self.max_batch, self._run_chunk)

    def _run_chunk(self, chunk: np.ndarray) -> np.ndarray:
        n, buffers = chunk.shape[0], self._buffers
        buffers.upload(self.input_name, chunk)
        if not self._context.set_input_shape(self.input_name, chunk.shape):
            raise BackendError(
                f"the engine refused input shape {chunk.shape}; {REBUILD} with a larger --max-batch."
            )
        check_output_shape(self._context.get_tensor_shape(self.output_name), (n, *self.mask_shape))
        if not self._context.execute_async_v3(int(buffers.stream)):
            raise BackendError(
                "TensorRT failed to enqueue inference (execute_async_v3 returned False); check the GPU "
                "and its free memory, then restart."
            )
        return buffers.download(self.output_name, n)

    def close(self) -> None:
        """Release in dependency order: context, engine, runtime, then the buffers and stream (the
        CUDA memory), at once rather than whenever the garbage collector reaches this object."""
        for attr in ("_context", "_engine", "_runtime"):
            if hasattr(self, attr):
                setattr(self, attr, None)
        if getattr(self, "_buffers", None) is not None:
            self._buffers.close()

    def __del__(self) -> None:
        try:
            self.close()
        except Exception:  # noqa: BLE001 - interpreter shutdown may have unloaded cuda already
            pass
