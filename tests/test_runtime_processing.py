"""Reference pre/post-processing and image decoding, without any model."""

from __future__ import annotations

import hashlib
import io
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from conftest import fill, load_fixture
from PIL import Image

from rmbg_runtime import ImageError, load_image, postprocess, preprocess

REPO_ROOT = Path(__file__).resolve().parents[1]


def formula_image() -> np.ndarray:
    fx = load_fixture("preprocess_postprocess")["image"]
    y, x = np.mgrid[0 : fx["height"], 0 : fx["width"]]
    rgb = np.stack([(7 * x + 3 * y) % 256, (x * y) % 256, ((x ^ y) * 5) % 256], -1).astype(np.uint8)
    assert hashlib.sha256(rgb.tobytes()).hexdigest() == fx["sha256_rgb_bytes"]
    return rgb


def test_preprocess_matches_model_card():
    fx = load_fixture("preprocess_postprocess")["preprocess"]
    x = preprocess(Image.fromarray(formula_image()), (1024, 1024))
    assert x.shape == tuple(fx["shape"]) and x.dtype == np.float32
    assert np.abs(x[:, ::8, ::8] - np.asarray(fx["strided_s8"])).max() <= 1e-5
    assert abs(float(x.mean()) - fx["mean"]) < 1e-5 and abs(float(x.std()) - fx["std"]) < 1e-5


def test_preprocess_size_is_width_height():
    x = preprocess(Image.new("RGB", (40, 30)), (64, 32))
    assert x.shape == (3, 32, 64)


def test_postprocess_matches_model_card():
    fx = load_fixture("preprocess_postprocess")["postprocess"]
    logits = 4 * fill.conformance_input((1, 1, 1024, 1024), "logits")
    prob = 1 / (1 + np.exp(-logits))
    mask = postprocess(prob[0, 0], (1500, 1000))
    assert mask.shape == tuple(fx["mask_shape"]) and mask.dtype == np.uint8
    assert np.abs(mask[::7, ::7].astype(int) - np.asarray(fx["strided_s7"])).max() <= 1
    assert abs(mask.mean() - fx["mask_mean"]) < 0.01
    assert hashlib.sha256(mask.tobytes()).hexdigest() == fx["mask_sha256"]  # byte-exact


def test_import_leaves_torch_and_heavy_extras_out():
    heavy = (
        "torch",
        "rmbg_export",
        "onnx",
        "fastapi",
        "uvicorn",
        "prometheus_client",
        "py_sod_metrics",
        "cv2",
        "av",
    )
    code = (
        "import sys, rmbg_runtime, rmbg_runtime.cli, rmbg_runtime.backends.onnxruntime, "
        "rmbg_runtime.backends.tensorrt, rmbg_runtime.threaded; "
        f"bad = [m for m in sys.modules if m.split('.')[0] in {heavy!r}]; "
        "print(bad); sys.exit(1 if bad else 0)"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO_ROOT)
    assert result.returncode == 0, result.stdout + result.stderr


def png_bytes(image: Image.Image, fmt: str = "PNG", **kw) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, fmt, **kw)
    return buffer.getvalue()


@pytest.mark.parametrize(
    ("image", "expected"),
    [
        (Image.new("L", (4, 3), 77), (77, 77, 77)),
        (Image.new("LA", (4, 3), (90, 10)), (90, 90, 90)),
        (Image.new("RGBA", (4, 3), (1, 2, 3, 0)), (1, 2, 3)),
        (Image.new("CMYK", (4, 3), (0, 0, 0, 0)), (255, 255, 255)),
        (Image.new("1", (4, 3), 1), (255, 255, 255)),
        (Image.new("I;16", (4, 3), 65535), (255, 255, 255)),
        (Image.new("I;16", (4, 3), 257 * 128), (128, 128, 128)),
        (Image.new("RGB", (4, 3), (9, 8, 7)).convert("P", palette=Image.Palette.ADAPTIVE), (9, 8, 7)),
    ],
    ids=["L", "LA", "RGBA", "CMYK", "1", "I16-max", "I16-mid", "P"],
)
def test_modes_become_rgb(image, expected):
    rgb = load_image(image)
    assert rgb.mode == "RGB" and rgb.size == (4, 3)
    assert rgb.getpixel((1, 1)) == expected


