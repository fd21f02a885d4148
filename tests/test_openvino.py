"""OpenVINO: the DeformConv conversion, the IR in the export, the backend against the fixtures."""

from __future__ import annotations

import json

import numpy as np
import pytest
from test_deform_conv import reference

ov = pytest.importorskip("openvino")


def deform_conv_graph(path, weight, bias, pad: int, with_mask: bool = True):
    """A one-node ONNX graph: DeformConv(X, W, offset, B, mask) with dynamic batch and size."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    dims = ["n", "c", "h", "w"]
    inputs = [helper.make_tensor_value_info("x", TensorProto.FLOAT, dims)]
    inputs.append(helper.make_tensor_value_info("offset", TensorProto.FLOAT, ["n", "o", "h", "w"]))
    node_inputs = ["x", "W", "offset", "B"]
    if with_mask:
        inputs.append(helper.make_tensor_value_info("mask", TensorProto.FLOAT, ["n", "m", "h", "w"]))
        node_inputs.append("mask")
    k = weight.shape[-1]
    node = helper.make_node(
        "DeformConv", node_inputs, ["y"], kernel_shape=[k, k], pads=[pad] * 4, group=1, offset_group=1
    )
    graph = helper.make_graph(
        [node],
        "deform",
        inputs,
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
        initializer=[
            numpy_helper.from_array(weight.astype(np.float32), "W"),
            numpy_helper.from_array(bias.astype(np.float32), "B"),
        ],
    )
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 19)]), str(path))


@pytest.mark.parametrize("kernel_size", [1, 3, 7])
def test_deform_conv_mapping_matches_float64_reference(tmp_path, kernel_size):
    """Offsets of up to +-4 px push taps partly and wholly past the border; a modulation mask in
    [0, 2] as the network makes it."""
    from rmbg_export.openvino_ir import read_onnx

    rng = np.random.default_rng(kernel_size)
    batch, ch, out_ch, height, width = 2, 3, 4, 6, 5
    pad, taps = kernel_size // 2, kernel_size * kernel_size
    x = rng.standard_normal((batch, ch, height, width))
    offset = rng.uniform(-4, 4, (batch, 2 * taps, height, width))
    mask = rng.uniform(0, 2, (batch, taps, height, width))
    weight = rng.standard_normal((out_ch, ch, kernel_size, kernel_size))
    bias = rng.standard_normal(out_ch)
    expected = reference(x, offset, mask, weight, bias, pad)

    deform_conv_graph(tmp_path / "d.onnx", weight, bias, pad)
    compiled = ov.Core().compile_model(read_onnx(tmp_path / "d.onnx"), "CPU", {"INFERENCE_PRECISION_HINT": "f32"})
    feeds = {"x": x, "offset": offset, "mask": mask}
    got = compiled({name: value.astype(np.float32) for name, value in feeds.items()})[0]
    assert np.abs(got - expected).max() <= 1e-5
