"""The mixed-precision graph for strongly typed TensorRT builds.

fp16 weights and convolution / matmul compute; fp32 where fp16 breaks:
- LayerNormalization (variance of 1536-wide tokens overflows and loses digits in fp16),
- attention logits and softmax (q·k, relative-position bias, shift mask, Softmax),
- the deformable sampling path (coordinates reach ~263 px: fp16 steps there are 1/8-1/4 px),
- the final Sigmoid, and graph inputs / outputs (fp32 contract with the runtime).
"""

from __future__ import annotations

import warnings
from collections.abc import Iterable

import onnx

FP32_OP_TYPES = ("LayerNormalization", "Softmax", "GridSample", "DeformConv", "Sigmoid", "Resize")
ATTENTION_CHAIN_OPS = ("Add", "Mul", "Reshape", "MatMul")
DEFORM_SCOPE = "/atrous_conv/"
DEFORM_FP16_SCOPES = ("/offset_conv/", "/modulator_conv/")


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


def deform_sampling_nodes(graph: onnx.GraphProto) -> set[str]:
    """Everything inside a deformable convolution except its offset/modulator convs and final MatMul."""
    return {
        node.name
        for node in graph.node
        if DEFORM_SCOPE in node.name
        and not any(scope in node.name for scope in DEFORM_FP16_SCOPES)
        and node.op_type != "MatMul"
    }


def fp32_node_names(graph: onnx.GraphProto) -> set[str]:
    return attention_logit_nodes(graph) | deform_sampling_nodes(graph)


def fp32_islands(graph: onnx.GraphProto) -> set[str]:
    """Every node that computes in fp32 in the mixed graph: the one definition used both to build the
    fp16 graph and to pin layers in weakly typed TensorRT builds (same node names in the fp32 graph)."""
    return fp32_node_names(graph) | {node.name for node in graph.node if node.op_type in FP32_OP_TYPES}


def to_mixed_precision(model: onnx.ModelProto, extra_fp32_ops: Iterable[str] = ()) -> onnx.ModelProto:
    from onnxconverter_common import float16

    op_block_list = sorted(set(float16.DEFAULT_OP_BLOCK_LIST) | set(FP32_OP_TYPES) | set(extra_fp32_ops))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # one warning per weight below fp16's smallest normal
        mixed = float16.convert_float_to_float16(
            model,
            keep_io_types=True,
            op_block_list=op_block_list,
            node_block_list=sorted(fp32_node_names(model.graph)),
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
