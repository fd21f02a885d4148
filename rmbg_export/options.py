"""What an export run is asked to do, typed and checked before any work starts (no torch here:
`rmbg-export --help` and the deployment commands load without it)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from rmbg_runtime.contract import EXPORT_PRECISIONS

from .errors import ExportError

DEFAULT_OPSET = 19  # first opset with DeformConv; GridSample needs 16
DEFAULT_DEFORM_CONV = "native"  # measured fastest in ONNX Runtime CPU; see README "Deformable convolution"
DEFAULT_PRECISION = "fp16"
DEFAULT_OPT_LEVEL = 3  # TensorRT's own default builder optimisation level


@dataclass(frozen=True)
class EngineOptions:
    """TensorRT builder settings (`rmbg-export --workspace-gib ... --weak-typing`)."""

    workspace_gib: float | None = None
    opt_level: int = DEFAULT_OPT_LEVEL
    opt_batch: int | None = None  # the batch TensorRT tunes for; None: 1
    timing_cache: Path | None = None  # None: OUTPUT/timing-<gpu>-trt<version>.cache
    tf32: bool = False
    weak_typing: bool = False


@dataclass
class ExportOptions:
    source: str
    output: Path
    height: int = 1024
    width: int = 1024
    max_batch: int = 4
    precision: str = DEFAULT_PRECISION
    deform_conv: str = DEFAULT_DEFORM_CONV
    patch_order: str | None = None
    backbone: str | None = None
    revision: str | None = None
    opset: int = DEFAULT_OPSET
    verify: bool = True
    onnx_only: bool = False
    cpu_int8: bool = False  # also an int8 graph for ONNX Runtime CPU, gated against fp32
    calibration_images: Path | None = None
    openvino: bool = False  # also OpenVINO IR of each ONNX CPU graph, gated against fp32
    engine: EngineOptions = field(default_factory=EngineOptions)


def validate(options: ExportOptions) -> None:
    """Refuse, in one sentence, what would otherwise fail after minutes of work."""
    for name, size in (("height", options.height), ("width", options.width)):
        if size < 32 or size % 32:
            raise ExportError(
                f"the {name} {size} is not a positive multiple of 32; pick e.g. 1024 or 768x1024."
            )
    if options.max_batch < 1:
        raise ExportError(f"--max-batch {options.max_batch} must be at least 1.")
    if options.precision not in EXPORT_PRECISIONS:
        raise ExportError(
            f"--precision {options.precision} is unknown; use {' or '.join(EXPORT_PRECISIONS)}."
        )
    if options.deform_conv == "native" and options.opset < 19:
        raise ExportError(f"--deform-conv native needs --opset 19 or later (got {options.opset}).")
    if options.calibration_images is not None and not options.cpu_int8:
        raise ExportError("--calibration-images calibrates the int8 graph; add --cpu-int8.")
    if options.openvino:
        from .openvino_ir import import_openvino

        import_openvino()  # fail in a second, not after minutes of tracing
    if options.opset < 17:
        raise ExportError(f"--opset {options.opset} is too old: LayerNormalization needs 17 or later.")
    if not options.onnx_only:
        from .tensorrt.plan import optimization_profile, workspace_bytes

        optimization_profile(options.height, options.width, options.max_batch, options.engine.opt_batch)
        workspace_bytes(options.engine.workspace_gib)
