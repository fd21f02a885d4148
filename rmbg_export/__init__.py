"""Export side of the toolkit: our BiRefNet in PyTorch, checkpoint loading, ONNX and TensorRT."""

from .checkpoint import CheckpointInfo, load_model
from .errors import ExportError
from .model import BACKBONES, PATCH_ORDERS, create_model

__all__ = ["BACKBONES", "PATCH_ORDERS", "CheckpointInfo", "ExportError", "create_model", "load_model"]
