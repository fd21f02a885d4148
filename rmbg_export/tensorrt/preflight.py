"""Checks a graph against TensorRT's documented ONNX operator support before any build.

The support table is data (rmbg_export/data/tensorrt_onnx_ops.json); the checks name the first
offending nodes so a user knows what to change without reading a TensorRT log.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from functools import cache
from importlib import resources
from pathlib import Path

import onnx

from ..errors import ExportError
from .plan import parse_version

FLOAT_TYPES = {
    onnx.TensorProto.FLOAT: "float32",
    onnx.TensorProto.FLOAT16: "float16",
    onnx.TensorProto.DOUBLE: "float64",
    onnx.TensorProto.BFLOAT16: "bfloat16",
}


@dataclass(frozen=True)
class Problem:
    node: str
    op: str
    reason: str

    def __str__(self) -> str:
        return f"{self.op} node {self.node!r}: {self.reason}"


def require_version(version: str) -> str:
    """A TensorRT version as MAJOR.MINOR[.PATCH...] (10.13, 11.4, 10.12.0.36), or one sentence."""
    if not re.fullmatch(r"\d+\.\d+(\.\d+)*([a-z]+\d*)?", version.strip()):
        raise ExportError(
            f"--tensorrt {version!r} is not a TensorRT version; give one such as 10.13 or 11.4."
        )
    return version.strip()


def load_graph(path: Path) -> onnx.ModelProto:
    """The graph's nodes (weights stored beside it are not needed), or one sentence if it is not ONNX."""
    try:
        return onnx.load(str(path), load_external_data=False)
    except Exception as err:  # noqa: BLE001 - protobuf's DecodeError and friends: not an ONNX file
        raise ExportError(
            f"{path} is not a readable ONNX graph ({type(err).__name__}: {str(err)[:120]}); it is damaged "
            "or not an export: run `rmbg-export` again for this folder."
        ) from None


@cache
def support_table() -> dict:
    text = resources.files("rmbg_export").joinpath("data/tensorrt_onnx_ops.json").read_text()
    return json.loads(text)


def _attr(node: onnx.NodeProto, name: str, default=None):
    for attr in node.attribute:
        if attr.name == name:
            return onnx.helper.get_attribute_value(attr)
    return default


def _ranks_and_types(model: onnx.ModelProto) -> tuple[dict[str, int], dict[str, int]]:
    try:
        typed = onnx.shape_inference.infer_shapes(model)
    except onnx.shape_inference.InferenceError:
        typed = model  # an unknown operator stops inference; the shapes stored at export still count
    ranks, types = {}, {}
    for value in [*typed.graph.value_info, *typed.graph.input, *typed.graph.output]:
        tensor = value.type.tensor_type
        types[value.name] = tensor.elem_type
        if tensor.HasField("shape"):
            ranks[value.name] = len(tensor.shape.dim)
    for init in model.graph.initializer:
        types[init.name], ranks[init.name] = init.data_type, len(init.dims)
    return ranks, types


def _constraint_problem(name: str, node: onnx.NodeProto, ranks: dict[str, int]) -> str | None:
    table = support_table()
    if name == "symmetric_pads":
        pads = list(_attr(node, "pads", []))
        half = len(pads) // 2
        if pads[:half] != pads[half:]:
            return f"pads {pads} are not symmetric (TensorRT needs begin == end)"
    elif name in ("spatial_2d", "conv_2d_or_3d"):
        rank = ranks.get(node.input[1])
        allowed = (4,) if name == "spatial_2d" else (4, 5)
        if rank is not None and rank not in allowed:
            return f"weight rank {rank} is not supported (allowed: {allowed})"
    elif name == "input_4d":
        bad = [(t, ranks[t]) for t in node.input[:2] if ranks.get(t) not in (None, 4)]
        if bad:
            return f"{bad[0][0]!r} has rank {bad[0][1]}: TensorRT's GridSample takes 4-D input and grid only"
    elif name == "resize_modes":
        mode = _attr(node, "mode", b"nearest").decode()
        transform = _attr(node, "coordinate_transformation_mode", b"half_pixel").decode()
        if mode not in table["resize"]["modes"]:
            return f"resize mode {mode!r} is not supported (the parser takes {table['resize']['modes']})"
        if transform not in table["resize"]["coordinate_transformation_modes"]:
            return f"coordinate_transformation_mode {transform!r} is not supported"
        if _attr(node, "antialias", 0) and not table["resize"]["antialias"]:
            return "antialias=1 is not supported"
    elif name == "single_output":
        if len([o for o in node.output if o]) > 1:
            return "only the first output (Y) is supported"
    return None


def check_graph(model: onnx.ModelProto, tensorrt_version: str) -> list[Problem]:
    table = support_table()["operators"]
    version = parse_version(tensorrt_version)
    ranks, types = _ranks_and_types(model)
    problems = []
    for node in model.graph.node:
        name, op = node.name or node.output[0], node.op_type
        entry = table.get(op)
        if node.domain not in ("", "ai.onnx") or entry is None:
            problems.append(Problem(name, op, "not supported by TensorRT's ONNX parser"))
            continue
        if "since" in entry and version < parse_version(entry["since"]):
            problems.append(Problem(name, op, f"needs TensorRT {entry['since']} or later"))
        for tensor in node.input:
            dtype = FLOAT_TYPES.get(types.get(tensor, 0))
            if dtype and dtype not in entry["types"]:
                problems.append(
                    Problem(name, op, f"input {tensor!r} is {dtype}; TensorRT takes {entry['types']}")
                )
        for constraint in entry.get("constraints", ()):
            reason = _constraint_problem(constraint, node, ranks)
            if reason:
                problems.append(Problem(name, op, reason))
    return problems


def needs_plugins(model: onnx.ModelProto) -> bool:
    """DeformConv is imported through TensorRT's ModulatedDeformConv2d plugin."""
    table = support_table()["operators"]
    return any("plugin" in table.get(n.op_type, {}).get("constraints", ()) for n in model.graph.node)


def require_supported(model: onnx.ModelProto, tensorrt_version: str, label: str) -> None:
    problems = check_graph(model, tensorrt_version)
    if problems:
        shown = "; ".join(str(p) for p in problems[:3])
        more = f" (and {len(problems) - 3} more)" if len(problems) > 3 else ""
        raise ExportError(
            f"{label} cannot be built with TensorRT {tensorrt_version}: {shown}{more}; try --deform-conv "
            "grid_sample or another TensorRT version."
        )
