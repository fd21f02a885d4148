"""Every TensorRT decision that needs no TensorRT: which graph and precision path for which
version, the optimisation profile, and what the engine records about itself."""

from __future__ import annotations

import re
from dataclasses import dataclass

from rmbg_runtime.contract import EXPORT_PRECISIONS, EngineRecord, Profile

from ..errors import ExportError
from ..options import EngineOptions

MIN_VERSION = (10, 1)
# Strong typing (NetworkDefinitionCreationFlag.STRONGLY_TYPED) exists since 10.1 (pyCore.cpp at the
# v10.1.0 tag); 10.12 deprecated BuilderFlag.FP16 in favour of it and 11.0 removed weak typing. Mixed
# BatchNormalization under strong typing parses from 10.7 only, but our graphs fold every BatchNorm, so
# nothing in them needs more than 10.1: every version builds the mixed graph strongly typed, with the
# graph's own Casts as the one definition of what stays fp32. Weak typing remains an opt-in fallback
# (--weak-typing) on 10.x, with the same fp32 islands pinned layer by layer.
WEAK_TYPING_REMOVED = (11, 0)


def parse_version(version: str) -> tuple[int, ...]:
    """'10.12.0.36' -> (10, 12, 0); '11.4.0rc1' -> (11, 4, 0)."""
    parts = []
    for piece in version.split(".")[:3]:
        match = re.match(r"\d+", piece)
        parts.append(int(match.group()) if match else 0)
    return tuple(parts)


@dataclass(frozen=True)
class BuildPlan:
    graph: str  # "fp16" (mixed-precision graph) or "fp32"
    strongly_typed: bool
    fp16_flag: bool  # the weakly typed builder flag (--weak-typing, TensorRT 10.x)
    pin_fp32_layers: bool = False  # weakly typed fp16: pin the fp32 islands with layer precisions
    tf32: bool = False  # TF32 matmuls in fp32 layers; off unless --tf32 (as Polygraphy's default)

    def describe(self) -> str:
        tf32 = ", TF32 on" if self.tf32 else ""
        if self.strongly_typed:
            return f"strongly typed network from the {self.graph} graph{tf32}"
        pinned = ", fp32 islands pinned" if self.pin_fp32_layers else ""
        return f"fp32 graph with the FP16 builder flag {'on' if self.fp16_flag else 'off'}{pinned}{tf32}"


def build_plan(
    tensorrt_version: str, precision: str, *, weak_typing: bool = False, tf32: bool = False
) -> BuildPlan:
    """Strongly typed from the graph of `precision` on every supported version; with `weak_typing`
    (10.x only) the fp32 graph, the FP16 flag and the fp32 islands pinned."""
    version = parse_version(tensorrt_version)
    if version[:2] < MIN_VERSION:
        raise ExportError(
            f"TensorRT {tensorrt_version} is too old: 10.1 or later is needed (DeformConv, strongly typed "
            "networks); upgrade TensorRT."
        )
    if precision not in EXPORT_PRECISIONS:
        raise ExportError(f"precision {precision!r} is unknown; use {' or '.join(EXPORT_PRECISIONS)}.")
    if not weak_typing:
        return BuildPlan(graph=precision, strongly_typed=True, fp16_flag=False, tf32=tf32)
    if version[:2] >= WEAK_TYPING_REMOVED:
        raise ExportError(
            f"TensorRT {tensorrt_version} builds only strongly typed networks; drop --weak-typing."
        )
    fp16 = precision == "fp16"
    return BuildPlan(graph="fp32", strongly_typed=False, fp16_flag=fp16, pin_fp32_layers=fp16, tf32=tf32)


def optimization_profile(height: int, width: int, max_batch: int, opt_batch: int | None = None) -> Profile:
    """One profile over batch 1..max_batch; tuned for `opt_batch` (default 1: one image per request)."""
    if max_batch < 1:
        raise ExportError(f"--max-batch {max_batch} must be at least 1.")
    opt = 1 if opt_batch is None else opt_batch
    if not 1 <= opt <= max_batch:
        raise ExportError(f"--opt-batch {opt} must lie between 1 and --max-batch {max_batch}.")
    return Profile((1, 3, height, width), (opt, 3, height, width), (max_batch, 3, height, width))


