"""Writing the model repository: pre -> network -> post, wired by an ensemble, plus a README.

The models are assembled in a staging folder beside the repository and moved in one by one only
when all are complete, so an interrupted run never leaves a half-written model for Triton to load.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable
from pathlib import Path

from rmbg_runtime.contract import METADATA_NAME, EngineRecord, ModelSpec
from rmbg_runtime.files import write_atomically
from rmbg_runtime.metadata import read_model_spec

from ..errors import ExportError
from .configs import (
    TritonOptions,
    ensemble_config,
    network_config,
    onnx_graph_precision,
    openvino_ir_precision,
    post_config,
    pre_config,
    validate,
)
from .pbtxt import config_text
from .readme import repository_readme, tensorrt_pin

VERSION = "1"
PYTHON_MODEL = (
    '"""Written by rmbg-export triton."""\n\n'
    "from rmbg_runtime.triton.models import {} as TritonPythonModel  # noqa: F401\n"
)


def write_repository(
    export_dir: Path, repository: Path, options: TritonOptions, log: Callable[[str], None] = print
) -> list[Path]:
    """Write the four models for the export in `export_dir`; returns their folders."""
    spec = read_model_spec(export_dir)
    validate(spec, options)
    repository.mkdir(parents=True, exist_ok=True)
    stage = repository.parent / f".{repository.name}.{options.name}.partial-{os.getpid()}"
    try:
        stage.mkdir()
        built = _build_models(spec, options, stage)
        placed = [_replace(stage / folder, repository / folder, stage) for folder in built]
    finally:
        shutil.rmtree(stage, ignore_errors=True)
    write_atomically(repository / "README.md", repository_readme(spec, options).encode())
    for folder in placed:
        log(f"wrote {folder}")
    if options.network == "tensorrt":
        log(tensorrt_pin(spec.engine))
    return placed


def _build_models(spec: ModelSpec, options: TritonOptions, stage: Path) -> list[str]:
    names = options.model_names()
    _model(stage / names["pre"], pre_config(spec, options), python_class="Preprocess")
    _link(spec.folder / METADATA_NAME, stage / names["pre"] / VERSION / METADATA_NAME)
    network = stage / names["network"]
    runs_python = options.network == "python"
    pin = [_pin_comment(spec.engine)] if options.network == "tensorrt" else []
    _model(network, network_config(spec, options), "Network" if runs_python else None, pin)
    _network_files(spec, options, network / VERSION)
    _model(stage / names["post"], post_config(spec, options), python_class="Postprocess")
    _model(stage / names["ensemble"], ensemble_config(spec, options))
    return [names["pre"], names["network"], names["post"], names["ensemble"]]


def _pin_comment(engine: EngineRecord) -> str:
    version, gpu = engine.tensorrt_version, engine.gpu_name
    return f"model.plan: TensorRT {version} on {gpu}; loads only where Triton has TensorRT {version}."


def _model(folder: Path, config: dict, python_class: str | None = None, notes: list[str] = ()) -> None:
    (folder / VERSION).mkdir(parents=True)  # Triton needs a version folder, even for an ensemble
    comments = [f"Written by rmbg-export triton; see README.md beside {folder.name}/.", *notes]
    (folder / "config.pbtxt").write_text(config_text(config, comments))
    if python_class:
        (folder / VERSION / "model.py").write_text(PYTHON_MODEL.format(python_class))


def _network_files(spec: ModelSpec, options: TritonOptions, version: Path) -> None:
    if options.network == "tensorrt":
        _link(spec.folder / spec.engine.path, version / "model.plan")
    elif options.network == "onnxruntime":
        graph = spec.graph_path(onnx_graph_precision(spec, options))
        _link(graph, version / "model.onnx")
        _link_external_data(graph, version)
    elif options.network == "openvino":
        ir = spec.openvino_ir(openvino_ir_precision(spec))
        _link(spec.folder / ir.xml, version / "model.xml")
        _link(spec.folder / ir.bin, version / "model.bin")
    else:  # python: the runtime reads the export as it is, model.json included
        _link(spec.folder / METADATA_NAME, version / METADATA_NAME)
        for entry in spec.graphs.values():
            _link(spec.folder / entry.path, version / entry.path)
            _link_external_data(spec.folder / entry.path, version)
        if spec.engine is not None and options.kind == "gpu":
            _link(spec.folder / spec.engine.path, version / spec.engine.path)
        if options.kind == "cpu":
            for name in spec.openvino_files:
                _link(spec.folder / name, version / name)


def _link_external_data(graph: Path, version: Path) -> None:
    data = graph.with_name(graph.name + ".data")
    if data.is_file():
        _link(data, version / data.name)


def _link(source: Path, target: Path) -> None:
    """A hard link where the file system allows (graphs and engines are large), else a copy."""
    if not source.is_file():
        raise ExportError(f"{source} is missing from the export; run rmbg-export again for {source.parent}.")
    target.parent.mkdir(parents=True, exist_ok=True)
    try:
        os.link(source, target)
    except OSError:
        shutil.copy2(source, target)


def _replace(new: Path, target: Path, stage: Path) -> Path:
    if target.exists():
        os.replace(target, stage / f"{target.name}.old")
    os.replace(new, target)
    return target
