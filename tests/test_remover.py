"""`Remover` end to end on a real export (ONNX Runtime CPU), against the model card's PyTorch path."""

from __future__ import annotations

import hashlib
import json
import shutil
import subprocess
import sys
import threading
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import fixture_model
from PIL import Image
from recording_backend import RecordingBackend

from rmbg_runtime import BackendUnavailable, ImageError, ModelError, Remover, postprocess, preprocess
from rmbg_runtime.errors import RmbgError

REPO_ROOT = Path(__file__).resolve().parents[1]


def gpu_software_here() -> str | None:
    """Why the CPU-only backend-choice tests cannot hold on this machine, or None."""
    import importlib.util

    import onnxruntime

    if importlib.util.find_spec("tensorrt") is not None:
        return "TensorRT is installed here"
    if "CUDAExecutionProvider" in onnxruntime.get_available_providers():
        return "onnxruntime-gpu is installed here"
    return None


cpu_only = pytest.mark.skipif(gpu_software_here() is not None, reason=f"{gpu_software_here()}")


def photo(width: int, height: int, seed: int) -> Image.Image:
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:height, 0:width]
    base = np.stack([x * 255 / width, y * 255 / height, np.full_like(x, 128.0)], -1)
    inside = (x - width * rng.uniform(0.3, 0.7)) ** 2 + (y - height * rng.uniform(0.3, 0.7)) ** 2
    base[inside < (0.25 * min(width, height)) ** 2] = rng.uniform(0, 255, 3)
    return Image.fromarray(np.clip(base + rng.normal(0, 6, base.shape), 0, 255).astype(np.uint8))


@pytest.fixture(scope="module")
def remover(exported_model_dir):
    return Remover(exported_model_dir, backend="onnxruntime-cpu")


def model_card_alpha(image: Image.Image) -> np.ndarray:
    """The model card's pipeline with our PyTorch model: preprocess, network, sigmoid, 8 bits, resize."""
    x = torch.from_numpy(preprocess(image, (256, 256))[None])
    with torch.inference_mode():
        prob = torch.sigmoid(fixture_model("swin_v1_t_legacy_b1_512x512")(x))[0, 0].numpy()
    return postprocess(prob, image.size)


@cpu_only
def test_auto_picks_onnxruntime_cpu_here(exported_model_dir):
    assert Remover(exported_model_dir).backend_name == "onnxruntime-cpu (fp32 graph)"


def test_cut_out_matches_model_card(remover):
    image = photo(300, 200, seed=1)
    rgba = remover.remove_background(image)
    assert rgba.mode == "RGBA" and rgba.size == (300, 200)
    alpha = np.asarray(rgba)[..., 3].astype(int)
    assert np.abs(alpha - model_card_alpha(image)).max() <= 1
    assert np.array_equal(np.asarray(rgba)[..., :3], np.asarray(image))  # straight alpha


def test_predict_mask_is_float_alpha_at_image_size(remover):
    image = photo(123, 77, seed=2)
    mask = remover.predict_mask(image)
    assert mask.shape == (77, 123) and mask.dtype == np.float32
    assert 0.0 <= mask.min() and mask.max() <= 1.0
    assert np.abs(mask * 255 - model_card_alpha(image)).max() <= 2.0


def test_batch_gives_the_same_masks_as_one_by_one(remover):
    images = [photo(64 + 16 * i, 48, seed=10 + i) for i in range(5)]  # 5 > max batch 3: two calls
    batched = remover.predict_masks(images)
    for image, mask in zip(images, batched, strict=True):
        np.testing.assert_allclose(mask, remover.predict_mask(image), atol=1e-5)


def test_every_input_type_gives_the_same_mask(remover, tmp_path):
    image = photo(90, 60, seed=3)
    path = tmp_path / "p.png"
    image.save(path)
    expected = remover.predict_mask(image)
    for source in (path, str(path), path.read_bytes(), np.asarray(image)):
        np.testing.assert_array_equal(remover.predict_mask(source), expected)


