"""ONNX graph -> OpenVINO IR (model_openvino.xml/.bin), and the IR's accuracy gate.

OpenVINO's ONNX reader has no rule for ONNX `DeformConv`; `deform_conv_extension` maps it onto
OpenVINO's own `DeformableConvolution` (opset 8), which IR stores natively, so the runtime loads
the IR with no extension. The IR keeps the export's batch range.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import numpy as np

from rmbg_runtime.contract import INPUT_NAME, OPENVINO_ARITHMETIC, OPENVINO_FILES, OpenVinoModel

from .errors import ExportError
from .files import sha256_file
from .onnx.int8 import INT8_MAX_MAE
from .onnx.verify import FP32_MAX_DIFF, FP32_MEAN_DIFF, MaskAgreement, mask_agreement

INSTALL = "pip install 'rmbg-toolkit[export-openvino]'"


def import_openvino():
    try:
        import openvino
    except ImportError:
        raise ExportError(f"--openvino needs OpenVINO, which is not installed; {INSTALL}.") from None
    return openvino


def _convert_deform_conv(node):
    """ONNX DeformConv (X, W, offset, B?, mask?) -> DeformableConvolution-8 (+ bias). Offsets keep
    ONNX's (dy, dx) pair layout, which is also OpenVINO's; `bilinear_interpolation_pad` makes samples
    that straddle the border read the inside corners (torchvision's rule)."""
    import openvino.opset8 as ops

    def attribute(name: str, default):
        return node.get_attribute(name) if node.has_attribute(name) else default

    x, weight, offset = (node.get_input(i) for i in range(3))
    count = node.get_input_size()
    bias = node.get_input(3) if count > 3 else None
    mask = node.get_input(4) if count > 4 else None
    pads = list(attribute("pads", [0, 0, 0, 0]))
    out = ops.deformable_convolution(
        x,
        offset,
        weight,
        strides=list(attribute("strides", [1, 1])),
        pads_begin=pads[:2],
        pads_end=pads[2:],
        dilations=list(attribute("dilations", [1, 1])),
        mask=mask,
        auto_pad="explicit",
        group=int(attribute("group", 1)),
        deformable_group=int(attribute("offset_group", 1)),
        bilinear_interpolation_pad=True,
    )
    if bias is not None:  # an empty optional input ("") has a zero-size shape: nothing to add
        shape = bias.get_partial_shape()
        if not (shape.is_static and shape.to_shape()[0] == 0):
            out = ops.add(out, ops.reshape(bias, ops.constant(np.array([1, -1, 1, 1], np.int64)), False))
    return [out.output(0)]


def deform_conv_extension():
    from openvino.frontend import ConversionExtension

    return ConversionExtension("DeformConv", _convert_deform_conv)


def read_onnx(onnx_path: Path, max_batch: int | None = None):
    """The ONNX graph as an OpenVINO model; with `max_batch`, the batch dimension bounded to 1..max."""
    ov = import_openvino()
    core = ov.Core()
    core.add_extension(deform_conv_extension())
    model = core.read_model(str(onnx_path))
    if max_batch is not None:
        shape = model.input(INPUT_NAME).get_partial_shape()
        shape[0] = ov.Dimension(1, max_batch)
        model.reshape({INPUT_NAME: shape})
    return model


def write_ir(onnx_path: Path, xml_path: Path, max_batch: int) -> None:
    """Convert and save, weights kept as they are (no fp16 compression). The pair is written in a
    scratch folder beside `xml_path` and renamed .bin first, .xml last: the runtime looks for the
    .xml, so an interrupted run never leaves one that looks complete."""
    ov = import_openvino()
    model = read_onnx(onnx_path, max_batch)
    bin_path = xml_path.with_suffix(".bin")
    xml_path.unlink(missing_ok=True)
    with tempfile.TemporaryDirectory(prefix=".openvino-", dir=xml_path.parent) as scratch:
        partial = Path(scratch) / xml_path.name
        ov.save_model(model, str(partial), compress_to_fp16=False)
        os.replace(partial.with_suffix(".bin"), bin_path)
        os.replace(partial, xml_path)


def cpu_has_bf16() -> bool:
    from rmbg_runtime.backends.openvino import has_bf16

    return has_bf16(import_openvino().Core())


def run_ir(xml_path: Path, inputs: list[np.ndarray], precision: str = "fp32") -> list[np.ndarray]:
    """The IR's output for each batch on OpenVINO's CPU plugin, in `precision`'s arithmetic (set
    always: the CPU plugin would otherwise pick bf16 on CPUs that have it)."""
    ov = import_openvino()
    settings = {"INFERENCE_PRECISION_HINT": OPENVINO_ARITHMETIC[precision]}
    compiled = ov.Core().compile_model(str(xml_path), "CPU", settings)
    request = compiled.create_infer_request()
    return [np.array(request.infer({0: batch})[compiled.output(0)]) for batch in inputs]


def check_ir(
    xml_path: Path, precision: str, inputs: list[np.ndarray], references: list[np.ndarray]
) -> MaskAgreement:
    """The IR against the fp32 ONNX graph's outputs: the fp32 IR within the conformance bound, the
    int8 IR and the fp32 IR in bf16 arithmetic within the int8 graph's mask MAE limit. Raises
    ExportError when it fails."""
    outputs = run_ir(xml_path, inputs, precision)
    agreement = mask_agreement(np.concatenate(references), np.concatenate(outputs))
    if precision == "fp32":
        ok = agreement.max_abs_diff <= FP32_MAX_DIFF and agreement.mask_mae <= FP32_MEAN_DIFF
        limit = f"max {FP32_MAX_DIFF:.0e}, mean {FP32_MEAN_DIFF:.0e}"
    else:
        ok, limit = agreement.mask_mae <= INT8_MAX_MAE, f"mask MAE {INT8_MAX_MAE:.0e}"
    if not (ok and agreement.finite):
        raise ExportError(
            f"the OpenVINO {precision} IR's masks differ from the fp32 ONNX graph (mask MAE "
            f"{agreement.mask_mae:.2e}, max |diff| {agreement.max_abs_diff:.2e}, limit {limit}, finite "
            f"{agreement.finite}); report it with the command line, or export without --openvino."
        )
    return agreement


def ir_record(folder: Path, precision: str, graph: str, agreement: MaskAgreement) -> OpenVinoModel:
    """model.json's entry; bf16 names the fp32 IR's files (the same IR, another arithmetic)."""
    xml = folder / OPENVINO_FILES[precision]
    return OpenVinoModel(
        xml=xml.name,
        xml_sha256=sha256_file(xml),
        bin=xml.with_suffix(".bin").name,
        bin_sha256=sha256_file(xml.with_suffix(".bin")),
        graph=graph,
        parity=agreement.as_dict(),
    )
