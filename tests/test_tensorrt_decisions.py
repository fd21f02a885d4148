"""TensorRT decisions tested without TensorRT: version dispatch, profile, pre-flight operator check on
the graphs the exporter writes, and the runtime backend's refusals (with files the tests write)."""

from __future__ import annotations

import shutil
import subprocess
import sys

import numpy as np
import onnx
import pytest
from conftest import STAND_IN_DEVICE, add_stand_in_engine, stand_in_engine_record

from rmbg_export import ExportError
from rmbg_export.tensorrt.plan import (
    BuildPlan,
    BuiltEngine,
    build_plan,
    device_record,
    format_cuda_version,
    layer_matches_node,
    optimization_profile,
    parse_version,
    tensorrt_cuda_variant,
    timing_cache_name,
    workspace_bytes,
)
from rmbg_export.tensorrt.preflight import check_graph, needs_plugins, require_supported
from rmbg_runtime import BackendUnavailable, ModelError, Remover, RmbgError
from rmbg_runtime.backends import batch_slices
from rmbg_runtime.backends.tensorrt import (
    TensorRTBackend,
    check_output_shape,
    engine_mismatches,
    refusal_sentence,
)

LEGACY = "swin_v1_t_legacy_b1_512x512"


@pytest.mark.parametrize(
    ("version", "precision", "weak", "plan"),
    [
        ("11.4.0", "fp16", False, BuildPlan("fp16", strongly_typed=True, fp16_flag=False)),
        ("11.4.0", "fp32", False, BuildPlan("fp32", strongly_typed=True, fp16_flag=False)),
        ("10.12.0.36", "fp16", False, BuildPlan("fp16", strongly_typed=True, fp16_flag=False)),
        ("10.1.0", "fp16", False, BuildPlan("fp16", strongly_typed=True, fp16_flag=False)),
        ("10.11.0", "fp16", True, BuildPlan("fp32", False, fp16_flag=True, pin_fp32_layers=True)),
        ("10.1.0", "fp32", True, BuildPlan("fp32", strongly_typed=False, fp16_flag=False)),
    ],
)
def test_precision_path_per_version(version, precision, weak, plan):
    assert build_plan(version, precision, weak_typing=weak) == plan


def test_weak_typing_is_refused_on_tensorrt_11():
    with pytest.raises(ExportError, match=r"TensorRT 11\.1\.0 builds only strongly typed networks"):
        build_plan("11.1.0", "fp16", weak_typing=True)


def test_tf32_is_off_unless_asked_for():
    assert not build_plan("11.4.0", "fp16").tf32 and not build_plan("10.8.0", "fp32", weak_typing=True).tf32
    assert build_plan("11.4.0", "fp16", tf32=True).tf32
    assert "TF32 on" in build_plan("11.4.0", "fp32", tf32=True).describe()


def test_old_tensorrt_is_refused():
    with pytest.raises(ExportError, match=r"TensorRT 8\.6\.1 is too old: 10\.1 or later"):
        build_plan("8.6.1", "fp16")


def test_version_parsing_and_cuda_format():
    assert parse_version("10.12.0.36") == (10, 12, 0)
    assert parse_version("11.4.0rc1") == (11, 4, 0)
    assert format_cuda_version(12080) == "12.8" and format_cuda_version(13000) == "13.0"


def test_profile_and_workspace():
    profile = optimization_profile(1024, 768, max_batch=8, opt_batch=2)
    assert profile.as_dict() == {"min": [1, 3, 1024, 768], "opt": [2, 3, 1024, 768], "max": [8, 3, 1024, 768]}
    assert optimization_profile(512, 512, 4).opt == (1, 3, 512, 512)
    with pytest.raises(ExportError, match="--opt-batch 9 must lie between 1 and --max-batch 8"):
        optimization_profile(512, 512, 8, opt_batch=9)
    assert workspace_bytes(1.5) == 3 << 29 and workspace_bytes(None) is None


