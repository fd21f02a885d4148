"""Writing outputs so that an interrupted run never leaves a file that looks complete."""

from __future__ import annotations

import json
from pathlib import Path

from rmbg_runtime.files import atomic_output  # one atomic writer for the exporter and the runtime
from rmbg_runtime.metadata import sha256_file  # one implementation for writer and reader

__all__ = ["atomic_output", "sha256_file", "write_json"]


def write_json(path: Path, data: dict) -> None:
    with atomic_output(path) as partial:
        partial.write_text(json.dumps(data, indent=2, sort_keys=False) + "\n")
