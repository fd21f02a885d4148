"""Exported graphs in ONNX Runtime CPU against the official recorded logits and our PyTorch model."""

from __future__ import annotations

import re
from collections import Counter

import numpy as np
import onnx
import pytest
import torch
from conftest import MAX_DIFF, MEAN_DIFF, assert_meets_fixture, fill, fixture_model, load_fixture

from rmbg_export.onnx.fp16 import FP32_OP_TYPES
from rmbg_export.onnx.trace import INPUT_NAME, OUTPUT_NAME
from rmbg_export.onnx.verify import mask_agreement, nonfinite_tensors, ort_session, synthetic_images

CASES = [
    ("swin_v1_t_legacy_b1_512x512", "native"),
    ("swin_v1_t_legacy_b1_512x512", "grid_sample"),
    ("swin_v1_t_einops_b2_512x512", "native"),
    ("swin_v1_t_einops_b2_512x512", "grid_sample"),
]


@pytest.mark.parametrize(("name", "mode"), CASES)
def test_graph_meets_conformance_bounds(name, mode, export_graph):
    """Traced at batch 1; the einops fixture runs at batch 2."""
    fx = load_fixture(name)
    session = ort_session(export_graph(name, mode, 512, 512))
    prob = session.run(None, {INPUT_NAME: fill.conformance_input(tuple(fx["input_shape"]))})[0]
    assert_meets_fixture(prob, fx)


@pytest.mark.parametrize("mode", ["native", "grid_sample"])
def test_non_square_resolution_and_batch_three(mode, export_graph):
    name = "swin_v1_t_legacy_b1_512x512"
    session = ort_session(export_graph(name, mode, 256, 384))
    x = synthetic_images(3, 256, 384, seed=7)
    prob = session.run(None, {INPUT_NAME: x})[0]
    with torch.inference_mode():
        expected = torch.sigmoid(fixture_model(name)(torch.from_numpy(x))).numpy()
    diff = np.abs(prob - expected)
    assert prob.shape == (3, 1, 256, 384)
    assert diff.max() <= MAX_DIFF and diff.mean() <= MEAN_DIFF


def test_graph_contract(export_graph):
    model = onnx.load(str(export_graph("swin_v1_t_legacy_b1_512x512", "native", 512, 512)))
    (inp,), (out,) = model.graph.input, model.graph.output
    assert (inp.name, out.name) == (INPUT_NAME, OUTPUT_NAME)
    for value, channels in ((inp, 3), (out, 1)):
        assert value.type.tensor_type.elem_type == onnx.TensorProto.FLOAT
        dims = value.type.tensor_type.shape.dim
        assert dims[0].dim_param == "batch" and [d.dim_value for d in dims[1:]] == [channels, 512, 512]
    ops = Counter(node.op_type for node in model.graph.node)
    assert ops["DeformConv"] == 20 and ops["BatchNormalization"] == 0 and ops["Sigmoid"] >= 1
    assert model.graph.node[-1].op_type == "Sigmoid"
    names = [init.name for init in model.graph.initializer]
    assert not [n for n in names if "conv_ms_spvn" in n or "gdt_convs_pred" in n]
    assert model.opset_import[0].version == 19
    big = [
        n.attribute[0].t.raw_data
        for n in model.graph.node
        if n.op_type == "Constant" and len(n.attribute[0].t.raw_data) >= 1 << 16
    ]
    assert big and len(big) == len(set(big)), "repeated constants (shift masks) should be shared"


def test_grid_sample_graph_uses_standard_operators_only(export_graph):
    model = onnx.load(str(export_graph("swin_v1_t_legacy_b1_512x512", "grid_sample", 512, 512)))
    ops = Counter(node.op_type for node in model.graph.node)
    assert ops["GridSample"] == 20 and "DeformConv" not in ops
    assert all(node.domain in ("", "ai.onnx") for node in model.graph.node)


@pytest.fixture(scope="module")
def fp16_pair(export_graph):
    name = "swin_v1_t_legacy_b1_512x512"
    return export_graph(name, "grid_sample", 256, 256), export_graph(name, "grid_sample", 256, 256, fp16=True)


def value_types(model: onnx.ModelProto) -> dict[str, int]:
    typed = onnx.shape_inference.infer_shapes(model)
    values = [*typed.graph.value_info, *typed.graph.input, *typed.graph.output]
    types = {v.name: v.type.tensor_type.elem_type for v in values}
    types.update({init.name: init.data_type for init in model.graph.initializer})
    return types


def test_mixed_precision_keeps_fragile_ops_in_fp32(fp16_pair):
    model = onnx.load(str(fp16_pair[1]))
    types = value_types(model)
    assert types[INPUT_NAME] == types[OUTPUT_NAME] == onnx.TensorProto.FLOAT
    checked = Counter()
    for node in model.graph.node:
        if node.op_type in FP32_OP_TYPES and node.op_type != "Resize":
            assert types[node.input[0]] == onnx.TensorProto.FLOAT, node.name
            checked[node.op_type] += 1
        if node.op_type == "Conv":
            assert types[node.input[1]] == onnx.TensorProto.FLOAT16, node.name
            checked["Conv"] += 1
        if re.search(r"/attn(_\d+)?/MatMul$", node.name) and types[node.output[0]] == onnx.TensorProto.FLOAT:
            checked["fp32 q·k"] += 1
    assert checked["LayerNormalization"] == 64 and checked["Softmax"] == 24 and checked["GridSample"] == 20
    assert checked["fp32 q·k"] == 24 and checked["Conv"] > 50


