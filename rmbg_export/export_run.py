"""The export run: checkpoint -> fp32 ONNX -> (fp16 ONNX) -> (int8 ONNX) -> (OpenVINO IR) -> (TensorRT engine)
-> model.json.

The stages are planned from the options before anything runs, so the progress lines count them
exactly. Each stage writes under a temporary name and renames on success; model.json, which the
runtime requires, is removed before the first file in the folder changes and written last, so an
interrupted run never looks complete (and a run that fails while loading leaves the old export).
"""

from __future__ import annotations

import dataclasses
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from rmbg_runtime.contract import (
    GRAPH_FILES,
    INT8_RUNS_ON,
    METADATA_NAME,
    OPENVINO_FILES,
    GraphEntry,
    ModelSpec,
)

from .errors import ExportError
from .files import atomic_output, sha256_file, write_json
from .options import DEFAULT_DEFORM_CONV, EngineOptions, ExportOptions, validate

if TYPE_CHECKING:
    from .onnx.calibration import Calibration
    from .onnx.fp16 import Fp32Scope

__all__ = ["DEFAULT_DEFORM_CONV", "EngineOptions", "ExportOptions", "ExportRun", "Stage", "run_export"]

VERIFY_BATCH_SIZES = (1, 2)


@dataclass(frozen=True)
class Stage:
    title: str
    work: Callable[[], None]


@dataclass(frozen=True)
class Calibrated:
    """What int8 calibration hands to quantisation."""

    graph: Path  # the fp32 graph as quantised (shared weights inlined)
    batches: list  # the calibration images, normalised
    source: str  # what they were, for model.json
    calibration: Calibration  # the ranges, and the fp32 graph's outputs on `batches`


def run_export(options: ExportOptions, log: Callable[[str], None] = print) -> Path:
    """Run every stage; returns the path of the written model.json."""
    validate(options)
    if not options.onnx_only:
        from .tensorrt.environment import require_build_environment

        require_build_environment()  # fail in a second, not after minutes of tracing
    return ExportRun(options, log).run()


