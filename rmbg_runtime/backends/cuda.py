"""Pinned host and device buffers on one CUDA stream, through cuda-python alone (no torch).

The TensorRT backend's memory layer, kept apart so that a machine with CUDA but no TensorRT can
test it (tests/test_gpu.py). cuda-python calls return (err, *values); every error becomes one
sentence that names the cudaError and the fix.
"""

from __future__ import annotations

import ctypes

import numpy as np

from ..errors import BackendUnavailable, RmbgError

CUDA12_STACK = "pip install 'rmbg-toolkit[trt-cu12]' (TensorRT and cuda-python for CUDA 12)"


def cuda_error_name(err) -> str:
    return getattr(err, "name", None) or str(err)


def cuda_failure(what: str, err) -> str:
    """One sentence for a failed CUDA call, with the fix for the errors a user can cause."""
    name = cuda_error_name(err)
    if name == "cudaErrorInsufficientDriver":
        return (
            f"{what} failed with {name}: the NVIDIA driver is older than the CUDA that the installed "
            f"cuda-python needs (CUDA 13 needs driver R580 or later); update the driver, or {CUDA12_STACK}."
        )
    if name in ("cudaErrorNoDevice", "cudaErrorInvalidDevice"):
        return f"{what} failed with {name}: no usable CUDA GPU is visible; check the driver and CUDA_VISIBLE_DEVICES."  # noqa: E501
    if name == "cudaErrorMemoryAllocation":
        return f"{what} failed with {name}: the GPU is out of memory; lower --max-batch or free the GPU."
    return f"{what} failed with {name}; check the NVIDIA driver and the GPU's state."


def gpu_name(props) -> str:
    """The device name from cudaGetDeviceProperties: bytes or str, padded with NULs by the driver."""
    name = props.name.decode() if isinstance(props.name, bytes) else str(props.name)
    return name.rstrip("\x00")


def check(result, what: str):
    """cuda-python's (err, *values) -> values, raising one sentence on an error."""
    err, *values = result if isinstance(result, tuple) else (result,)
    if int(err) != 0:
        raise RmbgError(cuda_failure(what, err))
    if not values:
        return None
    return values[0] if len(values) == 1 else values


def import_cudart():
    try:
        from cuda.bindings import runtime as cudart
    except ImportError:
        raise BackendUnavailable(
            f"cuda-python is not installed; {CUDA12_STACK}, or [trt-cu13] on an R580+ driver."
        ) from None
    return cudart


class DeviceBuffers:
    """For each named tensor, a pinned host array and a device buffer of `max_items` items, with
    asynchronous copies on one non-default stream. `close()` is idempotent; use after it is an error.

    NOT YET RUN on a GPU at the time of writing: tests/test_gpu.py::test_device_buffers_round_trip
    checks it first where CUDA exists."""

    def __init__(self, cudart, item_shapes: dict[str, tuple[int, ...]], max_items: int) -> None:
        self._cudart, self.max_items = cudart, max_items
        self._allocations: list[tuple[str, int]] = []
        self.host: dict[str, np.ndarray] = {}
        self.device: dict[str, int] = {}
        self.item_shapes = dict(item_shapes)
        self.stream = check(cudart.cudaStreamCreate(), "cudaStreamCreate")
        try:
            for name, shape in self.item_shapes.items():
                self._allocate(name, shape)
        except RmbgError:
            self.close()
            raise

    def _allocate(self, name: str, item_shape: tuple[int, ...]) -> None:
        count = self.max_items * int(np.prod(item_shape))
        host_ptr = check(self._cudart.cudaMallocHost(count * 4), "cudaMallocHost")
        self._allocations.append(("host", int(host_ptr)))
        device_ptr = check(self._cudart.cudaMalloc(count * 4), "cudaMalloc")
        self._allocations.append(("device", int(device_ptr)))
        host = np.ctypeslib.as_array((ctypes.c_float * count).from_address(int(host_ptr)))
        self.host[name] = host.reshape(self.max_items, *item_shape)
        self.device[name] = int(device_ptr)

    @property
    def closed(self) -> bool:
        return self.stream is None

    def _require_open(self) -> None:
        if self.closed:
            raise RmbgError("the GPU buffers were released (the backend was closed); open a new one.")

    def upload(self, name: str, array: np.ndarray) -> None:
        """Copy `array` (n items, n <= max_items) to the device, asynchronously."""
        self._require_open()
        shape, n = self.item_shapes[name], array.shape[0]
        if n > self.max_items or array.shape[1:] != shape:
            raise RmbgError(f"{array.shape} does not fit the {name!r} buffer ({self.max_items}, *{shape}).")
        self.host[name][:n] = array
        host = self.host[name]
        self._copy(self.device[name], host.ctypes.data, n * host[0].nbytes, "HostToDevice")

    def download(self, name: str, n: int) -> np.ndarray:
        """The first `n` items of the device buffer, after the stream's work before it is done."""
        self._require_open()
        host = self.host[name]
        self._copy(host.ctypes.data, self.device[name], n * host[0].nbytes, "DeviceToHost")
        check(self._cudart.cudaStreamSynchronize(self.stream), "cudaStreamSynchronize")
        return host[:n].copy()

    def _copy(self, destination: int, source: int, nbytes: int, direction: str) -> None:
        kind = getattr(self._cudart.cudaMemcpyKind, f"cudaMemcpy{direction}")
        check(
            self._cudart.cudaMemcpyAsync(destination, source, nbytes, kind, self.stream),
            f"cudaMemcpyAsync ({direction})",
        )

    def close(self) -> None:
        """Free device memory, then pinned host memory, then the stream; safe to call twice."""
        if self.stream is not None:
            self._cudart.cudaStreamSynchronize(self.stream)
        for kind, ptr in sorted(self._allocations, key=lambda a: a[0] != "device"):
            (self._cudart.cudaFree if kind == "device" else self._cudart.cudaFreeHost)(ptr)
        self._allocations, self.host, self.device = [], {}, {}
        if self.stream is not None:
            self._cudart.cudaStreamDestroy(self.stream)
            self.stream = None
