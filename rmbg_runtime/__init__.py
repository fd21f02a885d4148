"""Slim runtime for exported BiRefNet / RMBG-2.0 models: NumPy and Pillow, backends optional.

from rmbg_runtime import Remover
cutout = Remover("out/birefnet").remove_background("photo.jpg")
"""

from .backends import BackendConfig
from .errors import BackendError, BackendUnavailable, ImageError, ModelError, RmbgError
from .images import DEFAULT_MAX_PIXELS, load_image
from .metadata import ModelSpec, read_model_spec
from .processing import postprocess, preprocess
from .remover import Remover

__all__ = [
    "DEFAULT_MAX_PIXELS",
    "BackendConfig",
    "BackendError",
    "BackendUnavailable",
    "ImageError",
    "ModelError",
    "ModelSpec",
    "Remover",
    "RmbgError",
    "load_image",
    "postprocess",
    "preprocess",
    "read_model_spec",
]
