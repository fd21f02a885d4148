"""Calibration for the int8 graph: the photos (or synthetic images) it is calibrated on, and the
MinMax range of every tensor the quantiser needs.

Calibration is ours, the quantisation ONNX Runtime's: ONNX Runtime's MinMax calibrator appends a
ReduceMin/ReduceMax pair for each of the ~1000 calibrated tensors and runs that graph in its default
execution order, which computes the whole network before any reduction, so every calibrated
activation is alive at once: Swin-L at 1024x1024 was killed on a 24 GB machine. `minmax_ranges` puts
each pair right behind its tensor's producer and runs the graph in ONNX Runtime's priority-based
(node order) execution, so each activation is reduced and freed as it is made (Swin-L 1024: 6.7 GiB
for the calibration pass, 9.2 GiB for the whole export); the same ranges then reach
`quantize_static` through its calibration cache (onnxruntime 1.27 and newer).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..errors import ExportError

QUANTISED_OPS = ("Conv", "MatMul")
SYNTHETIC_CALIBRATION = 8


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


def calibrated_tensors(graph) -> list[str]:
    """The tensors ONNX Runtime's quantiser needs ranges for: every activation into or out of a
    Conv or MatMul (a superset of what it quantises: nodes kept float are calibrated too)."""
    weights = {init.name for init in graph.initializer}
    names = (t for node in graph.node if node.op_type in QUANTISED_OPS for t in (*node.input, *node.output))
    return list(dict.fromkeys(t for t in names if t and t not in weights))


@dataclass(frozen=True)
class Calibration:
    ranges: dict[str, tuple[np.ndarray, np.ndarray]]  # tensor name -> (min, max) over all batches
    outputs: list[np.ndarray]  # the fp32 graph's own output on each batch: the gate's references


def minmax_ranges(
    fp32_path: Path, batches: Sequence[np.ndarray], log: Callable[[str], None] = lambda _line: None
) -> Calibration:
    """Min and max of every calibrated tensor over all batches (see the module docstring); `log`
    hears how far it got every half minute."""
    import onnx
    import onnxruntime as ort

    if not batches:
        raise ExportError("no calibration images to calibrate the int8 graph on.")
    model = onnx.load(str(fp32_path))
    tensors = calibrated_tensors(model.graph)
    fetches = [*_append_reductions(model.graph, tensors), model.graph.output[0].name]
    options = ort.SessionOptions()
    options.log_severity_level = 3
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL  # as ONNX Runtime's own
    options.execution_order = ort.ExecutionOrder.PRIORITY_BASED
    session = ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])
    del model
    input_name = session.get_inputs()[0].name
    lows, highs, outputs = [], [], []
    reported = time.monotonic()
    for done, batch in enumerate(batches, start=1):
        *reductions, output = session.run(fetches, {input_name: batch})
        lows.append(np.stack(reductions[0::2]))
        highs.append(np.stack(reductions[1::2]))
        outputs.append(output)
        if time.monotonic() - reported > 30 and done < len(batches):
            log(f"      calibrated on {done} of {len(batches)} images")
            reported = time.monotonic()
    lowest, highest = np.min(lows, axis=0), np.max(highs, axis=0)
    ranges = {name: (lowest[i], highest[i]) for i, name in enumerate(tensors)}
    return Calibration(ranges, outputs)


def _append_reductions(graph, tensors: list[str]) -> list[str]:
    """A ReduceMin and a ReduceMax of each tensor, placed right behind its producer, as graph outputs."""
    from onnx import TensorProto, helper

    wanted = set(tensors)

    def reductions(tensor: str) -> list:
        ops = ("ReduceMin", "ReduceMax")
        return [helper.make_node(op, [tensor], [f"{tensor}/rmbg_{op}"], keepdims=0) for op in ops]

    nodes = [r for i in graph.input if i.name in wanted for r in reductions(i.name)]
    for node in graph.node:
        nodes += [node, *(r for out in node.output if out in wanted for r in reductions(out))]
    del graph.node[:]
    graph.node.extend(nodes)
    outputs = [f"{t}/rmbg_{op}" for t in tensors for op in ("ReduceMin", "ReduceMax")]
    graph.output.extend(helper.make_tensor_value_info(name, TensorProto.FLOAT, []) for name in outputs)
    return outputs


def write_calibration_cache(ranges: dict[str, tuple[np.ndarray, np.ndarray]], path: Path) -> str:
    from onnxruntime.quantization.calibrate import CalibrationMethod, TensorsData, save_tensors_data

    save_tensors_data(TensorsData(CalibrationMethod.MinMax, ranges), path)
    return str(path)
