"""Images paired with their ground-truth masks by file stem."""

from __future__ import annotations

from pathlib import Path

from ..errors import RmbgError
from ..images import is_image_file


def images_in(folder: Path) -> dict[str, Path]:
    """stem -> file for every image under `folder` (recursive); a repeated stem is an error."""
    if not folder.is_dir():
        raise RmbgError(f"{folder} is not a folder.")
    found: dict[str, Path] = {}
    for path in sorted(folder.rglob("*")):
        if is_image_file(path):
            if path.stem in found:
                raise RmbgError(f"{found[path.stem]} and {path} share the name {path.stem!r}; rename one.")
            found[path.stem] = path
    return found


def pair_by_stem(images: Path, masks: Path) -> tuple[list[tuple[Path, Path]], list[str]]:
    """(image, mask) pairs in stem order, and the stems of images that have no mask."""
    image_files, mask_files = images_in(images), images_in(masks)
    pairs = [(image_files[s], mask_files[s]) for s in sorted(image_files.keys() & mask_files.keys())]
    if not pairs:
        raise RmbgError(
            f"no image in {images} has a mask of the same name in {masks}; masks pair with images by "
            "file name without extension (photo.jpg <-> photo.png)."
        )
    return pairs, sorted(image_files.keys() - mask_files.keys())
