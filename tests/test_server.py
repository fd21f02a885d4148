"""`rmbg serve` as operators run it: a real uvicorn process on 127.0.0.1, real HTTP, stopped by PID."""

from __future__ import annotations

import io
import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import numpy as np
import pytest
from conftest import free_port
from PIL import Image

from rmbg_runtime import Remover

pytestmark = pytest.mark.slow  # real servers: minutes on 2 cores; CI runs them

REPO_ROOT = Path(__file__).resolve().parents[1]
START_TIMEOUT_S = 120


class Server:
    def __init__(
        self, model_dir: Path, *args: str, log: Path | None = None, env: dict | None = None, **popen
    ) -> None:
        """`log`: the server's output goes to this file, access log included, instead of a pipe;
        `popen`: more subprocess.Popen arguments."""
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = log
        command = [sys.executable, "-c", "from rmbg_runtime.cli import main; main()", "serve"]
        level = "info" if log else "warning"
        command += ["--model", str(model_dir), "--port", str(self.port), "--log-level", level, *args]
        output = log.open("wb") if log else subprocess.PIPE
        self.proc = subprocess.Popen(
            command, cwd=REPO_ROOT, stdout=output, stderr=subprocess.STDOUT if log else output,
            env={**os.environ, **(env or {})}, **popen,
        )  # fmt: skip

    def wait_ready(self) -> Server:
        deadline = time.monotonic() + START_TIMEOUT_S
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                output = self.log.read_text() if self.log else self.proc.communicate()[1].decode()
                raise AssertionError(f"the server exited: {output}")
            try:
                if httpx.get(f"{self.url}/readyz", timeout=2).status_code == 200:
                    return self
            except httpx.TransportError:
                pass
            time.sleep(0.2)
        raise AssertionError("the server did not become ready in time")

    def post(self, path: str, **kwargs) -> httpx.Response:
        return httpx.post(f"{self.url}{path}", timeout=60, **kwargs)

    def metrics(self, **kwargs) -> dict[str, float]:
        text = httpx.get(f"{self.url}/metrics", timeout=10, **kwargs).text
        values = {}
        for line in text.splitlines():
            if line and not line.startswith("#"):
                name, value = line.rsplit(" ", 1)
                values[name] = float(value)
        return values

    def __enter__(self) -> Server:
        """Ready to serve; a server that never gets there is stopped before the error propagates."""
        try:
            return self.wait_ready()
        except BaseException:
            self.stop()
            raise

    def __exit__(self, *exc_info) -> None:
        self.stop()

    def stop(self) -> None:
        if self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.kill(self.proc.pid, signal.SIGKILL)
                self.proc.wait()


@pytest.fixture(scope="module")
def server(exported_model_dir):
    # max batch 3 (the export's; the CPU default is 1), a long gathering window so that concurrent
    # requests share batches, admission limit 2 + 3 images, 1 MB bodies, 2 MP images.
    args = ("--max-batch", "3", "--max-delay-ms", "50", "--max-queue", "2", "--max-body-mb", "1")
    args += ("--max-pixels", "2000000")
    with Server(exported_model_dir, *args) as server:
        yield server


@pytest.fixture(scope="module")
def remover(exported_model_dir):
    return Remover(exported_model_dir, backend="onnxruntime-cpu")


def photo(width: int, height: int, seed: int) -> Image.Image:
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:height, 0:width]
    base = np.stack([x * 255 / width, y * 255 / height, np.full_like(x, 90.0)], -1)
    base[(x - width / 2) ** 2 + (y - height / 2) ** 2 < (min(width, height) / 3) ** 2] = rng.uniform(
        0, 255, 3
    )
    return Image.fromarray(np.clip(base + rng.normal(0, 5, base.shape), 0, 255).astype(np.uint8))


def encoded(image: Image.Image, fmt: str = "PNG") -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, fmt)
    return buffer.getvalue()


def decoded(response: httpx.Response) -> Image.Image:
    assert response.status_code == 200, response.text
    return Image.open(io.BytesIO(response.content))


def test_v1_remove_matches_remover(server, remover):
    image = photo(120, 80, seed=1)
    expected = np.asarray(remover.remove_background(image, mask_only=True)).astype(int)
    mask = decoded(server.post("/v1/remove", params={"mask_only": "true"}, content=encoded(image)))
    assert mask.mode == "L" and np.abs(np.asarray(mask).astype(int) - expected).max() <= 1
    response = server.post("/v1/remove", files={"file": ("p.jpg", encoded(image, "JPEG"), "image/jpeg")})
    cutout = decoded(response)
    assert cutout.mode == "RGBA" and cutout.size == (120, 80)
    stages = dict(re.findall(r"(\w+);dur=([\d.]+)", response.headers["server-timing"]))
    assert set(stages) == {"queue", "decode", "preprocess", "inference", "postprocess", "encode"}
    assert response.headers["content-type"] == "image/png"