@pytest.mark.parametrize("mode", ["native", "grid_sample"])
@pytest.mark.parametrize("fp16", [False, True])
def test_exported_graphs_pass_preflight(export_graph, mode, fp16):
    model = onnx.load(str(export_graph(LEGACY, mode, 128, 128, fp16=fp16)))
    assert check_graph(model, "10.13.0") == []
    assert check_graph(model, "11.4.0") == []
    assert needs_plugins(model) == (mode == "native")


def test_preflight_names_offending_nodes(export_graph):
    model = onnx.load(str(export_graph(LEGACY, "native", 128, 128)))
    deform = next(n for n in model.graph.node if n.op_type == "DeformConv")
    for attr in deform.attribute:
        if attr.name == "pads":
            attr.ints[:] = [1, 1, 2, 2]
    model.graph.node.append(
        onnx.helper.make_node("Mystery", ["mask"], ["extra"], name="custom", domain="acme")
    )
    problems = [str(p) for p in check_graph(model, "10.13.0")]
    assert (
        f"DeformConv node {deform.name!r}: pads [1, 1, 2, 2] are not symmetric (TensorRT needs begin == end)"
        in problems
    )
    assert "Mystery node 'custom': not supported by TensorRT's ONNX parser" in problems
    with pytest.raises(
        ExportError,
        match=r"model\.onnx cannot be built with TensorRT 10\.0\.1: DeformConv node .* "
        r"needs TensorRT 10\.1 or later",
    ):
        require_supported(onnx.load(str(export_graph(LEGACY, "native", 128, 128))), "10.0.1", "model.onnx")


def test_preflight_checks_tensor_types():
    node = onnx.helper.make_node("Softmax", ["x"], ["y"], name="soft")
    graph = onnx.helper.make_graph(
        [node],
        "g",
        [onnx.helper.make_tensor_value_info("x", onnx.TensorProto.DOUBLE, [2, 3])],
        [onnx.helper.make_tensor_value_info("y", onnx.TensorProto.DOUBLE, [2, 3])],
    )
    problems = check_graph(onnx.helper.make_model(graph), "10.13.0")
    assert [p.reason for p in problems] == ["input 'x' is float64; TensorRT takes ['float32', 'float16']"]


# ---- runtime refusals ----------------------------------------------------------------------------------

BUILT_ON = {"tensorrt_version": "10.13.0", "gpu_name": "NVIDIA H100 80GB HBM3", "compute_capability": "9.0"}


@pytest.fixture()
def export_with_engine(exported_model_dir, tmp_path):
    folder = shutil.copytree(exported_model_dir, tmp_path / "with_engine")
    return add_stand_in_engine(folder, max_batch=3, tensorrt_version=BUILT_ON["tensorrt_version"])


def test_engine_mismatch_sentences():
    recorded = stand_in_engine_record(256, 256, "fp16", 3, "0" * 64, BUILT_ON["tensorrt_version"])
    current = {"tensorrt_version": "11.4.0", "gpu_name": "NVIDIA L4", "compute_capability": "8.9"}
    problems = engine_mismatches(recorded, current)
    assert problems == [
        "TensorRT 10.13.0 (this machine: 11.4.0)",
        "GPU NVIDIA H100 80GB HBM3 (this machine: NVIDIA L4)",
        "compute capability 9.0 (this machine: 8.9)",
    ]
    assert refusal_sentence("model.engine", problems[:1]) == (
        "model.engine was built for TensorRT 10.13.0 (this machine: 11.4.0); rebuild it on this machine "
        "with `rmbg-export SOURCE --output DIR`."
    )
    assert engine_mismatches(recorded, dict(BUILT_ON)) == []


def test_batches_larger_than_the_profile_are_split():
    assert batch_slices(10, 4) == [slice(0, 4), slice(4, 8), slice(8, 10)]
    assert batch_slices(3, 4) == [slice(0, 3)]


