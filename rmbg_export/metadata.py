"""`model.json`: the contract between the exporter and the runtime.

The runtime reads only this file and the graph / engine files it names. Bump SCHEMA_VERSION on
any change a reader must know about.
"""

from __future__ import annotations

import platform
import sys
from datetime import datetime, timezone
from importlib import metadata as importlib_metadata

from .checkpoint import CheckpointInfo
from .onnx.trace import BATCH_DIM, INPUT_NAME, OUTPUT_NAME
from .onnx.verify import IMAGENET_MEAN, IMAGENET_STD

SCHEMA_VERSION = 1
METADATA_NAME = "model.json"
FP32_GRAPH_NAME = "model.onnx"
FP16_GRAPH_NAME = "model_fp16.onnx"
INT8_GRAPH_NAME = "model_int8.onnx"  # ONNX Runtime CPU only (QDQ)
ENGINE_NAME = "model.engine"


def tool_versions(*packages: str) -> dict[str, str]:
    versions = {"python": platform.python_version()}
    for name in ("rmbg-toolkit", *packages):
        try:
            versions[name] = importlib_metadata.version(name)
        except importlib_metadata.PackageNotFoundError:
            versions[name] = "not installed"
    return versions


def base_metadata(
    info: CheckpointInfo,
    *,
    height: int,
    width: int,
    max_batch: int,
    precision: str,
    opset: int,
    deform_conv: str,
) -> dict:
    return {
        "schema_version": SCHEMA_VERSION,
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "command": " ".join(sys.argv),
        "model": {
            "architecture": "BiRefNet",
            "backbone": info.backbone,
            "patch_order": info.patch_order,
            "patch_order_origin": info.patch_order_origin,
            "source": info.source,
            "source_kind": info.origin,
            "checkpoint_sha256": info.sha256,
            "checkpoint_dtype": info.stored_dtype,
            "num_params": info.num_params,
        },
        "input": {
            "name": INPUT_NAME,
            "dtype": "float32",
            "layout": "NCHW",
            "channels": "RGB",
            "height": height,
            "width": width,
            "resize": "bilinear",
            "scale": 1 / 255,
            "mean": list(IMAGENET_MEAN),
            "std": list(IMAGENET_STD),
        },
        "output": {"name": OUTPUT_NAME, "dtype": "float32", "layout": "NCHW", "kind": "probability"},
        "batch": {"dim": BATCH_DIM, "min": 1, "max": max_batch},
        "precision": precision,
        "onnx": {"opset": opset, "deform_conv": deform_conv, "graphs": {}},
        "parity": {},
        "tools": tool_versions("torch", "onnx", "onnxruntime", "onnxruntime-gpu", "onnxconverter-common"),
    }