def test_v1_remove_background_and_webp(server, remover):
    image = photo(64, 48, seed=2)
    response = server.post(
        "/v1/remove", params={"background": "#00ff00", "format": "webp"}, content=encoded(image)
    )
    assert response.headers["content-type"] == "image/webp"
    flat = np.asarray(decoded(response).convert("RGB")).astype(float)
    alpha = np.asarray(remover.remove_background(image, mask_only=True))[..., None] / 255.0
    expected = np.asarray(image) * alpha + np.array([0, 255, 0]) * (1 - alpha)
    assert np.abs(flat - expected).max() <= 2.0


def test_rembg_compatible_endpoint(server, remover):
    image = photo(90, 70, seed=3)
    files = {"file": ("p.png", encoded(image), "image/png")}
    expected = np.asarray(remover.remove_background(image, mask_only=True)).astype(int)
    mask = decoded(server.post("/api/remove", files=files, data={"om": "true"}))
    assert mask.mode == "L" and np.abs(np.asarray(mask).astype(int) - expected).max() <= 1
    cutout = decoded(server.post("/api/remove", files=files))
    assert cutout.mode == "RGBA" and np.abs(np.asarray(cutout)[..., 3].astype(int) - expected).max() <= 1
    on_red = np.asarray(decoded(server.post("/api/remove", files=files, data={"bgc": "255,0,0,255"})))
    assert on_red.shape == (70, 90, 3)  # an opaque bgc flattens to RGB (test_background_alpha.py)
    alpha = expected[..., None] / 255.0
    over_red = np.asarray(image) * alpha + np.array([255, 0, 0]) * (1 - alpha)
    assert np.abs(on_red[..., :3] - over_red).max() <= 2.0
    refused = httpx.get(f"{server.url}/api/remove", params={"url": "http://example.com/a.jpg"})
    assert refused.status_code == 400 and "does not fetch URLs" in refused.json()["detail"]


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (b"", "no image data"),
        (b"GIF89a-this is not really an image", "not an image format"),
        (encoded(photo(64, 64, seed=4))[:200], "truncated or damaged"),
        (encoded(Image.new("RGB", (2000, 1001))), "over the limit of 2,000,000"),
    ],
    ids=["empty", "not-an-image", "truncated", "too-many-pixels"],
)
def test_bad_images_are_400_with_a_reason(server, body, message):
    response = server.post("/v1/remove", content=body)
    assert response.status_code == 400 and message in response.json()["detail"], response.text


@pytest.mark.parametrize(
    ("path", "params", "message"),
    [
        ("/v1/remove", {"format": "gif"}, "png"),
        ("/v1/remove", {"background": "notacolour"}, "not a colour name"),
        ("/v1/remove", {"mask_only": "maybe"}, "bool"),
        ("/api/remove", {"bgc": "1,2,3"}, "four integers"),
        ("/api/remove", {"om": "perhaps"}, "true or false"),
    ],
)
def test_bad_parameters_are_422(server, path, params, message):
    response = server.post(
        path, params=params, files={"file": ("p.png", encoded(photo(32, 32, 5)), "image/png")}
    )
    assert response.status_code == 422 and message in response.text, response.text


def test_bodies_over_the_limit_are_413(server):
    big = os.urandom(3 << 19)  # 1.5 MB against --max-body-mb 1
    declared = server.post("/v1/remove", content=big)
    assert declared.status_code == 413 and "--max-body-mb" in declared.json()["detail"]

    def chunks():  # no Content-Length: the limit must cut the stream off
        for start in range(0, len(big), 1 << 16):
            yield big[start : start + 1 << 16]

    streamed = server.post("/v1/remove", content=chunks())
    assert streamed.status_code == 413


def concurrent_posts(server: Server, count: int, workers: int, image: bytes) -> list[httpx.Response]:
    with ThreadPoolExecutor(workers) as pool:
        return list(pool.map(lambda _: server.post("/v1/remove", content=image), range(count)))


def test_concurrent_requests_are_batched(server):
    before = server.metrics()
    responses = concurrent_posts(server, 10, 4, encoded(photo(100, 100, seed=6)))
    assert {r.status_code for r in responses} == {200}
    after = server.metrics()
    batches = after["rmbg_batch_size_count"] - before["rmbg_batch_size_count"]
    images = after["rmbg_batch_size_sum"] - before["rmbg_batch_size_sum"]
    assert images == 10 and images / batches > 1, (images, batches)
    assert max(int(r.headers["x-batch-size"]) for r in responses) > 1
    assert after['rmbg_requests_total{endpoint="/v1/remove",status="200"}'] >= 10


