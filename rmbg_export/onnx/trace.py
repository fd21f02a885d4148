"""Tracing our BiRefNet to an fp32 ONNX graph with a symbolic batch dimension."""

from __future__ import annotations

import warnings
from pathlib import Path

import torch
from torch import nn

from rmbg_runtime.contract import BATCH_DIM, INPUT_NAME, OUTPUT_NAME

from ..architecture import DEFORM_CONV_MODES
from ..model import BiRefNet
from ..model.deform_conv import DeformConv2d
from ..options import DEFAULT_OPSET
from .fold import fold_batchnorms

NETWORK_SCOPE = "net"  # ProbabilityModel.net: the graph's parameter names start with "net."
_CONTAINERS = (nn.ModuleList, nn.ModuleDict)  # never called: no scope of their own in node names


class ProbabilityModel(nn.Module):
    """The exported contract: normalised image batch in, foreground probability out."""

    def __init__(self, net: BiRefNet) -> None:
        super().__init__()
        self.net = net

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(self.net(image))


def node_scopes(net: nn.Module) -> dict[str, str]:
    """Module path in `net` -> the scope that torch.onnx's tracer writes before the names of the nodes
    that module computes, once `net` is wrapped in ProbabilityModel. Each module on the call path adds
    one component: its attribute name with the list indices after it (torch.onnx's
    `_unqualified_variable_name`); containers that are never called (ModuleList, ModuleDict) add none
    and own no scope. decoder.decoder_block1.dec_att.aspp_deforms.0.atrous_conv ->
    /net/decoder/decoder_block1/dec_att/aspp_deforms.0/atrous_conv.

    This holds for a module that its parent calls once. One called from elsewhere (the backbone calls
    each stage's `downsample`) has no node in its scope; one called twice (the backbone's half-scale
    pass) has its second call's nodes named `<scope>_1`, and its children's `<child>_1`."""
    return {
        path: _node_scope(net, path)
        for path, module in net.named_modules()
        if not isinstance(module, _CONTAINERS)
    }


def _node_scope(net: nn.Module, path: str) -> str:
    atoms = [NETWORK_SCOPE, *path.split(".")] if path else [NETWORK_SCOPE]
    components = [""]  # the wrapper, the tracer's root, has no name
    for end in range(1, len(atoms) + 1):
        if isinstance(net.get_submodule(".".join(atoms[1:end])), _CONTAINERS):
            continue
        start = end - 1
        while start > 0 and atoms[start].isnumeric():
            start -= 1
        components.append(".".join(atoms[start:end]))
    return "/".join(components)


def prepare_for_export(model: BiRefNet, deform_conv: str) -> ProbabilityModel:
    """BatchNorm folded, deformable convolutions set to `deform_conv`, sigmoid appended."""
    if deform_conv not in DEFORM_CONV_MODES:
        raise ValueError(f"deform_conv must be one of {DEFORM_CONV_MODES}, not {deform_conv!r}")
    folded = fold_batchnorms(model)
    for module in folded.modules():
        if isinstance(module, DeformConv2d):
            module.export_mode = deform_conv
    return ProbabilityModel(folded).eval()


def trace_to_onnx(
    model: BiRefNet,
    path: Path,
    *,
    resolution: tuple[int, int],
    deform_conv: str,
    opset: int = DEFAULT_OPSET,
) -> None:
    """Write the fp32 graph to `path`. `resolution` is (height, width); the batch stays symbolic."""
    if deform_conv == "native" and opset < 19:
        raise ValueError("the native DeformConv operator needs opset 19 or later")
    wrapped = prepare_for_export(model, deform_conv)
    dummy = torch.zeros(1, 3, *resolution)
    with warnings.catch_warnings(), torch.inference_mode(False), torch.no_grad():
        # Shapes read as Python ints (H, W, window counts) are constants by design: H and W are fixed.
        # The exporter also warns that it cannot infer DeformConv's shape: set_static_io_shapes does.
        warnings.simplefilter("ignore")
        torch.onnx.export(
            wrapped,
            (dummy,),
            str(path),
            dynamo=False,
            opset_version=opset,
            input_names=[INPUT_NAME],
            output_names=[OUTPUT_NAME],
            dynamic_axes={INPUT_NAME: {0: BATCH_DIM}, OUTPUT_NAME: {0: BATCH_DIM}},
            do_constant_folding=True,
            export_params=True,
            autograd_inlining=False,  # keeps the DeformConv autograd.Function as one node
        )
    finalize_graph(path, resolution)


def finalize_graph(path: Path, resolution: tuple[int, int]) -> None:
    """Share repeated constants, pin the output to (batch, 1, H, W), store inferred shapes."""
    import onnx

    model = onnx.load(str(path))
    share_repeated_constants(model.graph)
    dims = model.graph.output[0].type.tensor_type.shape.dim
    for dim, value in zip(dims[2:], resolution, strict=True):
        dim.Clear()
        dim.dim_value = value
    onnx.save(onnx.shape_inference.infer_shapes(model), str(path))


def share_repeated_constants(graph, min_bytes: int = 1 << 16) -> int:
    """The tracer writes one Constant per use of a tensor (each shifted block gets its own copy of
    the stage's shift mask); keep the first of identical large constants. Returns bytes saved."""
    import hashlib

    first: dict[tuple, str] = {}
    rename: dict[str, str] = {}
    kept = []
    for node in graph.node:
        value = (
            next((a.t for a in node.attribute if a.name == "value"), None)
            if node.op_type == "Constant"
            else None
        )
        if value is not None and len(value.raw_data) >= min_bytes:
            key = (value.data_type, tuple(value.dims), hashlib.sha256(value.raw_data).digest())
            if key in first:
                rename[node.output[0]] = first[key]
                continue
            first[key] = node.output[0]
        kept.append(node)
    for node in kept:
        for i, name in enumerate(node.input):
            if name in rename:
                node.input[i] = rename[name]
    saved = sum(
        len(next(a.t for a in n.attribute if a.name == "value").raw_data)
        for n in graph.node
        if n.output and n.output[0] in rename
    )
    del graph.node[:]
    graph.node.extend(kept)
    return saved
