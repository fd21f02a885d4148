"""The int8 graph for ONNX Runtime on CPUs: static QDQ quantisation with ONNX Runtime's own tools.

What is quantised: every Conv and every MatMul with a weight (the Swin linear layers qkv, proj and
MLP; the decoder's convolutions; in the grid_sample form, the deformable conv's matmul), weights int8
per output channel with 7-bit range, activations uint8 per tensor, calibrated by MinMax.

7-bit weights (`reduce_range`): x86 CPUs without VNNI multiply u8 x s8 with VPMADDUBSW, whose int16
sums saturate; on this project's AVX2 machine full-range weights gave a mask MAE of 4e-2 against fp32
at 256x256, 7-bit weights 4e-3 (VNNI CPUs lose nothing measurable by it, and the graph is the same
file on every CPU).

What stays float, each choice measured (fixture Swin-T; mask MAE against fp32 at 256x256 on three
synthetic images, seconds of ONNX Runtime CPU at 512x512 on this 2-core AVX2 machine):
- MatMuls of two activations (attention logits q·kᵀ and attention·v): their ranges change per window
  and image, and softmax turns small logit errors into large weight errors;
- the last convolution of every decoder block (`conv_out`, the squeeze block's too) and the
  prediction head (`conv_out1`, which feeds the final sigmoid): int8 there raised the MAE from 1.4e-3
  to 2.8e-3 and the max |diff| from 1e-2 to 0.11 (measured on these six together). The head carries
  most of it: gate MAE 1.34e-3 with all six float, 1.47e-3 with the head alone, 2.73e-3 with none
  (the fixture at 256x256, the export's check images, 8 synthetic calibration images; an AVX-512
  VNNI EPYC, where the 7-bit weights do not saturate);
- the input-patch blocks (`ipt_blk`, convolutions over the raw image's pixels): int8 there raised the
  MAE to 1.9e-3 and made the graph slower (1.42 s against 1.28 s);
- the deformable sampling (DeformConv or GridSample: ONNX Runtime has no int8 kernel for either);
- Softmax, LayerNormalization, GELU, Sigmoid, Resize: not quantised (statistics and exponentials).
The float convolutions are declared on the modules (`keep_float_in_int8`, as `conv_bn_pairs`
declares what BatchNorm folding does) and found in the graph by their weights' exact names.
The deformable convs' offset and modulator convolutions are quantised, outputs included (ONNX Runtime
fuses a Conv into its int8 kernel only with a quantised output), so the sampling offsets are 8-bit:
keeping them float changed the MAE by under 1e-5 and cost 8% of the time at 512 (the 7x7 ones make
98 and 49 channels at a quarter of the input's size). Real weights may differ: the gate decides.

Weights the trace passes through Identity nodes (the backbone's second, half-scale pass reuses the
first pass's weights) are fed from their initializers first: otherwise the quantiser takes those 51
Swin linear layers for activation MatMuls and leaves them float (0.93x of fp32's time at 512 with
them float, 0.79x with them int8).

Calibration: `calibration.py`.
"""

from __future__ import annotations

import contextlib
import inspect
import logging
import tempfile
import warnings
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from rmbg_runtime.masks import MaskAgreement, mask_agreement

from ..errors import ExportError
from .calibration import QUANTISED_OPS, write_calibration_cache
from .verify import run_graph

ACTIVATION_MATMULS = "MatMul of two activations"
# The gate: mean |alpha difference| against fp32 over the check images. 5e-3 is 1.3 gray levels on
# average, under what a viewer sees on a cut-out's edge. IoU@0.5 is printed, not gated: where a mask
# has wide soft regions (as the fixture weights' masks do) a change of 1e-3 flips the 0.5 threshold
# over whole areas, while the cut-out's alpha barely changes.
INT8_MAX_MAE = 5e-3


@dataclass(frozen=True)
class Int8Graph:
    quantised_nodes: int
    float_nodes: int
    float_rules: tuple[str, ...]
    calibration: str

    def as_dict(self) -> dict:
        return asdict(self)


def declared_float_convs(model) -> dict[str, tuple[str, ...]]:
    """rule -> the graph's weight names of the Conv2d layers that the model's modules declare float
    (`keep_float_in_int8 = ((rule, (child, ...)), ...)`; a child may be a block, whose convolutions all
    count)."""
    from torch import nn

    from .trace import NETWORK_SCOPE

    rules: dict[str, list[str]] = {}
    for path, module in model.named_modules():
        for rule, children in getattr(module, "keep_float_in_int8", ()):
            for child in children:
                prefix = ".".join(p for p in (NETWORK_SCOPE, path, child) if p)
                for name, layer in module.get_submodule(child).named_modules():
                    if isinstance(layer, nn.Conv2d):
                        weight = ".".join(p for p in (prefix, name, "weight") if p)
                        rules.setdefault(rule, []).append(weight)
    return {rule: tuple(weights) for rule, weights in rules.items()}


