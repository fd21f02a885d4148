"""The mixed-precision graph for strongly typed TensorRT builds.

fp16 weights and convolution / matmul compute; fp32 where fp16 breaks:
- LayerNormalization (variance of 1536-wide tokens overflows and loses digits in fp16),
- attention logits and softmax (q·k, relative-position bias, shift mask, Softmax), found from each
  Softmax back to q·k, whatever the module,
- what the modules declare (`keep_fp32_in_fp16`, resolved to exact node names by
  `declared_fp32_scopes`): the deformable sampling (model/deform_conv.py says why),
- the final Sigmoid, and graph inputs / outputs (fp32 contract with the runtime).
`fp32_islands` is the one list of these nodes, for building the fp16 graph and for pinning layers in
weakly typed TensorRT builds.
"""

from __future__ import annotations

import re
import warnings
from dataclasses import dataclass

import onnx

from ..errors import ExportError

FP32_OP_TYPES = ("LayerNormalization", "Softmax", "GridSample", "DeformConv", "Sigmoid", "Resize")
ATTENTION_CHAIN_OPS = ("Add", "Mul", "Reshape", "MatMul")
ATTENTION_LOGITS = "attention logits"


@dataclass(frozen=True)
class Fp32Scope:
    """A module's `keep_fp32_in_fp16` declaration, placed in the traced graph: the nodes under `scope`
    compute in fp32, except those under `fp16_scopes` (its children) and those of `fp16_ops`."""

    rule: str
    module: str  # its path in the model, for messages
    scope: str
    fp16_scopes: tuple[str, ...]
    fp16_ops: tuple[str, ...]

    def nodes(self, graph: onnx.GraphProto) -> list[str]:
        """Its fp32 nodes; refuses a graph with none, or with a second call's nodes (`<scope>_1/`),
        which names would not find."""
        repeated = re.compile(re.escape(self.scope) + r"_\d+/")
        twin = next((node.name for node in graph.node if repeated.match(node.name)), None)
        if twin is not None:
            raise ExportError(
                f"the traced graph has {twin}, from a second call of {self.module} or a module called "
                f"from elsewhere under its name, so names cannot keep {self.rule!r} in fp32; export with "
                "--precision fp32 (a module that declares keep_fp32_in_fp16 must run once, from its parent)."
            )
        nodes = [
            node.name
            for node in graph.node
            if in_scope(node.name, self.scope)
            and not any(in_scope(node.name, child) for child in self.fp16_scopes)
            and node.op_type not in self.fp16_ops
        ]
        if not nodes:
            raise ExportError(
                f"the traced graph has no node under {self.scope}, where {self.module} keeps {self.rule!r} "
                "in fp32 (the module does not run, or this torch names traced nodes differently); export "
                "with --precision fp32."
            )
        return nodes


def in_scope(node_name: str, scope: str) -> bool:
    """Whole scope components only: /a/conv_out holds /a/conv_out/Conv, not /a/conv_out1/Conv."""
    return node_name.startswith(scope + "/")


def declared_fp32_scopes(model) -> tuple[Fp32Scope, ...]:
    """Every module of `model` (our BiRefNet) that declares `keep_fp32_in_fp16`, with its scope and
    its fp16 children's in the traced graph (`trace.node_scopes`)."""
    from .trace import node_scopes

    scopes = node_scopes(model)
    declared = []
    for path, module in model.named_modules():
        island = getattr(module, "keep_fp32_in_fp16", None)
        if island is None:
            continue
        children = [".".join(p for p in (path, child) if p) for child in island.fp16_children]
        for name in (path, *children):
            model.get_submodule(name)  # a declared child that does not exist fails here, by name
            _require_one_owner(scopes, name)
        declared.append(
            Fp32Scope(
                rule=island.rule,
                module=path,
                scope=scopes[path],
                fp16_scopes=tuple(scopes[child] for child in children),
                fp16_ops=tuple(island.fp16_ops),
            )
        )
    return tuple(declared)


def _require_one_owner(scopes: dict[str, str], path: str) -> None:
    """No other module's nodes may be named within `path`'s scope or like its repeated calls'."""
    mine = re.compile(re.escape(scopes[path]) + r"(_\d+)?$")
    others = [other for other, scope in scopes.items() if other != path and mine.match(scope)]
    if others:
        raise ValueError(
            f"{path}'s nodes cannot be told from {others[0]}'s in the traced graph "
            f"({scopes[path]}, {scopes[others[0]]})"
        )


def _producers(graph: onnx.GraphProto) -> dict[str, onnx.NodeProto]:
    return {out: node for node in graph.node for out in node.output}


def attention_logit_nodes(graph: onnx.GraphProto) -> set[str]:
    """Nodes from each Softmax back to (and including) the q·k MatMul that produced its logits."""
    producers = _producers(graph)
    keep: set[str] = set()
    for node in graph.node:
        if node.op_type != "Softmax":
            continue
        frontier = list(node.input[:1])
        while frontier:
            parent = producers.get(frontier.pop())
            if parent is None or parent.op_type not in ATTENTION_CHAIN_OPS or parent.name in keep:
                continue
            keep.add(parent.name)
            if parent.op_type != "MatMul":  # stop at q·k; the chain above it is fp16 work
                frontier.extend(parent.input)
    return keep


