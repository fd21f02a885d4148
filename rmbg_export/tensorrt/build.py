"""The calls into TensorRT that build an engine. Decisions live in plan.py and preflight.py.

NOT YET RUN on a GPU (no TensorRT on the development and CI machines): check this module first
where TensorRT 10.x / 11.x and a GPU exist (scripts/gpu_check.py, pytest -m gpu).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from rmbg_runtime.contract import ENGINE_NAME, GRAPH_FILES, EngineRecord, ModelSpec

from ..errors import ExportError
from ..files import atomic_output, sha256_file
from ..options import EngineOptions
from .plan import (
    BuildPlan,
    BuiltEngine,
    build_plan,
    device_record,
    engine_record,
    layer_matches_node,
    optimization_profile,
    timing_cache_name,
    workspace_bytes,
)
from .timing_cache import attach_timing_cache, save_timing_cache

if TYPE_CHECKING:
    from ..onnx.fp16 import Fp32Scope

ENGINE_MAX_MAE = 2e-3
ENGINE_MIN_IOU = 0.99


def _progress_monitor(trt, log: Callable[[str], None]):
    """An IProgressMonitor printing top-level phases with elapsed time (TensorRT >= 10.0)."""
    if not hasattr(trt, "IProgressMonitor"):
        return None

    class Monitor(trt.IProgressMonitor):
        def __init__(self) -> None:
            trt.IProgressMonitor.__init__(self)
            self.start = time.perf_counter()
            self.lock = threading.Lock()  # TensorRT calls from several threads

        def phase_start(self, phase_name, parent_phase, num_steps):
            if parent_phase is None:
                with self.lock:
                    log(f"      {time.perf_counter() - self.start:7.1f} s  {phase_name} ({num_steps} steps)")

        def step_complete(self, phase_name, step):  # noqa: ARG002 - TensorRT's signature
            return True  # never cancel

        def phase_finish(self, phase_name):
            pass

    return Monitor()


def current_device_facts(device_id: int = 0) -> dict:
    from importlib import metadata

    from cuda.bindings import runtime as cudart

    err, props = cudart.cudaGetDeviceProperties(device_id)
    if int(err) != 0:
        raise ExportError(f"CUDA device {device_id} cannot be queried ({err}); check CUDA_VISIBLE_DEVICES.")
    _, driver = cudart.cudaDriverGetVersion()
    from rmbg_runtime.backends.cuda import gpu_name

    name = gpu_name(props)
    distributions = [d.metadata["Name"] or "" for d in metadata.distributions()]
    return device_record(name, (props.major, props.minor), driver, nvidia_driver_version(), distributions)


def nvidia_driver_version() -> str | None:
    """The kernel driver's version (e.g. 570.86.15), from nvidia-smi when it is on PATH."""
    import subprocess

    try:
        out = subprocess.run(
            ["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"],
            capture_output=True,
            text=True,
            timeout=20,
            check=True,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip().splitlines()[0] if out.stdout.strip() else None


def _parse(trt, builder, logger, graph: Path, plan: BuildPlan):
    flags = 1 << int(trt.NetworkDefinitionCreationFlag.STRONGLY_TYPED) if plan.strongly_typed else 0
    network = builder.create_network(flags)
    parser = trt.OnnxParser(network, logger)
    if not parser.parse_from_file(str(graph)):
        errors = "; ".join(_parser_error(parser.get_error(i)) for i in range(min(parser.num_errors, 3)))
        raise ExportError(f"TensorRT could not parse {graph.name}: {errors}.")
    return network, parser


def _parser_error(error) -> str:
    """IParserError: node name and description where the version offers them."""
    desc = error.desc() if hasattr(error, "desc") else str(error)
    node = error.node_name() if hasattr(error, "node_name") else ""
    return f"{node}: {desc}" if node else desc


def pin_fp32_layers(trt, network, node_names: set[str]) -> int:
    """Weakly typed builds: keep the mixed graph's fp32 islands in fp32 (with
    OBEY_PRECISION_CONSTRAINTS set on the config). Returns the number of layers pinned."""
    floats = (trt.float32, trt.float16)
    pinned = 0
    for index in range(network.num_layers):
        layer = network.get_layer(index)
        if not layer_matches_node(layer.name, node_names):
            continue
        layer.precision = trt.float32
        for out in range(layer.num_outputs):
            if layer.get_output(out).dtype in floats:
                layer.set_output_type(out, trt.float32)
        pinned += 1
    return pinned


def _config(trt, builder, network, plan: BuildPlan, spec: ModelSpec, options: EngineOptions, log):
    config = builder.create_builder_config()
    if plan.fp16_flag:
        config.set_flag(trt.BuilderFlag.FP16)
    if plan.pin_fp32_layers:
        config.set_flag(trt.BuilderFlag.OBEY_PRECISION_CONSTRAINTS)
    if not plan.tf32 and hasattr(trt.BuilderFlag, "TF32"):
        config.clear_flag(trt.BuilderFlag.TF32)  # the fp32 islands are fp32 for accuracy; TF32 undoes it
    limit = workspace_bytes(options.workspace_gib)
    if limit is not None:
        config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, limit)
    config.builder_optimization_level = options.opt_level
    profile = optimization_profile(spec.height, spec.width, spec.max_batch, options.opt_batch)
    trt_profile = builder.create_optimization_profile()
    trt_profile.set_shape(network.get_input(0).name, profile.min, profile.opt, profile.max)
    config.add_optimization_profile(trt_profile)
    monitor = _progress_monitor(trt, log)
    if monitor is not None:
        config.progress_monitor = monitor
    return config, profile, monitor


