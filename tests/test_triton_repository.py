"""`rmbg-export triton`: every generated config parses with Triton's own model_config.proto and
says what model.json (and the engine's record) say; the ensemble's wiring type-checks."""

from __future__ import annotations

import hashlib
import itertools
import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import add_stand_in_engine

from rmbg_export.errors import ExportError
from rmbg_export.triton.configs import TritonOptions
from rmbg_export.triton.repository import write_repository
from rmbg_runtime.metadata import read_model_spec

model_config_pb2 = pytest.importorskip(
    "tritonclient.grpc.model_config_pb2", reason="tritonclient[grpc] (the triton extra) is not installed"
)
from google.protobuf import text_format  # noqa: E402  (comes with tritonclient[grpc])

REPO_ROOT = Path(__file__).resolve().parents[1]
TYPES = {"float32": "TYPE_FP32", "uint8": "TYPE_UINT8"}


def parse_config(folder: Path):
    config = model_config_pb2.ModelConfig()
    text_format.Parse((folder / "config.pbtxt").read_text(), config)  # unknown fields raise
    return config


def data_type(value: int) -> str:
    return model_config_pb2.DataType.Name(value)


@pytest.fixture(scope="module")
def exports(exported_model_dir, tmp_path_factory) -> dict[str, Path]:
    """fp16 (the test export), fp32 (its fp32 graph alone), each also with an engine record.

    No TensorRT here: the engine is a stand-in file recorded in model.json the way build.py records
    a real one; the generator copies a plan and reads its record, never its bytes."""
    root = tmp_path_factory.mktemp("triton_exports")
    fp16 = root / "fp16"
    shutil.copytree(exported_model_dir, fp16)
    fp32 = root / "fp32"
    shutil.copytree(exported_model_dir, fp32)
    meta = json.loads((fp32 / "model.json").read_text())
    meta["precision"] = "fp32"
    del meta["onnx"]["graphs"]["fp16"]
    (fp32 / "model_fp16.onnx").unlink()
    (fp32 / "model.json").write_text(json.dumps(meta))
    folders = {"fp16": fp16, "fp32": fp32}
    for name in ("fp16", "fp32"):
        folders[f"{name}+engine"] = with_engine(folders[name], root / f"{name}_engine", max_batch=2)
    return folders


def with_engine(export: Path, folder: Path, max_batch: int) -> Path:
    shutil.copytree(export, folder)
    return add_stand_in_engine(folder, max_batch)


def quiet(_line: str) -> None:
    pass


VALID = [
    (export, network, kind)
    for export, network, kind in itertools.product(
        ["fp16", "fp32", "fp16+engine", "fp32+engine"], ["tensorrt", "onnxruntime", "python"], ["gpu", "cpu"]
    )
    if not (network == "tensorrt" and (kind == "cpu" or "engine" not in export))
]


@pytest.mark.parametrize(("export", "network", "kind"), VALID)
def test_every_config_parses_and_states_the_exports_facts(exports, tmp_path, export, network, kind):
    spec = read_model_spec(exports[export])
    options = TritonOptions(network=network, kind=kind, instances=2, preferred_batch=(2,))
    write_repository(spec.folder, tmp_path, options, log=quiet)
    configs = {folder.name: parse_config(folder) for folder in tmp_path.iterdir() if folder.is_dir()}
    assert set(configs) == {"rmbg", "rmbg_pre", "rmbg_network", "rmbg_post"}

    net = configs["rmbg_network"]
    expected_batch = min(spec.max_batch, 2) if spec.engine else spec.max_batch
    assert net.max_batch_size == expected_batch
    assert [(t.name, data_type(t.data_type), list(t.dims)) for t in net.input] == [
        (spec.input_name, TYPES[spec.input.dtype], [3, spec.height, spec.width])
    ]
    assert [(t.name, data_type(t.data_type), list(t.dims)) for t in net.output] == [
        (spec.output_name, TYPES[spec.output.dtype], [1, spec.height, spec.width])
    ]
    assert list(net.dynamic_batching.preferred_batch_size) == [2]
    group = net.instance_group[0]
    assert (group.count, model_config_pb2.ModelInstanceGroup.Kind.Name(group.kind)) == (
        2,
        f"KIND_{kind.upper()}",
    )
    assert_network_files(tmp_path / "rmbg_network", net, spec, network, kind)
    assert_ensemble_wiring(configs)