def test_tensorrt_backend_refusals(export_with_engine):
    with pytest.raises(
        BackendUnavailable, match=r"TensorRT is not installed; pip install .*pypi\.nvidia\.com"
    ):
        Remover(export_with_engine, backend="tensorrt")
    (export_with_engine / "model.engine").write_bytes(b"another engine")
    with pytest.raises(ModelError, match=r"model\.engine does not match the sha256 recorded in model\.json"):
        Remover(export_with_engine, backend="tensorrt")
    (export_with_engine / "model.engine").unlink()
    with pytest.raises(ModelError, match=r"model\.engine is missing; run `rmbg-export` again"):
        Remover(export_with_engine, backend="tensorrt")


def test_auto_without_tensorrt_uses_onnxruntime(export_with_engine):
    assert Remover(export_with_engine).backend_name.startswith("onnxruntime-cpu")


# ---- timing cache (TensorRT's IBuilderConfig as documented: create may return None, set returns a bool)


class BuilderConfig:
    """Behaves as IBuilderConfig's timing-cache calls are documented to, for one GPU."""

    def __init__(self, device: str, readable: bool = True) -> None:
        self.device, self.readable, self.attached = device, readable, None

    def create_timing_cache(self, data: bytes):
        if not self.readable:
            return None
        if not data:
            return TimingCache(self.device, b"")
        device, _, body = data.partition(b":")
        return TimingCache(device.decode(), body) if body else None

    def set_timing_cache(self, cache, ignore_mismatch: bool) -> bool:
        if cache.device != self.device and not ignore_mismatch:
            return False
        self.attached = cache
        return True

    def get_timing_cache(self):
        return self.attached


class TimingCache:
    def __init__(self, device: str, body: bytes) -> None:
        self.device, self.body = device, body or b"tactics"

    def serialize(self) -> bytes:
        return f"{self.device}:".encode() + self.body


def test_timing_cache_from_another_gpu_is_replaced(tmp_path):
    from rmbg_export.tensorrt.timing_cache import attach_timing_cache, save_timing_cache

    path, lines = tmp_path / "timing.cache", []
    path.write_bytes(b"NVIDIA L4:old tactics")
    config = BuilderConfig("NVIDIA H100")
    assert attach_timing_cache(config, path, lines.append)
    assert config.attached.device == "NVIDIA H100" and config.attached.body == b"tactics"
    assert lines == [
        "      timing cache timing.cache is from another GPU or TensorRT version: starting an empty one"
    ]
    assert save_timing_cache(config, path) and path.read_bytes() == b"NVIDIA H100:tactics"
    assert attach_timing_cache(BuilderConfig("NVIDIA H100"), path, lines.append)  # reused next time
    assert lines[-1].endswith("timing.cache: reused")


def test_no_timing_cache_means_nothing_is_serialised(tmp_path):
    from rmbg_export.tensorrt.timing_cache import attach_timing_cache, save_timing_cache

    config = BuilderConfig("NVIDIA H100", readable=False)  # create_timing_cache returns None
    assert not attach_timing_cache(config, tmp_path / "timing.cache", lambda _line: None)
    assert not save_timing_cache(config, tmp_path / "timing.cache")
    assert list(tmp_path.iterdir()) == []


def test_default_timing_cache_is_per_gpu_and_version():
    assert (
        timing_cache_name("NVIDIA H100 80GB HBM3", "10.13.0.35")
        == "timing-nvidia-h100-80gb-hbm3-trt10.13.0.cache"
    )
    names = {timing_cache_name(g, v) for g in ("NVIDIA L4", "NVIDIA H100") for v in ("10.13.0", "11.4.0")}
    assert len(names) == 4


# ---- recorded CUDA facts, extras and CUDA error sentences ------------------------------------------


def test_tensorrt_cuda_variant_from_distributions():
    assert tensorrt_cuda_variant(["numpy", "tensorrt-cu12", "tensorrt_cu12_libs", "tensorrt"]) == "cu12"
    assert tensorrt_cuda_variant(["tensorrt_cu13_bindings", "cuda-python"]) == "cu13"
    assert tensorrt_cuda_variant(["tensorrt-cu12", "tensorrt-cu13"]) is None  # ambiguous: say nothing
    assert tensorrt_cuda_variant(["onnx"]) is None


