"""`rmbg-export` end to end on a real checkpoint file, in a subprocess as a user runs it."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import onnx
import pytest
from conftest import fixture_model
from safetensors.torch import save_file

from rmbg_export.files import atomic_output, sha256_file

pytestmark = pytest.mark.slow  # exports in subprocesses: minutes on 2 cores; CI runs them

REPO_ROOT = Path(__file__).resolve().parents[1]
LEGACY = "swin_v1_t_legacy_b1_512x512"


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("ckpt") / "birefnet_lite.safetensors"
    save_file(fixture_model(LEGACY).state_dict(), str(path))
    return path


def command(*args: str) -> list[str]:
    return [sys.executable, "-c", "from rmbg_export.cli import main; main()", *map(str, args)]


def run(*args: str) -> subprocess.CompletedProcess:
    env = os.environ | {"PYTHONPATH": str(REPO_ROOT)}
    return subprocess.run(command(*args), capture_output=True, text=True, env=env, timeout=600)


@pytest.fixture(scope="module")
def onnx_export(checkpoint, tmp_path_factory):
    out = tmp_path_factory.mktemp("export")
    result = run(
        checkpoint,
        "--output",
        out,
        "--resolution",
        "256x320",
        "--patch-order",
        "legacy",
        "--max-batch",
        "3",
        "--deform-conv",
        "grid_sample",
        "--onnx-only",
    )
    assert result.returncode == 0, result.stderr
    return out, result


def test_onnx_only_export_writes_graphs_and_contract(onnx_export):
    out, result = onnx_export
    assert sorted(p.name for p in out.iterdir()) == ["model.json", "model.onnx", "model_fp16.onnx"]
    meta = json.loads((out / "model.json").read_text())
    assert meta["schema_version"] == 1
    assert meta["model"]["backbone"] == "swin_v1_t" and meta["model"]["patch_order"] == "legacy"
    assert (meta["input"]["height"], meta["input"]["width"]) == (256, 320)
    assert meta["batch"] == {"dim": "batch", "min": 1, "max": 3}
    assert meta["onnx"]["deform_conv"] == "grid_sample" and meta["precision"] == "fp16"
    for graph in meta["onnx"]["graphs"].values():
        assert sha256_file(out / graph["path"]) == graph["sha256"]
    assert meta["parity"]["fp32_onnx_vs_torch"]["max_abs_diff"] <= 1e-3
    assert meta["parity"]["fp32_onnx_vs_torch"]["batch_sizes"] == [1, 2]
    assert meta["parity"]["fp16_onnx_vs_fp32_onnx"]["mask_mae"] <= 2e-3
    assert "[5/5] verify fp16 graph against fp32: done in" in result.stdout
    inp, output = meta["input"], meta["output"]
    assert (inp["name"], output["name"]) == ("image", "mask")
    assert inp["layout"] == output["layout"] == "NCHW" and inp["dtype"] == output["dtype"] == "float32"
    assert inp["mean"] == [0.485, 0.456, 0.406] and inp["std"] == [0.229, 0.224, 0.225]
    assert meta["onnx"]["opset"] == 19


def test_contract_names_the_checkpoint(onnx_export, checkpoint):
    meta = json.loads((onnx_export[0] / "model.json").read_text())
    assert meta["model"]["checkpoint_sha256"] == sha256_file(checkpoint)
    graph = onnx.load(str(onnx_export[0] / "model.onnx"), load_external_data=False)
    assert graph.graph.input[0].name == meta["input"]["name"]
    assert graph.graph.output[0].name == meta["output"]["name"]
    assert graph.opset_import[0].version == meta["onnx"]["opset"]


def test_full_export_without_tensorrt_fails_clearly(checkpoint, tmp_path):
    result = run(checkpoint, "-o", tmp_path / "out", "--patch-order", "legacy")
    assert result.returncode == 1
    assert result.stderr.startswith("error: cannot build a TensorRT engine: TensorRT is not installed")
    assert "--onnx-only" in result.stderr and "Traceback" not in result.stderr
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--resolution", "500"], "the height 500 is not a positive multiple of 32"),
        (["--resolution", "big"], "'big' is not a size"),
        (["--max-batch", "0"], "--max-batch 0 must be at least 1"),
        (["--opset", "18"], "--deform-conv native needs --opset 19"),
    ],
)
def test_bad_options(checkpoint, tmp_path, args, message):
    result = run(checkpoint, "-o", tmp_path, "--onnx-only", "--patch-order", "legacy", *args)
    assert result.returncode != 0 and message in result.stderr and "Traceback" not in result.stderr


def test_failed_load_keeps_previous_export(tmp_path):
    (tmp_path / "model.json").write_text("{}")
    bad = tmp_path / "broken.pth"
    bad.write_bytes(b"not a checkpoint")
    result = run(bad, "-o", tmp_path, "--onnx-only", "--patch-order", "legacy")
    assert result.returncode == 1 and "corrupt or incomplete" in result.stderr
    assert (tmp_path / "model.json").read_text() == "{}"


def export_stopped_while_tracing(checkpoint: Path, out: Path, signum: int) -> tuple[int, str]:
    """Start an export, send `signum` once tracing has begun; (exit code, stderr)."""
    env = os.environ | {"PYTHONPATH": str(REPO_ROOT), "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen(
        command(checkpoint, "-o", out, "--onnx-only", "--patch-order", "legacy", "--resolution", "256"),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
        # A shell without job control starts background jobs with SIGINT ignored; undo that here.
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )
    for line in proc.stdout:
        if line.startswith("[2/"):  # tracing has begun
            time.sleep(1.0)
            proc.send_signal(signum)
            break
    _, stderr = proc.communicate(timeout=120)
    return proc.returncode, stderr


def test_interrupted_export_leaves_nothing_that_looks_complete(checkpoint, tmp_path):
    (tmp_path / "model.json").write_text("{}")  # a previous export's contract
    returncode, stderr = export_stopped_while_tracing(checkpoint, tmp_path, signal.SIGINT)
    assert returncode == 130 and "interrupted" in stderr, stderr
    assert sorted(p.name for p in tmp_path.iterdir()) in ([], ["model.onnx"])


def test_atomic_output_removes_partial_file_on_error(tmp_path):
    target = tmp_path / "model.onnx"
    with pytest.raises(RuntimeError), atomic_output(target) as partial:
        partial.write_bytes(b"half")
        raise RuntimeError("disk full")
    assert list(tmp_path.iterdir()) == []


def test_sigterm_cleans_up_like_ctrl_c(checkpoint, tmp_path):
    returncode, stderr = export_stopped_while_tracing(checkpoint, tmp_path, signal.SIGTERM)
    assert returncode == 130 and "interrupted" in stderr, stderr
    assert not [p for p in tmp_path.iterdir() if "partial" in p.name]


def test_preflight_command_on_an_export(onnx_export):
    out, _ = onnx_export
    ok = run("preflight", out, "--tensorrt", "11.4")
    assert ok.returncode == 0, ok.stderr
    assert "model_fp16.onnx: every node is supported by TensorRT 11.4; strongly typed network" in ok.stdout
    strong = run("preflight", out, "--tensorrt", "10.1")
    assert "model_fp16.onnx: every node is supported by TensorRT 10.1; strongly typed" in strong.stdout
    weak = run("preflight", out, "--tensorrt", "10.8", "--weak-typing")
    assert (
        "model.onnx: every node is supported by TensorRT 10.8; fp32 graph with the FP16 builder flag on, "
        "fp32 islands pinned" in weak.stdout
    )
    old = run("preflight", out, "--tensorrt", "8.6")
    assert old.returncode == 1 and "TensorRT 8.6 is too old" in old.stderr


def test_interrupt_while_a_partial_file_exists(checkpoint, tmp_path):
    """The fp16 graph's temporary file is a FIFO, so the export blocks in its write with the partial
    file in place; SIGTERM then must remove it and leave no model.json."""
    env = os.environ | {"PYTHONPATH": str(REPO_ROOT)}
    proc = subprocess.Popen(
        command(checkpoint, "-o", tmp_path, "--onnx-only", "--patch-order", "legacy", "--resolution", "64"),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )
    fifo = tmp_path / f".model_fp16.onnx.partial-{proc.pid}"  # the name atomic_output picks
    os.mkfifo(fifo)
    wchan = Path(f"/proc/{proc.pid}/wchan")
    deadline = time.monotonic() + 300
    while proc.poll() is None and time.monotonic() < deadline and wchan.read_text() != "wait_for_partner":
        time.sleep(0.05)
    assert proc.poll() is None, "the export ended before it reached the fp16 write"
    proc.send_signal(signal.SIGTERM)
    _, stderr = proc.communicate(timeout=60)
    assert proc.returncode == 130 and "interrupted" in stderr, stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.onnx"]


def test_failed_write_is_one_sentence_and_leaves_no_contract(checkpoint, tmp_path):
    (tmp_path / "model.json").write_text("{}")  # a previous export's contract: it must go
    (tmp_path / "model_fp16.onnx").mkdir()  # the rename onto this name fails
    result = run(checkpoint, "-o", tmp_path, "--onnx-only", "--patch-order", "legacy", "--resolution", "64")
    assert result.returncode == 1 and "Traceback" not in result.stderr
    assert result.stderr.startswith("error: cannot write") and "model_fp16.onnx" in result.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.onnx", "model_fp16.onnx"]