class ExportRun:
    """One export: `stages` is the plan, `spec` grows into model.json as the stages run."""

    def __init__(self, options: ExportOptions, log: Callable[[str], None]) -> None:
        self.options, self.log, self.out = options, log, options.output
        self.stages = plan_stages(self, options)
        self.inputs = _verification_inputs(options)
        self.fp32_outputs: list = []  # the fp32 graph on self.inputs, set by its check
        self.spec: ModelSpec | None = None
        self.model = None  # the PyTorch model, until the fp32 graph no longer needs it
        self.scratch: Path | None = None  # a temporary folder for intermediate graphs
        self.calibrated: Calibrated | None = None
        self.int8_float_convs: dict[str, tuple[str, ...]] = {}  # declared on the model's modules
        self.fp32_scopes: tuple[Fp32Scope, ...] = ()  # declared on the model's modules, for fp16

    def run(self) -> Path:
        with tempfile.TemporaryDirectory(prefix="rmbg-export-") as scratch:
            self.scratch = Path(scratch)
            for number, stage in enumerate(self.stages, 1):
                self._run_stage(f"[{number}/{len(self.stages)}] {stage.title}", stage.work)
        write_json(self.out / METADATA_NAME, self.spec.to_dict())
        self.log(f"wrote {self.out / METADATA_NAME}")
        return self.out / METADATA_NAME

    def _run_stage(self, label: str, work: Callable[[], None]) -> None:
        self.log(f"{label} ...")
        start = time.perf_counter()
        work()
        self.log(f"{label}: done in {time.perf_counter() - start:.1f} s")

    def _add_graph(self, precision: str, **details) -> Path:
        path = self.out / GRAPH_FILES[precision]
        entry = GraphEntry(path=path.name, sha256=sha256_file(path), **details)
        self.spec = self.spec.with_graph(precision, entry)
        return path

    # ---- the stages, in plan order

    def load(self) -> None:
        from .checkpoint import load_model
        from .metadata import initial_spec

        o = self.options
        self.model = load_model(o.source, patch_order=o.patch_order, backbone=o.backbone, revision=o.revision)
        info = self.model.checkpoint
        self.log(
            f"      {info.backbone}, {info.num_params / 1e6:.1f}M parameters, patch order {info.patch_order} "
            f"({info.patch_order_origin}), sha256 {info.sha256[:12]}"
        )
        self.spec = initial_spec(info, o)
        if o.precision == "fp16":
            from .onnx.fp16 import declared_fp32_scopes

            self.fp32_scopes = declared_fp32_scopes(self.model)
        if o.cpu_int8:
            from .onnx.int8 import declared_float_convs

            self.int8_float_convs = declared_float_convs(self.model)

    def trace_fp32(self) -> None:
        # From here on files in `out` change: a previous export there stops being complete.
        self.out.mkdir(parents=True, exist_ok=True)
        (self.out / METADATA_NAME).unlink(missing_ok=True)
        _trace(self.model, self.out / GRAPH_FILES["fp32"], self.options)
        self._add_graph("fp32")
        if not self.options.verify:
            self.model = None  # the graphs are all that later stages need

    def verify_fp32(self) -> None:
        from .onnx.verify import check_fp32_graph

        parity, self.fp32_outputs = check_fp32_graph(self.model, self.out / GRAPH_FILES["fp32"], self.inputs)
        self.model = None
        self.log(
            f"      max |diff| {parity.max_abs_diff:.2e}, mean {parity.mean_abs_diff:.2e}, "
            f"batches {parity.batch_sizes}"
        )
        self.spec = self.spec.with_parity("fp32_onnx_vs_torch", parity.as_dict())

    def derive_fp16(self) -> None:
        _write_fp16(self.out / GRAPH_FILES["fp32"], self.out / GRAPH_FILES["fp16"], self.fp32_scopes)
        self._add_graph("fp16")

    def verify_fp16(self) -> None:
        from .onnx.verify import check_fp16_graph

        agreement = check_fp16_graph(self.out / GRAPH_FILES["fp16"], self.inputs, self.fp32_outputs)
        self.log(
            f"      mask MAE {agreement.mask_mae:.2e}, max |diff| {agreement.max_abs_diff:.2e}, "
            f"IoU@0.5 {agreement.iou_at_half:.5f}, finite {agreement.finite}"
        )
        self.spec = self.spec.with_parity("fp16_onnx_vs_fp32_onnx", agreement.as_dict())

    def calibrate_int8(self) -> None:
        from .onnx.calibration import calibration_batches, minmax_ranges
        from .onnx.int8 import graph_to_quantise

        o = self.options
        batches, source = calibration_batches(o.calibration_images, o.height, o.width)
        self.log(f"      on {source}")
        if o.calibration_images is None:
            self.log(
                "      calibrating on synthetic images, a weak calibration: pass --calibration-images "
                "with photos like the ones you will process"
            )
        graph = graph_to_quantise(self.out / GRAPH_FILES["fp32"], self.scratch)
        calibration = minmax_ranges(graph, batches, self.log)
        self.calibrated = Calibrated(graph, batches, source, calibration)

    def quantise_int8(self) -> None:
        from .onnx.int8 import check_int8_graph, quantise

        c = self.calibrated
        # The gate: the export's check images, plus the user's photos (their fp32 outputs came with
        # the calibration).
        inputs, references = self.inputs, self._fp32_references()
        if self.options.calibration_images is not None:
            inputs, references = inputs + c.batches, references + c.calibration.outputs
        int8_path = self.out / GRAPH_FILES["int8"]
        with atomic_output(int8_path) as partial:  # a graph that fails its gate is never renamed
            info = quantise(c.graph, partial, c.calibration.ranges, c.source, self.int8_float_convs)
            agreement = check_int8_graph(partial, inputs, references)
        self.log(
            f"      {info.quantised_nodes} layers int8, {info.float_nodes} kept float; vs fp32: mask MAE "
            f"{agreement.mask_mae:.2e}, max |diff| {agreement.max_abs_diff:.2e}, "
            f"IoU@0.5 {agreement.iou_at_half:.5f}"
        )
        self._add_graph("int8", runs_on=INT8_RUNS_ON, **info.as_dict())
        self.spec = self.spec.with_parity("int8_onnx_vs_fp32_onnx", agreement.as_dict())

    def _fp32_references(self) -> list:
        """The fp32 graph's outputs on the export's check images (from its check, when it ran)."""
        from .onnx.verify import run_graph

        return list(self.fp32_outputs) or run_graph(self.out / GRAPH_FILES["fp32"], self.inputs)

    def convert_openvino(self) -> None:
        """IR of the fp32 graph (and of the int8 one, which OpenVINO runs as int8), each gated
        against the fp32 graph on the check images and the user's photos; where this CPU has bf16
        arithmetic, the fp32 IR in bf16 too (an optional entry: failing its gate only leaves it out)."""
        from .openvino_ir import cpu_has_bf16, import_openvino, write_ir

        inputs, references = self._gate_inputs()
        version = import_openvino().__version__
        for precision in ("fp32", "int8"):
            if precision not in self.spec.graphs:
                continue
            xml = self.out / OPENVINO_FILES[precision]
            write_ir(self.out / GRAPH_FILES[precision], xml, self.options.max_batch)
            try:
                self._gate_ir(version, precision, inputs, references)
            except ExportError:
                xml.unlink(missing_ok=True)  # a failed IR is never left looking usable
                xml.with_suffix(".bin").unlink(missing_ok=True)
                raise
        if not cpu_has_bf16():
            self.log("      bf16: no bf16 arithmetic on this CPU (avx512_bf16 or AMX): not offered")
            return
        try:
            self._gate_ir(version, "bf16", inputs, references)
        except ExportError as err:
            self.log(f"      bf16: not offered, {err}")

    def _gate_ir(self, version: str, precision: str, inputs: list, references: list) -> None:
        from .openvino_ir import check_ir, ir_record

        xml = self.out / OPENVINO_FILES[precision]
        agreement = check_ir(xml, precision, inputs, references)
        self.log(
            f"      {xml.name} ({precision}) vs fp32 ONNX: mask MAE {agreement.mask_mae:.2e}, max |diff| "
            f"{agreement.max_abs_diff:.2e}, IoU@0.5 {agreement.iou_at_half:.5f}"
        )
        graph = GRAPH_FILES["int8" if precision == "int8" else "fp32"]
        ir = ir_record(self.out, precision, graph, agreement)
        self.spec = self.spec.with_openvino(version, precision, ir)

    def _gate_inputs(self) -> tuple[list, list]:
        """The export's check images and the user's calibration photos, with the fp32 graph's outputs."""
        inputs, references = list(self.inputs), self._fp32_references()
        c = self.calibrated
        if c is not None and self.options.calibration_images is not None:
            inputs, references = inputs + c.batches, references + c.calibration.outputs
        return inputs, references

    def build_engine(self) -> None:
        from .tensorrt.build import build_engine

        self.spec = self.spec.with_engine(
            build_engine(self.spec, self.options.engine, self.fp32_scopes, self.log)
        )

    def verify_engine(self) -> None:
        from .tensorrt.build import verify_engine

        parity = verify_engine(self.spec, self.inputs, self.fp32_outputs, self.log)
        self.spec = self.spec.with_engine(dataclasses.replace(self.spec.engine, parity=parity))