def assert_network_files(folder: Path, config, spec, network: str, kind: str) -> None:
    version = folder / "1"
    if network == "tensorrt":
        assert config.platform == "tensorrt_plan"
        assert (version / "model.plan").read_bytes() == (spec.folder / "model.engine").read_bytes()
        assert config.parameters["tensorrt_version"].string_value == spec.engine.tensorrt_version
    elif network == "onnxruntime":
        import onnx

        assert config.platform == "onnxruntime_onnx"
        precision = "fp16" if kind == "gpu" and "fp16" in spec.graphs else "fp32"
        graph = version / "model.onnx"
        assert hashlib.sha256(graph.read_bytes()).hexdigest() == spec.graphs[precision].sha256
        model = onnx.load(str(graph), load_external_data=False)
        assert [i.name for i in model.graph.input] == [config.input[0].name]
        assert [o.name for o in model.graph.output] == [config.output[0].name]
        for value in (model.graph.input[0], model.graph.output[0]):  # the fp16 graph keeps fp32 I/O
            assert value.type.tensor_type.elem_type == onnx.TensorProto.FLOAT
    else:
        assert config.backend == "python"
        backend = "auto" if kind == "gpu" else "onnxruntime-cpu"
        assert config.parameters["backend"].string_value == backend
        copied = read_model_spec(version)  # the runtime's own reader, against the copied files
        assert copied.graphs == spec.graphs
        assert (version / "model.engine").exists() == bool(spec.engine and kind == "gpu")


def assert_ensemble_wiring(configs) -> None:
    """Every step's input is the ensemble's input or an earlier step's output, of the same type and
    shape; every ensemble output is produced. Triton checks this at load; here it is checked for the
    configs no server here can load (TensorRT, ONNX Runtime)."""
    ensemble = configs["rmbg"]
    assert ensemble.platform == "ensemble"
    available = {t.name: (t.data_type, list(t.dims)) for t in ensemble.input}
    for step in ensemble.ensemble_scheduling.step:
        model = configs[step.model_name]
        assert ensemble.max_batch_size <= model.max_batch_size
        inputs = {t.name: (t.data_type, list(t.dims)) for t in model.input}
        assert set(step.input_map) == set(inputs)
        for name, source in step.input_map.items():
            assert available[source] == inputs[name], (step.model_name, name)
        outputs = {t.name: (t.data_type, list(t.dims)) for t in model.output}
        for name, target in step.output_map.items():
            available[target] = outputs[name]
    for t in ensemble.output:
        assert available[t.name] == (t.data_type, list(t.dims))


def test_network_input_matches_what_pre_produces_for_this_export(exports, tmp_path):
    write_repository(exports["fp16"], tmp_path, TritonOptions(network="python", kind="cpu"), log=quiet)
    pre = parse_config(tmp_path / "rmbg_pre")
    pixels = next(t for t in pre.output if t.name == "PIXELS")
    spec = read_model_spec(exports["fp16"])
    assert list(pixels.dims) == [3, spec.height, spec.width]
    assert read_model_spec(tmp_path / "rmbg_pre" / "1").mean == spec.mean


@pytest.mark.parametrize(
    ("export", "options", "words"),
    [
        ("fp16", {"network": "tensorrt"}, "holds no TensorRT engine"),
        ("fp16+engine", {"network": "tensorrt", "kind": "cpu"}, "runs only on a GPU"),
        ("fp16", {"network": "onnxruntime", "kind": "cpu", "ort_tensorrt": True}, "--ort-tensorrt"),
        ("fp16", {"network": "python", "preferred_batch": (4,)}, "--preferred-batch 4"),
        ("fp16", {"network": "python", "instances": 0}, "at least 1"),
    ],
)
def test_impossible_repositories_are_refused_in_one_sentence(exports, tmp_path, export, options, words):
    with pytest.raises(ExportError, match=words) as caught:
        write_repository(exports[export], tmp_path / "repo", TritonOptions(**options), log=quiet)
    assert str(caught.value).count(". ") == 0 and str(caught.value).endswith(".")
    assert not (tmp_path / "repo").exists()