def test_engine_facts_record_the_driver_and_tensorrts_cuda_not_cuda_pythons():
    record = device_record("NVIDIA L4\x00", (8, 9), 12080, "570.86.15", ["tensorrt-cu12", "cuda-bindings"])
    assert record == {
        "gpu_name": "NVIDIA L4",
        "compute_capability": "8.9",
        "nvidia_driver_version": "570.86.15",
        "cuda_driver_version": "12.8",
        "tensorrt_cuda": "cu12",
    }


def test_tensorrt_extras_pin_one_cuda_major():
    from pathlib import Path

    import tomllib

    extras = tomllib.loads((Path(__file__).parents[1] / "pyproject.toml").read_text())["project"][
        "optional-dependencies"
    ]
    assert "tensorrt-cu12>=10.1" in extras["trt-cu12"] and "cuda-python>=12.6.1,<13" in extras["trt-cu12"]
    assert "tensorrt-cu13>=10.1" in extras["trt-cu13"] and "cuda-python>=13,<14" in extras["trt-cu13"]
    assert extras["trt"] == ["rmbg-toolkit[trt-cu13]"]


def test_cuda_errors_name_the_error_and_the_fix():
    import enum

    from rmbg_runtime.backends.cuda import cuda_failure

    class cudaError_t(enum.IntEnum):
        cudaErrorInsufficientDriver = 35
        cudaErrorNoDevice = 100
        cudaErrorMemoryAllocation = 2

    old_driver = cuda_failure("cudaGetDeviceCount", cudaError_t.cudaErrorInsufficientDriver)
    assert "cudaErrorInsufficientDriver" in old_driver and "R580" in old_driver and "[trt-cu12]" in old_driver
    assert "no usable CUDA GPU" in cuda_failure("cudaSetDevice(0)", cudaError_t.cudaErrorNoDevice)
    assert "out of memory" in cuda_failure("cudaMalloc", cudaError_t.cudaErrorMemoryAllocation)


# ---- weakly typed builds pin the same fp32 islands as the mixed graph ----------------------------------


def test_fp32_islands_are_what_the_mixed_graph_keeps_in_fp32(export_graph):
    from conftest import fixture_model

    from rmbg_export.onnx.fp16 import declared_fp32_scopes, fp32_islands

    fp32 = onnx.load(str(export_graph(LEGACY, "grid_sample", 256, 256)))
    mixed = onnx.load(str(export_graph(LEGACY, "grid_sample", 256, 256, fp16=True)))
    islands = fp32_islands(fp32.graph, declared_fp32_scopes(fixture_model(LEGACY)))
    ops = {n.name: n.op_type for n in fp32.graph.node}
    counts = {
        op: sum(1 for n in islands if ops[n] == op) for op in ("LayerNormalization", "Softmax", "GridSample")
    }
    assert counts == {"LayerNormalization": 64, "Softmax": 24, "GridSample": 20}
    assert not [n for n in islands if ops[n] == "Conv"]
    typed = onnx.shape_inference.infer_shapes(mixed)
    types = {v.name: v.type.tensor_type.elem_type for v in [*typed.graph.value_info, *typed.graph.output]}
    mixed_nodes = {n.name: n for n in mixed.graph.node}
    for name in islands:  # the same names compute in fp32 in the mixed graph
        outputs = [types.get(o) for o in mixed_nodes[name].output]
        assert onnx.TensorProto.FLOAT16 not in outputs, name


def test_layers_are_matched_to_their_onnx_node():
    nodes = {"/attn/MatMul", "/norm1/LayerNormalization"}
    assert layer_matches_node("/attn/MatMul", nodes) and layer_matches_node("/attn/MatMul_2", nodes)
    assert not layer_matches_node("/attn/MatMul_1x", nodes) and not layer_matches_node("/attn/Softmax", nodes)


