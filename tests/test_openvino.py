"""OpenVINO: the DeformConv conversion, the IR in the export, the backend against the fixtures."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from conftest import MAX_DIFF, MEAN_DIFF, assert_meets_fixture
from test_deform_conv import random_case, reference

ov = pytest.importorskip("openvino")
BF16 = "BF16" in ov.Core().get_property("CPU", "OPTIMIZATION_CAPABILITIES")  # avx512_bf16 or AMX

REPO_ROOT = Path(__file__).resolve().parents[1]
RMBG = [sys.executable, "-c", "from rmbg_runtime.cli import main; main()"]


def rmbg(*args, hide_openvino: Path | None = None) -> subprocess.CompletedProcess:
    """`rmbg` in a subprocess; with `hide_openvino` (a scratch folder), `import openvino` fails there
    as on a machine without it: a package of that name first on sys.path raises ImportError."""
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT)}
    if hide_openvino is not None:
        package = hide_openvino / "openvino"
        package.mkdir(parents=True, exist_ok=True)
        (package / "__init__.py").write_text('raise ImportError("openvino is hidden by this test")\n')
        env["PYTHONPATH"] = f"{hide_openvino}{os.pathsep}{REPO_ROOT}"
    return subprocess.run([*RMBG, *map(str, args)], capture_output=True, text=True, env=env, timeout=300)


def deform_conv_graph(path, weight, bias, pad: int, with_mask: bool = True):
    """A one-node ONNX graph: DeformConv(X, W, offset, B, mask) with dynamic batch and size."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    dims = ["n", "c", "h", "w"]
    inputs = [helper.make_tensor_value_info("x", TensorProto.FLOAT, dims)]
    inputs.append(helper.make_tensor_value_info("offset", TensorProto.FLOAT, ["n", "o", "h", "w"]))
    node_inputs = ["x", "W", "offset", "B"]
    if with_mask:
        inputs.append(helper.make_tensor_value_info("mask", TensorProto.FLOAT, ["n", "m", "h", "w"]))
        node_inputs.append("mask")
    k = weight.shape[-1]
    node = helper.make_node(
        "DeformConv", node_inputs, ["y"], kernel_shape=[k, k], pads=[pad] * 4, group=1, offset_group=1
    )
    graph = helper.make_graph(
        [node],
        "deform",
        inputs,
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
        initializer=[
            numpy_helper.from_array(weight.astype(np.float32), "W"),
            numpy_helper.from_array(bias.astype(np.float32), "B"),
        ],
    )
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 19)]), str(path))


@pytest.mark.parametrize("kernel_size", [1, 3, 7])
def test_deform_conv_mapping_matches_float64_reference(tmp_path, kernel_size):
    """Offsets of up to +-4 px push taps partly and wholly past the border; a modulation mask in
    [0, 2] as the network makes it."""
    from rmbg_export.openvino_ir import read_onnx

    x, offset, mask, weight, bias = random_case(kernel_size)
    pad = kernel_size // 2
    expected = reference(x, offset, mask, weight, bias, pad)

    deform_conv_graph(tmp_path / "d.onnx", weight, bias, pad)
    compiled = ov.Core().compile_model(
        read_onnx(tmp_path / "d.onnx"), "CPU", {"INFERENCE_PRECISION_HINT": "f32"}
    )
    feeds = {"x": x, "offset": offset, "mask": mask}
    got = compiled({name: value.astype(np.float32) for name, value in feeds.items()})[0]
    assert np.abs(got - expected).max() <= 1e-5


# ---- the IR against the official code's fixture outputs (the conformance bound)


def ir_of(onnx_path, tmp_path, max_batch: int = 4):
    from rmbg_export.openvino_ir import write_ir

    xml = tmp_path / "model_openvino.xml"
    write_ir(onnx_path, xml, max_batch)
    return xml


@pytest.mark.slow
@pytest.mark.parametrize("name", ["swin_v1_t_legacy_b1_512x512", "swin_v1_t_einops_b2_512x512"])
def test_ir_meets_conformance_bounds(name, export_graph, tmp_path):
    """Both patch orders; the einops fixture runs at batch 2."""
    from conftest import fill, load_fixture

    from rmbg_export.openvino_ir import run_ir

    fx = load_fixture(name)
    xml = ir_of(export_graph(name, "native", 512, 512), tmp_path)
    (prob,) = run_ir(xml, [fill.conformance_input(tuple(fx["input_shape"]))])
    assert_meets_fixture(prob, fx)


