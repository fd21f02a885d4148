"""Shared fixtures: conformance data and models filled with `fill.py` weights."""

from __future__ import annotations

import json
import socket
import sys
from functools import cache
from pathlib import Path

import pytest

DATA = Path(__file__).parent / "data"
sys.path.insert(0, str(DATA))

import fill  # noqa: E402  (the shared conformance generator, copied into tests/data)

ARCH_FIXTURES = sorted(p.stem for p in DATA.glob("swin_v1_*.json"))


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

        from rmbg_export.onnx.fp16 import to_mixed_precision
        from rmbg_export.onnx.trace import trace_to_onnx

        path = folder / f"{name}_{mode}_{height}x{width}.onnx"
        if not path.exists():
            trace_to_onnx(fixture_model(name), path, resolution=(height, width), deform_conv=mode)
        if not fp16:
            return path
        mixed = path.with_name(path.stem + "_fp16.onnx")
        onnx.save(to_mixed_precision(onnx.load(str(path))), str(mixed))
        return mixed

    return export


@pytest.fixture(scope="session")
def swin_t_legacy():
    return fixture_model("swin_v1_t_legacy_b1_512x512")


def export_fixture_model(folder: Path, **options) -> Path:
    """Run the real export pipeline on fixture Swin-T weights; returns the model folder."""
    from safetensors.torch import save_file

    from rmbg_export.pipeline import ExportOptions, run_export

    checkpoint = folder / "weights.safetensors"
    save_file(fixture_model("swin_v1_t_legacy_b1_512x512").state_dict(), str(checkpoint))
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
