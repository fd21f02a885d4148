"""TensorRT decisions tested without TensorRT: version dispatch, profile, pre-flight operator check on
the graphs the exporter writes, and the runtime backend's refusals (with files the tests write)."""

from __future__ import annotations

import json
import shutil

import onnx
import pytest

from rmbg_export import ExportError
from rmbg_export.tensorrt.plan import (
    BuildPlan,
    build_plan,
    format_cuda_version,
    optimization_profile,
    parse_version,
    workspace_bytes,
)
from rmbg_export.tensorrt.preflight import check_graph, needs_plugins, require_supported
from rmbg_runtime import BackendUnavailable, ModelError, Remover
from rmbg_runtime.backends.tensorrt import batch_slices, engine_mismatches, refusal_sentence

LEGACY = "swin_v1_t_legacy_b1_512x512"


@pytest.mark.parametrize(
    ("version", "precision", "plan"),
    [
        ("11.4.0", "fp16", BuildPlan("fp16", strongly_typed=True, fp16_flag=False)),
        ("11.4.0", "fp32", BuildPlan("fp32", strongly_typed=True, fp16_flag=False)),
        ("10.12.0.36", "fp16", BuildPlan("fp16", strongly_typed=True, fp16_flag=False)),
        ("10.11.0", "fp16", BuildPlan("fp32", strongly_typed=False, fp16_flag=True)),
        ("10.1.0", "fp32", BuildPlan("fp32", strongly_typed=False, fp16_flag=False)),
    ],
)
def test_precision_path_per_version(version, precision, plan):
    assert build_plan(version, precision) == plan


def test_old_tensorrt_is_refused():
    with pytest.raises(ExportError, match=r"TensorRT 8\.6\.1 is too old: 10\.1 or later"):
        build_plan("8.6.1", "fp16")


def test_version_parsing_and_cuda_format():
    assert parse_version("10.12.0.36") == (10, 12, 0)
    assert parse_version("11.4.0rc1") == (11, 4, 0)
    assert format_cuda_version(12080) == "12.8" and format_cuda_version(13000) == "13.0"


def test_profile_and_workspace():
    profile = optimization_profile(1024, 768, max_batch=8, opt_batch=2)
    assert profile.as_dict() == {"min": [1, 3, 1024, 768], "opt": [2, 3, 1024, 768], "max": [8, 3, 1024, 768]}
    assert optimization_profile(512, 512, 4).opt == (1, 3, 512, 512)
    with pytest.raises(ExportError, match="--opt-batch 9 must lie between 1 and --max-batch 8"):
        optimization_profile(512, 512, 8, opt_batch=9)
    assert workspace_bytes(1.5) == 3 << 29 and workspace_bytes(None) is None


@pytest.mark.parametrize("mode", ["native", "grid_sample"])
@pytest.mark.parametrize("fp16", [False, True])
def test_exported_graphs_pass_preflight(export_graph, mode, fp16):
    model = onnx.load(str(export_graph(LEGACY, mode, 128, 128, fp16=fp16)))
    assert check_graph(model, "10.13.0") == []
    assert check_graph(model, "11.4.0") == []
    assert needs_plugins(model) == (mode == "native")


def test_preflight_names_offending_nodes(export_graph):
    model = onnx.load(str(export_graph(LEGACY, "native", 128, 128)))
    deform = next(n for n in model.graph.node if n.op_type == "DeformConv")
    for attr in deform.attribute:
        if attr.name == "pads":
            attr.ints[:] = [1, 1, 2, 2]
    model.graph.node.append(
        onnx.helper.make_node("Mystery", ["mask"], ["extra"], name="custom", domain="acme")
    )
    problems = [str(p) for p in check_graph(model, "10.13.0")]
    assert (
        f"DeformConv node {deform.name!r}: pads [1, 1, 2, 2] are not symmetric (TensorRT needs begin == end)"
        in problems
    )
    assert "Mystery node 'custom': not supported by TensorRT's ONNX parser" in problems
    with pytest.raises(
        ExportError,
        match=r"model\.onnx cannot be built with TensorRT 10\.0\.1: DeformConv node .* "
        r"needs TensorRT 10\.1 or later",
    ):
        require_supported(onnx.load(str(export_graph(LEGACY, "native", 128, 128))), "10.0.1", "model.onnx")


