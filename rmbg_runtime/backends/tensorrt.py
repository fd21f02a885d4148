"""TensorRT backend: `tensorrt` plus `cuda.bindings.runtime` (cuda-python), no torch.

Device and pinned host buffers are allocated once at the profile's maximum batch; each call copies
in, sets the input shape, enqueues on a non-default stream and copies out asynchronously. Larger
batches are split. Loading refuses an engine built for another GPU or TensorRT version, or whose
bytes differ from what the export recorded.

NOT YET RUN on a GPU (no TensorRT on the development and CI machines): the decisions (refusals,
splitting) are tested on CPU; the CUDA / TensorRT calls must be checked first where they exist
(scripts/gpu_check.py, pytest -m gpu).
"""

from __future__ import annotations

import ctypes
import importlib.util

import numpy as np

from ..errors import BackendUnavailable, ModelError, RmbgError
from ..metadata import ModelSpec, verify_file

REBUILD = "rebuild it on this machine with `rmbg-export SOURCE --output DIR`"
INSTALL = (
    "pip install 'rmbg-toolkit[trt]' --extra-index-url https://pypi.nvidia.com (TensorRT comes from "
    "NVIDIA's index)"
)


def tensorrt_installed() -> bool:
    return importlib.util.find_spec("tensorrt") is not None


def engine_mismatches(recorded: dict, current: dict) -> list[str]:
    """What differs between the machine an engine was built on and this one."""
    problems = []
    for key, label in (
        ("tensorrt_version", "TensorRT"),
        ("gpu_name", "GPU"),
        ("compute_capability", "compute capability"),
    ):
        if str(recorded.get(key)) != str(current.get(key)):
            problems.append(f"{label} {recorded.get(key)} (this machine: {current.get(key)})")
    return problems


def refusal_sentence(engine_name: str, problems: list[str]) -> str:
    return f"{engine_name} was built for {', '.join(problems)}; {REBUILD}."


def batch_slices(total: int, max_batch: int) -> list[slice]:
    """Consecutive slices of at most max_batch items covering range(total)."""
    return [slice(start, min(start + max_batch, total)) for start in range(0, total, max_batch)]


def _check(result, what: str):
    """cuda-python returns (err, *values); raise on a non-zero error."""
    err, *values = result if isinstance(result, tuple) else (result,)
    if int(err) != 0:
        raise RmbgError(f"CUDA call {what} failed with {err}; check the driver and the GPU's free memory.")
    return values[0] if len(values) == 1 else values


