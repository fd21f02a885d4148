"""The fp16 graph's fp32 islands: declared on the modules (`keep_fp32_in_fp16`), resolved to exact node
names of the traced graph, counted per rule; the attention logits found structurally."""

from __future__ import annotations

from collections import Counter

import onnx
import pytest
import torch
from conftest import LEGACY_FIXTURE, fixture_model
from torch import nn

from rmbg_export.errors import ExportError
from rmbg_export.export_run import _write_fp16
from rmbg_export.model import create_model
from rmbg_export.model.deform_conv import DeformConv2d
from rmbg_export.model.swin import SwinBlock
from rmbg_export.onnx.fp16 import (
    ATTENTION_LOGITS,
    declared_fp32_scopes,
    fp32_nodes_by_rule,
    in_scope,
)
from rmbg_export.onnx.trace import node_scopes, trace_to_onnx

DEFORM_LAYERS = 5 * 4  # four decoder blocks and the squeeze block, each with four ASPP branches
SAMPLING_NODES_PER_LAYER = {"grid_sample": 49, "native": 5}  # everything but offset/modulator convs, MatMul
FP16_CONVS = ["offset_conv/Conv", "modulator_conv/Conv"]
FP16_PER_LAYER = {"grid_sample": [*FP16_CONVS, "MatMul"], "native": FP16_CONVS}
# q·k MatMul and the relative-position bias Add; shifted windows add the mask: Reshape, Add, Reshape.
LOGIT_NODES_PER_ATTENTION = {False: 2, True: 5}


@pytest.mark.slow  # traces the fixture Swin-T (shared with the other graph tests)
@pytest.mark.parametrize("mode", ["grid_sample", "native"])
def test_fp32_islands_counted_per_rule(export_graph, mode):
    """Each deformable conv layer's declaration resolves to its own sampling nodes only (one layer's
    nodes are no other layer's), and the attention logits are so many per window attention, over the
    backbone's two passes."""
    model = fixture_model(LEGACY_FIXTURE)
    graph = onnx.load(str(export_graph(LEGACY_FIXTURE, mode, 256, 256)), load_external_data=False).graph
    declared = declared_fp32_scopes(model)
    assert len(declared) == sum(isinstance(m, DeformConv2d) for m in model.modules()) == DEFORM_LAYERS

    shifted = {path: block.shift > 0 for path, block in model.named_modules() if isinstance(block, SwinBlock)}
    assert Counter(shifted.values()) == {False: 6, True: 6}  # Swin-T: 12 blocks, every second one shifted

    by_rule = fp32_nodes_by_rule(graph, declared)
    per_layer = SAMPLING_NODES_PER_LAYER[mode]
    assert {rule: len(nodes) for rule, nodes in by_rule.items()} == {
        ATTENTION_LOGITS: 2 * (6 * LOGIT_NODES_PER_ATTENTION[False] + 6 * LOGIT_NODES_PER_ATTENTION[True]),
        "deformable sampling": per_layer * DEFORM_LAYERS,
    }
    for island in declared:
        nodes = island.nodes(graph)
        assert len(nodes) == per_layer, island.module
        owners = [other.module for other in declared if any(in_scope(n, other.scope) for n in nodes)]
        assert owners == [island.module]
        fp16 = [n.name for n in graph.node if in_scope(n.name, island.scope) and n.name not in nodes]
        assert sorted(n.removeprefix(island.scope + "/") for n in fp16) == sorted(FP16_PER_LAYER[mode])
    assert len(set(by_rule["deformable sampling"])) == per_layer * DEFORM_LAYERS

    scopes = node_scopes(model)
    logits_per_attention = Counter(n.rsplit("/", 1)[0] for n in by_rule[ATTENTION_LOGITS])
    for path, shifts in shifted.items():
        first_pass, second_pass = scopes[f"{path}.attn"], scopes[f"{path}.attn"] + "_1"
        expected = LOGIT_NODES_PER_ATTENTION[shifts]
        assert logits_per_attention[first_pass] == logits_per_attention[second_pass] == expected, path
    assert sum(logits_per_attention.values()) == len(by_rule[ATTENTION_LOGITS])


class Siblings(nn.Module):
    """A deformable conv beside a convolution whose name starts with the same letters."""

    def __init__(self) -> None:
        super().__init__()
        self.deform = DeformConv2d(3, 3, 3, padding=1)
        self.deform1 = nn.Conv2d(3, 3, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.deform1(self.deform(x))


class TwiceCalled(Siblings):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.deform(self.deform(x))


def test_a_declaration_holds_its_modules_nodes_and_no_others(tmp_path):
    """Scopes match on whole components: /net/deform holds /net/deform/..., never /net/deform1/Conv."""
    model = Siblings().eval()
    path = tmp_path / "siblings.onnx"
    trace_to_onnx(model, path, resolution=(8, 8), deform_conv="grid_sample")
    graph = onnx.load(str(path)).graph
    (island,) = declared_fp32_scopes(model)
    assert (island.scope, island.fp16_scopes) == (
        "/net/deform",
        ("/net/deform/offset_conv", "/net/deform/modulator_conv"),
    )
    nodes = island.nodes(graph)
    assert nodes and all(n.startswith("/net/deform/") for n in nodes)
    assert "/net/deform1/Conv" in {n.name for n in graph.node}


def test_a_module_called_twice_is_refused(tmp_path):
    """Its second call's nodes are named /net/deform_1/...: names cannot find them, so refuse."""
    model = TwiceCalled().eval()
    path = tmp_path / "twice.onnx"
    trace_to_onnx(model, path, resolution=(8, 8), deform_conv="grid_sample")
    with pytest.raises(ExportError, match=r"has /net/deform_1/\S+, from a second call of deform"):
        fp32_nodes_by_rule(onnx.load(str(path)).graph, declared_fp32_scopes(model))


def test_modules_named_like_a_repeated_call_are_refused():
    model = Siblings()
    model.deform_1 = nn.Conv2d(3, 3, 1)  # the tracer's name for a second call of `deform`
    with pytest.raises(ValueError, match="deform's nodes cannot be told from deform_1's"):
        declared_fp32_scopes(model)


@pytest.mark.slow  # traces the fixture Swin-T (shared with the other graph tests)
def test_a_declared_module_missing_from_the_graph_fails_the_export_in_one_sentence(export_graph, tmp_path):
    """A module that declares fp32 but never runs (like BiRefNet's training-only heads) has no nodes:
    the fp16 stage stops with one sentence and writes no fp16 graph."""
    model = create_model("swin_v1_t", "legacy")
    model.decoder.unused = DeformConv2d(8, 8, 3, padding=1)
    fp16_path = tmp_path / "model_fp16.onnx"
    graph = export_graph(LEGACY_FIXTURE, "grid_sample", 256, 256)
    with pytest.raises(ExportError) as failure:
        _write_fp16(graph, fp16_path, declared_fp32_scopes(model))
    message = str(failure.value)
    assert message.startswith("the traced graph has no node under /net/decoder/unused, where decoder.unused")
    assert message.endswith("export with --precision fp32.") and message.count(". ") == 0
    assert not list(tmp_path.iterdir())
