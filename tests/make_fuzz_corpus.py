"""Writes tests/data/fuzz/: damaged images for the decoder's error handling (tests/test_decode_errors.py).

Run once; the files are committed so that every run tests the same bytes:

    python tests/make_fuzz_corpus.py

For each format (PNG, JPEG, WebP, GIF, TIFF, BMP, ICO), one small valid image cut short at spread-out
lengths and copies of it with a few bits flipped (half in the header, half anywhere), from a fixed
seed; plus two PNGs named in issue 23: a truncated IHDR chunk and a zTXt chunk that inflates to 50 MB.
Some mutants still decode (a flipped bit in pixel data); the tests sort them by decoding them.
"""

from __future__ import annotations

import io
import random
import struct
import zlib
from pathlib import Path

import numpy as np
from PIL import Image

SEED = 23
OUT = Path(__file__).parent / "data" / "fuzz"
TRUNCATIONS = 14
BIT_FLIPS = 26
HEADER_BYTES = 64


def base_image(mode: str = "RGB") -> Image.Image:
    rng = np.random.default_rng(SEED)
    y, x = np.mgrid[0:32, 0:40]
    rgb = np.stack([x * 6, y * 7, (x + y) * 3], axis=-1) + rng.integers(0, 24, (32, 40, 3))
    return Image.fromarray(rgb.astype(np.uint8), "RGB").convert(mode)


def encoded(fmt: str, **options) -> bytes:
    buffer = io.BytesIO()
    if fmt == "GIF":  # two frames: the decoder must stop after the first
        frames = [base_image("P"), base_image("RGB").rotate(90).convert("P")]
        frames[0].save(buffer, "GIF", save_all=True, append_images=frames[1:], duration=100, loop=0)
    elif fmt == "TIFF":  # two pages, deflate: a compressed stream and a second IFD to damage
        base_image().save(buffer, "TIFF", compression="tiff_adobe_deflate", save_all=True,
                          append_images=[base_image("L")])  # fmt: skip
    else:
        base_image("RGBA" if fmt in ("ICO",) else "RGB").save(buffer, fmt, **options)
    return buffer.getvalue()


def truncated(data: bytes, rng: random.Random) -> list[bytes]:
    lengths = {1, 8, 16, 33, len(data) - 1}  # inside the signature, the header, the last byte
    while len(lengths) < TRUNCATIONS:
        lengths.add(rng.randrange(2, len(data) - 1))
    return [data[:n] for n in sorted(lengths)]


def bit_flipped(data: bytes, rng: random.Random) -> list[bytes]:
    out = []
    for i in range(BIT_FLIPS):
        mutant = bytearray(data)
        span = min(HEADER_BYTES, len(data)) if i % 2 == 0 else len(data)
        for _ in range(rng.randint(1, 4)):
            mutant[rng.randrange(span)] ^= 1 << rng.randrange(8)
        out.append(bytes(mutant))
    return out


def png_chunk(kind: bytes, body: bytes) -> bytes:
    return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))


def named_pngs() -> dict[str, bytes]:
    """The two files of issue 23, item 1: Pillow raised ValueError for both."""
    good = encoded("PNG")
    signature, ihdr_body = good[:8], good[16:29]
    rest = good[33:]
    short_ihdr = signature + png_chunk(b"IHDR", ihdr_body[:12]) + rest
    text = zlib.compress(b"\0" * (50 * 1024 * 1024), 9)  # 50 MB inflated, ~50 KB stored
    ztxt = signature + png_chunk(b"IHDR", ihdr_body) + png_chunk(b"zTXt", b"Comment\0\0" + text) + rest
    return {"png_truncated_ihdr.png": short_ihdr, "png_ztxt_50mb.png": ztxt}


FORMATS = {  # file suffix: (Pillow format, save options)
    "png": ("PNG", {}),
    "jpg": ("JPEG", {"quality": 90}),
    "webp": ("WEBP", {"quality": 80}),
    "gif": ("GIF", {}),
    "tif": ("TIFF", {}),
    "bmp": ("BMP", {}),
    "ico": ("ICO", {"sizes": [(32, 32), (16, 16)]}),
}


def main() -> None:
    OUT.mkdir(parents=True, exist_ok=True)
    for old in OUT.iterdir():
        old.unlink()
    rng = random.Random(SEED)
    for suffix, (fmt, options) in FORMATS.items():
        data = encoded(fmt, **options)
        for i, mutant in enumerate(truncated(data, rng)):
            (OUT / f"{suffix}_cut{i:02d}.{suffix}").write_bytes(mutant)
        for i, mutant in enumerate(bit_flipped(data, rng)):
            (OUT / f"{suffix}_flip{i:02d}.{suffix}").write_bytes(mutant)
    for name, data in named_pngs().items():
        (OUT / name).write_bytes(data)
    files = list(OUT.iterdir())
    print(f"{len(files)} files, {sum(f.stat().st_size for f in files) / 1e6:.2f} MB in {OUT}")


if __name__ == "__main__":
    main()