# ---- the runtime backend's guards -----------------------------------------------------------------


def test_output_shape_is_checked_before_copying():
    check_output_shape((2, 1, 256, 256), (2, 1, 256, 256))
    with pytest.raises(RmbgError, match=r"output shape \(2, 1, 128, 128\) is not the expected"):
        check_output_shape((2, 1, 128, 128), (2, 1, 256, 256))


def test_closed_backend_refuses_to_run():
    backend = TensorRTBackend.__new__(TensorRTBackend)  # as after close(): no buffers
    backend._buffers = None
    with pytest.raises(RmbgError, match="this TensorRT backend was closed"):
        backend.run(np.zeros((1, 3, 8, 8), np.float32))


def test_auto_falls_back_with_the_cause_only_when_asked_for_auto():
    from rmbg_runtime.backends import first_that_opens

    def broken_cuda():
        raise BackendUnavailable("ONNX Runtime could not load the CUDA or cuDNN libraries it needs; fix it.")

    with pytest.warns(RuntimeWarning, match="cuDNN libraries it needs; fix it. Running on the CPU instead"):
        assert first_that_opens(broken_cuda, lambda: "cpu backend") == "cpu backend"

    def bad_model():
        raise ModelError("model.onnx is missing")

    with pytest.raises(ModelError):  # not a device problem: no fallback
        first_that_opens(bad_model, lambda: "cpu backend")


EXPORT_CLI = [sys.executable, "-c", "from rmbg_export.cli import main; main()"]


def five_d_grid_sample_graph():
    from onnx import TensorProto, helper

    node = helper.make_node("GridSample", ["x", "grid"], ["y"], name="volume_sampler")
    graph = helper.make_graph(
        [node],
        "g",
        [
            helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 2, 4, 4, 4]),
            helper.make_tensor_value_info("grid", TensorProto.FLOAT, [1, 4, 4, 4, 3]),
        ],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 2, 4, 4, 4])],
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 20)])


def test_five_d_grid_sample_is_rejected_by_name(tmp_path):
    problems = [str(p) for p in check_graph(five_d_grid_sample_graph(), "11.4.0")]
    assert problems == [
        "GridSample node 'volume_sampler': 'x' has rank 5: "
        "TensorRT's GridSample takes 4-D input and grid only"
    ]
    onnx.save(five_d_grid_sample_graph(), str(tmp_path / "model_fp16.onnx"))
    result = subprocess.run(
        [*EXPORT_CLI, "preflight", str(tmp_path), "--tensorrt", "11.4"],
        capture_output=True,
        text=True,
    )
    assert result.returncode == 1 and "Traceback" not in result.stderr
    assert "GridSample node 'volume_sampler': 'x' has rank 5" in result.stderr


def test_resize_modes_follow_the_parser_table():
    from onnx import TensorProto, helper

    def resize(mode: str, antialias: int = 0):
        node = helper.make_node(
            "Resize", ["x", "", "scales"], ["y"], name=f"up_{mode}", mode=mode, antialias=antialias
        )
        graph = helper.make_graph(
            [node],
            "g",
            [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 1, 4, 4])],
            [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 1, 8, 8])],
            [helper.make_tensor("scales", TensorProto.FLOAT, [4], [1, 1, 2, 2])],
        )
        return check_graph(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 19)]), "11.4.0")

    assert resize("linear") == [] and resize("nearest") == []
    assert "resize mode 'cubic' is not supported" in resize("cubic")[0].reason
    assert resize("linear", antialias=1)[0].reason == "antialias=1 is not supported"


def test_every_table_entry_cites_its_source():
    from rmbg_export.tensorrt.preflight import support_table

    table = support_table()
    cited = [table["resize"]["source"], *(entry["source"] for entry in table["operators"].values())]
    assert set(cited) <= set(table["sources"]) and all(table["sources"].values())


# ---- the engine stage: typed options, build / record / verify, the stages planned up front ----------