def test_mixed_precision_is_finite_and_close_to_fp32(fp16_pair):
    fp32, fp16 = (ort_session(p) for p in fp16_pair)
    images = synthetic_images(2, 256, 256, seed=3)
    reference = fp32.run(None, {INPUT_NAME: images})[0]
    mixed = fp16.run(None, {INPUT_NAME: images})[0]
    agreement = mask_agreement(reference, mixed)
    print(f"fp16 vs fp32: MAE {agreement.mask_mae:.2e}, IoU {agreement.iou_at_half:.5f}")
    assert agreement.finite and agreement.mask_mae <= 2e-3
    assert nonfinite_tensors(fp16_pair[1], images[:1]) == []


def sampling_coordinate_nodes(graph: onnx.GraphProto, types: dict[str, int]) -> list[onnx.NodeProto]:
    """Every node between an offset convolution and a GridSample's grid input, found by walking the
    graph backwards (independent of the selection that onnx/fp16.py makes)."""
    producers = {out: node for node in graph.node for out in node.output}
    floats = (onnx.TensorProto.FLOAT, onnx.TensorProto.FLOAT16)
    seen: dict[str, onnx.NodeProto] = {}
    frontier = [node.input[1] for node in graph.node if node.op_type == "GridSample"]
    while frontier:
        node = producers.get(frontier.pop())
        if node is None or node.name in seen or node.op_type in ("Constant", "Conv"):
            continue
        seen[node.name] = node
        frontier += [name for name in node.input if types.get(name) in floats]
    return list(seen.values())


def test_deform_sampling_coordinates_compute_in_fp32(fp16_pair):
    """At 1024 input the coordinates reach ~263 px, where fp16 steps are 1/8-1/4 px: every node from
    the offset conv's output to GridSample's grid must be fp32; the only fp16 -> fp32 step allowed is
    the Cast right after the offset convolution."""
    model = onnx.load(str(fp16_pair[1]))
    types = value_types(model)
    producers = {out: node for node in model.graph.node for out in node.output}
    chain = sampling_coordinate_nodes(model.graph, types)
    assert len(chain) >= 20 * 5, len(chain)  # several arithmetic steps per deformable conv
    for node in chain:
        float_outputs = [o for o in node.output if types.get(o) != onnx.TensorProto.INT64]
        assert all(types[o] == onnx.TensorProto.FLOAT for o in float_outputs), node.name
        if node.op_type == "Cast" and types.get(node.input[0]) == onnx.TensorProto.FLOAT16:
            assert producers[node.input[0]].op_type == "Conv", f"{node.name} casts fp16 arithmetic"


def test_native_deform_conv_inputs_are_fp32(export_graph):
    model = onnx.load(str(export_graph("swin_v1_t_legacy_b1_512x512", "native", 256, 256, fp16=True)))
    types = value_types(model)
    deform = [node for node in model.graph.node if node.op_type == "DeformConv"]
    assert len(deform) == 20
    for node in deform:
        assert {types[name] for name in node.input if name} == {onnx.TensorProto.FLOAT}, node.name


def scale_graph(path, dtype: int) -> None:
    """y = sigmoid(x * 70000) with the weight stored as `dtype`: fine in fp32; stored in fp16 the
    weight overflows to inf (65504 is fp16's largest), and 0 * inf is NaN."""
    from onnx import TensorProto, helper

    with np.errstate(over="ignore"):
        weight = np.array(70000, np.float32 if dtype == TensorProto.FLOAT else np.float16)  # fp16: inf
    nodes = [
        helper.make_node("Cast", ["x"], ["x_typed"], to=dtype),
        helper.make_node("Mul", ["x_typed", "w"], ["scaled"]),
        helper.make_node("Cast", ["scaled"], ["scaled32"], to=TensorProto.FLOAT),
        helper.make_node("Sigmoid", ["scaled32"], ["y"]),
    ]
    graph = helper.make_graph(
        nodes,
        "scale",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 3, 4, 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", 3, 4, 4])],
        [onnx.numpy_helper.from_array(weight, "w")],
    )
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 19)]), str(path))


def test_fp16_graph_producing_nan_fails_the_export_check(tmp_path):
    from onnx import TensorProto

    from rmbg_export.errors import ExportError
    from rmbg_export.onnx.verify import check_fp16_graph, run_graph

    fp32_path, fp16_path = tmp_path / "fp32.onnx", tmp_path / "fp16.onnx"
    scale_graph(fp32_path, TensorProto.FLOAT)
    scale_graph(fp16_path, TensorProto.FLOAT16)
    inputs = [np.zeros((1, 3, 4, 4), np.float32)]
    reference = run_graph(fp32_path, inputs)
    assert np.all(reference[0] == 0.5)  # the fp32 graph is fine
    with pytest.raises(ExportError, match="the fp16 graph produced NaN or Inf"):
        check_fp16_graph(fp16_path, inputs, reference)


def test_nan_mask_never_agrees():
    empty = np.zeros((1, 1, 8, 8), np.float32)
    agreement = mask_agreement(empty, np.full_like(empty, np.nan))
    assert not agreement.finite and agreement.iou_at_half == 0.0
    partly = empty.copy()
    partly[..., :2, :] = np.nan
    assert mask_agreement(empty, partly).iou_at_half == 0.0
    assert mask_agreement(empty, empty).iou_at_half == 1.0
