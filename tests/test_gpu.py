"""The GPU path: the CUDA buffer layer (cuda-python alone), then TensorRT engine build,
verification and the runtime's TensorRT backend.

Skipped, with the reason shown, where there is no NVIDIA GPU, cuda-python or TensorRT (CI and the
development machines). Run with `pytest -m gpu -rs` where they exist.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
from conftest import export_fixture_model

from rmbg_export.tensorrt.environment import missing_build_requirement

MISSING = missing_build_requirement()
needs_tensorrt = pytest.mark.skipif(MISSING is not None, reason=f"GPU path: {MISSING}")
pytestmark = pytest.mark.gpu


def missing_cuda() -> str | None:
    try:
        from cuda.bindings import runtime as cudart
    except ImportError:
        return "cuda-python is not installed"
    err, count = cudart.cudaGetDeviceCount()
    return None if int(err) == 0 and count > 0 else f"no CUDA GPU ({err})"


@pytest.mark.skipif(missing_cuda() is not None, reason=f"CUDA layer: {missing_cuda()}")
def test_device_buffers_round_trip():
    """Host -> device -> host through pinned buffers on one stream, full and partial batches, and
    close() twice; a closed buffer set refuses work."""
    from cuda.bindings import runtime as cudart

    from rmbg_runtime.backends.cuda import DeviceBuffers
    from rmbg_runtime.errors import RmbgError

    buffers = DeviceBuffers(cudart, {"image": (3, 64, 48), "mask": (1, 64, 48)}, max_items=4)
    rng = np.random.default_rng(0)
    for n in (4, 1, 3):
        images = rng.standard_normal((n, 3, 64, 48)).astype(np.float32)
        buffers.upload("image", images)
        np.testing.assert_array_equal(buffers.download("image", n), images)
    with pytest.raises(RmbgError, match="does not fit"):
        buffers.upload("image", np.zeros((5, 3, 64, 48), np.float32))
    buffers.close()
    buffers.close()
    with pytest.raises(RmbgError, match="released"):
        buffers.upload("image", np.zeros((1, 3, 64, 48), np.float32))


@pytest.fixture(scope="module", params=["fp16", "fp32"])
def engine_export(request, tmp_path_factory):
    folder = tmp_path_factory.mktemp(f"engine_{request.param}")
    return export_fixture_model(folder, height=512, width=512, max_batch=4, precision=request.param)


@needs_tensorrt
def test_engine_is_recorded_and_close_to_fp32(engine_export):
    meta = json.loads((engine_export / "model.json").read_text())
    engine = meta["engine"]
    assert engine["parity"]["mask_mae"] <= 1e-3 and engine["parity"]["iou_at_half"] >= 0.999
    assert engine["profile"]["max"][0] == 4 and engine["gpu_name"]
    assert engine["tf32"] is False and engine["tensorrt_cuda"] in ("cu12", "cu13")
    assert (engine_export / engine["timing_cache"]).is_file()


@needs_tensorrt
def test_tensorrt_backend_matches_onnxruntime_and_splits_batches(engine_export):
    from rmbg_export.onnx.verify import synthetic_images
    from rmbg_runtime import Remover

    trt = Remover(engine_export, backend="tensorrt")
    ort = Remover(engine_export, backend="onnxruntime-cpu")
    batch = synthetic_images(6, 512, 512, seed=1)  # 6 > max batch 4: split in two
    got = trt.backend.run(batch)
    expected = ort.backend.run(batch)
    assert got.shape == (6, 1, 512, 512)
    assert np.abs(got - expected).mean() <= 1e-3
