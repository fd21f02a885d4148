"""OpenVINO backend (CPU): runs the export's OpenVINO IR (`rmbg-export --openvino`): the int8 IR
where the export made one, else the fp32 IR in bf16 arithmetic where the export gated it and this CPU
has it, else in fp32 (each passed the export's gate against the fp32 graph)."""

from __future__ import annotations

import os
import threading
from pathlib import Path

import numpy as np

from ..contract import OPENVINO_ARITHMETIC, ModelSpec
from ..errors import BackendError, BackendUnavailable, ModelError
from ..metadata import verify_file
from . import BackendConfig, ClosingBackend, run_in_slices

INSTALL = "pip install 'rmbg-toolkit[openvino]'"
PERFORMANCE_HINTS = ("LATENCY", "THROUGHPUT")
CACHE_ENV = "RMBG_OPENVINO_CACHE_DIR"  # "" turns the cache of compiled models off


def default_cache_dir() -> str | None:
    """Where compiled models are kept: $RMBG_OPENVINO_CACHE_DIR, else ~/.cache/rmbg-toolkit/openvino
    (OpenVINO names each blob by the model and device, so one folder serves every export)."""
    value = os.environ.get(CACHE_ENV)
    if value is not None:
        return value or None
    return str(Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "rmbg-toolkit" / "openvino")


def _import_openvino():
    try:
        import openvino
    except ImportError:
        raise BackendUnavailable(f"OpenVINO is not installed; {INSTALL}.") from None
    return openvino


def openvino_installed() -> bool:
    try:
        import openvino  # noqa: F401
    except ImportError:
        return False
    return True


def _settings(config: BackendConfig, arithmetic: str) -> dict:
    performance_hint = config.engine_options.get("performance_hint", "LATENCY")
    if performance_hint not in PERFORMANCE_HINTS:
        raise BackendUnavailable(
            f"performance hint {performance_hint!r} is unknown; use {' or '.join(PERFORMANCE_HINTS)}."
        )
    settings = {"PERFORMANCE_HINT": performance_hint, "INFERENCE_PRECISION_HINT": arithmetic}
    if config.engine_threads:
        settings["INFERENCE_NUM_THREADS"] = int(config.engine_threads)
    cache_dir = config.engine_options.get("cache_dir", default_cache_dir())
    if cache_dir:
        settings["CACHE_DIR"] = str(cache_dir)
    return settings


def has_bf16(core) -> bool:
    """Whether OpenVINO's CPU plugin has bf16 arithmetic here (avx512_bf16 or AMX)."""
    return "BF16" in core.get_property("CPU", "OPTIMIZATION_CAPABILITIES")


def default_precision(spec: ModelSpec, bf16_arithmetic: bool) -> str:
    """The int8 IR where the export made one (it asked for int8 with --cpu-int8), else bf16 where
    it passed the export's gate and this CPU has it (about twice fp32's speed here), else fp32."""
    if "int8" in spec.openvino_models:
        return "int8"
    if "bf16" in spec.openvino_models and bf16_arithmetic:
        return "bf16"
    return "fp32"


class OpenVinoBackend(ClosingBackend):
    def __init__(self, spec: ModelSpec, config: BackendConfig) -> None:
        """`config.precision`: fp32 / bf16 (the fp32 IR in bf16 arithmetic) / int8 (default:
        `default_precision`); `config.engine_threads`: OpenVINO's inference threads;
        `config.engine_options`: `performance_hint` (LATENCY, one request uses every core, or
        THROUGHPUT) and `cache_dir` (where compiled models are kept, so a later start skips
        compilation; default `default_cache_dir()`, "" for none)."""
        ov = _import_openvino()
        self.core = ov.Core()
        bf16_arithmetic = has_bf16(self.core)
        precision = config.precision or default_precision(spec, bf16_arithmetic)
        if precision == "bf16" and not bf16_arithmetic:
            raise BackendUnavailable(
                "this CPU has no bf16 arithmetic (avx512_bf16 or AMX); use --precision fp32 or int8."
            )
        ir = spec.openvino_ir(precision)
        xml, weights = spec.folder / ir.xml, spec.folder / ir.bin
        if config.verify_files:
            verify_file(xml, ir.xml_sha256)
            verify_file(weights, ir.bin_sha256)
        self.settings = _settings(config, OPENVINO_ARITHMETIC[precision])
        self.model = self._read(ov, xml)
        self._check_tensors(spec, xml.name)
        self.input_name, self.output_name = spec.input_name, spec.output_name
        self.name = f"openvino ({precision} IR)"
        # Static shapes run faster than the IR's dynamic batch (int8 at 1024: 0.51x against 0.62x of
        # ONNX Runtime fp32), and batch 1 is what CPU servers run: it is compiled now, the dynamic
        # model only when a larger batch comes.
        self.requests = {1: self._compile(self.model, (1, 3, spec.height, spec.width))}
        self._lock = threading.Lock()  # one infer request per shape: calls from several threads take turns
        self.max_batch = spec.max_batch
        compiled = self.requests[1].get_compiled_model()
        self.engine_threads = int(compiled.get_property("INFERENCE_NUM_THREADS")) or None

    def _read(self, ov, xml: Path):
        try:
            return self.core.read_model(str(xml))
        except RuntimeError as err:
            raise ModelError(
                f"OpenVINO {ov.__version__} cannot load {xml.name} ({str(err).splitlines()[0][:200]}); "
                "install the OpenVINO version named in model.json or re-export with --openvino."
            ) from None

    def _compile(self, model, shape: tuple[int, ...] | None):
        if shape is not None:
            model = model.clone()
            model.reshape({self.input_name: list(shape)})
        try:
            return self.core.compile_model(model, "CPU", self.settings).create_infer_request()
        except RuntimeError as err:
            cause = str(err).splitlines()[0][:200]
            raise BackendError(f"OpenVINO cannot compile {self.name} ({cause}); check free memory.") from None

    def _check_tensors(self, spec: ModelSpec, xml_name: str) -> None:
        inputs = set().union(*(i.get_names() for i in self.model.inputs))
        outputs = set().union(*(o.get_names() for o in self.model.outputs))
        if spec.input_name not in inputs or spec.output_name not in outputs:
            raise ModelError(
                f"{spec.folder}/model.json names the tensors {spec.input_name!r} -> {spec.output_name!r} "
                f"but {xml_name} has {', '.join(sorted(inputs))} -> {', '.join(sorted(outputs))}; run "
                "`rmbg-export` again for this folder."
            )

    def run(self, batch: np.ndarray) -> np.ndarray:
        if self.model is None:
            raise BackendError("this OpenVINO backend was closed; open a new one.")
        return run_in_slices(batch, self.max_batch, self._run_slice)

    def _request_for(self, size: int):
        """Batch 1's static model, else the IR's dynamic batch range (compiled on first use)."""
        key = 1 if size == 1 else "dynamic"
        if key not in self.requests:
            self.requests[key] = self._compile(self.model, None)
        return self.requests[key]

    def _run_slice(self, batch: np.ndarray) -> np.ndarray:
        try:
            with self._lock:
                request = self._request_for(len(batch))
                inputs = {self.input_name: np.ascontiguousarray(batch, dtype=np.float32)}
                return np.array(request.infer(inputs)[self.output_name])
        except RuntimeError as err:  # OpenVINO raises RuntimeError for every failure of a request
            cause = str(err).splitlines()[0][:200] if str(err) else type(err).__name__
            raise BackendError(
                f"{self.name} failed while running ({cause}); check free memory, then restart."
            ) from None

    def close(self) -> None:
        self.requests, self.model = {}, None
