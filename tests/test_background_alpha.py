"""A background colour with an alpha is honoured the same way by the API, `rmbg remove` and both
server endpoints: RGBA out, the cut-out over the colour by Porter-Duff "over" (Pillow's
alpha_composite, as rembg's `bgc`); an opaque colour gives RGB."""

from __future__ import annotations

import io
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from rmbg_runtime import RmbgError
from rmbg_runtime.stages import OutputOptions, parse_color, render

REPO_ROOT = Path(__file__).resolve().parents[1]
RMBG = [sys.executable, "-c", "from rmbg_runtime.cli import main; main()"]


def photo() -> Image.Image:
    pixels = np.random.default_rng(5).integers(0, 255, (30, 40, 3), dtype=np.uint8)
    return Image.fromarray(pixels)


def over(image: Image.Image, alpha: np.ndarray, rgba: tuple[int, int, int, int]) -> np.ndarray:
    """Porter-Duff "over" in floats: the cut-out (alpha) over the colour (its own alpha)."""
    a_fg, a_bg = alpha[..., None] / 255.0, rgba[3] / 255.0
    out_a = a_fg + a_bg * (1 - a_fg)
    colour = (np.asarray(image) * a_fg + np.array(rgba[:3]) * a_bg * (1 - a_fg)) / np.maximum(out_a, 1e-9)
    return np.concatenate([colour, out_a * 255], axis=-1)


@pytest.mark.parametrize(
    ("given", "parsed"),
    [
        ("#00ff0080", (0, 255, 0, 128)),
        ((0, 255, 0, 128), (0, 255, 0, 128)),
        ("#00ff00ff", (0, 255, 0)),
        ((0, 255, 0, 255), (0, 255, 0)),
        ("white", (255, 255, 255)),
        ([1, 2, 3], (1, 2, 3)),
    ],
)
def test_parse_color_keeps_a_translucent_alpha(given, parsed):
    assert parse_color(given) == parsed


@pytest.mark.parametrize("bad", ["#00ff008", "nocolour", (1, 2), (1, 2, 3, 256), ("a", 1, 2)])
def test_parse_color_refuses_in_one_sentence(bad):
    with pytest.raises(RmbgError, match="colour"):
        parse_color(bad)


def test_render_composites_over_a_translucent_colour_and_flattens_an_opaque_one():
    image = photo()
    alpha = np.tile(np.linspace(0, 255, 40).astype(np.uint8), (30, 1))
    translucent = render(image, alpha, OutputOptions(background=(0, 255, 0, 128)))
    assert translucent.mode == "RGBA"
    assert np.abs(np.asarray(translucent).astype(float) - over(image, alpha, (0, 255, 0, 128))).max() <= 2
    opaque = render(image, alpha, OutputOptions(background=(0, 255, 0, 255)))
    assert opaque.mode == "RGB"
    assert np.abs(np.asarray(opaque).astype(float) - over(image, alpha, (0, 255, 0, 255))[..., :3]).max() <= 2


@pytest.mark.slow
def test_api_cli_and_server_agree_on_a_translucent_background(exported_model_dir, tmp_path):
    from test_server import Server

    from rmbg_runtime import Remover

    image = photo()
    source = tmp_path / "photo.png"
    image.save(source)
    remover = Remover(exported_model_dir, "onnxruntime-cpu")
    alpha = np.asarray(remover.remove_background(image, mask_only=True))
    expected = over(image, alpha, (0, 255, 0, 128))

    def close(result: Image.Image) -> None:
        assert result.mode == "RGBA" and np.abs(np.asarray(result).astype(float) - expected).max() <= 2

    close(remover.remove_background(image, background="#00ff0080"))
    close(remover.remove_background(image, background=(0, 255, 0, 128)))
    assert remover.remove_background(image, background="#00ff00ff").mode == "RGB"

    out = tmp_path / "out.png"
    args = ["remove", source, "-m", exported_model_dir, "-o", out, "--background", "#00ff0080"]
    result = subprocess.run([*RMBG, *map(str, args)], capture_output=True, text=True, cwd=REPO_ROOT)
    assert result.returncode == 0, result.stderr
    close(Image.open(out))

    with Server(exported_model_dir) as server:
        body = source.read_bytes()
        v1 = server.post("/v1/remove", params={"background": "#00ff0080"}, content=body)
        assert v1.status_code == 200, v1.text
        close(Image.open(io.BytesIO(v1.content)))
        files = {"file": ("photo.png", body, "image/png")}
        rembg = server.post("/api/remove", files=files, data={"bgc": "0,255,0,128"})
        assert rembg.status_code == 200, rembg.text
        close(Image.open(io.BytesIO(rembg.content)))
        opaque = server.post("/api/remove", files=files, data={"bgc": "0,255,0,255"})
        assert Image.open(io.BytesIO(opaque.content)).mode == "RGB"