@pytest.mark.slow
def test_ir_non_square_batch_two_matches_pytorch(export_graph, tmp_path):
    import torch
    from conftest import fixture_model

    from rmbg_export.onnx.verify import synthetic_images
    from rmbg_export.openvino_ir import run_ir

    name = "swin_v1_t_legacy_b1_512x512"
    x = synthetic_images(2, 256, 384, seed=7)
    (prob,) = run_ir(ir_of(export_graph(name, "native", 256, 384), tmp_path), [x])
    with torch.inference_mode():
        expected = torch.sigmoid(fixture_model(name)(torch.from_numpy(x))).numpy()
    diff = np.abs(prob - expected)
    assert prob.shape == (2, 1, 256, 384)
    assert diff.max() <= MAX_DIFF and diff.mean() <= MEAN_DIFF, (diff.max(), diff.mean())


# ---- the export with --openvino, and the runtime on it


@pytest.mark.slow
def test_export_writes_gated_ir_with_files_and_version(openvino_export):
    from rmbg_runtime.metadata import read_model_spec, sha256_file

    raw = json.loads((openvino_export / "model.json").read_text())["openvino"]
    assert raw["version"] == ov.__version__
    assert set(raw["models"]) == {"fp32", "int8"} | ({"bf16"} if BF16 else set())
    for precision, graph in (("fp32", "model.onnx"), ("int8", "model_int8.onnx")):
        ir = raw["models"][precision]
        assert ir["graph"] == graph
        assert sha256_file(openvino_export / ir["xml"]) == ir["xml_sha256"]
        assert sha256_file(openvino_export / ir["bin"]) == ir["bin_sha256"]
    assert raw["models"]["fp32"]["parity"]["max_abs_diff"] <= 1e-3
    assert raw["models"]["int8"]["parity"]["mask_mae"] <= 5e-3
    assert read_model_spec(openvino_export).openvino_ir("int8").xml == "model_openvino_int8.xml"
    if BF16:  # the fp32 IR's files, gated in bf16 arithmetic: close to fp32, yet not fp32's figures
        bf16, fp32 = raw["models"]["bf16"], raw["models"]["fp32"]
        assert (bf16["xml"], bf16["xml_sha256"], bf16["graph"]) == (
            fp32["xml"],
            fp32["xml_sha256"],
            "model.onnx",
        )
        assert fp32["parity"]["mask_mae"] < bf16["parity"]["mask_mae"] <= 5e-3


@pytest.mark.slow
@pytest.mark.parametrize("precision", ["fp32", "int8"])
def test_backend_matches_onnxruntime_on_the_same_graph(openvino_export, precision):
    """Batch 2 through each engine's backend; the int8 IR is OpenVINO running the QDQ graph."""
    from rmbg_export.onnx.verify import synthetic_images
    from rmbg_runtime.backends import BackendConfig, open_backend
    from rmbg_runtime.metadata import read_model_spec

    spec = read_model_spec(openvino_export)
    x = synthetic_images(2, 256, 256, seed=3)
    with open_backend(spec, BackendConfig("openvino", precision=precision)) as backend:
        got = backend.run(x)  # the IR's dynamic batch
        one = backend.run(x[:1])  # batch 1's static model
        assert backend.name == f"openvino ({precision} IR)"
    expected = open_backend(spec, BackendConfig("onnxruntime-cpu", precision=precision)).run(x)
    assert got.shape == (2, 1, 256, 256) and one.shape == (1, 1, 256, 256)
    bound = 1e-4 if precision == "fp32" else 2e-2  # int8: two engines' rounding of the same QDQ graph
    assert np.abs(got - expected).max() <= bound
    assert np.abs(one - expected[:1]).max() <= bound