class TensorRTBackend:
    def __init__(self, spec: ModelSpec, *, device_id: int = 0, verify_files: bool = True) -> None:
        engine_meta = spec.engine
        if not engine_meta:
            raise ModelError(f"{spec.folder} has no TensorRT engine (exported with --onnx-only); {REBUILD}.")
        path = spec.folder / engine_meta["path"]
        if verify_files:
            verify_file(path, engine_meta["sha256"])
        trt, cudart = self._import()
        _check(cudart.cudaSetDevice(device_id), "cudaSetDevice")
        current = self.device_facts(cudart, device_id) | {"tensorrt_version": trt.__version__}
        problems = engine_mismatches(engine_meta, current)
        if problems:
            raise ModelError(refusal_sentence(path.name, problems))
        self.name = f"tensorrt ({engine_meta.get('precision', '?')}, {current['gpu_name']})"
        self._cudart = cudart
        self._buffers: list[tuple[str, int]] = []
        self._load(trt, path, engine_meta, spec)

    @staticmethod
    def _import():
        try:
            import tensorrt as trt
        except ImportError:
            raise BackendUnavailable(f"TensorRT is not installed; {INSTALL}.") from None
        try:
            from cuda.bindings import runtime as cudart
        except ImportError:
            raise BackendUnavailable(
                "cuda-python is not installed; pip install 'cuda-python>=12.6.1'."
            ) from None
        return trt, cudart

    @staticmethod
    def device_facts(cudart, device_id: int) -> dict:
        props = _check(cudart.cudaGetDeviceProperties(device_id), "cudaGetDeviceProperties")
        name = props.name.decode() if isinstance(props.name, bytes) else str(props.name)
        return {"gpu_name": name.rstrip("\x00"), "compute_capability": f"{props.major}.{props.minor}"}

    def _load(self, trt, path, engine_meta: dict, spec: ModelSpec) -> None:
        self._logger = trt.Logger(trt.Logger.WARNING)
        if engine_meta.get("plugins"):
            trt.init_libnvinfer_plugins(self._logger, "")
        self._runtime = trt.Runtime(self._logger)
        self._engine = self._runtime.deserialize_cuda_engine(path.read_bytes())
        if self._engine is None:
            raise ModelError(f"TensorRT could not load {path.name}; {REBUILD}.")
        names = {self._engine.get_tensor_name(i) for i in range(self._engine.num_io_tensors)}
        if {spec.input_name, spec.output_name} - names:
            raise ModelError(f"{path.name} lacks tensors {spec.input_name}/{spec.output_name}; {REBUILD}.")
        for name in (spec.input_name, spec.output_name):
            if self._engine.get_tensor_dtype(name) != trt.DataType.FLOAT:
                raise ModelError(
                    f"{path.name} has a non-float32 tensor {name!r}, against model.json; {REBUILD}."
                )
        self._context = self._engine.create_execution_context()
        self.input_name, self.output_name = spec.input_name, spec.output_name
        self.max_batch = int(engine_meta["profile"]["max"][0])
        self.image_shape = (3, spec.height, spec.width)
        self.mask_shape = (1, spec.height, spec.width)
        self._stream = _check(self._cudart.cudaStreamCreate(), "cudaStreamCreate")
        self._host_in, self._dev_in = self._allocate(self.image_shape)
        self._host_out, self._dev_out = self._allocate(self.mask_shape)
        self._context.set_tensor_address(self.input_name, self._dev_in)
        self._context.set_tensor_address(self.output_name, self._dev_out)

    def _allocate(self, item_shape: tuple[int, ...]) -> tuple[np.ndarray, int]:
        """Pinned host array and device buffer for max_batch float32 items."""
        count = self.max_batch * int(np.prod(item_shape))
        nbytes = count * 4
        host_ptr = _check(self._cudart.cudaMallocHost(nbytes), "cudaMallocHost")
        self._buffers.append(("host", host_ptr))
        device_ptr = _check(self._cudart.cudaMalloc(nbytes), "cudaMalloc")
        self._buffers.append(("device", device_ptr))
        host = np.ctypeslib.as_array((ctypes.c_float * count).from_address(int(host_ptr)))
        return host.reshape(self.max_batch, *item_shape), int(device_ptr)

    def run(self, batch: np.ndarray) -> np.ndarray:
        batch = np.ascontiguousarray(batch, dtype=np.float32)
        if batch.shape[1:] != self.image_shape:
            raise RmbgError(f"input batch {batch.shape} does not match the engine's (N, {self.image_shape}).")
        out = np.empty((batch.shape[0], *self.mask_shape), dtype=np.float32)
        for part in batch_slices(batch.shape[0], self.max_batch):
            out[part] = self._run_chunk(batch[part])
        return out

    def _run_chunk(self, chunk: np.ndarray) -> np.ndarray:
        cudart, n = self._cudart, chunk.shape[0]
        self._host_in[:n] = chunk
        in_bytes, out_bytes = chunk.nbytes, n * int(np.prod(self.mask_shape)) * 4
        h2d, d2h = cudart.cudaMemcpyKind.cudaMemcpyHostToDevice, cudart.cudaMemcpyKind.cudaMemcpyDeviceToHost
        _check(
            cudart.cudaMemcpyAsync(self._dev_in, self._host_in.ctypes.data, in_bytes, h2d, self._stream),
            "cudaMemcpyAsync H2D",
        )
        if not self._context.set_input_shape(self.input_name, chunk.shape):
            raise RmbgError(
                f"the engine refused input shape {chunk.shape}; {REBUILD} with a larger --max-batch."
            )
        if not self._context.execute_async_v3(int(self._stream)):
            raise RmbgError("TensorRT failed to enqueue inference (execute_async_v3 returned False).")
        _check(
            cudart.cudaMemcpyAsync(self._host_out.ctypes.data, self._dev_out, out_bytes, d2h, self._stream),
            "cudaMemcpyAsync D2H",
        )
        _check(cudart.cudaStreamSynchronize(self._stream), "cudaStreamSynchronize")
        return self._host_out[:n].copy()

    def close(self) -> None:
        for kind, ptr in reversed(getattr(self, "_buffers", [])):
            (self._cudart.cudaFreeHost if kind == "host" else self._cudart.cudaFree)(ptr)
        self._buffers = []
        if getattr(self, "_stream", None) is not None:
            self._cudart.cudaStreamDestroy(self._stream)
            self._stream = None

    def __del__(self) -> None:
        try:
            self.close()
        except Exception:  # noqa: BLE001 - interpreter shutdown may have unloaded cuda already
            pass
