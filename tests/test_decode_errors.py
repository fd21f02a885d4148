"""Damaged and oversized images are input errors (ImageError, one line, the rest continue), never a
traceback: the fuzz corpus (tests/data/fuzz, made by tests/make_fuzz_corpus.py) through the API, the
`rmbg remove` CLI and `rmbg serve`; container formats checked before they are decoded; --max-pixels
above Pillow's own bomb limit."""

from __future__ import annotations

import io
import re
import shutil
import struct
import subprocess
import sys
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from rmbg_runtime import ImageError, RmbgError, load_image
from rmbg_runtime.images import DEFAULT_MAX_PIXELS, is_image_file

REPO_ROOT = Path(__file__).resolve().parents[1]
CORPUS = Path(__file__).parent / "data" / "fuzz"
RMBG = [sys.executable, "-c", "from rmbg_runtime.cli import main; main()"]
PILLOW_ERROR_LIMIT = 178_956_970  # Pillow refuses above twice Image.MAX_IMAGE_PIXELS (89,478,485)


def corpus_files() -> list[Path]:
    return sorted(CORPUS.iterdir())


def decodes(path: Path) -> bool:
    try:
        load_image(path)
    except ImageError:
        return False
    return True


# ---- PNG / ICO bytes built by hand, so that headers can say what Pillow would never write ----------


def png_chunk(kind: bytes, body: bytes) -> bytes:
    return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))


def grey_png(width: int, height: int) -> bytes:
    """A black 8-bit grey PNG of any size, compressed row by row (a 12000x12000 one is ~140 KB)."""
    packer, row, parts = zlib.compressobj(9), b"\0" * (width + 1), []
    for _ in range(height):
        parts.append(packer.compress(row))
    parts.append(packer.flush())
    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    body = png_chunk(b"IHDR", header) + png_chunk(b"IDAT", b"".join(parts)) + png_chunk(b"IEND", b"")
    return b"\x89PNG\r\n\x1a\n" + body


def icon_holding(png: bytes, declared: int = 16) -> bytes:
    """An ICO whose directory declares `declared` x `declared` and whose one entry is `png`."""
    directory = struct.pack("<HHH", 0, 1, 1)
    entry = struct.pack("<BBBBHHII", declared, declared, 0, 0, 1, 32, len(png), 6 + 16)
    return directory + entry + png


def icns_holding(png: bytes) -> bytes:
    """An ICNS with one ic09 (512x512) entry holding `png`."""
    entry = b"ic09" + struct.pack(">I", 8 + len(png)) + png
    return b"icns" + struct.pack(">I", 8 + len(entry)) + entry


# ---- the API -------------------------------------------------------------------------------------------


def test_corpus_is_small_and_covers_every_format():
    files = corpus_files()
    assert 250 <= len(files) <= 400 and sum(f.stat().st_size for f in files) < 3_000_000
    assert {f.suffix for f in files} == {".png", ".jpg", ".webp", ".gif", ".tif", ".bmp", ".ico"}


def test_every_corpus_file_decodes_or_raises_image_error():
    bad = []
    for path in corpus_files():
        try:
            image = load_image(path)
        except ImageError as err:
            message = str(err)
            assert str(path) in message and "\n" not in message, message
            bad.append(path.name)
        else:
            assert image.mode == "RGB" and image.width * image.height > 0
    assert len(bad) >= 150  # most mutants are damaged beyond decoding
    assert {"png_truncated_ihdr.png", "png_ztxt_50mb.png"} <= set(bad)


@pytest.mark.parametrize("name", ["png_truncated_ihdr.png", "png_ztxt_50mb.png"])
def test_the_two_pngs_that_made_pillow_raise_value_error(name):
    """Pillow raises ValueError for both ("Truncated IHDR chunk", "Decompressed data too large")."""
    data = (CORPUS / name).read_bytes()
    for source in (CORPUS / name, data, bytearray(data)):
        with pytest.raises(ImageError, match="truncated or damaged"):
            load_image(source)


def test_an_icon_entry_larger_than_its_directory_says_is_refused():
    """The directory says 16x16; the PNG inside is 2000x2000 (Pillow decodes it inside Image.open)."""
    with pytest.raises(ImageError, match=r"2000x2000 pixels, over the limit of 1,000,000; raise --max"):
        load_image(icon_holding(grey_png(2000, 2000)), max_pixels=1_000_000)
    assert load_image(icon_holding(grey_png(900, 900)), max_pixels=1_000_000).size == (900, 900)


def test_an_icns_entry_is_checked_at_the_size_it_decodes_to():
    """The ic09 slot means 512x512; the PNG in it is 2000x2000 (Pillow decodes it in load())."""
    with pytest.raises(ImageError, match=r"2000x2000 pixels, over the limit of 1,000,000"):
        load_image(icns_holding(grey_png(2000, 2000)), max_pixels=1_000_000)
    assert load_image(icns_holding(grey_png(512, 512)), max_pixels=1_000_000).size == (512, 512)


def test_an_image_without_pixels_is_an_image_error():
    with pytest.raises(ImageError, match="no pixels"):
        load_image(np.zeros((0, 5, 3), np.uint8))