def test_every_engine_option_is_a_cli_option_with_the_same_default():
    """One default per setting: the CLI's come from EngineOptions (opt_level was written three times)."""
    import dataclasses

    from rmbg_export.cli import cli
    from rmbg_export.options import EngineOptions

    parsed = cli.commands["export"].make_context("export", ["some/source", "-o", "out"]).params
    given = {option.name: parsed[option.name] for option in dataclasses.fields(EngineOptions)}
    assert EngineOptions(**given) == EngineOptions()
    assert EngineOptions().opt_level == 3  # TensorRT's own default


def test_the_engine_record_holds_the_settings_it_was_built_with():
    import dataclasses

    from rmbg_export.options import EngineOptions
    from rmbg_export.tensorrt.plan import engine_record

    stand_in = stand_in_engine_record(256, 256, "fp16", 3, "0" * 64)
    built = BuiltEngine(
        path=stand_in.path, sha256=stand_in.sha256, tensorrt_version="10.8.0",
        device={k: getattr(stand_in, k) for k in STAND_IN_DEVICE}, precision="fp16",
        plan=build_plan("10.8.0", "fp16", weak_typing=True), fp32_layers_pinned=130, graph="model.onnx",
        profile=optimization_profile(256, 256, 3, opt_batch=2), plugins=(), timing_cache="t.cache",
        build_seconds=12.345,
    )  # fmt: skip
    record = engine_record(built, EngineOptions(opt_level=5, workspace_gib=2.0, weak_typing=True))
    assert (record.builder_optimization_level, record.workspace_gib, record.build_seconds) == (5, 2.0, 12.3)
    assert not record.strongly_typed and record.fp16_builder_flag and record.fp32_layers_pinned == 130
    assert record.profile.opt == (2, 3, 256, 256) and record.max_batch == 3 and record.parity is None
    assert dataclasses.replace(record, parity={"mask_mae": 0.0}).parity == {"mask_mae": 0.0}


def test_engine_settings_are_checked_before_any_work(tmp_path):
    """A bad --opt-batch or --workspace-gib is refused in a second, before TensorRT is even looked for
    (it used to surface only when the engine was configured, after tracing)."""
    from rmbg_export.export_run import ExportOptions, run_export
    from rmbg_export.options import EngineOptions

    def options(**engine) -> ExportOptions:
        return ExportOptions(source="unused", output=tmp_path, max_batch=4, engine=EngineOptions(**engine))

    with pytest.raises(ExportError, match="--opt-batch 9 must lie between 1 and --max-batch 4"):
        run_export(options(opt_batch=9))
    with pytest.raises(ExportError, match="--workspace-gib -1 must be positive"):
        run_export(options(workspace_gib=-1))
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize(
    ("options", "titles"),
    [
        (
            {"onnx_only": True},
            ["load", "trace fp32", "verify fp32", "derive mixed-precision fp16", "verify fp16"],
        ),
        ({"onnx_only": True, "verify": False, "precision": "fp32"}, ["load", "trace fp32"]),
        (
            {"onnx_only": True, "precision": "fp32", "cpu_int8": True},
            ["load", "trace fp32", "verify fp32", "calibrate int8", "quantise int8"],
        ),
        (
            {},
            ["load", "trace fp32", "verify fp32", "derive mixed-precision fp16", "verify fp16",
             "build TensorRT engine", "verify TensorRT engine"],
        ),
        ({"verify": False}, ["load", "trace fp32", "derive mixed-precision fp16", "build TensorRT engine"]),
    ],
)  # fmt: skip
def test_the_stages_are_planned_from_the_options(tmp_path, options, titles):
    from rmbg_export.export_run import ExportOptions, ExportRun

    run = ExportRun(ExportOptions(source="s", output=tmp_path, height=64, width=64, **options), print)
    planned = [stage.title for stage in run.stages]
    assert len(planned) == len(titles)
    assert all(title.startswith(prefix) for title, prefix in zip(planned, titles, strict=True)), planned
