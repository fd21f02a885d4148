"""Writing output files so that an interrupted or failed write never leaves a half-written one."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from pathlib import Path

PNG_END = b"\x00\x00\x00\x00IEND\xaeB`\x82"  # the IEND chunk every complete PNG ends with


def partial_path(final: Path) -> Path:
    """The temporary name beside `final` that an output is written under until it is complete."""
    return final.with_name(f".{final.name}.partial-{os.getpid()}")


@contextlib.contextmanager
def atomic_output(final: Path) -> Iterator[Path]:
    """Yield a temporary path beside `final`; rename it into place only if the block succeeds, and
    never leave the temporary file behind. Its name (.NAME.partial-PID) has no image suffix, so no
    run takes it as an input."""
    final.parent.mkdir(parents=True, exist_ok=True)
    partial = partial_path(final)
    try:
        yield partial
        os.replace(partial, final)
    finally:
        partial.unlink(missing_ok=True)


def write_atomically(path: Path, data: bytes) -> None:
    """`data` written to `path` through `atomic_output`."""
    with atomic_output(path) as partial:
        partial.write_bytes(data)


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
