"""Our own BiRefNet / RMBG-2.0 network, key-compatible with the official checkpoints."""

from .birefnet import BiRefNet, create_model
from .decoder import PATCH_ORDERS
from .swin import SWIN_CONFIGS

BACKBONES = tuple(SWIN_CONFIGS)

__all__ = ["BACKBONES", "PATCH_ORDERS", "BiRefNet", "create_model"]