def float_nodes(graph, float_convs: dict[str, tuple[str, ...]]) -> dict[str, list[str]]:
    """rule -> the Conv / MatMul nodes kept float: MatMuls without a weight input (attention q·kᵀ,
    attention·v), and the Conv nodes reading each declared weight (`declared_float_convs`)."""
    weights = {init.name for init in graph.initializer}
    kept = {
        ACTIVATION_MATMULS: [
            n.name for n in graph.node if n.op_type == "MatMul" and not any(i in weights for i in n.input)
        ]
    }
    convs = {n.input[1]: n.name for n in graph.node if n.op_type == "Conv"}
    for rule, declared in float_convs.items():
        missing = [w for w in declared if w not in convs]
        if missing:
            raise ValueError(f"no Conv node reads {missing[0]}, declared float for {rule!r}")
        kept[rule] = [convs[w] for w in declared]
    return kept


def graph_to_quantise(fp32_path: Path, folder: Path) -> Path:
    """The fp32 graph as the quantiser and the calibration both see it: shared weights inlined (the
    ranges then come from the graph that runs, prepacked weights and all)."""
    import onnx

    model = onnx.load(str(fp32_path))
    inline_shared_weights(model.graph)
    path = folder / "fp32_inlined.onnx"
    onnx.save(model, str(path))
    return path


def quantise(
    source_path: Path,
    int8_path: Path,
    ranges: dict,
    calibration: str,
    float_convs: dict[str, tuple[str, ...]],
) -> Int8Graph:
    """Write `int8_path` from `graph_to_quantise`'s graph with the ranges of `minmax_ranges` on it,
    keeping float the activation MatMuls and `float_convs` (`declared_float_convs`)."""
    import onnx
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static

    require_calibration_cache(quantize_static)
    kept_by_rule = float_nodes(onnx.load(str(source_path), load_external_data=False).graph, float_convs)
    kept = [name for names in kept_by_rule.values() for name in names]
    with tempfile.TemporaryDirectory(prefix="rmbg-int8-") as tmp, _quiet_quantiser():
        quantize_static(
            str(source_path),
            str(int8_path),
            calibration_cache_path=write_calibration_cache(ranges, Path(tmp) / "ranges.json"),
            quant_format=QuantFormat.QDQ,
            op_types_to_quantize=list(QUANTISED_OPS),
            nodes_to_exclude=kept,
            per_channel=True,
            reduce_range=True,
            activation_type=QuantType.QUInt8,
            weight_type=QuantType.QInt8,
            calibrate_method=CalibrationMethod.MinMax,
            extra_options={"ActivationSymmetric": False, "WeightSymmetric": True},
        )
    count = len(int8_layers(onnx.load(str(int8_path), load_external_data=False).graph))
    return Int8Graph(
        quantised_nodes=count, float_nodes=len(kept), float_rules=tuple(kept_by_rule), calibration=calibration
    )


def int8_layers(graph) -> list[str]:
    """The Conv and MatMul nodes whose weight arrives int8 (through a DequantizeLinear)."""
    weights = {init.name for init in graph.initializer}
    dequantised = {
        n.output[0] for n in graph.node if n.op_type == "DequantizeLinear" and n.input[0] in weights
    }
    return [n.name for n in graph.node if n.op_type in QUANTISED_OPS and n.input[1] in dequantised]


def inline_shared_weights(graph) -> int:
    """Feed weights that the trace passed through Identity nodes (the backbone's second, half-scale
    pass shares the first pass's weights) straight from their initializers, so that the quantiser
    sees them as weights; returns how many Identity nodes went."""
    weights = {init.name for init in graph.initializer}
    outputs = {o.name for o in graph.output}
    aliases = {
        n.output[0]: n.input[0]
        for n in graph.node
        if n.op_type == "Identity" and n.input[0] in weights and n.output[0] not in outputs
    }
    for node in graph.node:
        node.input[:] = [aliases.get(name, name) for name in node.input]
    kept = [n for n in graph.node if not (n.op_type == "Identity" and n.output[0] in aliases)]
    del graph.node[:]
    graph.node.extend(kept)
    return len(aliases)


def require_calibration_cache(quantize_static) -> None:
    if "calibration_cache_path" not in inspect.signature(quantize_static).parameters:
        import onnxruntime

        raise ExportError(
            f"--cpu-int8 needs onnxruntime 1.27 or newer (this is {onnxruntime.__version__}); "
            "run pip install -U onnxruntime."
        )


@contextlib.contextmanager
def _quiet_quantiser() -> Iterator[None]:
    """ONNX Runtime's quantiser logs advice through the root logger and warns; the export prints its
    own lines."""
    logger = logging.getLogger()
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield
    finally:
        logger.setLevel(level)


def check_int8_graph(
    int8_path: Path, inputs: list[np.ndarray], fp32_outputs: list[np.ndarray], max_mae: float = INT8_MAX_MAE
) -> MaskAgreement:
    """The int8 graph against the fp32 graph's outputs, both in ONNX Runtime CPU."""
    got = np.concatenate(run_graph(int8_path, inputs))
    agreement = mask_agreement(np.concatenate(fp32_outputs), got)
    if not agreement.finite or not agreement.mask_mae <= max_mae:
        raise ExportError(
            f"the int8 graph's masks differ from fp32 by MAE {agreement.mask_mae:.2e} (limit {max_mae:.0e}, "
            f"finite {agreement.finite}); calibrate on more, and more varied, photos like yours "
            "(--calibration-images), or export without --cpu-int8."
        )
    return agreement
