"""The export run: checkpoint -> fp32 ONNX -> (fp16 ONNX) -> (TensorRT engine) -> model.json.

Each stage writes under a temporary name and renames on success; model.json, which the runtime
requires, is removed before the first file in the folder changes and written last, so an
interrupted run never looks complete (and a run that fails while loading leaves the old export).
"""

from __future__ import annotations

import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from .errors import ExportError
from .files import atomic_output, sha256_file, write_json
from .metadata import FP16_GRAPH_NAME, FP32_GRAPH_NAME, INT8_GRAPH_NAME, METADATA_NAME, base_metadata
from .onnx.trace import DEFAULT_OPSET

PRECISIONS = ("fp16", "fp32")
DEFAULT_DEFORM_CONV = "native"  # measured fastest in ONNX Runtime CPU; see README "Deformable convolution"
VERIFY_BATCH_SIZES = (1, 2)


@dataclass
class ExportOptions:
    source: str
    output: Path
    height: int = 1024
    width: int = 1024
    max_batch: int = 4
    precision: str = "fp16"
    deform_conv: str = DEFAULT_DEFORM_CONV
    patch_order: str | None = None
    backbone: str | None = None
    revision: str | None = None
    opset: int = DEFAULT_OPSET
    verify: bool = True
    onnx_only: bool = False
    cpu_int8: bool = False  # also an int8 graph for ONNX Runtime CPU, gated against fp32
    calibration_images: Path | None = None
    engine: dict = field(default_factory=dict)  # TensorRT builder settings, see tensorrt.plan


def validate(options: ExportOptions) -> None:
    for name, size in (("height", options.height), ("width", options.width)):
        if size < 32 or size % 32:
            raise ExportError(
                f"the {name} {size} is not a positive multiple of 32; pick e.g. 1024 or 768x1024."
            )
    if options.max_batch < 1:
        raise ExportError(f"--max-batch {options.max_batch} must be at least 1.")
    if options.precision not in PRECISIONS:
        raise ExportError(f"--precision {options.precision} is unknown; use fp16 or fp32.")
    if options.deform_conv == "native" and options.opset < 19:
        raise ExportError(f"--deform-conv native needs --opset 19 or later (got {options.opset}).")
    if options.calibration_images is not None and not options.cpu_int8:
        raise ExportError("--calibration-images calibrates the int8 graph; add --cpu-int8.")
    if options.opset < 17:
        raise ExportError(f"--opset {options.opset} is too old: LayerNormalization needs 17 or later.")


class Stages:
    """Numbered progress lines with timing, e.g. `[2/5] trace fp32 ONNX ... 41.2 s`."""

    def __init__(self, total: int, log: Callable[[str], None]) -> None:
        self.total, self.done, self.log = total, 0, log

    def run(self, title: str, work: Callable[[], object]):
        self.done += 1
        self.log(f"[{self.done}/{self.total}] {title} ...")
        start = time.perf_counter()
        result = work()
        self.log(f"[{self.done}/{self.total}] {title}: done in {time.perf_counter() - start:.1f} s")
        return result


def run_export(options: ExportOptions, log: Callable[[str], None] = print) -> Path:
    """Run every stage; returns the path of the written model.json."""
    validate(options)
    if not options.onnx_only:
        from .tensorrt.environment import require_build_environment

        require_build_environment()  # fail in a second, not after minutes of tracing
    return ExportRun(options, log).run()


