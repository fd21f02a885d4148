"""Triton Inference Server's python-backend models for an export (written by `rmbg-export triton`).

Imported only inside Triton's python-backend stub: `import rmbg_runtime` never loads this package.
The tensor names here are the contract between these models, the generated `config.pbtxt` files
and clients such as `scripts/triton_client.py`.
"""

ENSEMBLE_INPUT = "IMAGE"  # encoded image bytes (TYPE_STRING, one image per request)
PIXELS = "PIXELS"  # preprocessed float32 (3, H, W)
RGB = "RGB"  # the decoded, EXIF-oriented image, uint8 (h, w, 3), for the cut-out
PROBABILITY = "PROBABILITY"  # the network's (1, H, W) probability, as post's input
MASK = "MASK"  # uint8 (h, w) alpha at the image's size
CUTOUT = "CUTOUT"  # RGBA PNG bytes
