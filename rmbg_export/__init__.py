"""Export side of the toolkit: our BiRefNet in PyTorch, checkpoint loading, ONNX and TensorRT.

The names that need torch are imported on first use, so that the deployment commands
(`rmbg-export triton`, `rmbg-export preflight`) run where only the runtime is installed.
"""

from __future__ import annotations

from importlib import import_module
from typing import TYPE_CHECKING

from .architecture import BACKBONES, PATCH_ORDERS
from .errors import ExportError

if TYPE_CHECKING:
    from .checkpoint import CheckpointInfo, load_model
    from .model import create_model

_NEED_TORCH = {"CheckpointInfo": ".checkpoint", "load_model": ".checkpoint", "create_model": ".model"}

__all__ = ["BACKBONES", "PATCH_ORDERS", "CheckpointInfo", "ExportError", "create_model", "load_model"]


def __getattr__(name: str):
    if name in _NEED_TORCH:
        return getattr(import_module(_NEED_TORCH[name], __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
