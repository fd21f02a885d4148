"""The exporter's side of `model.json`: the first ModelSpec of a run (types and names:
rmbg_runtime/contract.py, the one definition both sides use)."""

from __future__ import annotations

import platform
import sys
from datetime import datetime, timezone
from importlib import metadata as importlib_metadata
from typing import TYPE_CHECKING

from rmbg_runtime.contract import BatchRange, InputSpec, ModelInfo, ModelSpec, OnnxInfo

if TYPE_CHECKING:
    from .checkpoint import CheckpointInfo
    from .options import ExportOptions

RECORDED_TOOLS = ("torch", "onnx", "onnxruntime", "onnxruntime-gpu", "onnxconverter-common")


def tool_versions(*packages: str) -> dict[str, str]:
    versions = {"python": platform.python_version()}
    for name in ("rmbg-toolkit", *packages):
        try:
            versions[name] = importlib_metadata.version(name)
        except importlib_metadata.PackageNotFoundError:
            versions[name] = "not installed"
    return versions


def initial_spec(info: CheckpointInfo, options: ExportOptions) -> ModelSpec:
    """What is known once the checkpoint is loaded; each stage then adds its graph, figures or engine."""
    return ModelSpec(
        created=datetime.now(timezone.utc).isoformat(timespec="seconds"),
        command=" ".join(sys.argv),
        model=ModelInfo(
            backbone=info.backbone,
            patch_order=info.patch_order,
            patch_order_origin=info.patch_order_origin,
            source=info.source,
            source_kind=info.origin,
            checkpoint_sha256=info.sha256,
            checkpoint_dtype=info.stored_dtype,
            num_params=info.num_params,
        ),
        input=InputSpec(height=options.height, width=options.width),
        batch=BatchRange(max=options.max_batch),
        precision=options.precision,
        onnx=OnnxInfo(opset=options.opset, deform_conv=options.deform_conv),
        tools=tool_versions(*RECORDED_TOOLS),
        folder=options.output,
    )