def test_sixteen_bit_png_file_is_rescaled(tmp_path):
    path = tmp_path / "deep.png"
    Image.fromarray(np.full((5, 6), 40000, dtype=np.uint16)).save(path)
    assert load_image(path).getpixel((0, 0)) == (156, 156, 156)  # 40000 / 257 = 155.6


def quadrants(width: int = 40, height: int = 20) -> np.ndarray:
    """Four flat colours, one per quadrant, so every rotation and mirror looks different."""
    image = np.zeros((height, width, 3), np.uint8)
    image[: height // 2, : width // 2] = (255, 0, 0)
    image[: height // 2, width // 2 :] = (0, 255, 0)
    image[height // 2 :, : width // 2] = (0, 0, 255)
    image[height // 2 :, width // 2 :] = (255, 255, 0)
    return image


# How a viewer shows stored pixels for each EXIF orientation (EXIF 2.32, tag 0x0112), in NumPy terms.
ORIENTED = {
    1: lambda a: a,
    2: lambda a: a[:, ::-1],
    3: lambda a: a[::-1, ::-1],
    4: lambda a: a[::-1],
    5: lambda a: a.transpose(1, 0, 2),
    6: lambda a: np.rot90(a, k=-1),  # rotate 90 degrees clockwise
    7: lambda a: a[::-1, ::-1].transpose(1, 0, 2),
    8: lambda a: np.rot90(a, k=1),  # rotate 90 degrees counter-clockwise
}


@pytest.mark.parametrize("orientation", sorted(ORIENTED))
@pytest.mark.parametrize("fmt", ["PNG", "JPEG"])
def test_exif_orientation_is_applied(orientation, fmt):
    stored = quadrants()
    exif = Image.Exif()
    exif[0x0112] = orientation
    loaded = np.asarray(load_image(png_bytes(Image.fromarray(stored), fmt, exif=exif.tobytes(), quality=95)))
    expected = ORIENTED[orientation](stored)
    assert loaded.shape == expected.shape
    # JPEG blurs the quadrant borders; compare each quadrant's centre.
    h, w = expected.shape[:2]
    for y in (h // 4, 3 * h // 4):
        for x in (w // 4, 3 * w // 4):
            assert np.abs(loaded[y, x].astype(int) - expected[y, x]).max() <= 8, (orientation, y, x)


def test_animated_gif_uses_first_frame():
    frames = [Image.new("RGB", (8, 8), c) for c in ((255, 0, 0), (0, 0, 255))]
    data = png_bytes(frames[0], "GIF", save_all=True, append_images=frames[1:])
    assert load_image(data).getpixel((3, 3)) == (255, 0, 0)


def test_array_inputs():
    array = np.zeros((5, 7, 3), np.uint8)
    array[..., 1] = 200
    assert load_image(array).getpixel((6, 4)) == (0, 200, 0)
    assert load_image(np.zeros((5, 7, 4), np.uint8)).size == (7, 5)


@pytest.mark.parametrize(
    ("source", "message"),
    [
        (b"", "is empty"),
        (b"definitely not an image", "not an image format"),
        ("/no/such/photo.jpg", "does not exist"),
        (np.zeros((4, 4, 3), np.float32), "must be uint8"),
        (np.zeros((4, 4, 2), np.uint8), "must be HxWx3"),
    ],
)
def test_bad_inputs_name_the_input(source, message):
    with pytest.raises(ImageError, match=message):
        load_image(source)


def test_truncated_file_is_reported(tmp_path):
    data = png_bytes(Image.effect_noise((256, 256), 50).convert("RGB"), "JPEG")
    path = tmp_path / "cut.jpg"
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(ImageError, match=r"cut\.jpg could not be decoded .* truncated or damaged"):
        load_image(path)


@pytest.mark.parametrize(
    "source",
    [png_bytes(Image.new("RGB", (100, 100))), Image.new("RGB", (100, 100)), np.zeros((100, 100, 3), "u1")],
    ids=["bytes", "pil", "array"],
)
def test_pixel_limit(source):
    with pytest.raises(ImageError, match="100x100 pixels, over the limit of 5,000"):
        load_image(source, max_pixels=5000)
    assert load_image(source, max_pixels=10_000).size == (100, 100)
