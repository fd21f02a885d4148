"""OpenVINO backend (CPU): runs the export's OpenVINO IR (`rmbg-export --openvino`). The int8 IR
where the export made one (it passed the export's gate against fp32), else fp32."""

from __future__ import annotations

import os
import threading
from pathlib import Path

import numpy as np

from ..contract import ModelSpec
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


def default_precision(spec: ModelSpec) -> str:
    return "int8" if "int8" in spec.openvino_models else "fp32"


class OpenVinoBackend(ClosingBackend):
    def __init__(self, spec: ModelSpec, config: BackendConfig) -> None:
        """`config.precision`: which IR (fp32 / int8); `config.engine_threads`: OpenVINO's inference
        threads; `config.engine_options`: `performance_hint` (LATENCY, one request uses every core,
        or THROUGHPUT) and `cache_dir` (where compiled models are kept, so a later start skips
        compilation; default `default_cache_dir()`, "" for none)."""
        ov = _import_openvino()
        performance_hint = config.engine_options.get("performance_hint", "LATENCY")
        if performance_hint not in PERFORMANCE_HINTS:
            raise BackendUnavailable(
                f"performance hint {performance_hint!r} is unknown; use {' or '.join(PERFORMANCE_HINTS)}."
            )
        cache_dir = config.engine_options.get("cache_dir", default_cache_dir())
        precision = config.precision or default_precision(spec)
        ir = spec.openvino_ir(precision)
        xml, weights = spec.folder / ir.xml, spec.folder / ir.bin
        if config.verify_files:
            verify_file(xml, ir.xml_sha256)
            verify_file(weights, ir.bin_sha256)
        settings = {"PERFORMANCE_HINT": performance_hint, "INFERENCE_PRECISION_HINT": "f32"}
        if config.engine_threads:
            settings["INFERENCE_NUM_THREADS"] = int(config.engine_threads)
        if cache_dir:
            settings["CACHE_DIR"] = str(cache_dir)
        try:
            self.compiled = ov.Core().compile_model(str(xml), "CPU", settings)
        except RuntimeError as err:
            raise ModelError(
                f"OpenVINO {ov.__version__} cannot load {xml.name} ({str(err).splitlines()[0][:200]}); "
                "install the OpenVINO version named in model.json or re-export with --openvino."
            ) from None
        self._check_tensors(spec, xml.name)
        self.input_name, self.output = spec.input_name, self.compiled.output(spec.output_name)
        self.request = self.compiled.create_infer_request()
        self._lock = threading.Lock()  # one infer request: calls from several threads take turns
        self.name = f"openvino ({precision} IR)"
        self.max_batch = spec.max_batch
        self.engine_threads = int(self.compiled.get_property("INFERENCE_NUM_THREADS")) or None

    def _check_tensors(self, spec: ModelSpec, xml_name: str) -> None:
        inputs = set().union(*(i.get_names() for i in self.compiled.inputs))
        outputs = set().union(*(o.get_names() for o in self.compiled.outputs))
        if spec.input_name not in inputs or spec.output_name not in outputs:
            raise ModelError(
                f"{spec.folder}/model.json names the tensors {spec.input_name!r} -> {spec.output_name!r} "
                f"but {xml_name} has {', '.join(sorted(inputs))} -> {', '.join(sorted(outputs))}; run "
                "`rmbg-export` again for this folder."
            )

    def run(self, batch: np.ndarray) -> np.ndarray:
        if self.request is None:
            raise BackendError("this OpenVINO backend was closed; open a new one.")
        return run_in_slices(batch, self.max_batch, self._run_slice)

    def _run_slice(self, batch: np.ndarray) -> np.ndarray:
        try:
            with self._lock:
                inputs = {self.input_name: np.ascontiguousarray(batch, dtype=np.float32)}
                return np.array(self.request.infer(inputs)[self.output])
        except RuntimeError as err:  # OpenVINO raises RuntimeError for every failure of a request
            cause = str(err).splitlines()[0][:200] if str(err) else type(err).__name__
            raise BackendError(
                f"{self.name} failed while running ({cause}); check free memory, then restart."
            ) from None

    def close(self) -> None:
        self.request = self.compiled = None