def build_engine(
    spec: ModelSpec, options: EngineOptions, fp32_scopes: tuple[Fp32Scope, ...], log: Callable[[str], None]
) -> EngineRecord:
    """Build the engine for the export `spec` describes (its graphs are written) into
    spec.folder/model.engine, and return its record for model.json (without parity: verify_engine).
    `fp32_scopes` (`declared_fp32_scopes`) are among the fp32 islands that weakly typed builds pin."""
    return engine_record(_build(spec, options, fp32_scopes, log), options)


def _build(
    spec: ModelSpec, options: EngineOptions, fp32_scopes: tuple[Fp32Scope, ...], log: Callable[[str], None]
) -> BuiltEngine:
    import onnx
    import tensorrt as trt

    from rmbg_runtime.backends.tensorrt import tensorrt_logger

    from ..onnx.fp16 import fp32_islands
    from .preflight import needs_plugins, require_supported

    out = spec.folder
    plan = build_plan(trt.__version__, spec.precision, weak_typing=options.weak_typing, tf32=options.tf32)
    graph = out / GRAPH_FILES[plan.graph]
    model = onnx.load(str(graph), load_external_data=False)
    require_supported(model, trt.__version__, graph.name)
    logger = tensorrt_logger(trt)
    plugins = needs_plugins(model)
    if plugins:
        trt.init_libnvinfer_plugins(logger, "")
    device = current_device_facts()
    where = f"TensorRT {trt.__version__} ({device['tensorrt_cuda']}) on {device['gpu_name']}"
    log(f"      {where}: {plan.describe()}")
    builder = trt.Builder(logger)
    network, _parser = _parse(trt, builder, logger, graph, plan)
    pinned = (
        pin_fp32_layers(trt, network, fp32_islands(model.graph, fp32_scopes)) if plan.pin_fp32_layers else 0
    )
    if plan.pin_fp32_layers:
        log(f"      {pinned} layers pinned to fp32")
    default_cache = out / timing_cache_name(device["gpu_name"], trt.__version__)
    cache_path = Path(options.timing_cache or default_cache)
    config, profile, _monitor = _config(trt, builder, network, plan, spec, options, log)
    attach_timing_cache(config, cache_path, log)
    start = time.perf_counter()
    serialized = builder.build_serialized_network(network, config)
    if serialized is None:
        raise ExportError(
            "TensorRT failed to build the engine (see the log above); try --workspace-gib or "
            "--deform-conv grid_sample."
        )
    build_seconds = time.perf_counter() - start
    engine_path = out / ENGINE_NAME
    with atomic_output(engine_path) as partial:
        partial.write_bytes(bytes(serialized))
    save_timing_cache(config, cache_path)
    return BuiltEngine(
        path=engine_path.name,
        sha256=sha256_file(engine_path),
        tensorrt_version=trt.__version__,
        device=device,
        precision=spec.precision,
        plan=plan,
        fp32_layers_pinned=pinned,
        graph=graph.name,
        profile=profile,
        plugins=("ModulatedDeformConv2d",) if plugins else (),
        timing_cache=cache_path.name,
        build_seconds=build_seconds,
    )


def verify_engine(spec: ModelSpec, inputs, fp32_outputs, log: Callable[[str], None]) -> dict:
    """The engine `spec` records, through the runtime's own TensorRT backend, against the fp32
    graph's outputs on `inputs`; returns the agreement figures for the engine's record."""
    import numpy as np

    from rmbg_runtime.backends.tensorrt import TensorRTBackend
    from rmbg_runtime.masks import mask_agreement

    backend = TensorRTBackend(spec)
    try:
        engine = np.concatenate([backend.run(b) for b in inputs])
    finally:
        backend.close()
    reference = np.concatenate(fp32_outputs)
    agreement = mask_agreement(reference, engine)
    log(
        f"      engine vs fp32 ONNX: max |diff| {agreement.max_abs_diff:.2e}, "
        f"mask MAE {agreement.mask_mae:.2e}, IoU@0.5 {agreement.iou_at_half:.5f}"
    )
    if not agreement.finite or agreement.mask_mae > ENGINE_MAX_MAE or agreement.iou_at_half < ENGINE_MIN_IOU:
        raise ExportError(
            f"the TensorRT engine disagrees with the fp32 graph (mask MAE {agreement.mask_mae:.2e}, IoU "
            f"{agreement.iou_at_half:.4f}, finite {agreement.finite}); "
            "rebuild with --precision fp32 and report it."
        )
    return agreement.as_dict()