class ExportRun:
    def __init__(self, options: ExportOptions, log: Callable[[str], None]) -> None:
        self.options, self.log, self.out = options, log, options.output
        self.fp16 = options.precision == "fp16"
        verify_stages = options.verify * (1 + self.fp16)
        int8 = options.cpu_int8
        self.stages = Stages(2 + verify_stages + self.fp16 + 2 * int8 + (not options.onnx_only), log)
        self.inputs = _verification_inputs(options)
        self.fp32_outputs: list = []  # the fp32 graph on self.inputs, set by its check
        self.meta: dict = {}

    def run(self) -> Path:
        model = self.load()
        # From here on files in `out` change: a previous export there stops being complete.
        self.out.mkdir(parents=True, exist_ok=True)
        (self.out / METADATA_NAME).unlink(missing_ok=True)
        self.export_fp32(model)
        del model  # the graphs are all that later stages need
        if self.fp16:
            self.export_fp16()
        if self.options.cpu_int8:
            self.export_int8()
        if not self.options.onnx_only:
            self.build_engine()
        write_json(self.out / METADATA_NAME, self.meta)
        self.log(f"wrote {self.out / METADATA_NAME}")
        return self.out / METADATA_NAME

    def load(self):
        from .checkpoint import load_model

        o = self.options
        model = self.stages.run(
            f"load {o.source}",
            lambda: load_model(o.source, patch_order=o.patch_order, backbone=o.backbone, revision=o.revision),
        )
        info = model.checkpoint
        self.log(
            f"      {info.backbone}, {info.num_params / 1e6:.1f}M parameters, patch order {info.patch_order} "
            f"({info.patch_order_origin}), sha256 {info.sha256[:12]}"
        )
        self.meta = base_metadata(
            info, height=o.height, width=o.width, max_batch=o.max_batch,
            precision=o.precision, opset=o.opset, deform_conv=o.deform_conv,
        )  # fmt: skip
        return model

    def export_fp32(self, model) -> None:
        o, path = self.options, self.out / FP32_GRAPH_NAME
        title = f"trace fp32 ONNX at {o.height}x{o.width} ({o.deform_conv} DeformConv)"
        self.stages.run(title, lambda: _trace(model, path, o))
        self.meta["onnx"]["graphs"]["fp32"] = {"path": FP32_GRAPH_NAME, "sha256": sha256_file(path)}
        if o.verify:
            from .onnx.verify import check_fp32_graph

            title = "verify fp32 graph against PyTorch in ONNX Runtime"
            parity, self.fp32_outputs = self.stages.run(
                title, lambda: check_fp32_graph(model, path, self.inputs)
            )
            self.log(
                f"      max |diff| {parity.max_abs_diff:.2e}, mean {parity.mean_abs_diff:.2e}, "
                f"batches {parity.batch_sizes}"
            )
            self.meta["parity"]["fp32_onnx_vs_torch"] = parity.as_dict()

    def export_fp16(self) -> None:
        fp32_path, fp16_path = self.out / FP32_GRAPH_NAME, self.out / FP16_GRAPH_NAME
        self.stages.run("derive mixed-precision fp16 graph", lambda: _write_fp16(fp32_path, fp16_path))
        self.meta["onnx"]["graphs"]["fp16"] = {"path": FP16_GRAPH_NAME, "sha256": sha256_file(fp16_path)}
        if self.options.verify:
            from .onnx.verify import check_fp16_graph

            title = "verify fp16 graph against fp32"
            agreement = self.stages.run(
                title, lambda: check_fp16_graph(fp16_path, self.inputs, self.fp32_outputs)
            )
            self.log(
                f"      mask MAE {agreement.mask_mae:.2e}, max |diff| {agreement.max_abs_diff:.2e}, "
                f"IoU@0.5 {agreement.iou_at_half:.5f}, finite {agreement.finite}"
            )
            self.meta["parity"]["fp16_onnx_vs_fp32_onnx"] = agreement.as_dict()

    def export_int8(self) -> None:
        from .onnx.calibration import calibration_batches
        from .onnx.int8 import graph_to_quantise

        o = self.options
        batches, source = calibration_batches(o.calibration_images, o.height, o.width)
        if o.calibration_images is None:
            self.log(
                "      calibrating on synthetic images, a weak calibration: pass --calibration-images "
                "with photos like the ones you will process"
            )
        with tempfile.TemporaryDirectory(prefix="rmbg-int8-") as tmp:
            self._calibrate_quantise_check(
                graph_to_quantise(self.out / FP32_GRAPH_NAME, Path(tmp)), batches, source
            )

    def _calibrate_quantise_check(self, graph: Path, batches: list, source: str) -> None:
        from .onnx.calibration import minmax_ranges
        from .onnx.int8 import check_int8_graph, quantise

        int8_path = self.out / INT8_GRAPH_NAME
        title = f"calibrate int8 ranges on {source}"
        calibration = self.stages.run(title, lambda: minmax_ranges(graph, batches, self.log))
        # The gate: the export's check images, plus the user's photos (their fp32 outputs came with
        # the calibration).
        inputs, references = self.inputs, self._fp32_references()
        if self.options.calibration_images is not None:
            inputs, references = inputs + batches, references + calibration.outputs

        def quantise_and_check():
            with atomic_output(int8_path) as partial:  # a graph that fails its gate is never renamed
                info = quantise(graph, partial, calibration.ranges, source)
                return info, check_int8_graph(partial, inputs, references)

        info, agreement = self.stages.run("quantise int8 graph and check it against fp32", quantise_and_check)
        self.log(
            f"      {info.quantised_nodes} layers int8, {info.float_nodes} kept float; vs fp32: mask MAE "
            f"{agreement.mask_mae:.2e}, max |diff| {agreement.max_abs_diff:.2e}, "
            f"IoU@0.5 {agreement.iou_at_half:.5f}"
        )
        entry = {"path": INT8_GRAPH_NAME, "sha256": sha256_file(int8_path), "runs_on": "onnxruntime-cpu"}
        self.meta["onnx"]["graphs"]["int8"] = entry | info.as_dict()
        self.meta["parity"]["int8_onnx_vs_fp32_onnx"] = agreement.as_dict()

    def _fp32_references(self) -> list:
        """The fp32 graph's outputs on the export's check images (from its check, when it ran)."""
        from .onnx.verify import run_graph

        return list(self.fp32_outputs) or run_graph(self.out / FP32_GRAPH_NAME, self.inputs)

    def build_engine(self) -> None:
        from .tensorrt.build import build_engine_stage

        check = (self.inputs, self.fp32_outputs) if self.options.verify else None
        self.meta["engine"] = self.stages.run(
            "build TensorRT engine",
            lambda: build_engine_stage(self.out, self.meta, self.options, check, self.log),
        )


def _trace(model, path: Path, options: ExportOptions) -> None:
    from .onnx.trace import trace_to_onnx

    with atomic_output(path) as partial:
        resolution = (options.height, options.width)
        trace_to_onnx(
            model, partial, resolution=resolution, deform_conv=options.deform_conv, opset=options.opset
        )


def _write_fp16(fp32_path: Path, fp16_path: Path) -> None:
    import onnx

    from .onnx.fp16 import to_mixed_precision

    mixed = to_mixed_precision(onnx.load(str(fp32_path)))
    with atomic_output(fp16_path) as partial:
        onnx.save(mixed, str(partial))


def _verification_inputs(options: ExportOptions):
    from .onnx.verify import synthetic_images

    sizes = [b for b in VERIFY_BATCH_SIZES if b <= options.max_batch]
    return [synthetic_images(b, options.height, options.width, seed=b) for b in sizes]
