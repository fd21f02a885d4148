"""A repository from `rmbg-export triton --network python --kind cpu` in a real tritonserver.

The server is the one the `nvidia-pytriton` wheel ships (python backend only), started on loopback
by `scripts/local_tritonserver.py` from its own venv (the wheel pins numpy<2); CI makes that venv
as `.venv-triton` (or set RMBG_TRITON_ENV). Requests go through tritonclient over HTTP and gRPC and
through `scripts/triton_client.py`; the server is stopped by its PID, also when a test fails.
"""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from conftest import free_port
from PIL import Image

from rmbg_export.triton.configs import TritonOptions
from rmbg_export.triton.repository import write_repository
from rmbg_runtime import Remover

httpclient = pytest.importorskip(
    "tritonclient.http", reason="tritonclient (the triton extra) is not installed"
)

pytestmark = [pytest.mark.slow, pytest.mark.triton]

REPO_ROOT = Path(__file__).resolve().parents[1]
TRITON_ENV = Path(os.environ.get("RMBG_TRITON_ENV", REPO_ROOT / ".venv-triton"))
START_TIMEOUT_S = 180
sys.path.insert(0, str(REPO_ROOT / "scripts"))

import local_tritonserver  # noqa: E402


@pytest.fixture(scope="module")
def images(tmp_path_factory) -> list[Path]:
    from synthetic import composite

    folder = tmp_path_factory.mktemp("triton_images")
    paths = []
    for seed, (h, w) in enumerate([(300, 400), (333, 251), (480, 360)]):
        path = folder / f"image{seed}.jpg"
        Image.fromarray(composite(seed, h, w).image).save(path, quality=92)
        paths.append(path)
    return paths


@pytest.fixture(scope="module")
def expected(exported_model_dir, images) -> dict[str, np.ndarray]:
    remover = Remover(exported_model_dir, "onnxruntime-cpu")
    return {p.stem: np.asarray(remover.remove_background(p, mask_only=True)) for p in images}


@pytest.fixture(scope="module")
def triton(exported_model_dir, tmp_path_factory):
    """tritonserver on free loopback ports; yields (http_url, grpc_url)."""
    try:
        local_tritonserver.find_install(TRITON_ENV)
    except local_tritonserver.LaunchError as err:
        pytest.skip(f"no tritonserver: {err} (.ci/run makes {TRITON_ENV.name})")
    folder = tmp_path_factory.mktemp("triton")
    options = TritonOptions(network="python", kind="cpu", max_queue_delay_us=50_000, pre_post_instances=2)
    write_repository(exported_model_dir, folder / "repo", options, log=lambda _line: None)
    http_port, grpc_port = free_port(), free_port()
    log_path = folder / "tritonserver.log"
    with open(log_path, "wb") as log:
        server = local_tritonserver.start(TRITON_ENV, folder / "repo", http_port, grpc_port, folder, log=log)
    try:
        local_tritonserver.wait_until_ready(
            server, f"127.0.0.1:{http_port}", "rmbg", START_TIMEOUT_S, log_path
        )
        yield f"127.0.0.1:{http_port}", f"127.0.0.1:{grpc_port}"
    finally:
        local_tritonserver.stop(server)


def infer(url: str, path: Path) -> dict[str, np.ndarray]:
    client = httpclient.InferenceServerClient(url, network_timeout=120.0)
    data = np.array([[path.read_bytes()]], dtype=np.object_)
    tensor = httpclient.InferInput("IMAGE", list(data.shape), "BYTES")
    tensor.set_data_from_numpy(data)
    result = client.infer("rmbg", [tensor])
    return {name: result.as_numpy(name) for name in ("MASK", "CUTOUT")}


def test_ensemble_returns_the_runtimes_mask_and_cutout(triton, images, expected):
    http_url, _ = triton
    for path in images:
        outputs = infer(http_url, path)
        mask = outputs["MASK"][0]
        reference = expected[path.stem]
        assert mask.shape == reference.shape
        assert np.abs(mask.astype(int) - reference).max() <= 1
        cutout = Image.open(io.BytesIO(bytes(outputs["CUTOUT"].reshape(-1)[0])))
        assert cutout.mode == "RGBA" and cutout.size == Image.open(path).size
        rgba = np.asarray(cutout)
        assert np.array_equal(rgba[..., 3], mask)
        assert np.array_equal(rgba[..., :3], np.asarray(Image.open(path).convert("RGB")))


def test_concurrent_single_image_requests_reach_the_network_in_batches(triton, images, expected, tmp_path):
    _, grpc_url = triton
    report_path, out = tmp_path / "report.json", tmp_path / "out"
    command = [sys.executable, str(REPO_ROOT / "scripts" / "triton_client.py"), *map(str, images)]
    command += ["--url", grpc_url, "--protocol", "grpc", "--concurrency", "8", "--repeat", "4"]
    command += ["--output", str(out), "--json", str(report_path)]
    done = subprocess.run(command, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr
    report = json.loads(report_path.read_text())
    assert report["images"] == 12 and report["errors"] == []
    sizes = {int(size): count for size, count in report["network_batches"].items()}
    assert sum(size * count for size, count in sizes.items()) == 12  # every image ran exactly once
    assert max(sizes) > 1, f"Triton formed only batches of {sorted(sizes)}"
    assert "img/s" in done.stdout and "p99" in done.stdout
    for path in images:
        mask = np.asarray(Image.open(out / f"{path.stem}.mask.png"))
        assert np.abs(mask.astype(int) - expected[path.stem]).max() <= 1


def test_network_alone_with_client_side_processing(triton, images, expected, tmp_path):
    http_url, _ = triton
    command = [sys.executable, str(REPO_ROOT / "scripts" / "triton_client.py"), str(images[1])]
    command += ["--url", http_url, "--network-only", "--output", str(tmp_path)]
    done = subprocess.run(command, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    mask = np.asarray(Image.open(tmp_path / f"{images[1].stem}.mask.png"))
    assert np.abs(mask.astype(int) - expected[images[1].stem]).max() <= 1


def test_a_bad_image_fails_its_request_in_one_sentence(triton, tmp_path):
    from tritonclient.utils import InferenceServerException

    http_url, _ = triton
    bad = tmp_path / "bad.jpg"
    bad.write_bytes(b"these bytes are no image")
    with pytest.raises(InferenceServerException, match="is not an image format Pillow can read"):
        infer(http_url, bad)
