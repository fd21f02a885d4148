"""`rmbg serve` against a hostile client (issue 18): a real uvicorn on 127.0.0.1, raw sockets where the
client must misbehave, servers stopped by PID. Timeouts are passed small as flags to keep it quick."""

from __future__ import annotations

import os
import random
import resource
import select
import signal
import socket
import string
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest
from PIL import Image
from test_server import Server, encoded, photo, wait_for

pytestmark = pytest.mark.slow

READ_TIMEOUT_S = 6.0
HEADER_TIMEOUT_S = 2.0
MAX_CONNECTIONS = 64
MARGIN_S = 4.0
STALLED_CLIENTS = 50
KEYS = ("key-one-3f9a", "key-two-77c1")
ENV_KEY = "key-from-env-5b20"
ORIGIN = "https://ui.example"


@pytest.fixture(scope="module")
def server(exported_model_dir, tmp_path_factory):
    """Max queue 4 (admission limit 4 + 3), 4 MB bodies, the access log to a file."""
    log = tmp_path_factory.mktemp("hardening") / "server.log"
    args = (
        "--max-queue", "4", "--max-body-mb", "4", "--read-timeout-s", str(READ_TIMEOUT_S),
        "--header-timeout-s", str(HEADER_TIMEOUT_S), "--keep-alive-s", "1",
        "--max-connections", str(MAX_CONNECTIONS),
    )  # fmt: skip
    with Server(exported_model_dir, *args, log=log) as server:
        yield server