def fp32_nodes_by_rule(graph: onnx.GraphProto, declared: tuple[Fp32Scope, ...]) -> dict[str, list[str]]:
    """rule -> the nodes kept fp32 by name, beyond the op types of FP32_OP_TYPES: the attention
    logits, and the nodes of each declared module (`declared_fp32_scopes`)."""
    kept = {ATTENTION_LOGITS: sorted(attention_logit_nodes(graph))}
    for island in declared:
        kept.setdefault(island.rule, []).extend(island.nodes(graph))
    return kept


def fp32_node_names(graph: onnx.GraphProto, declared: tuple[Fp32Scope, ...]) -> set[str]:
    return {name for names in fp32_nodes_by_rule(graph, declared).values() for name in names}


def fp32_islands(graph: onnx.GraphProto, declared: tuple[Fp32Scope, ...]) -> set[str]:
    """Every node that computes in fp32 in the mixed graph: the one definition used both to build the
    fp16 graph and to pin layers in weakly typed TensorRT builds (same node names in the fp32 graph)."""
    return fp32_node_names(graph, declared) | {n.name for n in graph.node if n.op_type in FP32_OP_TYPES}


def to_mixed_precision(model: onnx.ModelProto, declared: tuple[Fp32Scope, ...]) -> onnx.ModelProto:
    """The fp16 graph of the fp32 graph `model`, with `declared` (`declared_fp32_scopes` of the model it
    was traced from) among its fp32 islands."""
    from onnxconverter_common import float16

    op_block_list = sorted(set(float16.DEFAULT_OP_BLOCK_LIST) | set(FP32_OP_TYPES))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # one warning per weight below fp16's smallest normal
        mixed = float16.convert_float_to_float16(
            model,
            keep_io_types=True,
            op_block_list=op_block_list,
            node_block_list=sorted(fp32_node_names(model.graph, declared)),
        )
    return remove_fp16_round_trips(restore_fp32_outputs(mixed))


def remove_fp16_round_trips(model: onnx.ModelProto) -> onnx.ModelProto:
    """The converter puts Cast(fp16) -> Cast(fp32) between two block-listed nodes when the first
    one's output has several consumers, and after every block-listed Constant: the fp32 islands
    would then read their own values (deformable offsets, grid constants) rounded to fp16. Read the
    fp32 tensor directly instead, and drop Casts nobody reads any more."""
    graph = model.graph
    producers = _producers(graph)
    typed = onnx.shape_inference.infer_shapes(model)
    types = {v.name: v.type.tensor_type.elem_type for v in [*typed.graph.value_info, *typed.graph.input]}
    rewired: dict[str, str] = {}
    for node in graph.node:
        first = producers.get(node.input[0]) if node.op_type == "Cast" and node.input else None
        if (
            first is not None
            and first.op_type == "Cast"
            and _cast_to(node) == onnx.TensorProto.FLOAT
            and _cast_to(first) == onnx.TensorProto.FLOAT16
            and _source_type(first.input[0], producers, types) == onnx.TensorProto.FLOAT
        ):
            rewired[node.output[0]] = first.input[0]
    for node in graph.node:
        node.input[:] = [rewired.get(name, name) for name in node.input]
    _drop_unread_casts(graph)
    return model


def _cast_to(node: onnx.NodeProto) -> int | None:
    return next((a.i for a in node.attribute if a.name == "to"), None)


def _source_type(name: str, producers: dict[str, onnx.NodeProto], types: dict[str, int]) -> int | None:
    producer = producers.get(name)
    if producer is not None and producer.op_type == "Constant":
        return producer.attribute[0].t.data_type
    return types.get(name)


def _drop_unread_casts(graph: onnx.GraphProto) -> None:
    outputs = {o.name for o in graph.output}
    while True:
        read = {name for node in graph.node for name in node.input} | outputs
        unread = [n for n in graph.node if n.op_type == "Cast" and n.output[0] not in read]
        if not unread:
            return
        for node in unread:
            graph.node.remove(node)


def restore_fp32_outputs(model: onnx.ModelProto) -> onnx.ModelProto:
    """The converter leaves an output fp16 when its last node is block-listed (our Sigmoid) despite
    keep_io_types; make the final Cast produce float32 again so the contract holds."""
    producers = _producers(model.graph)
    for output in model.graph.output:
        tensor_type = output.type.tensor_type
        if tensor_type.elem_type == onnx.TensorProto.FLOAT:
            continue
        cast = producers.get(output.name)
        if cast is None or cast.op_type != "Cast":
            raise ValueError(f"output {output.name} is not float32 and not produced by a Cast")
        for attr in cast.attribute:
            if attr.name == "to":
                attr.i = onnx.TensorProto.FLOAT
        tensor_type.elem_type = onnx.TensorProto.FLOAT
    return model