def test_preflight_checks_tensor_types():
    node = onnx.helper.make_node("Softmax", ["x"], ["y"], name="soft")
    graph = onnx.helper.make_graph(
        [node],
        "g",
        [onnx.helper.make_tensor_value_info("x", onnx.TensorProto.DOUBLE, [2, 3])],
        [onnx.helper.make_tensor_value_info("y", onnx.TensorProto.DOUBLE, [2, 3])],
    )
    problems = check_graph(onnx.helper.make_model(graph), "10.13.0")
    assert [p.reason for p in problems] == ["input 'x' is float64; TensorRT takes ['float32', 'float16']"]


# ---- runtime refusals ----------------------------------------------------------------------------------

RECORDED = {"tensorrt_version": "10.13.0", "gpu_name": "NVIDIA H100 80GB HBM3", "compute_capability": "9.0"}


def test_engine_mismatch_sentences():
    current = {"tensorrt_version": "11.4.0", "gpu_name": "NVIDIA L4", "compute_capability": "8.9"}
    problems = engine_mismatches(RECORDED, current)
    assert problems == [
        "TensorRT 10.13.0 (this machine: 11.4.0)",
        "GPU NVIDIA H100 80GB HBM3 (this machine: NVIDIA L4)",
        "compute capability 9.0 (this machine: 8.9)",
    ]
    assert refusal_sentence("model.engine", problems[:1]) == (
        "model.engine was built for TensorRT 10.13.0 (this machine: 11.4.0); rebuild it on this machine "
        "with `rmbg-export SOURCE --output DIR`."
    )
    assert engine_mismatches(RECORDED, dict(RECORDED)) == []


def test_batches_larger_than_the_profile_are_split():
    assert batch_slices(10, 4) == [slice(0, 4), slice(4, 8), slice(8, 10)]
    assert batch_slices(3, 4) == [slice(0, 3)]


@pytest.fixture()
def export_with_engine(exported_model_dir, tmp_path):
    folder = shutil.copytree(exported_model_dir, tmp_path / "with_engine")
    engine = folder / "model.engine"
    engine.write_bytes(b"serialized engine bytes")
    import hashlib

    meta = json.loads((folder / "model.json").read_text())
    meta["engine"] = RECORDED | {
        "path": "model.engine",
        "sha256": hashlib.sha256(engine.read_bytes()).hexdigest(),
        "precision": "fp16",
        "profile": {"min": [1, 3, 256, 256], "opt": [1, 3, 256, 256], "max": [3, 3, 256, 256]},
        "plugins": [],
    }
    (folder / "model.json").write_text(json.dumps(meta))
    return folder


def test_tensorrt_backend_refusals(export_with_engine):
    with pytest.raises(
        BackendUnavailable, match=r"TensorRT is not installed; pip install .*pypi\.nvidia\.com"
    ):
        Remover(export_with_engine, backend="tensorrt")
    (export_with_engine / "model.engine").write_bytes(b"another engine")
    with pytest.raises(ModelError, match=r"model\.engine does not match the sha256 recorded in model\.json"):
        Remover(export_with_engine, backend="tensorrt")
    (export_with_engine / "model.engine").unlink()
    with pytest.raises(ModelError, match=r"model\.engine is missing; run `rmbg-export` again"):
        Remover(export_with_engine, backend="tensorrt")


def test_auto_without_tensorrt_uses_onnxruntime(export_with_engine):
    assert Remover(export_with_engine).backend_name.startswith("onnxruntime-cpu")
