"""ONNX Runtime backend (CPU or CUDA). On the CPU the int8 graph where the export made one (it
passed the export's accuracy gate against fp32), else fp32; on CUDA the export's precision."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ..contract import ModelSpec
from ..errors import BackendError, BackendUnavailable, ModelError
from ..metadata import verify_file
from . import BackendConfig, ClosingBackend, run_in_slices

INSTALL_CPU = "pip install 'rmbg-toolkit[ort]'"
INSTALL_GPU = "pip uninstall onnxruntime && pip install 'rmbg-toolkit[ort-gpu]'"
CUDA_LIBRARIES = "pip install 'onnxruntime-gpu[cuda,cudnn]' or install CUDA 12 and cuDNN 9 system-wide"


def _import_ort():
    try:
        import onnxruntime
    except ImportError:
        raise BackendUnavailable(f"ONNX Runtime is not installed; {INSTALL_CPU} (or [ort-gpu]).") from None
    return onnxruntime


def cuda_provider_available() -> bool:
    """Whether the CUDA provider is compiled in; not whether its CUDA/cuDNN libraries load."""
    try:
        import onnxruntime
    except ImportError:
        return False
    return "CUDAExecutionProvider" in onnxruntime.get_available_providers()


def preload_cuda_libraries(ort) -> None:
    """Load CUDA and cuDNN from the nvidia-* wheels where onnxruntime offers it (1.21+); a failure
    shows up as the session falling back to CPU, reported there."""
    preload = getattr(ort, "preload_dlls", None)
    if preload is not None:
        try:
            preload()
        except Exception:  # noqa: BLE001 - the session's own check below names the problem
            pass


def default_precision(spec: ModelSpec, device: str) -> str:
    if device == "cuda":
        return spec.precision if spec.precision in spec.graphs else "fp32"
    return "int8" if "int8" in spec.graphs else "fp32"  # int8 graphs are QDQ for the CPU provider


def check_graph_matches_spec(session, spec: ModelSpec, path: Path) -> None:
    """model.json's tensor names and input size against the graph's own, at load rather than as an
    InvalidArgument at the first run."""
    inputs = {i.name: i.shape for i in session.get_inputs()}
    outputs = [o.name for o in session.get_outputs()]
    if spec.input_name not in inputs or spec.output_name not in outputs:
        raise ModelError(
            f"{spec.folder}/model.json names the tensors {spec.input_name!r} -> {spec.output_name!r} but "
            f"{path.name} has {', '.join(inputs)} -> {', '.join(outputs)}; model.json does not belong to "
            "this graph: run `rmbg-export` again for this folder."
        )
    graph_hw = inputs[spec.input_name][2:]
    fixed = [d for d in graph_hw if isinstance(d, int)]
    if len(fixed) == 2 and tuple(fixed) != (spec.height, spec.width):
        raise ModelError(
            f"{spec.folder}/model.json says the input is {spec.height}x{spec.width} (HxW) but {path.name} "
            f"takes {fixed[0]}x{fixed[1]}; model.json is wrong for this graph: run `rmbg-export` again "
            f"for this folder (with --resolution {fixed[0]}x{fixed[1]} to keep the graph's size)."
        )


class OnnxRuntimeBackend(ClosingBackend):
    def __init__(self, spec: ModelSpec, config: BackendConfig | None = None, *, device: str = "cpu") -> None:
        """`config.precision`: which graph to run (fp32 / fp16 / int8); default: `default_precision`.
        `config.cpu_arena=False` (CPU only): no memory arena, whose size never shrinks from the largest
        batch run; a long-running server then returns memory between requests."""
        config = config or BackendConfig()
        ort = _import_ort()
        if device == "cuda" and not cuda_provider_available():
            raise BackendUnavailable(
                f"ONNX Runtime has no CUDA provider here (onnxruntime {ort.__version__}); {INSTALL_GPU}, "
                "or pick the onnxruntime-cpu backend."
            )
        precision = config.precision or default_precision(spec, device)
        path = spec.graph_path(precision)
        if config.verify_files:
            verify_file(path, spec.graph(precision).sha256)
        arena = config.cpu_arena or device != "cpu"
        self.session = _session(ort, path, device, config.device_id, config.engine_threads, arena)
        check_graph_matches_spec(self.session, spec, path)
        self.name = f"onnxruntime-{device} ({precision} graph)"
        self.max_batch = spec.max_batch
        self.input_name, self.output_name = spec.input_name, spec.output_name
        threads = self.session.get_session_options().intra_op_num_threads
        self.engine_threads = threads or None  # 0: ONNX Runtime's default, one per core

    def run(self, batch: np.ndarray) -> np.ndarray:
        if self.session is None:
            raise BackendError("this ONNX Runtime backend was closed; open a new one.")
        return run_in_slices(batch, self.max_batch, self._run_slice)

    def _run_slice(self, batch: np.ndarray) -> np.ndarray:
        try:
            return self.session.run([self.output_name], {self.input_name: batch})[0]
        except Exception as err:  # noqa: BLE001 - ONNX Runtime raises its own untyped errors
            cause = str(err).splitlines()[0][:200] if str(err) else type(err).__name__
            raise BackendError(
                f"{self.name} failed while running ({cause}); check the device and its free memory, "
                "then restart."
            ) from None

    def close(self) -> None:
        self.session = None  # ONNX Runtime frees the session's memory with its last reference


def _session(ort, path, device: str, device_id: int, threads: int | None, arena: bool = True):
    if device == "cuda":
        preload_cuda_libraries(ort)
    options = ort.SessionOptions()
    options.log_severity_level = 4  # a failed run is reported by run() in one sentence, not logged
    options.enable_cpu_mem_arena = arena
    if threads:
        options.intra_op_num_threads = threads
    providers = [("CUDAExecutionProvider", {"device_id": device_id})] if device == "cuda" else []
    try:
        session = ort.InferenceSession(str(path), options, providers=[*providers, "CPUExecutionProvider"])
    except Exception as err:  # noqa: BLE001 - ONNX Runtime raises its own untyped errors
        raise ModelError(
            f"ONNX Runtime {ort.__version__} cannot load {path.name} ({str(err).splitlines()[0][:200]}); "
            "upgrade onnxruntime (1.25 or later runs DeformConv) or re-export with --deform-conv grid_sample."
        ) from None
    if device == "cuda" and session.get_providers()[0] != "CUDAExecutionProvider":
        raise BackendUnavailable(
            f"ONNX Runtime {ort.__version__} has its CUDA provider but could not load the CUDA or cuDNN "
            f"libraries it needs; {CUDA_LIBRARIES}, or pick the onnxruntime-cpu backend."
        )
    return session
