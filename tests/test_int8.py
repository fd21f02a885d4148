"""The int8 graph for ONNX Runtime CPU: made by the export, gated against fp32, picked by the runtime."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import pytest
from conftest import LEGACY_FIXTURE, export_fixture_model, fixture_model
from PIL import Image

from rmbg_export.errors import ExportError
from rmbg_export.onnx.calibration import minmax_ranges
from rmbg_export.onnx.int8 import (
    ACTIVATION_MATMULS,
    INT8_MAX_MAE,
    declared_float_convs,
    float_nodes,
    graph_to_quantise,
    int8_layers,
)
from rmbg_export.onnx.verify import run_graph, synthetic_images
from rmbg_runtime import Remover
from rmbg_runtime.metadata import read_model_spec, sha256_file

pytestmark = pytest.mark.slow  # two exports with calibration: about a minute on 2 cores


@pytest.fixture(scope="module")
def int8_model_dir(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("int8")
    return export_fixture_model(
        folder, height=256, width=256, max_batch=2, precision="fp32", onnx_only=True, cpu_int8=True
    )


def test_int8_graph_passes_its_gate_and_is_recorded(int8_model_dir):
    meta = json.loads((int8_model_dir / "model.json").read_text())
    entry = meta["onnx"]["graphs"]["int8"]
    assert entry["sha256"] == sha256_file(int8_model_dir / entry["path"])
    assert "synthetic" in entry["calibration"]
    assert entry["float_nodes"] == 2 * 24 + 5 + 10 + 1  # Swin-T: 24 window attentions over both passes
    assert entry["float_rules"] == [
        ACTIVATION_MATMULS,
        "conv_out of every decoder block",
        "input-patch blocks",
        "prediction head conv_out1",
    ]
    parity = meta["parity"]["int8_onnx_vs_fp32_onnx"]
    assert parity["finite"] and parity["mask_mae"] <= INT8_MAX_MAE


def test_declared_float_layers_resolve_to_exact_nodes_counted_per_rule(int8_model_dir, tmp_path):
    """The modules' declarations name exact Conv nodes, counted per rule: the five decoder blocks'
    conv_out (four + the squeeze block), the ten convolutions of the five input-patch blocks, the one
    prediction head; the attention MatMuls are two per window attention (full and half-scale pass)."""
    declared = declared_float_convs(fixture_model(LEGACY_FIXTURE))
    graph = onnx.load(str(graph_to_quantise(int8_model_dir / "model.onnx", tmp_path))).graph
    kept = float_nodes(graph, declared)
    softmaxes = sum(n.op_type == "Softmax" for n in graph.node)
    assert {rule: len(nodes) for rule, nodes in kept.items()} == {
        ACTIVATION_MATMULS: 2 * softmaxes,
        "conv_out of every decoder block": 5,
        "input-patch blocks": 10,
        "prediction head conv_out1": 1,
    }
    assert kept["prediction head conv_out1"] == ["/net/decoder/conv_out1/conv_out1.0/Conv"]
    assert "/net/squeeze_module/squeeze_module.0/conv_out/Conv" in kept["conv_out of every decoder block"]
    with pytest.raises(ValueError, match=r"no Conv node reads net\.decoder\.gone\.weight, declared float"):
        float_nodes(graph, {"renamed module": ("net.decoder.gone.weight",)})


def test_float_islands_stay_float(int8_model_dir, tmp_path):
    """The declared float layers and the attention MatMuls keep float weights and float inputs;
    every other Conv and weight MatMul is quantised, the backbone's second (half-scale) pass too,
    whose weights the trace shares through Identity nodes."""
    graph = onnx.load(str(int8_model_dir / "model_int8.onnx")).graph
    source = onnx.load(str(graph_to_quantise(int8_model_dir / "model.onnx", tmp_path))).graph
    kept = {
        n
        for nodes in float_nodes(source, declared_float_convs(fixture_model(LEGACY_FIXTURE))).values()
        for n in nodes
    }
    dequantised = {n.output[0] for n in graph.node if n.op_type == "DequantizeLinear"}
    layers = [n for n in graph.node if n.op_type in ("Conv", "MatMul")]
    int8 = set(int8_layers(graph))
    assert kept <= {n.name for n in layers} and not kept & int8
    for node in layers:
        from_dq = [i in dequantised for i in node.input[:2]]
        if node.name in kept:
            assert not any(from_dq), node.name
        else:
            assert all(from_dq), node.name
    offset_convs = [n for n in layers if "/offset_conv/" in n.name]
    assert offset_convs and all(n.name in int8 for n in offset_convs)
    deform_convs = [n for n in graph.node if n.op_type == "DeformConv"]  # no int8 kernel: float weights
    assert deform_convs and not [n for n in deform_convs if n.input[1] in dequantised]
    assert not [n for n in graph.node if n.op_type == "Identity" and n.input[0] in dequantised]


class FeedsReader:
    """ONNX Runtime's CalibrationDataReader protocol over a list of feeds."""

    def __init__(self, feeds: list[dict]) -> None:
        self.feeds = iter(feeds)

    def get_next(self) -> dict | None:
        return next(self.feeds, None)


