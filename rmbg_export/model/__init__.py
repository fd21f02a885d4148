"""Our own BiRefNet / RMBG-2.0 network, key-compatible with the official checkpoints."""

from ..architecture import BACKBONES, PATCH_ORDERS
from .birefnet import BiRefNet, create_model

__all__ = ["BACKBONES", "PATCH_ORDERS", "BiRefNet", "create_model"]
