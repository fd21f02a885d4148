"""`rmbg doctor`: which backends load on this machine (and, if not, why in one sentence), the CPU and
the instruction sets that decide CPU speed, and which backend `auto` picks for an export."""

from __future__ import annotations

import os
import platform
import shutil
import warnings
from dataclasses import dataclass
from pathlib import Path

from .errors import RmbgError

# The flags that decide which kernels OpenVINO and ONNX Runtime use (int8: VNNI; bf16; AMX tiles).
CPU_FLAGS = ("avx2", "avx512f", "avx512_vnni", "avx512_bf16", "amx_tile", "amx_int8", "amx_bf16")


@dataclass(frozen=True)
class BackendStatus:
    name: str
    loads: bool
    detail: str  # the version when it loads, else one sentence saying why not


@dataclass(frozen=True)
class CpuInfo:
    model: str
    cores: int
    flags: tuple[str, ...]  # those of CPU_FLAGS the CPU has


def cpu_info(cpuinfo: Path = Path("/proc/cpuinfo")) -> CpuInfo:
    model, flags = platform.processor() or platform.machine(), set()
    if cpuinfo.is_file():
        for line in cpuinfo.read_text(errors="replace").splitlines():
            key, _, value = line.partition(":")
            if key.strip() == "model name" and model in ("", platform.machine(), platform.processor()):
                model = value.strip()
            elif key.strip() == "flags" and not flags:
                flags = set(value.split())
    return CpuInfo(model, os.cpu_count() or 1, tuple(f for f in CPU_FLAGS if f in flags))


def nvidia_gpu_visible() -> bool:
    return Path("/dev/nvidiactl").exists() or shutil.which("nvidia-smi") is not None


def check_tensorrt() -> BackendStatus:
    from .backends.cuda import check, import_cudart
    from .backends.tensorrt import INSTALL

    try:
        import tensorrt as trt
    except ImportError:
        return BackendStatus("tensorrt", False, f"TensorRT is not installed; {INSTALL}.")
    if not nvidia_gpu_visible():
        return BackendStatus("tensorrt", False, "no NVIDIA GPU is visible on this machine.")
    try:  # an old driver for TensorRT's CUDA major shows here as cudaErrorInsufficientDriver
        count = check(import_cudart().cudaGetDeviceCount(), "cudaGetDeviceCount")
    except RmbgError as err:
        return BackendStatus("tensorrt", False, str(err))
    return BackendStatus("tensorrt", True, f"TensorRT {trt.__version__}, {count} GPU(s)")


def check_onnxruntime_cuda() -> BackendStatus:
    from .backends.onnxruntime import CUDA_LIBRARIES, INSTALL_GPU, preload_cuda_libraries

    try:
        import onnxruntime as ort
    except ImportError:
        return BackendStatus("onnxruntime-cuda", False, f"ONNX Runtime is not installed; {INSTALL_GPU}.")
    if "CUDAExecutionProvider" not in ort.get_available_providers():
        return BackendStatus(
            "onnxruntime-cuda", False, f"onnxruntime {ort.__version__} has no CUDA provider; {INSTALL_GPU}."
        )
    if not nvidia_gpu_visible():
        return BackendStatus("onnxruntime-cuda", False, "no NVIDIA GPU is visible on this machine.")
    preload_cuda_libraries(ort)
    missing = _missing_libraries(("libcudart.so.12", "libcublas.so.12", "libcudnn.so.9"))
    if missing:
        return BackendStatus(
            "onnxruntime-cuda",
            False,
            f"the CUDA/cuDNN libraries {', '.join(missing)} do not load; {CUDA_LIBRARIES}.",
        )
    return BackendStatus("onnxruntime-cuda", True, f"ONNX Runtime {ort.__version__} with CUDA")


def _missing_libraries(names: tuple[str, ...]) -> list[str]:
    import ctypes

    missing = []
    for name in names:
        try:
            ctypes.CDLL(name)
        except OSError:
            missing.append(name)
    return missing


def check_openvino() -> BackendStatus:
    from .backends.openvino import INSTALL

    try:
        import openvino as ov
    except ImportError:
        return BackendStatus("openvino", False, f"OpenVINO is not installed; {INSTALL}.")
    devices = ov.Core().available_devices
    if "CPU" not in devices:
        return BackendStatus(
            "openvino", False, f"OpenVINO {ov.get_version()} sees no CPU device ({devices})."
        )
    return BackendStatus("openvino", True, f"OpenVINO {ov.__version__.split('-')[0]} (CPU)")


def check_onnxruntime_cpu() -> BackendStatus:
    from .backends.onnxruntime import INSTALL_CPU

    try:
        import onnxruntime as ort
    except ImportError:
        return BackendStatus("onnxruntime-cpu", False, f"ONNX Runtime is not installed; {INSTALL_CPU}.")
    return BackendStatus("onnxruntime-cpu", True, f"ONNX Runtime {ort.__version__}")


def backend_statuses() -> list[BackendStatus]:
    """In the order `auto` prefers them."""
    return [check_tensorrt(), check_onnxruntime_cuda(), check_openvino(), check_onnxruntime_cpu()]


def auto_choice(model_dir: Path) -> str:
    """The backend `auto` opens for the export in `model_dir` (by opening it), or why none opens."""
    from .backends import BackendConfig, open_backend
    from .metadata import read_model_spec

    try:
        spec = read_model_spec(model_dir)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            backend = open_backend(spec, BackendConfig(verify_files=False))
    except RmbgError as err:
        return f"none: {err}"
    name = backend.name
    close = getattr(backend, "close", None)
    if close is not None:
        close()
    return name


def report(model_dir: Path | None = None) -> list[str]:
    cpu = cpu_info()
    flags = " ".join(cpu.flags) or "none of " + ", ".join(CPU_FLAGS)
    lines = [f"CPU: {cpu.model}, {cpu.cores} cores; flags: {flags}"]
    for status in backend_statuses():
        lines.append(f"{status.name:<17} {'loads' if status.loads else 'no':<6} {status.detail}")
    if model_dir is not None:
        lines.append(f"auto for {model_dir}: {auto_choice(model_dir)}")
    return lines