def test_our_calibration_equals_onnx_runtimes_minmax_calibrater(int8_model_dir, tmp_path):
    """minmax_ranges (reductions beside their producers, node-order execution) must give the ranges
    ONNX Runtime's own MinMaxCalibrater gives, for every tensor that calibrater chooses, and the
    graph's own outputs."""
    from onnxruntime.quantization.calibrate import CalibrationMethod, create_calibrator
    from onnxruntime.quantization.quant_utils import load_model_with_shape_infer

    source = tmp_path / "fp32.onnx"
    onnx.save(load_model_with_shape_infer(int8_model_dir / "model.onnx"), str(source))
    batches = [image[None] for image in synthetic_images(2, 256, 256, seed=3)]
    calibrater = create_calibrator(
        source, ["Conv", "MatMul"], augmented_model_path=str(tmp_path / "augmented.onnx"),
        calibrate_method=CalibrationMethod.MinMax,
    )  # fmt: skip
    calibrater.collect_data(FeedsReader([{"image": batch} for batch in batches]))
    expected = calibrater.compute_data()
    ours = minmax_ranges(source, batches)
    assert len(expected.data) > 500 and set(expected.data) <= set(ours.ranges)
    for name, data in expected.data.items():
        assert np.array_equal(np.ravel(data.range_value), np.ravel(ours.ranges[name])), name
    # The same pass yields the fp32 masks the gate compares the user's photos against.
    for got, reference in zip(ours.outputs, run_graph(source, batches), strict=True):
        np.testing.assert_allclose(got, reference, atol=1e-5)


def test_runtime_picks_int8_on_cpu_unless_told_fp32(int8_model_dir):
    int8 = Remover(int8_model_dir, "onnxruntime-cpu")
    fp32 = Remover(int8_model_dir, "onnxruntime-cpu", precision="fp32")
    assert "int8" in int8.backend.name and "fp32" in fp32.backend.name
    batch = synthetic_images(2, 256, 256, seed=42)
    a, b = int8.backend.run(batch), fp32.backend.run(batch)
    assert not np.array_equal(a, b)  # a different graph really ran
    assert float(np.abs(a - b).mean()) <= INT8_MAX_MAE


def test_bad_calibration_fails_the_gate_and_leaves_no_int8_claim(tmp_path):
    """Calibrating on black images squeezes every activation range to nothing: the gate must catch it,
    and the folder must hold neither model.json nor an int8 graph."""
    photos = tmp_path / "black"
    photos.mkdir()
    for i in range(2):
        Image.new("RGB", (300, 200)).save(photos / f"black{i}.png")
    with pytest.raises(ExportError, match="int8 graph's masks differ from fp32 by MAE"):
        export_fixture_model(
            tmp_path, height=256, width=256, max_batch=1, precision="fp32", onnx_only=True, verify=False,
            cpu_int8=True, calibration_images=photos,
        )  # fmt: skip
    out = tmp_path / "model"
    assert not (out / "model.json").exists()
    assert sorted(p.name for p in out.iterdir()) == ["model.onnx"]


def test_calibration_images_need_cpu_int8(tmp_path):
    with pytest.raises(ExportError, match="add --cpu-int8"):
        export_fixture_model(tmp_path, height=64, width=64, onnx_only=True, calibration_images=tmp_path)


def test_spec_lists_the_int8_graph(int8_model_dir):
    spec = read_model_spec(int8_model_dir)
    assert spec.graph_path("int8").name == "model_int8.onnx"


def test_triton_cpu_repository_serves_the_int8_graph(int8_model_dir, tmp_path):
    from rmbg_export.triton.configs import TritonOptions
    from rmbg_export.triton.repository import write_repository

    options = TritonOptions(network="onnxruntime", kind="cpu")
    write_repository(int8_model_dir, tmp_path, options, log=lambda _line: None)
    served = sha256_file(tmp_path / "rmbg_network" / "1" / "model.onnx")
    assert served == read_model_spec(int8_model_dir).graphs["int8"].sha256


def test_an_onnx_runtime_without_calibration_cache_is_named():
    """ONNX Runtime before 1.27 has no calibration_cache_path: one sentence naming the upgrade."""
    from rmbg_export.onnx.int8 import require_calibration_cache

    def old_quantize_static(model_input, model_output, calibration_data_reader=None):  # noqa: ARG001
        raise AssertionError("not to be called")

    with pytest.raises(ExportError, match=r"needs onnxruntime 1\.27 or newer .*pip install -U onnxruntime"):
        require_calibration_cache(old_quantize_static)
    from onnxruntime.quantization import quantize_static

    require_calibration_cache(quantize_static)  # the installed one has it