@pytest.mark.slow
@pytest.mark.skipif(not BF16, reason="this CPU has no bf16 arithmetic (avx512_bf16 or AMX)")
def test_bf16_runs_the_fp32_ir_in_bf16_within_the_gate(openvino_export):
    """bf16 differs from fp32 (the hint reached OpenVINO) by less than the int8 gate, batch 1 and 2."""
    from rmbg_export.onnx.verify import synthetic_images
    from rmbg_runtime.backends import BackendConfig, open_backend
    from rmbg_runtime.metadata import read_model_spec

    spec = read_model_spec(openvino_export)
    x = synthetic_images(2, 256, 256, seed=3)
    expected = open_backend(spec, BackendConfig("onnxruntime-cpu", precision="fp32")).run(x)
    with open_backend(spec, BackendConfig("openvino", precision="bf16")) as backend:
        assert backend.name == "openvino (bf16 IR)"
        for got in (backend.run(x), backend.run(x[:1])):
            diff = np.abs(got - expected[: len(got)])
            assert 1e-4 < diff.max() and diff.mean() <= 5e-3


def test_default_precision_int8_then_bf16_where_the_cpu_has_it_then_fp32(openvino_export):
    import dataclasses

    from rmbg_runtime.backends.openvino import default_precision
    from rmbg_runtime.contract import OpenVinoInfo
    from rmbg_runtime.metadata import read_model_spec

    spec = read_model_spec(openvino_export)
    fp32 = spec.openvino_models["fp32"]

    def holding(*precisions):
        models = {p: fp32 for p in precisions}
        return dataclasses.replace(spec, openvino=OpenVinoInfo(version=ov.__version__, models=models))

    assert default_precision(holding("fp32", "bf16", "int8"), bf16_arithmetic=True) == "int8"
    assert default_precision(holding("fp32", "bf16"), bf16_arithmetic=True) == "bf16"
    assert default_precision(holding("fp32", "bf16"), bf16_arithmetic=False) == "fp32"
    assert default_precision(holding("fp32"), bf16_arithmetic=True) == "fp32"


@pytest.mark.slow
def test_bf16_named_for_onnxruntime_is_one_sentence(openvino_export, tmp_path):
    result = rmbg("remove", _photo(tmp_path), "-m", openvino_export, "--backend", "onnxruntime-cpu",
                  "--precision", "bf16", "-o", tmp_path / "a.png")  # fmt: skip
    assert result.returncode == 1
    assert result.stderr.strip().splitlines()[-1] == (
        "error: bf16 is OpenVINO's arithmetic on the fp32 IR; run it with --backend openvino."
    )
    assert not (tmp_path / "a.png").exists()


@pytest.mark.slow
def test_auto_picks_openvino_when_the_export_has_ir(openvino_export, exported_model_dir):
    from rmbg_runtime.backends import BackendConfig, open_backend
    from rmbg_runtime.metadata import read_model_spec

    assert open_backend(read_model_spec(openvino_export)).name == "openvino (int8 IR)"
    assert (
        open_backend(read_model_spec(openvino_export), BackendConfig(precision="fp32")).name
        == "openvino (fp32 IR)"
    )
    assert open_backend(read_model_spec(exported_model_dir)).name.startswith("onnxruntime-cpu")


@pytest.mark.slow
def test_openvino_named_on_an_export_without_ir_is_an_error(exported_model_dir):
    from rmbg_runtime import ModelError, Remover

    with pytest.raises(ModelError, match="no OpenVINO int8 IR.*--openvino --cpu-int8"):
        Remover(exported_model_dir, backend="openvino", precision="int8")
    with pytest.raises(ModelError, match="no OpenVINO fp32 IR; export again with --openvino"):
        Remover(exported_model_dir, backend="openvino")


@pytest.mark.slow
def test_without_openvino_auto_runs_onnxruntime_and_naming_it_is_an_error(openvino_export, tmp_path):
    from PIL import Image

    photo = _photo(tmp_path)
    hidden = tmp_path / "hide"
    doctor = rmbg("doctor", "-m", openvino_export, hide_openvino=hidden)
    assert doctor.returncode == 0, doctor.stderr
    assert (
        "openvino          no     OpenVINO is not installed; pip install 'rmbg-toolkit[openvino]'."
        in doctor.stdout
    )
    assert f"auto for {openvino_export}: onnxruntime-cpu (int8 graph)" in doctor.stdout

    named = rmbg("remove", photo, "-m", openvino_export, "--backend", "openvino", "-o", tmp_path / "a.png",
                 hide_openvino=hidden)  # fmt: skip
    assert named.returncode == 1
    assert named.stderr.strip().splitlines()[-1] == (
        "error: OpenVINO is not installed; pip install 'rmbg-toolkit[openvino]'."
    )
    assert not (tmp_path / "a.png").exists()
    auto = rmbg("remove", photo, "-m", openvino_export, "-o", tmp_path / "b.png", hide_openvino=hidden)
    assert auto.returncode == 0, auto.stderr
    assert Image.open(tmp_path / "b.png").size == Image.open(photo).size


