"""Is this machine able to build an engine? One sentence when it is not."""

from __future__ import annotations

from ..errors import ExportError

TENSORRT_INSTALL = (
    "pip install 'rmbg-toolkit[export,trt-cu12]' --extra-index-url https://pypi.nvidia.com (or "
    "[export,trt-cu13] for CUDA 13 on an R580+ driver), with NVIDIA's index reachable"
)
ONNX_ONLY_HINT = "; `rmbg-export ... --onnx-only` works on this machine"


def missing_build_requirement() -> str | None:
    """What is missing for an engine build, as a sentence fragment, or None."""
    try:
        import tensorrt  # noqa: F401
    except ImportError:
        return f"TensorRT is not installed (install it with `{TENSORRT_INSTALL}`)"
    try:
        from cuda.bindings import runtime as cudart
    except ImportError:
        return "cuda-python is not installed (pip install 'rmbg-toolkit[trt-cu12]' or [trt-cu13])"
    from rmbg_runtime.backends.cuda import cuda_failure

    err, count = cudart.cudaGetDeviceCount()
    if int(err) != 0:
        return cuda_failure("cudaGetDeviceCount", err).rstrip(".")
    if count == 0:
        return "no CUDA GPU is visible (check the NVIDIA driver and CUDA_VISIBLE_DEVICES)"
    return None


def require_build_environment() -> None:
    missing = missing_build_requirement()
    if missing:
        raise ExportError(f"cannot build a TensorRT engine: {missing}{ONNX_ONLY_HINT}.")
