"""Shared fixtures: conformance data and models filled with `fill.py` weights."""

from __future__ import annotations

import json
import socket
import sys
from functools import cache
from pathlib import Path

import numpy as np
import pytest

DATA = Path(__file__).parent / "data"
sys.path.insert(0, str(DATA))

import fill  # noqa: E402  (the shared conformance generator, copied into tests/data)

ARCH_FIXTURES = sorted(p.stem for p in DATA.glob("swin_v1_*.json"))
LEGACY_FIXTURE = "swin_v1_t_legacy_b1_512x512"  # the weights export_fixture_model exports


def free_port() -> int:
    """A free TCP port on 127.0.0.1, for a server under test."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@cache
def load_fixture(name: str) -> dict:
    return json.loads((DATA / f"{name}.json").read_text())


def fixture_state_dict(name: str) -> dict:
    """torch tensors for every floating-point entry of the fixture's manifest."""
    import torch

    shapes = {k: (tuple(shape), dtype) for k, (shape, dtype) in load_fixture(name)["state_dict"].items()}
    return {k: torch.from_numpy(v) for k, v in fill.conformance_state_dict(shapes).items()}


@cache
def fixture_model(name: str):
    """Our model with the fixture's weights (cached: treat as read-only)."""
    from rmbg_export.model import create_model

    fx = load_fixture(name)
    model = create_model(fx["backbone"], fx["patch_order"])
    model.load_state_dict(fixture_state_dict(name), strict=False)
    return model


@pytest.fixture(scope="session")
def export_graph(tmp_path_factory):
    """export_graph(name, mode, height, width, fp16=False) -> path of a cached exported graph."""
    folder = tmp_path_factory.mktemp("graphs")

    @cache
    def export(name: str, mode: str, height: int, width: int, fp16: bool = False) -> Path:
        import onnx

        from rmbg_export.onnx.fp16 import declared_fp32_scopes, to_mixed_precision
        from rmbg_export.onnx.trace import trace_to_onnx

        path = folder / f"{name}_{mode}_{height}x{width}.onnx"
        if not path.exists():
            trace_to_onnx(fixture_model(name), path, resolution=(height, width), deform_conv=mode)
        if not fp16:
            return path
        mixed = path.with_name(path.stem + "_fp16.onnx")
        declared = declared_fp32_scopes(fixture_model(name))
        onnx.save(to_mixed_precision(onnx.load(str(path)), declared), str(mixed))
        return mixed

    return export


@pytest.fixture(scope="session")
def swin_t_legacy():
    return fixture_model("swin_v1_t_legacy_b1_512x512")


def export_fixture_model(folder: Path, **options) -> Path:
    """Run the real export pipeline on fixture Swin-T weights; returns the model folder."""
    from safetensors.torch import save_file

    from rmbg_export.export_run import ExportOptions, run_export

    checkpoint = folder / "weights.safetensors"
    save_file(fixture_model(LEGACY_FIXTURE).state_dict(), str(checkpoint))
    run_export(
        ExportOptions(source=str(checkpoint), output=folder / "model", patch_order="legacy", **options),
        log=lambda _line: None,
    )
    checkpoint.unlink()
    return folder / "model"


@pytest.fixture(scope="session")
def exported_model_dir(tmp_path_factory):
    """A real export (fixture Swin-T weights, 256x256, batch up to 3, fp32 + fp16 graphs)."""
    folder = tmp_path_factory.mktemp("export")
    return export_fixture_model(folder, height=256, width=256, max_batch=3, onnx_only=True)


@pytest.fixture(scope="session")
def openvino_export(tmp_path_factory):
    """A real export: fixture Swin-T weights, 256x256, batch up to 2, fp32 + int8 graphs and IR."""
    folder = tmp_path_factory.mktemp("openvino-export")
    return export_fixture_model(
        folder,
        height=256,
        width=256,
        max_batch=2,
        onnx_only=True,
        precision="fp32",
        cpu_int8=True,
        openvino=True,
    )


STAND_IN_DEVICE = {
    "gpu_name": "NVIDIA H100 80GB HBM3",
    "compute_capability": "9.0",
    "nvidia_driver_version": "570.86.15",
    "cuda_driver_version": "12.8",
    "tensorrt_cuda": "cu12",
}


def stand_in_engine_record(
    height: int, width: int, precision: str, max_batch: int, sha256: str, tensorrt_version: str = "10.13.3.9"
):
    """An engine record made the way the export makes one, by its own record step
    (tensorrt.plan.engine_record), for an engine that was never built (no TensorRT here)."""
    from rmbg_export.options import EngineOptions
    from rmbg_export.tensorrt.plan import BuiltEngine, build_plan, engine_record, optimization_profile
    from rmbg_runtime.contract import ENGINE_NAME, GRAPH_FILES

    built = BuiltEngine(
        path=ENGINE_NAME,
        sha256=sha256,
        tensorrt_version=tensorrt_version,
        device=STAND_IN_DEVICE,
        precision=precision,
        plan=build_plan(tensorrt_version, precision),
        fp32_layers_pinned=0,
        graph=GRAPH_FILES[precision],
        profile=optimization_profile(height, width, max_batch),
        plugins=(),
        timing_cache="timing.cache",
        build_seconds=1.0,
    )
    return engine_record(built, EngineOptions())


def add_stand_in_engine(folder: Path, max_batch: int, tensorrt_version: str = "10.13.3.9") -> Path:
    """Record a stand-in file as the export's TensorRT engine in its model.json, through the contract."""
    import hashlib

    from rmbg_runtime.contract import ENGINE_NAME, METADATA_NAME
    from rmbg_runtime.metadata import read_model_spec

    spec = read_model_spec(folder)
    engine = folder / ENGINE_NAME
    engine.write_bytes(b"serialized engine stand-in")
    sha256 = hashlib.sha256(engine.read_bytes()).hexdigest()
    record = stand_in_engine_record(
        spec.height, spec.width, spec.precision, max_batch, sha256, tensorrt_version
    )
    (folder / METADATA_NAME).write_text(json.dumps(spec.with_engine(record).to_dict()))
    return folder


MAX_DIFF, MEAN_DIFF = 1e-3, 1e-4  # the conformance bound on probabilities (shared/conformance/README)


def sigmoid(x):
    return 1.0 / (1.0 + np.exp(-np.asarray(x, dtype=np.float64)))


def assert_meets_fixture(prob, fx: dict) -> None:
    """`prob` (B, 1, H, W) against the official code's recorded logits: the strided grid and corners."""
    assert prob.shape == tuple(fx["output_shape"])
    diff = np.abs(prob[:, :, ::16, ::16] - sigmoid(fx["strided_s16"]))
    assert diff.max() <= MAX_DIFF and diff.mean() <= MEAN_DIFF, (diff.max(), diff.mean())
    h, w = prob.shape[2:]
    corners = [prob[0, 0, 0, 0], prob[0, 0, h // 2, w // 3], prob[-1, 0, -1, -1]]
    np.testing.assert_allclose(corners, sigmoid(fx["corner_values"]), atol=MAX_DIFF)
