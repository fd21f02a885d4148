"""The int8 graph for ONNX Runtime on CPUs: static QDQ quantisation with ONNX Runtime's own tools.

What is quantised: every Conv and every MatMul with a weight (the Swin linear layers qkv, proj and
MLP; the decoder's convolutions; in the grid_sample form, the deformable conv's matmul), weights int8
per output channel with 7-bit range, activations uint8 per tensor, calibrated by MinMax.

7-bit weights (`reduce_range`): x86 CPUs without VNNI multiply u8 x s8 with VPMADDUBSW, whose int16
sums saturate; on this project's AVX2 machine full-range weights gave a mask MAE of 4e-2 against fp32
at 256x256, 7-bit weights 4e-3 (VNNI CPUs lose nothing measurable by it, and the graph is the same
file on every CPU).

What stays float, each measured (fixture Swin-T, 256x256, mask MAE against fp32 with 7-bit weights:
everything quantised 4.1e-3, with the float islands below 1.3e-3):
- MatMuls of two activations (attention logits q·kᵀ and attention·v): their ranges change per window
  and image, and softmax turns small logit errors into large weight errors;
- the deformable convs' offset and modulator convolutions: they produce sampling positions, which must
  stay exact; and the deformable sampling itself (DeformConv or GridSample: no int8 kernels);
- the input-patch blocks (`ipt_blk`, convolutions over the raw image's pixels) and every `conv_out`
  (the layers that feed the sigmoid);
- Softmax, LayerNormalization, GELU, Sigmoid, Resize: not quantised (statistics and exponentials).
"""

from __future__ import annotations

import contextlib
import logging
import warnings
from collections.abc import Iterable, Iterator
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from ..errors import ExportError
from .verify import MaskAgreement, mask_agreement, run_graph

QUANTISED_OPS = ("Conv", "MatMul")
FLOAT_MODULES = ("offset_conv", "modulator_conv", "ipt_blk", "conv_out")  # see the module docstring
# The gate: mean |alpha difference| against fp32 over the check images. 5e-3 is 1.3 gray levels on
# average, under what a viewer sees on a cut-out's edge. IoU@0.5 is printed, not gated: where a mask
# has wide soft regions (as the fixture weights' masks do) a change of 1e-3 flips the 0.5 threshold
# over whole areas, while the cut-out's alpha barely changes.
INT8_MAX_MAE = 5e-3
SYNTHETIC_CALIBRATION = 8


@dataclass(frozen=True)
class Int8Graph:
    quantised_nodes: int
    float_nodes: int
    float_rules: tuple[str, ...]
    calibration: str

    def as_dict(self) -> dict:
        return asdict(self)


def float_nodes(graph) -> list[str]:
    """Conv / MatMul nodes kept float: MatMuls without a weight input (attention q·kᵀ, attention·v)
    and the convolutions of FLOAT_MODULES (node names carry our modules' paths)."""
    weights = {init.name for init in graph.initializer}
    kept = []
    for node in graph.node:
        activation_matmul = node.op_type == "MatMul" and not any(i in weights for i in node.input)
        float_module = node.op_type == "Conv" and any(f"/{m}" in node.name for m in FLOAT_MODULES)
        if activation_matmul or float_module:
            kept.append(node.name)
    return kept


def quantise(fp32_path: Path, int8_path: Path, calibration: Iterable[np.ndarray], source: str) -> Int8Graph:
    """Write `int8_path` from the fp32 graph; `calibration` yields (1, 3, H, W) float32 inputs."""
    import onnx
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static

    graph = onnx.load(str(fp32_path), load_external_data=False).graph
    input_name = graph.input[0].name
    kept = float_nodes(graph)
    with warnings.catch_warnings(), _quiet_quantiser():
        warnings.simplefilter("ignore")
        quantize_static(
            str(fp32_path),
            str(int8_path),
            calibration_reader(input_name, calibration),
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
    quantised = onnx.load(str(int8_path), load_external_data=False).graph
    weights = {init.name for init in quantised.initializer}
    count = sum(n.op_type == "DequantizeLinear" and n.input[0] in weights for n in quantised.node)
    rules = ("MatMul of two activations", *(f"Conv in {m}" for m in FLOAT_MODULES))
    return Int8Graph(quantised_nodes=count, float_nodes=len(kept), float_rules=rules, calibration=source)


@contextlib.contextmanager
def _quiet_quantiser() -> Iterator[None]:
    """ONNX Runtime's quantiser logs advice through the root logger; the export prints its own lines."""
    logger = logging.getLogger()
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        yield
    finally:
        logger.setLevel(level)


def calibration_reader(input_name: str, batches: Iterable[np.ndarray]):
    from onnxruntime.quantization import CalibrationDataReader

    class Reader(CalibrationDataReader):
        def __init__(self) -> None:
            self.batches: Iterator[np.ndarray] = iter(batches)

        def get_next(self) -> dict | None:
            batch = next(self.batches, None)
            return None if batch is None else {input_name: batch}

    return Reader()


def calibration_batches(folder: Path | None, height: int, width: int) -> tuple[list[np.ndarray], str]:
    """The user's photos (decoded and preprocessed as the runtime does), or synthetic images."""
    from .verify import synthetic_images

    if folder is None:
        images = synthetic_images(SYNTHETIC_CALIBRATION, height, width, seed=1000)
        return [image[None] for image in images], f"{SYNTHETIC_CALIBRATION} synthetic images"
    from rmbg_runtime.errors import ImageError
    from rmbg_runtime.images import is_image_file, load_image
    from rmbg_runtime.processing import preprocess

    files = sorted(p for p in folder.iterdir() if is_image_file(p)) if folder.is_dir() else []
    if not files:
        raise ExportError(
            f"--calibration-images {folder} holds no .jpg/.png/.webp images; point it at your photos."
        )
    batches = []
    for path in files:
        try:
            batches.append(preprocess(load_image(path), (width, height))[None])
        except ImageError as err:
            raise ExportError(f"calibration image {err}") from None
    return batches, f"{len(files)} images from {folder}"


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