def test_overload_is_503_with_retry_after(server):
    responses = concurrent_posts(server, 24, 24, encoded(photo(100, 100, seed=7)))
    codes = [r.status_code for r in responses]
    assert set(codes) == {200, 503} and codes.count(200) >= 5, codes
    refused = next(r for r in responses if r.status_code == 503)
    assert refused.headers["retry-after"] == "1" and "capacity" in refused.json()["detail"]
    assert server.metrics()["rmbg_images_in_flight"] == 0


def wait_for(condition, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out waiting"
        time.sleep(0.02)


def test_client_that_leaves_while_queued_costs_no_inference(server):
    """Four images keep the backend busy (a batch of 3 takes about a second here); a fifth request's
    client closes its socket while its image waits in the queue: it is dropped before inference."""
    image = encoded(photo(100, 100, seed=8))
    before = server.metrics()
    with ThreadPoolExecutor(4) as pool:
        busy = [pool.submit(server.post, "/v1/remove", content=image) for _ in range(4)]
        wait_for(lambda: server.metrics()["rmbg_images_in_flight"] == 4)
        time.sleep(0.2)  # past the 50 ms gathering window: a batch runs, the rest wait
        waiting = server.metrics()["rmbg_queue_depth"]
        assert waiting >= 1
        with socket.create_connection(("127.0.0.1", server.port)) as sock:
            head = f"POST /v1/remove HTTP/1.1\r\nHost: x\r\nContent-Length: {len(image)}\r\n\r\n"
            sock.sendall(head.encode() + image)
            wait_for(lambda: server.metrics()["rmbg_queue_depth"] == waiting + 1)
        assert all(f.result().status_code == 200 for f in busy)
    key = "rmbg_cancelled_images_total"
    wait_for(lambda: server.metrics()[key] > before[key])
    after = server.metrics()
    assert after[key] == before[key] + 1
    assert after["rmbg_batch_size_sum"] - before["rmbg_batch_size_sum"] == 4  # the fifth never ran
    assert after['rmbg_requests_total{endpoint="/v1/remove",status="499"}'] >= 1


def test_operations_endpoints(server, exported_model_dir):
    assert httpx.get(f"{server.url}/healthz").json() == {"status": "alive"}
    assert httpx.get(f"{server.url}/readyz").json() == {"status": "ready"}
    model = httpx.get(f"{server.url}/v1/model").json()
    exported = json.loads((exported_model_dir / "model.json").read_text())
    assert model["model"]["checkpoint_sha256"] == exported["model"]["checkpoint_sha256"]
    assert model["resolution"] == {"height": 256, "width": 256} and model["parity"] == exported["parity"]
    assert model["backend"] == "onnxruntime-cpu (fp32 graph)" and model["max_batch"] == 3
    paths = httpx.get(f"{server.url}/openapi.json").json()["paths"]
    assert {"/v1/remove", "/api/remove", "/healthz", "/readyz", "/metrics", "/v1/model"} <= set(paths)
    assert httpx.get(f"{server.url}/docs").status_code == 404  # Swagger UI needs a CDN: opt-in (--docs)
    metrics = server.metrics()
    assert "rmbg_queue_depth" in metrics and 'rmbg_stage_seconds_count{stage="inference"}' in metrics


def test_slow_requests_are_504(exported_model_dir):
    with Server(exported_model_dir, "--timeout-s", "0.001") as server:
        response = server.post("/v1/remove", content=encoded(photo(64, 64, seed=9)))
        assert response.status_code == 504 and "--timeout-s" in response.json()["detail"]
        assert httpx.get(f"{server.url}/healthz").status_code == 200  # the process stays up


def test_sigterm_finishes_requests_in_flight_then_exits_0(exported_model_dir):
    with Server(exported_model_dir, "--max-delay-ms", "1") as server:
        images = [encoded(photo(80, 80, seed=i)) for i in range(3)]
        with ThreadPoolExecutor(3) as pool:
            futures = [pool.submit(server.post, "/v1/remove", content=image) for image in images]
            wait_for(lambda: server.metrics()["rmbg_images_in_flight"] == 3)
            os.kill(server.proc.pid, signal.SIGTERM)
            assert [f.result().status_code for f in futures] == [200, 200, 200]
        assert server.proc.wait(timeout=60) == 0
        with pytest.raises(httpx.ConnectError):
            httpx.get(f"{server.url}/healthz")


def test_bad_model_or_backend_fails_at_start_in_one_sentence(exported_model_dir, tmp_path):
    for model, extra, message in (
        (tmp_path, (), "holds no model.json"),
        (exported_model_dir, ("--backend", "tensorrt"), "has no TensorRT engine"),
    ):
        server = Server(model, *extra)
        _, stderr = server.proc.communicate(timeout=60)
        assert server.proc.returncode == 1, stderr
        assert message in stderr.decode() and b"Traceback" not in stderr
