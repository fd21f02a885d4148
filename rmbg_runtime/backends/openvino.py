"""OpenVINO backend (CPU): runs the export's OpenVINO IR (`rmbg-export --openvino`). The int8 IR
where the export made one (it passed the export's gate against fp32), else fp32."""

from __future__ import annotations

import os
import threading
from pathlib import Path

import numpy as np

from ..contract import ModelSpec
from ..errors import BackendUnavailable, ModelError
from ..metadata import verify_file

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


class OpenVinoBackend:
    def __init__(
        self,
        spec: ModelSpec,
        *,
        threads: int | None = None,
        precision: str | None = None,
        verify_files: bool = True,
        performance_hint: str = "LATENCY",
        cache_dir: str | None = None,
    ) -> None:
        """`precision`: which IR (fp32 / int8); `performance_hint`: OpenVINO's LATENCY (one
        request uses every core) or THROUGHPUT; `cache_dir`: where compiled models are kept, so a
        later start skips compilation."""
        ov = _import_openvino()
        if performance_hint not in PERFORMANCE_HINTS:
            raise BackendUnavailable(
                f"performance hint {performance_hint!r} is unknown; use {' or '.join(PERFORMANCE_HINTS)}."
            )
        precision = precision or default_precision(spec)
        ir = spec.openvino_ir(precision)
        xml, weights = spec.folder / ir.xml, spec.folder / ir.bin
        if verify_files:
            verify_file(xml, ir.xml_sha256)
            verify_file(weights, ir.bin_sha256)
        config = {"PERFORMANCE_HINT": performance_hint, "INFERENCE_PRECISION_HINT": "f32"}
        if threads:
            config["INFERENCE_NUM_THREADS"] = int(threads)
        if cache_dir:
            config["CACHE_DIR"] = str(cache_dir)
        try:
            self.compiled = ov.Core().compile_model(str(xml), "CPU", config)
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
        with self._lock:
            result = self.request.infer({self.input_name: np.ascontiguousarray(batch, dtype=np.float32)})
            return np.array(result[self.output])

    def close(self) -> None:
        self.request = self.compiled = None

    def __enter__(self) -> OpenVinoBackend:
        return self

    def __exit__(self, *_exc) -> None:
        self.close()
