"""The runtime installs with the `ort` extra into a fresh environment without torch, and runs there;
with the `deploy` extra added, `rmbg-export triton` and `rmbg-export preflight` run there too."""

from __future__ import annotations

import os
import subprocess
import sys
import venv
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.slow  # a fresh venv and pip installs
# The venv sees only what is installed in it: a PYTHONPATH to a checkout (with its build's egg-info)
# would make pip take the toolkit as installed and the commands import the checkout.
ISOLATED = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}


def run(args: list, **kwargs) -> subprocess.CompletedProcess:
    return subprocess.run(args, capture_output=True, text=True, env=ISOLATED, **kwargs)


def pip_install(python: Path, requirement: str) -> None:
    install = run([python, "-m", "pip", "install", "-q", requirement])
    if install.returncode != 0 and "No matching distribution" in install.stderr + install.stdout:
        pytest.skip("the package index is not reachable from this machine")
    assert install.returncode == 0, install.stderr[-2000:]


def installed(python: Path) -> str:
    return run([python, "-m", "pip", "freeze"]).stdout.lower()


@pytest.fixture(scope="module")
def runtime_env(tmp_path_factory) -> tuple[Path, Path]:
    """(the venv's bin folder, the toolkit's wheel): `rmbg-toolkit[ort]` installed, nothing else."""
    root = tmp_path_factory.mktemp("runtime-install")
    wheels = root / "wheels"
    build = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", wheels, REPO_ROOT],
        capture_output=True,
        text=True,
    )
    assert build.returncode == 0, build.stderr[-2000:]
    env_dir = root / "runtime-env"
    venv.create(env_dir, with_pip=True)
    wheel = next(wheels.glob("rmbg_toolkit-*.whl"))
    pip_install(env_dir / "bin" / "python", f"{wheel}[ort]")
    return env_dir / "bin", wheel


def test_ort_extra_installs_and_runs_without_torch(runtime_env, exported_model_dir, tmp_path):
    bin_dir, _ = runtime_env
    python = bin_dir / "python"
    freeze = installed(python)
    assert "torch" not in freeze and "onnxruntime" in freeze
    cutout = tmp_path / "out.png"
    image = tmp_path / "in.png"
    subprocess.run(
        [
            sys.executable,
            "-c",
            f"from PIL import Image; Image.new('RGB', (40, 30), 'red').save({str(image)!r})",
        ],
        check=True,
    )
    result = run([bin_dir / "rmbg", "remove", image, "-m", exported_model_dir, "-o", cutout], cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    check = run([python, "-c", f"from PIL import Image; print(Image.open({str(cutout)!r}).mode)"])
    assert check.stdout.strip() == "RGBA"


def test_deployment_commands_run_without_torch(runtime_env, exported_model_dir, tmp_path):
    """`rmbg-export triton` and `preflight` only read model.json and the graphs: on a serving host with
    the runtime and the `deploy` extra (onnx, click) they run; the export itself names what it lacks."""
    bin_dir, wheel = runtime_env
    export = bin_dir / "rmbg-export"
    # triton needs nothing beyond the runtime: it runs before `deploy` is installed
    repository = tmp_path / "models"
    triton = run(
        [export, "triton", exported_model_dir, "--repository", repository, "--network", "onnxruntime",
         "--kind", "cpu"],
        cwd=tmp_path,
    )  # fmt: skip
    assert triton.returncode == 0, triton.stderr
    assert (repository / "rmbg_network" / "1" / "model.onnx").is_file()
    assert sorted(p.name for p in repository.iterdir()) == [
        "README.md", "rmbg", "rmbg_network", "rmbg_post", "rmbg_pre"
    ]  # fmt: skip
    pip_install(bin_dir / "python", f"{wheel}[ort,deploy]")
    freeze = installed(bin_dir / "python")
    assert "torch" not in freeze and "onnx==" in freeze
    preflight = run([export, "preflight", exported_model_dir, "--tensorrt", "11.4"])
    assert preflight.returncode == 0, preflight.stderr
    assert "model_fp16.onnx: every node is supported by TensorRT 11.4" in preflight.stdout
    attempt = run([export, "some/checkpoint", "-o", tmp_path / "out", "--onnx-only"])
    assert attempt.returncode == 1 and "Traceback" not in attempt.stderr
    assert attempt.stderr.startswith("error: this command needs torch, which is not installed")