def test_background_and_mask_only(remover):
    image = photo(80, 50, seed=4)
    alpha = np.asarray(remover.remove_background(image, mask_only=True))
    assert alpha.shape == (50, 80) and alpha.dtype == np.uint8
    flat = np.asarray(remover.remove_background(image, background="#00ff00")).astype(float)
    a = alpha[..., None] / 255.0
    expected = np.asarray(image) * a + np.array([0, 255, 0]) * (1 - a)
    assert np.abs(flat - expected).max() <= 1.0
    with pytest.raises(RmbgError, match="not a colour name"):
        remover.remove_background(image, background="notacolour")


def test_bad_input_names_it(remover):
    with pytest.raises(ImageError, match=r"<23 bytes> is not an image format"):
        remover.predict_mask(b"this is not a png image")


def test_backend_calls_are_serialised_across_threads(exported_model_dir):
    backend = RecordingBackend(max_batch=2)
    remover = Remover(exported_model_dir, backend=backend)
    images = [photo(40, 30, seed=40 + i) for i in range(3)]
    threads = [threading.Thread(target=remover.predict_masks, args=(images,)) for _ in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(backend.sizes) == 12  # 6 threads x (2 + 1)
    assert backend.most_active == 1


def test_batches_respect_the_backends_max_batch(exported_model_dir):
    backend = RecordingBackend(max_batch=2, seconds=0)
    remover = Remover(exported_model_dir, backend=backend)
    masks = remover.predict_masks([photo(30 + i, 20, seed=50 + i) for i in range(5)])
    assert backend.sizes == [2, 2, 1]
    assert [m.shape for m in masks] == [(20, 30 + i) for i in range(5)]
    assert all(np.allclose(m, 0.75, atol=1e-6) for m in masks)


def test_thread_safe_results(remover):
    images = [photo(70, 70, seed=20 + i) for i in range(4)]
    expected = [remover.predict_mask(im) for im in images]
    results: dict[int, np.ndarray] = {}

    def work(i: int) -> None:
        results[i] = remover.predict_mask(images[i])

    threads = [threading.Thread(target=work, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for i in range(4):
        np.testing.assert_array_equal(results[i], expected[i])


@cpu_only
def test_gpu_backends_are_errors_not_fallbacks(exported_model_dir):
    with pytest.raises(BackendUnavailable, match="no CUDA provider"):
        Remover(exported_model_dir, backend="onnxruntime-cuda")
    with pytest.raises(ModelError, match="has no TensorRT engine"):
        Remover(exported_model_dir, backend="tensorrt")
    with pytest.raises(BackendUnavailable, match="backend 'gpu' is unknown"):
        Remover(exported_model_dir, backend="gpu")


def copy_export(source: Path, target: Path) -> Path:
    shutil.copytree(source, target)
    return target


def test_model_folder_errors(exported_model_dir, tmp_path):
    with pytest.raises(ModelError, match="holds no model.json"):
        Remover(tmp_path)
    broken = copy_export(exported_model_dir, tmp_path / "changed")
    with open(broken / "model.onnx", "ab") as f:
        f.write(b"\0")
    with pytest.raises(ModelError, match="does not match the sha256 recorded"):
        Remover(broken, backend="onnxruntime-cpu")
    meta = json.loads((broken / "model.json").read_text())
    (broken / "model.onnx").write_bytes(b"not a graph")
    meta["onnx"]["graphs"]["fp32"]["sha256"] = hashlib.sha256(b"not a graph").hexdigest()
    (broken / "model.json").write_text(json.dumps(meta))
    with pytest.raises(ModelError, match=r"ONNX Runtime .* cannot load model\.onnx .*re-export"):
        Remover(broken, backend="onnxruntime-cpu")
    (broken / "model.json").write_text(json.dumps(meta | {"schema_version": 99}))
    with pytest.raises(ModelError, match="schema version 99"):
        Remover(broken)


def test_runtime_runs_where_torch_cannot_be_imported(exported_model_dir, tmp_path):
    image = tmp_path / "in.png"
    photo(50, 40, seed=5).save(image)
    code = (
        "import sys; sys.modules['torch'] = None; sys.modules['rmbg_export'] = None\n"
        "from rmbg_runtime import Remover\n"
        f"out = Remover({str(exported_model_dir)!r}).remove_background({str(image)!r})\n"
        "print(out.mode, out.size)"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO_ROOT)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "RGBA (50, 40)"
