"""Two kinds of error: a bad image fails that image; a backend that fails (here a real ONNX Runtime
session over a graph that raises on bright images) stops `rmbg remove` at once with one sentence and
exit 1, and turns the server not-ready (503) until a probe finds it working again."""

from __future__ import annotations

import io
import os
import subprocess
import sys
import time

import httpx
import pytest
from failing_export import bright, dark, make_failing_export
from test_server import REPO_ROOT, Server

from rmbg_runtime import Remover
from rmbg_runtime.backends import BackendConfig
from rmbg_runtime.errors import BackendError
from rmbg_runtime.stages import OutputOptions
from rmbg_runtime.threaded import Pipeline


@pytest.fixture(scope="module")
def failing_export(exported_model_dir, tmp_path_factory):
    return make_failing_export(exported_model_dir, tmp_path_factory.mktemp("failing") / "export")


def png(image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, "PNG")
    return buffer.getvalue()


def test_the_session_fails_only_on_bright_images(failing_export):
    with Remover(failing_export, "onnxruntime-cpu") as remover:
        assert remover.predict_mask(dark(1)).shape == (40, 50)
        with pytest.raises(BackendError, match=r"onnxruntime-cpu \(fp32 graph\) failed while running"):
            remover.predict_mask(bright())


def test_pipeline_map_raises_the_backend_error_instead_of_yielding_it(failing_export):
    sources = [png(dark(1)), png(bright()), *(png(dark(i)) for i in range(2, 6))]
    seen = []
    with pytest.raises(BackendError, match="failed while running"):
        with Pipeline.open(failing_export, BackendConfig("onnxruntime-cpu"), max_batch=1) as pipeline:
            for result in pipeline.map(sources, OutputOptions()):
                seen.append(result)
    assert len(seen) == 1 and not isinstance(seen[0], Exception)


def rmbg(*args: str) -> subprocess.CompletedProcess:
    command = [sys.executable, "-c", "from rmbg_runtime.cli import main; main()", *args]
    return subprocess.run(command, cwd=REPO_ROOT, capture_output=True, timeout=180, env=dict(os.environ))


@pytest.mark.slow
def test_rmbg_remove_stops_at_the_first_backend_failure(failing_export, tmp_path):
    photos = tmp_path / "photos"
    photos.mkdir()
    dark(1).save(photos / "a.png")
    bright().save(photos / "b.png")
    for i in range(2, 10):
        dark(i).save(photos / f"c{i}.png")
    out = tmp_path / "out"
    model = ("-m", str(failing_export), "--backend", "onnxruntime-cpu", "--batch-size", "1")
    done = rmbg("remove", str(photos), "-o", str(out), *model, "--quiet")
    stderr = done.stderr.decode()
    assert done.returncode == 1, stderr
    lines = stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: stopped after 1 of 10 images: "), stderr
    assert "failed while running" in lines[0] and "Traceback" not in stderr
    assert sorted(p.name for p in out.iterdir()) == ["a.png"]  # nothing after the failure was written


@pytest.mark.slow
def test_a_failed_backend_turns_the_server_not_ready_until_it_recovers(failing_export):
    with Server(failing_export, "--backend", "onnxruntime-cpu", "--engine-threads", "1") as server:
        assert server.post("/v1/remove", content=png(dark(1))).status_code == 200
        failed = server.post("/v1/remove", content=png(bright()))
        assert failed.status_code == 503 and "the backend failed" in failed.json()["detail"]
        assert failed.headers["Retry-After"] == "1"
        ready = httpx.get(f"{server.url}/readyz", timeout=5)
        assert ready.status_code == 503 and "the backend failed" in ready.json()["status"]
        refused = server.post("/v1/remove", content=png(dark(2)))  # not even tried while not ready
        assert refused.status_code == 503 and "the backend failed" in refused.json()["detail"]
        deadline = time.monotonic() + 30  # the probe runs one blank image, which this graph takes
        while httpx.get(f"{server.url}/readyz", timeout=5).status_code != 200:
            assert time.monotonic() < deadline, "the server did not recover"
            time.sleep(0.5)
        assert server.post("/v1/remove", content=png(dark(3))).status_code == 200
