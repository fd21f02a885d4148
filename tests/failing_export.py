"""An export whose fp32 graph is a real ONNX graph that ONNX Runtime runs until it meets a bright
image, and then raises: the backend failing mid-run, with no stand-in for the backend."""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import numpy as np
from PIL import Image

from rmbg_runtime.contract import METADATA_NAME, GraphEntry
from rmbg_runtime.metadata import read_model_spec

# A normalised pixel above this is brighter than ImageNet's mean by 2 standard deviations: a white
# image crosses it, a dark one does not (preprocess: (v / 255 - 0.485) / 0.229 is 2.25 for white).
FAILS_ABOVE = 2.0


def failing_graph(input_name: str, output_name: str):
    """probability = sigmoid(mean over channels); then Reshape to (N, 1 + bright, H, W), which ONNX
    Runtime refuses at run time when the batch holds a pixel above FAILS_ABOVE."""
    import onnx
    from onnx import TensorProto, helper

    def const(name, values, dtype=TensorProto.INT64, dims=None):
        dims = [len(values)] if dims is None else dims
        return helper.make_node("Constant", [], [name], value=helper.make_tensor(name, dtype, dims, values))

    nodes = [
        helper.make_node("ReduceMean", [input_name], ["mean"], axes=[1], keepdims=1),
        helper.make_node("Sigmoid", ["mean"], ["prob"]),
        helper.make_node("ReduceMax", [input_name], ["peak"], keepdims=0),
        const("limit", [FAILS_ABOVE], TensorProto.FLOAT, dims=[]),
        helper.make_node("Greater", ["peak", "limit"], ["bright"]),
        helper.make_node("Cast", ["bright"], ["bright_int"], to=TensorProto.INT64),
        const("channel_axis", [0, 1, 0, 0]),
        helper.make_node("Mul", ["channel_axis", "bright_int"], ["extra"]),
        helper.make_node("Shape", ["prob"], ["shape"]),
        helper.make_node("Add", ["shape", "extra"], ["target"]),
        helper.make_node("Reshape", ["prob", "target"], [output_name]),
    ]  # fmt: skip
    graph = helper.make_graph(
        nodes,
        "fails_on_bright_images",
        [helper.make_tensor_value_info(input_name, TensorProto.FLOAT, ["N", 3, "H", "W"])],
        [helper.make_tensor_value_info(output_name, TensorProto.FLOAT, ["N", 1, "H", "W"])],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    return model


def make_failing_export(source: Path, folder: Path) -> Path:
    """A copy of the export `source` whose fp32 graph fails on bright images (model.json updated)."""
    import onnx

    shutil.copytree(source, folder)
    spec = read_model_spec(folder)
    path = spec.graph_path("fp32")
    for extra in folder.glob(f"{path.name}.data"):
        extra.unlink()
    onnx.save(failing_graph(spec.input_name, spec.output_name), str(path))
    entry = GraphEntry(path=spec.graph("fp32").path, sha256=hashlib.sha256(path.read_bytes()).hexdigest())
    (folder / METADATA_NAME).write_text(json.dumps(spec.with_graph("fp32", entry).to_dict()))
    return folder


def dark(seed: int) -> Image.Image:
    rng = np.random.default_rng(seed)
    return Image.fromarray(rng.integers(0, 100, (40, 50, 3), dtype=np.uint8))


def bright() -> Image.Image:
    return Image.new("RGB", (50, 40), "white")
