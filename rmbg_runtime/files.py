"""Writing output files so that an interrupted or failed write never leaves a half-written one."""

from __future__ import annotations

import os
from pathlib import Path

PNG_END = b"\x00\x00\x00\x00IEND\xaeB`\x82"  # the IEND chunk every complete PNG ends with


def write_atomically(path: Path, data: bytes) -> None:
    """Write to a temporary name beside `path`, then rename; the temporary file never survives.
    The temporary name (.NAME.partial-PID) has no image suffix, so no run takes it as an input."""
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(f".{path.name}.partial-{os.getpid()}")
    try:
        partial.write_bytes(data)
        os.replace(partial, path)
    finally:
        partial.unlink(missing_ok=True)


def is_complete_image(path: Path) -> bool:
    """Whether `path` is a whole PNG or WebP file: a file cut short (a crash before the data reached
    the disk, another tool's partial write) fails its format's end-of-file check."""
    try:
        with open(path, "rb") as f:
            head = f.read(12)
            size = os.fstat(f.fileno()).st_size
            if head.startswith(b"\x89PNG\r\n\x1a\n"):
                f.seek(max(size - len(PNG_END), 0))
                return f.read() == PNG_END
            if head[:4] == b"RIFF" and head[8:12] == b"WEBP":
                return int.from_bytes(head[4:8], "little") + 8 == size
    except OSError:
        return False
    return False
