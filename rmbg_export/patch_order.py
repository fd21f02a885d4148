"""Which image-patch channel order a checkpoint was trained with, read from its code file.

Hub repositories ship the model code (`birefnet.py`) next to the weights. The file is read as
text and never executed: the call that builds `patches_batch` tells the order apart.
"""

from __future__ import annotations

import re
from pathlib import Path

CODE_FILE_NAMES = ("birefnet.py",)

_LEGACY_CALL = re.compile(r"patches_batch\s*=\s*self\.get_patches_batch\(")
_EINOPS_CALL = re.compile(r"patches_batch\s*=\s*image2patches\(")
_EINOPS_PATTERN = re.compile(r"b\s+c\s+\(hg\s+h\)\s+\(wg\s+w\)\s*->\s*b\s+\(c\s+hg\s+wg\)\s+h\s+w")


def patch_order_from_code(text: str) -> str | None:
    """'legacy', 'einops', or None when the code does not say unambiguously."""
    legacy = bool(_LEGACY_CALL.search(text))
    einops = bool(_EINOPS_CALL.search(text)) and bool(_EINOPS_PATTERN.search(text))
    if legacy == einops:
        return None
    return "legacy" if legacy else "einops"


def find_code_file(folder: Path) -> Path | None:
    for name in CODE_FILE_NAMES:
        if (folder / name).is_file():
            return folder / name
    return None