@pytest.mark.slow
def test_icon_bomb_is_refused_before_its_png_is_decoded():
    """Issue 18, item 7: a 12000x12000 PNG in an ICO declaring 256x256. Measured in a fresh
    process (VmHWM: ru_maxrss would carry pytest's own peak across exec): peak RSS may not grow by
    the 144 MB that decoding it takes."""
    code = (
        "import re, sys; sys.path.insert(0, 'tests'); from test_decode_errors import *\n"
        "def peak_kib():\n"
        "    return int(re.search(r'VmHWM:\\s+(\\d+)', open('/proc/self/status').read()).group(1))\n"
        "data = icon_holding(grey_png(12000, 12000), declared=0)\n"  # 0 means 256 in ICO
        "before = peak_kib()\n"
        "try:\n    load_image(data)\nexcept ImageError as err:\n    print(err)\n"
        "print('grew_kib', peak_kib() - before)\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO_ROOT)
    assert result.returncode == 0, result.stderr
    assert "12000x12000 pixels, over the limit of 100,000,000" in result.stdout
    grew_mib = int(re.search(r"grew_kib (\d+)", result.stdout).group(1)) / 1024
    print(f"peak RSS growth refusing the icon bomb: {grew_mib:.1f} MiB")
    assert grew_mib < 40


@pytest.mark.slow
def test_max_pixels_governs_above_pillows_own_limit():
    """A 14000x14000 image (196 MP) is over Pillow's 178,956,970-pixel error limit: --max-pixels
    200,000,000 lets it through, the default refuses it naming --max-pixels."""
    data = grey_png(14000, 14000)
    assert 14000 * 14000 > PILLOW_ERROR_LIMIT
    with pytest.raises(ImageError, match=r"over the limit of 100,000,000; raise --max-pixels"):
        load_image(data, max_pixels=DEFAULT_MAX_PIXELS)
    assert load_image(data, max_pixels=200_000_000).size == (14000, 14000)
    with pytest.raises(ImageError, match="over the limit of 1,000"):  # a later, lower limit still holds
        load_image(grey_png(40, 40), max_pixels=1_000)
    assert Image.MAX_IMAGE_PIXELS >= 200_000_000  # raised for the larger limit, never lowered


# ---- Remover, `rmbg remove` and `rmbg serve` on the corpus -------------------------------------------


@pytest.mark.slow
def test_remover_raises_image_error_and_refuses_a_single_image_as_a_list(exported_model_dir):
    from rmbg_runtime import Remover

    remover = Remover(exported_model_dir, "onnxruntime-cpu")
    with pytest.raises(ImageError, match="png_truncated_ihdr.png could not be decoded"):
        remover.remove_background(CORPUS / "png_truncated_ihdr.png")
    with pytest.raises(RmbgError, match=r"takes a list of images; for one image call predict_mask\(image\)"):
        remover.predict_masks(str(CORPUS / "bmp_cut00.bmp"))
    with pytest.raises(RmbgError, match="takes a list of images"):
        remover.remove_backgrounds(Image.new("RGB", (8, 8)))


@pytest.mark.slow
def test_rmbg_remove_over_the_corpus_reports_each_bad_file_and_writes_every_good_one(
    exported_model_dir, tmp_path
):
    folder, out = tmp_path / "in", tmp_path / "out"
    shutil.copytree(CORPUS, folder)
    for seed in range(3):
        pixels = np.random.default_rng(seed).integers(0, 255, (48, 64, 3), dtype=np.uint8)
        Image.fromarray(pixels).save(folder / f"good{seed}.jpg")
    # A folder or glob takes image suffixes only (rmbg_runtime.images), so the ICO files are left to the
    # API and server tests.
    files = sorted(f for f in folder.iterdir() if is_image_file(f))
    good = [f for f in files if decodes(f)]
    bad = [f for f in files if f not in good]
    result = subprocess.run(
        [*RMBG, "remove", f"{folder}/*", "-m", exported_model_dir, "-o", out, "--quiet"],
        capture_output=True, text=True, cwd=REPO_ROOT, timeout=900,
    )  # fmt: skip
    assert result.returncode == 1, result.stderr[-3000:]
    assert "Traceback" not in result.stderr
    # libtiff prints its own complaints straight to the stderr descriptor in pieces ("ZIPDecode: ",
    # then the message), which can land in the middle of our line: look for each report anywhere.
    assert result.stderr.count("error: ") == len(bad), result.stderr[-3000:]
    for path in bad:
        assert result.stderr.count(f"error: {path} ") == 1, path
    assert sorted(p.name for p in out.iterdir()) == sorted(f"{p.stem}.png" for p in good)
    assert len(good) >= 3


@pytest.mark.slow
def test_server_answers_damaged_and_bomb_images_with_400(exported_model_dir):
    from test_server import Server

    with Server(exported_model_dir, "--max-pixels", "1000000") as server:
        for body in (
            (CORPUS / "png_truncated_ihdr.png").read_bytes(),
            (CORPUS / "png_ztxt_50mb.png").read_bytes(),
            icon_holding(grey_png(2000, 2000)),
        ):
            response = server.post("/v1/remove", content=body)
            assert response.status_code == 400, response.text
            assert "could not be decoded" in response.text or "--max-pixels" in response.text
        good = io.BytesIO()
        Image.new("RGB", (40, 30), "blue").save(good, "PNG")
        assert server.post("/v1/remove", content=good.getvalue()).status_code == 200
