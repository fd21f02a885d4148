"""The timing cache around a build: read, attach, and save back, never serialising nothing.

`config` is TensorRT's IBuilderConfig: `create_timing_cache(bytes)` may return None,
`set_timing_cache(cache, ignore_mismatch)` returns False for a cache made by another GPU or
TensorRT version, and `get_timing_cache()` returns None when none is attached.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from ..files import atomic_output


def attach_timing_cache(config, path: Path, log: Callable[[str], None]) -> bool:
    """Attach the cache stored at `path`, or an empty one when it is missing, unreadable or from
    another device; returns whether any cache is attached."""
    stored = path.read_bytes() if path.is_file() else b""
    if stored:
        cache = config.create_timing_cache(stored)
        if cache is not None and config.set_timing_cache(cache, False):
            log(f"      timing cache {path.name}: reused")
            return True
        log(f"      timing cache {path.name} is from another GPU or TensorRT version: starting an empty one")
    cache = config.create_timing_cache(b"")
    return cache is not None and bool(config.set_timing_cache(cache, False))


def save_timing_cache(config, path: Path) -> bool:
    """Write the attached cache back (atomically); returns False when there is none to write."""
    cache = config.get_timing_cache()
    if cache is None:
        return False
    with atomic_output(path) as partial:
        partial.write_bytes(bytes(cache.serialize()))
    return True