@pytest.fixture(scope="module")
def key_file(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("keys") / "keys.txt"
    path.write_text(f"# operators' keys\n{KEYS[0]}\n\n{KEYS[1]}\n")
    return path


@pytest.fixture(scope="module")
def keyed_server(exported_model_dir, key_file, tmp_path_factory):
    log = tmp_path_factory.mktemp("keyed") / "server.log"
    args = ("--api-key-file", str(key_file), "--metrics-need-key", "--cors-origin", ORIGIN)
    with Server(exported_model_dir, *args, log=log, env={"RMBG_API_KEYS": ENV_KEY}) as server:
        yield server


IMAGE = encoded(photo(64, 48, seed=11))


def raw_request(port: int, head: str, body: bytes = b"") -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", port), timeout=30)
    sock.sendall(head.encode() + body)
    return sock


def read_all(sock: socket.socket) -> bytes:
    data = b""
    while chunk := sock.recv(65536):
        data += chunk
    return data


def final_status(response: bytes) -> int:
    """The status of the final response, after any interim 1xx ones."""
    statuses = [int(line.split()[1]) for line in response.split(b"\r\n") if line.startswith(b"HTTP/1.1 ")]
    final = [status for status in statuses if status >= 200]
    assert final, response[:300]
    return final[0]


def post_head(path: str, length: int, extra: str = "") -> str:
    return f"POST {path} HTTP/1.1\r\nHost: x\r\nContent-Length: {length}\r\n{extra}\r\n"


def requests_total(server: Server, endpoint: str, status: int, **kwargs) -> float:
    return server.metrics(**kwargs).get(
        f'rmbg_requests_total{{endpoint="{endpoint}",status="{status}"}}', 0.0
    )


# ---- 1. slow uploads ------------------------------------------------------------------------------


def test_stalled_uploads_hold_no_slot_and_get_408(server):
    stalled = [
        raw_request(server.port, post_head("/v1/remove", 100_000), b"\x89PNG") for _ in range(STALLED_CLIENTS)
    ]
    try:
        wait_for(lambda: server.metrics()["rmbg_images_in_flight"] == 0)
        start = time.monotonic()
        ordinary = server.post("/v1/remove", content=IMAGE)
        assert ordinary.status_code == 200, ordinary.text
        assert time.monotonic() - start < READ_TIMEOUT_S  # answered while all 50 still stall
        for sock in stalled:
            sock.settimeout(READ_TIMEOUT_S + MARGIN_S)
            response = read_all(sock)
            assert final_status(response) == 408 and b"--read-timeout-s" in response
        assert time.monotonic() - start < READ_TIMEOUT_S + MARGIN_S
    finally:
        for sock in stalled:
            sock.close()
    assert requests_total(server, "/v1/remove", 408) >= STALLED_CLIENTS


# ---- 2. malformed multipart ---------------------------------------------------------------------


def multipart(*parts: tuple[str, bytes], boundary: str = "b0undary", declared: str | None = None):
    body = b"".join(
        f"--{boundary}\r\n{header}\r\n\r\n".encode() + content + b"\r\n" for header, content in parts
    )
    body += f"--{boundary}--\r\n".encode()
    content_type = "multipart/form-data" + (f"; boundary={declared or boundary}" if declared != "" else "")
    return {"content": body, "headers": {"content-type": content_type}}


FILE_PART = ('Content-Disposition: form-data; name="file"; filename="a.png"', IMAGE)


@pytest.mark.parametrize(
    "request_kwargs",
    [
        multipart(FILE_PART, declared=""),
        multipart(FILE_PART, declared="not-the-boundary"),
        multipart(FILE_PART, *[(f'Content-Disposition: form-data; name="f{i}"', b"x") for i in range(40)]),
        multipart(FILE_PART, ('Content-Disposition: form-data; name="big"', b"x" * (1 << 20) + b"x")),
        multipart(FILE_PART, FILE_PART),
        multipart((FILE_PART[0] + "\r\nX-Padding: " + "p" * 200_000, IMAGE)),
    ],
    ids=["no-boundary", "wrong-boundary", "too-many-fields", "field-over-1mb", "two-files", "200kb-header"],
)
def test_malformed_multipart_is_400_in_one_sentence(server, request_kwargs):
    response = server.post("/v1/remove", **request_kwargs)
    assert response.status_code == 400, response.text
    assert "multipart" in response.json()["detail"]
    assert requests_total(server, "/v1/remove", 500) == 0
    assert "Traceback" not in server.log.read_text()


# ---- 3. /metrics stays small ------------------------------------------------------------------------


def test_random_long_paths_do_not_grow_metrics(server):
    rng = random.Random(3)

    def refused_post(_: int) -> int:
        # 12 KB, not the issue's 60 KB: h11 refuses a head over 16 KB with 400 and a reset when it
        # arrives in pieces, which makes 60 KB flaky here; 2000 distinct labels are what matters
        path = "/" + "".join(rng.choices(string.ascii_letters, k=12_000))
        with raw_request(server.port, post_head(path, 1 << 30)) as sock:  # over --max-body-mb: 413
            return final_status(read_all(sock))

    with ThreadPoolExecutor(8) as pool:
        statuses = set(pool.map(refused_post, range(2000)))
    assert statuses == {413}
    metrics = httpx.get(f"{server.url}/metrics", timeout=10)
    assert len(metrics.content) < 100_000, len(metrics.content)
    assert requests_total(server, "other", 413) >= 2000
    # 11: the access log shows the path cut short, not 60 KB of it
    longest = max(len(line) for line in server.log.read_text().splitlines())
    assert longest < 1000, longest


# ---- 4. a client that leaves mid-upload -------------------------------------------------------------


def test_client_leaving_mid_upload_is_499_not_500(server):
    before = requests_total(server, "/v1/remove", 499)
    with raw_request(server.port, post_head("/v1/remove", 100_000), IMAGE[:1000]):
        time.sleep(0.3)
    wait_for(lambda: requests_total(server, "/v1/remove", 499) == before + 1)
    assert requests_total(server, "/v1/remove", 500) == 0
    assert "Traceback" not in server.log.read_text() and "ERROR" not in server.log.read_text()


# ---- 5. idle sockets, slow heads, the connection cap ------------------------------------------------


def test_idle_and_slow_head_connections_are_closed(server):
    start = time.monotonic()
    idle = socket.create_connection(("127.0.0.1", server.port), timeout=30)
    slow = socket.create_connection(("127.0.0.1", server.port), timeout=30)
    for byte in b"GET /healthz HTTP/1.1\r\n":  # a byte every 0.2 s until just before the deadline
        if time.monotonic() - start > HEADER_TIMEOUT_S - 0.5:
            break
        slow.sendall(bytes([byte]))
        time.sleep(0.2)
    assert read_all(idle) == b""
    response = read_all(slow)
    assert final_status(response) == 408
    assert time.monotonic() - start < HEADER_TIMEOUT_S + MARGIN_S
    idle.close()
    slow.close()


def test_connections_past_the_cap_are_refused_at_once(server):
    opened = [
        socket.create_connection(("127.0.0.1", server.port), timeout=30) for _ in range(MAX_CONNECTIONS + 16)
    ]
    try:
        refused = 0
        for sock in opened[MAX_CONNECTIONS:]:
            sock.settimeout(1)
            try:
                refused += b"too many open connections" in read_all(sock)
            except TimeoutError:
                pass
        assert refused >= 16
    finally:
        for sock in opened:
            sock.close()
    wait_for(lambda: httpx.get(f"{server.url}/healthz").status_code == 200)


def test_low_descriptor_limit_neither_floods_the_log_nor_stops_answering(exported_model_dir, tmp_path):
    """RLIMIT_NOFILE 128: the connection cap drops to fit it, so accept() never runs out of descriptors
    (the old server logged "out of system resource" hundreds of thousands of times)."""
    limit = 128

    def low_limit() -> None:
        resource.setrlimit(resource.RLIMIT_NOFILE, (limit, limit))

    log = tmp_path / "server.log"
    with Server(exported_model_dir, "--header-timeout-s", "3", log=log, preexec_fn=low_limit) as server:
        opened = [socket.create_connection(("127.0.0.1", server.port), timeout=30) for _ in range(2 * limit)]
        refused = 0
        pending, deadline = list(opened), time.monotonic() + 20
        # Past the cap: answered 503 and closed, not left in the listen backlog (on a loaded machine the
        # answers take a while, hence a deadline rather than a fixed pause).
        while pending and refused < limit and time.monotonic() < deadline:
            readable, _, _ = select.select(pending, [], [], 0.5)
            for sock in readable:
                refused += b"too many open connections" in sock.recv(4096)
                pending.remove(sock)
        for sock in opened:
            sock.close()
        assert refused >= limit, refused
        wait_for(lambda: httpx.get(f"{server.url}/healthz").status_code == 200)
        assert log.read_text().count("out of system resource") <= 1


# ---- 8. /v1/model ---------------------------------------------------------------------------------------


def test_model_info_names_no_server_path(server, exported_model_dir):
    response = httpx.get(f"{server.url}/v1/model")
    info = response.json()
    assert info["resolution"] == {"height": 256, "width": 256} and info["batch"] == {"min": 1, "max": 3}
    assert info["backend"].startswith("onnxruntime-cpu") and info["versions"]["onnxruntime"]
    assert "fp32_onnx_vs_torch" in info["parity"]
    assert "command" not in info
    assert str(exported_model_dir.parent) not in response.text and "/tmp" not in response.text


# ---- 9. half-close --------------------------------------------------------------------------------------


def test_half_closed_client_gets_its_answer(server):
    with raw_request(server.port, post_head("/v1/remove", len(IMAGE)), IMAGE) as sock:
        sock.shutdown(socket.SHUT_WR)
        response = read_all(sock)
    assert final_status(response) == 200 and b"image/png" in response


# ---- 10, 11. parameters ---------------------------------------------------------------------------------


def test_fastapi_422s_are_counted_and_short(server):
    before = requests_total(server, "/v1/remove", 422)
    for params in ({"mask_only": "banana"}, {"format": "gif"}, {"format": "g" * 10_000}):
        response = server.post("/v1/remove", params=params, content=IMAGE)
        assert response.status_code == 422 and len(response.content) < 300, response.text
    assert requests_total(server, "/v1/remove", 422) == before + 3


@pytest.mark.parametrize("bgc", ["1_0,2,3,255", "\u0661,2,3,255", "1,2,3,256", "1,2,3"])
def test_rembg_bgc_takes_plain_digits_only(server, bgc):
    response = server.post("/api/remove", files={"file": ("a.png", IMAGE, "image/png")}, data={"bgc": bgc})
    assert response.status_code == 422 and "bgc" in response.json()["detail"]


def test_long_background_is_not_echoed(server):
    response = server.post("/v1/remove", params={"background": "x" * 10_000}, content=IMAGE)
    assert response.status_code == 422 and len(response.content) < 300


def test_trailing_slash_is_no_redirect_and_docs_are_off(server):
    response = httpx.post(f"{server.url}/v1/remove/", content=IMAGE, headers={"host": "evil.example"})
    assert response.status_code == 404 and "location" not in response.headers
    assert httpx.get(f"{server.url}/docs").status_code == 404
    assert httpx.get(f"{server.url}/openapi.json").status_code == 200


# ---- 6. no further stage after a timeout; SIGINT with an upload stalled ---------------------------------


def test_timed_out_request_starts_no_further_stage(exported_model_dir, tmp_path):
    """--timeout-s 0.05 against a 24 MP PNG whose decode alone takes longer: the 504 comes during the
    decode, and preprocessing (and everything after) never starts for it."""
    big = encoded(Image.new("RGB", (6000, 4000), (40, 90, 200)))
    with Server(exported_model_dir, "--timeout-s", "0.05", log=tmp_path / "server.log") as server:
        before = server.metrics()
        response = server.post("/v1/remove", content=big)
        assert response.status_code == 504, response.text
        skipped = 'rmbg_abandoned_images_total{stage="preprocess"}'
        wait_for(lambda: server.metrics().get(skipped, 0) == 1)
        after = server.metrics()
        assert after["rmbg_batch_size_count"] == before["rmbg_batch_size_count"]
        assert after.get('rmbg_stage_seconds_count{stage="preprocess"}', 0) == before.get(
            'rmbg_stage_seconds_count{stage="preprocess"}', 0
        )
        # 11 and 1: Ctrl-C with an upload stalled stops within the read deadline, quietly, exit 0
        stalled = raw_request(server.port, post_head("/v1/remove", 100_000), b"\x89PNG")
        start = time.monotonic()
        os.kill(server.proc.pid, signal.SIGINT)
        assert server.proc.wait(timeout=30 + MARGIN_S) == 0  # the default --read-timeout-s is 30
        stalled.close()
        assert time.monotonic() - start < 30 + MARGIN_S
        assert "output file" not in server.log.read_text()


# ---- API keys and CORS --------------------------------------------------------------------------------


def test_api_keys(keyed_server):
    url = f"{keyed_server.url}/v1/remove"
    missing = httpx.post(url, content=IMAGE)
    assert missing.status_code == 401 and missing.headers["www-authenticate"].startswith("Bearer")
    wrong = httpx.post(url, content=IMAGE, headers={"X-Api-Key": KEYS[0] + "x"})
    assert wrong.status_code == 401
    for headers in ({"X-Api-Key": KEYS[0]}, {"Authorization": f"Bearer {KEYS[1]}"}, {"X-Api-Key": ENV_KEY}):
        assert httpx.post(url, content=IMAGE, headers=headers, timeout=60).status_code == 200, headers
    rembg = httpx.post(f"{keyed_server.url}/api/remove", files={"file": ("a.png", IMAGE, "image/png")})
    assert rembg.status_code == 401
    assert httpx.get(f"{keyed_server.url}/healthz").status_code == 200
    assert httpx.get(f"{keyed_server.url}/readyz").status_code == 200
    assert httpx.get(f"{keyed_server.url}/metrics").status_code == 401  # --metrics-need-key
    assert requests_total(keyed_server, "/v1/remove", 401, headers={"X-Api-Key": KEYS[0]}) == 2
    log = keyed_server.log.read_text()
    assert not any(key in log for key in (*KEYS, ENV_KEY))


def test_api_keys_reload_on_sighup_without_dropping_requests(keyed_server, key_file):
    url = f"{keyed_server.url}/v1/remove"
    new_key = "key-three-9d4e"
    with ThreadPoolExecutor(4) as pool:
        in_flight = [
            pool.submit(httpx.post, url, content=IMAGE, headers={"X-Api-Key": KEYS[1]}, timeout=60)
            for _ in range(4)
        ]
        key_file.write_text(f"{KEYS[1]}\n{new_key}\n")
        os.kill(keyed_server.proc.pid, signal.SIGHUP)
        assert [f.result().status_code for f in in_flight] == [200] * 4
    wait_for(
        lambda: httpx.post(url, content=IMAGE, headers={"X-Api-Key": new_key}, timeout=60).status_code == 200
    )
    assert httpx.post(url, content=IMAGE, headers={"X-Api-Key": KEYS[0]}).status_code == 401
    assert keyed_server.proc.poll() is None


def test_cors(keyed_server):
    url = f"{keyed_server.url}/v1/remove"
    preflight = {"Origin": ORIGIN, "Access-Control-Request-Method": "POST",
                 "Access-Control-Request-Headers": "x-api-key"}  # fmt: skip
    allowed = httpx.options(url, headers=preflight)
    assert allowed.status_code == 200 and allowed.headers["access-control-allow-origin"] == ORIGIN
    assert "x-api-key" in allowed.headers["access-control-allow-headers"].lower()
    other = httpx.options(url, headers={**preflight, "Origin": "https://elsewhere.example"})
    assert "access-control-allow-origin" not in other.headers
    answered = httpx.post(url, content=IMAGE, headers={"Origin": ORIGIN, "X-Api-Key": KEYS[1]}, timeout=60)
    assert answered.status_code == 200 and answered.headers["access-control-allow-origin"] == ORIGIN
    assert "server-timing" in answered.headers["access-control-expose-headers"].lower()
    refused = httpx.post(url, content=IMAGE, headers={"Origin": ORIGIN})  # the page can read the 401
    assert refused.status_code == 401 and refused.headers["access-control-allow-origin"] == ORIGIN


def test_bad_key_file_fails_at_start_in_one_sentence(exported_model_dir, tmp_path):
    empty = tmp_path / "empty.txt"
    empty.write_text("# no key yet\n\n")
    cases = ((tmp_path / "missing.txt", "cannot read the API key file"), (empty, "holds no key"))
    for path, message in cases:
        server = Server(exported_model_dir, "--api-key-file", str(path))
        _, stderr = server.proc.communicate(timeout=60)
        assert server.proc.returncode == 1 and message in stderr.decode(), stderr
        assert b"Traceback" not in stderr


def test_key_reload_keeps_the_keys_in_force_when_the_file_breaks(tmp_path):
    from rmbg_runtime.server.auth import ApiKeys

    path = tmp_path / "keys.txt"
    path.write_text("alpha\n# comment\nbeta\n")
    keys = ApiKeys(str(path), environ={"RMBG_API_KEYS": "gamma, delta"})
    assert all(keys.accepts(key) for key in (b"alpha", b"beta", b"gamma", b"delta"))
    assert not keys.accepts(b"# comment") and not keys.accepts(b"alph") and not keys.accepts(b"")
    path.write_text("")
    keys.reload()  # an emptied file is refused: the old keys stay
    assert keys.accepts(b"alpha")
    path.write_text("epsilon\n")
    keys.reload()
    assert keys.accepts(b"epsilon") and not keys.accepts(b"alpha") and keys.accepts(b"gamma")
