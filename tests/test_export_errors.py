"""Mistakes with exports end in one sentence, not a traceback: an out-of-range --resolution, a
preflight with a non-version or a damaged graph, a model.json that does not match its graph, an
unknown or missing precision, an unreachable hub (within seconds, not ~48 s of retries)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
from click.testing import CliRunner
from conftest import free_port

from rmbg_export.cli import cli
from rmbg_runtime import ModelError

REPO_ROOT = Path(__file__).resolve().parents[1]
EXPORT = [sys.executable, "-c", "from rmbg_export.cli import main; main()"]


def run_export_cli(*args, env: dict | None = None, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run(
        [*EXPORT, *map(str, args)], capture_output=True, text=True, cwd=REPO_ROOT, env=env, timeout=timeout
    )


@pytest.mark.parametrize("resolution", ["99968", "4128", "1024x8192"])
def test_resolution_out_of_bounds_is_a_usage_error(resolution, tmp_path):
    result = CliRunner().invoke(
        cli, ["export", "x.safetensors", "-o", str(tmp_path), "--resolution", resolution]
    )
    assert result.exit_code == 2
    assert "each side may be at most 4096" in result.output


def test_preflight_refuses_a_version_that_is_not_one(tmp_path):
    result = run_export_cli("preflight", tmp_path, "--tensorrt", "banana")
    assert result.returncode == 1 and "Traceback" not in result.stderr
    assert result.stderr.strip() == (
        "error: --tensorrt 'banana' is not a TensorRT version; give one such as 10.13 or 11.4."
    )


def test_preflight_on_a_damaged_graph_is_one_sentence(tmp_path):
    (tmp_path / "model_fp16.onnx").write_bytes(b"this is not a protobuf \xff\xfe" * 10)
    result = run_export_cli("preflight", tmp_path, "--tensorrt", "10.13")
    assert result.returncode == 1 and "Traceback" not in result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "model_fp16.onnx is not a readable ONNX graph" in lines[0]


@pytest.mark.slow
def test_unreachable_hub_fails_within_seconds_in_one_sentence(tmp_path):
    """HF_ENDPOINT on a port where nothing listens: unreachable whether or not this machine has a
    network. huggingface_hub alone retried for ~48 s."""
    env = os.environ | {"HF_ENDPOINT": f"http://127.0.0.1:{free_port()}", "HF_HOME": str(tmp_path / "hf")}
    env.pop("HF_HUB_OFFLINE", None)
    start = time.monotonic()
    result = run_export_cli("ZhengPeng7/BiRefNet", "-o", tmp_path / "out", "--onnx-only", env=env, timeout=60)
    elapsed = time.monotonic() - start
    print(f"unreachable hub: failed after {elapsed:.1f} s")
    assert result.returncode == 1 and "Traceback" not in result.stderr and "Retrying" not in result.stderr
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "the hub cannot be reached" in errors[0] and "local hub cache" in errors[0]
    assert elapsed < 30  # interpreter and torch import included; the hub part is one short request


@pytest.mark.slow
def test_model_json_whose_size_disagrees_with_the_graph_is_named_at_load(exported_model_dir, tmp_path):
    from rmbg_runtime import Remover

    folder = Path(shutil.copytree(exported_model_dir, tmp_path / "export"))
    meta = json.loads((folder / "model.json").read_text())
    meta["input"]["height"] = meta["input"]["width"] = 512  # the graph takes 256x256
    (folder / "model.json").write_text(json.dumps(meta))
    with pytest.raises(ModelError, match=r"model.json says the input is 512x512 .* model.onnx takes 256x256"):
        Remover(folder, "onnxruntime-cpu", precision="fp32")


@pytest.mark.slow
def test_unknown_and_missing_precisions_give_the_right_advice(exported_model_dir):
    from rmbg_runtime import Remover

    with pytest.raises(ModelError, match=r"precision 'fp8' is unknown; use one of fp32, fp16, int8"):
        Remover(exported_model_dir, "onnxruntime-cpu", precision="fp8")
    with pytest.raises(ModelError, match=r"has no int8 ONNX graph; export again with --cpu-int8"):
        Remover(exported_model_dir, "onnxruntime-cpu", precision="int8")
