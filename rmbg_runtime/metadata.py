"""Reading an export folder's `model.json` (its types: contract.py) and checking the files it names."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

from .contract import METADATA_NAME, REEXPORT, ModelSpec
from .errors import ModelError

__all__ = ["METADATA_NAME", "ModelSpec", "read_model_spec", "sha256_file", "verify_file"]


def read_model_spec(folder: str | Path) -> ModelSpec:
    folder = Path(folder)
    path = folder / METADATA_NAME
    if not path.is_file():
        raise ModelError(
            f"{folder} holds no {METADATA_NAME}: it is not a finished export; "
            f"run `rmbg-export SOURCE --output {folder}`."
        )
    try:
        raw = json.loads(path.read_text())
    except (OSError, ValueError) as err:
        raise ModelError(f"{path} is not valid JSON ({err}); {REEXPORT}.") from None
    return ModelSpec.from_dict(raw, folder, path)


def sha256_file(path: Path, chunk: int = 1 << 24) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def verify_file(path: Path, expected_sha256: str) -> None:
    """Refuse a missing file or one whose content is not what the export wrote."""
    if not path.is_file():
        raise ModelError(f"{path} is missing; {REEXPORT}.")
    if sha256_file(path) != expected_sha256:
        raise ModelError(
            f"{path} does not match the sha256 recorded in {METADATA_NAME} (changed or damaged); {REEXPORT}."
        )