def workspace_bytes(gib: float | None) -> int | None:
    if gib is None:
        return None
    if gib <= 0:
        raise ExportError(f"--workspace-gib {gib} must be positive.")
    return int(gib * (1 << 30))


def format_cuda_version(value: int) -> str:
    """cudaDriverGetVersion's 12080 -> '12.8'."""
    return f"{value // 1000}.{(value % 1000) // 10}"


def timing_cache_name(gpu_name: str, tensorrt_version: str) -> str:
    """A default timing-cache file name per GPU model and TensorRT version: a cache is only valid for
    the device and version that made it, so two GPUs sharing an output folder never share one."""
    gpu = re.sub(r"[^a-z0-9]+", "-", gpu_name.lower()).strip("-") or "gpu"
    version = ".".join(str(p) for p in parse_version(tensorrt_version))
    return f"timing-{gpu}-trt{version}.cache"


def tensorrt_cuda_variant(distributions: list[str]) -> str | None:
    """'cu12' / 'cu13' from the installed TensorRT distributions' names (tensorrt-cu12,
    tensorrt_cu13_libs, ...): the CUDA major TensorRT's own libraries were built for."""
    found = {m.group(1) for name in distributions if (m := re.match(r"tensorrt[-_](cu\d+)", name.lower()))}
    return found.pop() if len(found) == 1 else None


def device_record(
    gpu_name: str,
    capability: tuple[int, int],
    cuda_driver: int,
    nvidia_driver: str | None,
    distributions: list[str],
) -> dict:
    """What model.json records about the build machine's GPU stack. Not cuda-python's
    cudaRuntimeGetVersion: that is cuda-python's own compile-time CUDA, not TensorRT's."""
    return {
        "gpu_name": gpu_name.rstrip("\x00"),
        "compute_capability": f"{capability[0]}.{capability[1]}",
        "nvidia_driver_version": nvidia_driver,
        "cuda_driver_version": format_cuda_version(cuda_driver),  # the newest CUDA this driver runs
        "tensorrt_cuda": tensorrt_cuda_variant(distributions),
    }


def layer_matches_node(layer_name: str, node_names: set[str]) -> bool:
    """TensorRT's ONNX parser names a node's first layer after the node and later ones NAME_1,
    NAME_2, ...: both belong to the node."""
    if layer_name in node_names:
        return True
    base, _, suffix = layer_name.rpartition("_")
    return suffix.isdigit() and base in node_names


@dataclass(frozen=True)
class BuiltEngine:
    """What a build produced (build.py fills it from TensorRT and the device)."""

    path: str
    sha256: str
    tensorrt_version: str
    device: dict  # device_record's facts
    precision: str
    plan: BuildPlan
    fp32_layers_pinned: int
    graph: str  # the ONNX file it was built from
    profile: Profile
    plugins: tuple[str, ...]
    timing_cache: str
    build_seconds: float


def engine_record(built: BuiltEngine, options: EngineOptions) -> EngineRecord:
    """model.json's record of an engine: what was built, on what, and with which settings."""
    return EngineRecord(
        path=built.path,
        sha256=built.sha256,
        tensorrt_version=built.tensorrt_version,
        **built.device,
        precision=built.precision,
        strongly_typed=built.plan.strongly_typed,
        fp16_builder_flag=built.plan.fp16_flag,
        fp32_layers_pinned=built.fp32_layers_pinned,
        tf32=built.plan.tf32,
        graph=built.graph,
        profile=built.profile,
        plugins=built.plugins,
        builder_optimization_level=options.opt_level,
        workspace_gib=options.workspace_gib,
        timing_cache=built.timing_cache,
        build_seconds=round(built.build_seconds, 1),
    )
