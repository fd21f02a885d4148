"""The GPU path: TensorRT engine build, verification and the runtime's TensorRT backend.

Skipped, with the reason shown, where there is no NVIDIA GPU, CUDA or TensorRT (CI and the
development machines). Run with `pytest -m gpu -rs` where they exist.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
from conftest import export_fixture_model

from rmbg_export.tensorrt.environment import missing_build_requirement

MISSING = missing_build_requirement()
pytestmark = [pytest.mark.gpu, pytest.mark.skipif(MISSING is not None, reason=f"GPU path: {MISSING}")]


@pytest.fixture(scope="module", params=["fp16", "fp32"])
def engine_export(request, tmp_path_factory):
    folder = tmp_path_factory.mktemp(f"engine_{request.param}")
    return export_fixture_model(folder, height=512, width=512, max_batch=4, precision=request.param)


def test_engine_is_recorded_and_close_to_fp32(engine_export):
    meta = json.loads((engine_export / "model.json").read_text())
    engine = meta["engine"]
    assert engine["parity"]["mask_mae"] <= 1e-3 and engine["parity"]["iou_at_half"] >= 0.999
    assert engine["profile"]["max"][0] == 4 and engine["gpu_name"]


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