@pytest.mark.slow
def test_doctor_with_openvino_names_the_cpu_and_auto_picks_openvino(openvino_export, tmp_path):
    from rmbg_runtime.doctor import cpu_info

    result = rmbg("doctor", "-m", openvino_export)
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    cpu = cpu_info()
    assert lines[0].startswith(f"CPU: {cpu.model}, ") and " ".join(cpu.flags) in lines[0]
    assert [line.split()[0] for line in lines[1:5]] == [
        "tensorrt",
        "onnxruntime-cuda",
        "openvino",
        "onnxruntime-cpu",
    ]
    assert lines[3].startswith("openvino          loads  OpenVINO " + ov.__version__.split("-")[0])
    assert lines[5] == f"auto for {openvino_export}: openvino (int8 IR)"

    out = tmp_path / "out.png"
    run = rmbg("remove", _photo(tmp_path), "-m", openvino_export, "--backend", "openvino", "-o", out)
    assert run.returncode == 0, run.stderr
    assert out.is_file()


def _photo(tmp_path: Path) -> Path:
    from PIL import Image

    path = tmp_path / "photo.png"
    Image.fromarray(np.random.default_rng(1).integers(0, 255, (120, 160, 3), np.uint8)).save(path)
    return path


@pytest.mark.slow
def test_a_broken_ir_fails_the_export_and_leaves_no_model_json(tmp_path, monkeypatch):
    """A conversion that drops DeformConv's modulation mask makes a wrong IR: the gate refuses it."""
    from conftest import export_fixture_model
    from openvino.frontend import ConversionExtension

    import rmbg_export.openvino_ir as conversion
    from rmbg_export.errors import ExportError

    right = conversion._convert_deform_conv

    class WithoutMask:
        def __init__(self, node):
            self.node = node

        def get_input_size(self):
            return min(self.node.get_input_size(), 4)

        def __getattr__(self, name):
            return getattr(self.node, name)

    monkeypatch.setattr(
        conversion,
        "deform_conv_extension",
        lambda: ConversionExtension("DeformConv", lambda n: right(WithoutMask(n))),
    )
    with pytest.raises(ExportError, match="OpenVINO fp32 IR's masks differ from the fp32 ONNX graph"):
        export_fixture_model(
            tmp_path, height=128, width=128, max_batch=1, onnx_only=True, precision="fp32", verify=False,
            openvino=True,
        )  # fmt: skip
    folder = tmp_path / "model"
    assert (folder / "model.onnx").is_file()
    assert not (folder / "model.json").exists()
    assert not list(folder.glob("model_openvino*")) and not list(folder.glob(".openvino-*"))


@pytest.mark.slow
def test_rmbg_serve_runs_the_openvino_backend(openvino_export):
    import httpx
    from test_server import Server, decoded, encoded, photo

    from rmbg_runtime import Remover

    with Server(openvino_export, "--backend", "openvino") as server:
        model = httpx.get(f"{server.url}/v1/model", timeout=10).json()
        assert model["backend"] == "openvino (int8 IR)"
        image = photo(160, 120, seed=4)
        mask = decoded(server.post("/v1/remove", params={"mask_only": "true"}, content=encoded(image)))
    remover = Remover(openvino_export, backend="openvino")
    expected = np.asarray(remover.remove_background(image, mask_only=True)).astype(int)
    assert mask.size == (160, 120)
    assert np.abs(np.asarray(mask).astype(int) - expected).max() <= 1


@pytest.mark.slow
def test_rmbg_compare_openvino_against_onnxruntime(openvino_export, tmp_path):
    """`rmbg compare --backend-a openvino` on the same export: fp32 IR against the fp32 graph agree."""
    images = tmp_path / "images"
    images.mkdir()
    for seed in range(2):
        _photo(tmp_path).rename(images / f"p{seed}.png")
    result = rmbg(
        "compare", openvino_export, openvino_export, images, "--backend-a", "openvino",
        "--precision-a", "fp32", "--backend-b", "onnxruntime-cpu", "--precision-b", "fp32",
        "--out", tmp_path / "report", "--max-mae", "1e-3",
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("2 images: mean MAE ")
