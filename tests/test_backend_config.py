"""One backend configuration, passed whole: the two thread settings reach what their help says
(the CPU-stage pool; ONNX Runtime's intra-op threads, read back from the real session), and every
command that opens a backend takes --device-id and --engine-threads."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from rmbg_runtime import Remover
from rmbg_runtime.backends import BackendConfig
from rmbg_runtime.server.settings import ServerSettings
from rmbg_runtime.threaded import Pipeline
from rmbg_runtime.triton.models import backend_config

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def intra_op_threads(backend) -> int:
    return backend.session.get_session_options().intra_op_num_threads


def test_engine_threads_reach_the_onnx_runtime_session(exported_model_dir):
    with Remover(exported_model_dir, "onnxruntime-cpu", engine_threads=2) as remover:
        assert intra_op_threads(remover.backend) == 2 and remover.backend.engine_threads == 2
    with Remover(exported_model_dir, "onnxruntime-cpu") as remover:
        assert intra_op_threads(remover.backend) == 0 and remover.backend.engine_threads is None


def test_cpu_stage_threads_size_the_pool_and_leave_the_engine_alone(exported_model_dir):
    config = BackendConfig("onnxruntime-cpu")
    with Pipeline.open(exported_model_dir, config, threads=3) as pipeline:
        assert pipeline.pool._max_workers == 3
        assert intra_op_threads(pipeline.backend) == 0  # --threads once reached the engine too
    one_engine_thread = BackendConfig("onnxruntime-cpu", engine_threads=1)
    with Pipeline.open(exported_model_dir, one_engine_thread, threads=2) as p:
        assert (p.pool._max_workers, intra_op_threads(p.backend)) == (2, 1)


def test_a_closed_backend_refuses_to_run(exported_model_dir):
    import numpy as np

    from rmbg_runtime.errors import BackendError

    remover = Remover(exported_model_dir, "onnxruntime-cpu")
    with remover:
        pass
    with pytest.raises(BackendError, match="this ONNX Runtime backend was closed"):
        remover.backend.run(np.zeros((1, 3, 256, 256), np.float32))


def test_the_server_and_triton_settings_become_one_config():
    settings = ServerSettings(model_dir="m", backend="cpu", device_id=2, engine_threads=3, precision="fp32")
    assert settings.backend_config == BackendConfig("cpu", 2, 3, "fp32", verify_files=True, cpu_arena=False)
    params = {"backend": "onnxruntime-cpu", "engine_threads": "4", "precision": "int8"}
    assert backend_config(params, device_id=1) == BackendConfig("onnxruntime-cpu", 1, 4, "int8")
    assert backend_config({}, device_id=0) == BackendConfig()


def rmbg(*args: str) -> subprocess.CompletedProcess:
    command = [sys.executable, "-c", "from rmbg_runtime.cli import main; main()", *args]
    return subprocess.run(command, cwd=REPO_ROOT, capture_output=True, timeout=180, env=dict(os.environ))


@pytest.mark.parametrize("command", ["remove", "serve", "eval", "compare"])
def test_every_command_that_opens_a_backend_takes_device_id_and_engine_threads(command):
    from click.testing import CliRunner

    from rmbg_runtime.cli import build_cli

    help_text = CliRunner().invoke(build_cli(), [command, "--help"]).output
    assert "--device-id" in help_text and "--engine-threads" in help_text
    refused = CliRunner().invoke(build_cli(), [command, "--device-id", "-1"])
    assert refused.exit_code == 2 and "--device-id" in refused.output


@pytest.mark.slow
def test_rmbg_remove_threads_flags_reach_the_pool_and_the_session(exported_model_dir, tmp_path):
    from PIL import Image

    Image.new("RGB", (30, 20), "gray").save(tmp_path / "a.png")
    model = ("-m", str(exported_model_dir), "--backend", "onnxruntime-cpu")
    threads = ("--threads", "3", "--engine-threads", "2")
    done = rmbg("remove", str(tmp_path / "a.png"), "-o", str(tmp_path / "out.png"), *model, *threads, "-v")
    assert done.returncode == 0, done.stderr
    assert (
        "note: running on onnxruntime-cpu (fp32 graph) with 2 engine threads and 3 threads for the CPU stages"
        in done.stderr.decode()
    )
