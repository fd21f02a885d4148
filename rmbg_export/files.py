"""Writing outputs so that an interrupted run never leaves a file that looks complete."""

from __future__ import annotations

import contextlib
import json
import os
from collections.abc import Iterator
from pathlib import Path

from rmbg_runtime.metadata import sha256_file  # one implementation for writer and reader

__all__ = ["atomic_output", "sha256_file", "write_json"]


@contextlib.contextmanager
def atomic_output(final: Path) -> Iterator[Path]:
    """Yield a temporary path beside `final`; rename it into place only if the block succeeds."""
    final.parent.mkdir(parents=True, exist_ok=True)
    partial = final.with_name(f".{final.name}.partial-{os.getpid()}")
    try:
        yield partial
        os.replace(partial, final)
    finally:
        partial.unlink(missing_ok=True)


def write_json(path: Path, data: dict) -> None:
    with atomic_output(path) as partial:
        partial.write_text(json.dumps(data, indent=2, sort_keys=False) + "\n")