def test_cli_refuses_tensorrt_without_engine(exports, tmp_path):
    repo = tmp_path / "repo"
    command = [
        sys.executable,
        "-c",
        "from rmbg_export.cli import main; main()",
        "triton",
        str(exports["fp16"]),
    ]
    done = subprocess.run(
        [*command, "--repository", str(repo), "--network", "tensorrt"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 1
    assert done.stderr.startswith("error: ") and "holds no TensorRT engine" in done.stderr
    assert "Traceback" not in done.stderr and len(done.stderr.strip().splitlines()) == 1
    assert not repo.exists()


def test_tensorrt_pin_is_stated_where_operators_look(exports, tmp_path):
    lines: list[str] = []
    write_repository(exports["fp16+engine"], tmp_path, TritonOptions(network="tensorrt"), log=lines.append)
    pin = "TensorRT 10.13.3.9"
    assert any(pin in line for line in lines)
    assert pin in (tmp_path / "README.md").read_text()
    assert pin in (tmp_path / "rmbg_network" / "config.pbtxt").read_text()


def test_rewriting_replaces_only_its_own_models(exports, tmp_path):
    other = tmp_path / "someone_else" / "1"
    other.mkdir(parents=True)
    (other.parent / "config.pbtxt").write_text('name: "someone_else"\n')
    write_repository(exports["fp16"], tmp_path, TritonOptions(network="onnxruntime"), log=quiet)
    write_repository(exports["fp32"], tmp_path, TritonOptions(network="python", kind="cpu"), log=quiet)
    assert parse_config(tmp_path / "rmbg_network").backend == "python"
    version = tmp_path / "rmbg_network" / "1"  # the old network (the fp16 graph as model.onnx) is gone
    assert sorted(p.name for p in version.iterdir()) == ["model.json", "model.onnx", "model.py"]
    fp32 = read_model_spec(exports["fp32"]).graphs["fp32"].sha256
    assert hashlib.sha256((version / "model.onnx").read_bytes()).hexdigest() == fp32
    assert (other.parent / "config.pbtxt").read_text() == 'name: "someone_else"\n'
    assert not [p for p in tmp_path.parent.iterdir() if ".partial" in p.name]


def test_a_missing_graph_fails_before_anything_is_placed(exports, tmp_path):
    broken = tmp_path / "broken"
    shutil.copytree(exports["fp32"], broken)
    (broken / "model.onnx").unlink()
    with pytest.raises(ExportError, match="model.onnx is missing"):
        write_repository(broken, tmp_path / "repo", TritonOptions(network="onnxruntime"), log=quiet)
    assert list((tmp_path / "repo").iterdir()) == []
    assert not [p for p in tmp_path.iterdir() if ".partial" in p.name]


@pytest.mark.slow
def test_openvino_network_serves_the_ir_and_python_on_cpu_picks_openvino(openvino_export, tmp_path):
    """--network openvino: Triton's OpenVINO backend with the int8 IR as model.xml/.bin; --network
    python --kind cpu on an export with IR: the runtime's openvino backend, IR beside model.json."""
    pytest.importorskip("openvino")
    spec = read_model_spec(openvino_export)
    write_repository(
        spec.folder, tmp_path / "ov", TritonOptions(network="openvino", kind="cpu", engine_threads=2), quiet
    )
    configs = {f.name: parse_config(f) for f in (tmp_path / "ov").iterdir() if f.is_dir()}
    net = configs["rmbg_network"]
    assert net.backend == "openvino" and net.max_batch_size == spec.max_batch
    assert net.parameters["PERFORMANCE_HINT"].string_value == "LATENCY"
    assert net.parameters["INFERENCE_NUM_THREADS"].string_value == "2"
    assert [t.name for t in net.input] == [spec.input_name] and [t.name for t in net.output] == [
        spec.output_name
    ]
    version = tmp_path / "ov" / "rmbg_network" / "1"
    ir = spec.openvino_ir("int8")
    assert hashlib.sha256((version / "model.xml").read_bytes()).hexdigest() == ir.xml_sha256
    assert hashlib.sha256((version / "model.bin").read_bytes()).hexdigest() == ir.bin_sha256
    assert_ensemble_wiring(configs)

    write_repository(spec.folder, tmp_path / "py", TritonOptions(network="python", kind="cpu"), quiet)
    version = tmp_path / "py" / "rmbg_network" / "1"
    assert parse_config(version.parent).parameters["backend"].string_value == "openvino"
    assert read_model_spec(version).openvino_models == spec.openvino_models
    assert all(
        (version / ir.xml).is_file() and (version / ir.bin).is_file() for ir in spec.openvino_models.values()
    )


def test_openvino_network_needs_ir_and_the_cpu(exports, tmp_path):
    with pytest.raises(ExportError, match="holds no OpenVINO IR; export with --openvino"):
        write_repository(exports["fp32"], tmp_path, TritonOptions(network="openvino", kind="cpu"), quiet)
    with pytest.raises(ExportError, match="served on the CPU here; use --kind cpu"):
        write_repository(exports["fp32"], tmp_path, TritonOptions(network="openvino", kind="gpu"), quiet)
    assert not list(tmp_path.iterdir())