def plan_stages(run: ExportRun, options: ExportOptions) -> list[Stage]:
    """The stages `options` ask for, in order."""
    o = options
    stages = [
        Stage(f"load {o.source}", run.load),
        Stage(f"trace fp32 ONNX at {o.height}x{o.width} ({o.deform_conv} DeformConv)", run.trace_fp32),
    ]
    if o.verify:
        stages.append(Stage("verify fp32 graph against PyTorch in ONNX Runtime", run.verify_fp32))
    if o.precision == "fp16":
        stages.append(Stage("derive mixed-precision fp16 graph", run.derive_fp16))
        if o.verify:
            stages.append(Stage("verify fp16 graph against fp32", run.verify_fp16))
    if o.cpu_int8:
        stages.append(Stage("calibrate int8 ranges", run.calibrate_int8))
        stages.append(Stage("quantise int8 graph and check it against fp32", run.quantise_int8))
    if o.openvino:
        stages.append(Stage("convert to OpenVINO IR and check it against fp32", run.convert_openvino))
    if not o.onnx_only:
        stages.append(Stage("build TensorRT engine", run.build_engine))
        if o.verify:
            stages.append(Stage("verify TensorRT engine against the fp32 graph", run.verify_engine))
    return stages


def _trace(model, path: Path, options: ExportOptions) -> None:
    from .onnx.trace import trace_to_onnx

    with atomic_output(path) as partial:
        resolution = (options.height, options.width)
        trace_to_onnx(
            model, partial, resolution=resolution, deform_conv=options.deform_conv, opset=options.opset
        )


def _write_fp16(fp32_path: Path, fp16_path: Path, fp32_scopes: tuple[Fp32Scope, ...]) -> None:
    import onnx

    from .onnx.fp16 import to_mixed_precision

    mixed = to_mixed_precision(onnx.load(str(fp32_path)), fp32_scopes)
    with atomic_output(fp16_path) as partial:
        onnx.save(mixed, str(partial))


def _verification_inputs(options: ExportOptions):
    from .onnx.verify import synthetic_images

    sizes = [b for b in VERIFY_BATCH_SIZES if b <= options.max_batch]
    return [synthetic_images(b, options.height, options.width, seed=b) for b in sizes]
