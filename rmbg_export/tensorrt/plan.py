"""Every TensorRT decision that needs no TensorRT: which graph and precision path for which
version, the optimisation profile, and what the engine records about itself."""

from __future__ import annotations

import re
from dataclasses import dataclass

from ..errors import ExportError

MIN_VERSION = (10, 1)
STRONGLY_TYPED_SINCE = (10, 12)  # opt-in flag from 10.12; the only mode in 11.x


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
    fp16_flag: bool  # the weakly typed builder flag (TensorRT < 10.12)

    def describe(self) -> str:
        if self.strongly_typed:
            return f"strongly typed network from the {self.graph} graph"
        return f"fp32 graph with the FP16 builder flag {'on' if self.fp16_flag else 'off'}"


def build_plan(tensorrt_version: str, precision: str) -> BuildPlan:
    """TensorRT >= 10.12 (and 11.x, which removed weak typing) builds the graph's own types;
    10.1-10.11 builds the fp32 graph and lets the FP16 flag pick kernels."""
    version = parse_version(tensorrt_version)
    if version[:2] < MIN_VERSION:
        raise ExportError(
            f"TensorRT {tensorrt_version} is too old: 10.1 or later is needed (DeformConv, strongly typed "
            "networks); upgrade TensorRT."
        )
    if precision not in ("fp16", "fp32"):
        raise ExportError(f"precision {precision!r} is unknown; use fp16 or fp32.")
    if version[:2] >= STRONGLY_TYPED_SINCE:
        return BuildPlan(graph=precision, strongly_typed=True, fp16_flag=False)
    return BuildPlan(graph="fp32", strongly_typed=False, fp16_flag=precision == "fp16")


@dataclass(frozen=True)
class Profile:
    min: tuple[int, int, int, int]
    opt: tuple[int, int, int, int]
    max: tuple[int, int, int, int]

    def as_dict(self) -> dict:
        return {"min": list(self.min), "opt": list(self.opt), "max": list(self.max)}


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
    """cudaRuntimeGetVersion's 12080 -> '12.8'."""
    return f"{value // 1000}.{(value % 1000) // 10}"
