"""Start a real tritonserver without Docker, from the `nvidia-pytriton` wheel (python backend only).

For CPU machines and tests: serves a repository written with `rmbg-export triton --network python
--kind cpu`. VENV is a virtual environment with `nvidia-pytriton` (it pins numpy<2, which the wheel's
python backend needs) and `rmbg-toolkit[ort]`; the python-backend models run in VENV's Python.

    python scripts/local_tritonserver.py --repository REPO --env .venv-triton --http-port 8000

How the wheel's server is put together (each step is why a plain start fails otherwise):
- the backend folder is assembled from the wheel's `backends/python` and the stub built for VENV's
  Python version;
- LD_LIBRARY_PATH names VENV's libpython folder (else the stub links the system's and fails with an
  RLock AttributeError) and the wheel's bundled libraries;
- VENV's bin comes first on PATH: the stub's embedded Python finds its prefix, and so VENV's
  site-packages, from the `python3` on PATH (it ignores PYTHONPATH).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

PROBE = (
    "import json, sys, sysconfig, pytriton; "
    "print(json.dumps({'version': f'{sys.version_info[0]}.{sys.version_info[1]}', "
    "'libdir': sysconfig.get_config_var('LIBDIR'), 'pytriton': pytriton.__path__[0]}))"
)


class LaunchError(Exception):
    """VENV cannot start a tritonserver; the message says what to install."""


@dataclass(frozen=True)
class TritonInstall:
    env: Path
    python_version: str
    libdir: Path
    pytriton: Path

    @property
    def server(self) -> Path:
        return self.pytriton / "tritonserver"

    @property
    def libs(self) -> Path:
        return self.pytriton.parent / "nvidia_pytriton.libs"


def find_install(env: Path) -> TritonInstall:
    python = env / "bin" / "python"
    if not python.exists():
        raise LaunchError(f"{env} is not a virtual environment (no bin/python); create it: python3 -m venv.")
    probe = subprocess.run([str(python), "-c", PROBE], capture_output=True, text=True, timeout=60)
    if probe.returncode != 0:
        raise LaunchError(
            f"{env} lacks nvidia-pytriton; run: {python} -m pip install nvidia-pytriton 'rmbg-toolkit[ort]'."
        )
    facts = json.loads(probe.stdout)
    return TritonInstall(env, facts["version"], Path(facts["libdir"]), Path(facts["pytriton"]))


def backend_folder(install: TritonInstall, into: Path) -> Path:
    """`into/python/`: the wheel's python backend with the stub for VENV's Python version."""
    stub = install.server / "python_backend_stubs" / install.python_version / "triton_python_backend_stub"
    if not stub.is_file():
        version = install.python_version
        raise LaunchError(f"nvidia-pytriton has no python-backend stub for Python {version}; use 3.8-3.13.")
    python_backend = into / "python"
    shutil.copytree(install.server / "backends" / "python", python_backend, dirs_exist_ok=True)
    shutil.copy2(stub, python_backend / "triton_python_backend_stub")
    return into


def server_command(
    install: TritonInstall, repository: Path, backends: Path, http_port: int, grpc_port: int
) -> tuple[list[str], dict[str, str]]:
    argv = [
        str(install.server / "bin" / "tritonserver"),
        f"--model-repository={repository}",
        f"--backend-directory={backends}",
        "--http-address=127.0.0.1",
        f"--http-port={http_port}",
        "--grpc-address=127.0.0.1",
        f"--grpc-port={grpc_port}",
        "--allow-metrics=false",
        "--exit-on-error=true",
    ]
    env = dict(os.environ)
    env["LD_LIBRARY_PATH"] = os.pathsep.join(
        p for p in (str(install.libdir), str(install.libs), env.get("LD_LIBRARY_PATH")) if p
    )
    env["PATH"] = f"{install.env.resolve() / 'bin'}{os.pathsep}{env.get('PATH', '')}"
    return argv, env


def start(
    env: Path, repository: Path, http_port: int, grpc_port: int, workdir: Path, log=subprocess.DEVNULL
) -> subprocess.Popen:
    """Start tritonserver in the background; the caller stops it by PID."""
    install = find_install(env)
    backends = backend_folder(install, workdir / "backends")
    argv, environ = server_command(install, repository.resolve(), backends, http_port, grpc_port)
    return subprocess.Popen(argv, env=environ, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)


def wait_until_ready(
    server: subprocess.Popen, url: str, model: str, limit_s: float = 300, log_path: Path | None = None
) -> None:
    """Poll Triton's HTTP health and `model`'s readiness; LaunchError (with the log's tail) if the
    server exits or is not ready within `limit_s`."""
    import tritonclient.http as httpclient

    def failure(what: str) -> LaunchError:
        tail = f":\n{log_path.read_text()[-3000:]}" if log_path and log_path.exists() else ""
        return LaunchError(f"tritonserver {what}{tail}")

    client = httpclient.InferenceServerClient(url)
    deadline = time.monotonic() + limit_s
    while time.monotonic() < deadline:
        if server.poll() is not None:
            raise failure(f"exited with code {server.returncode} while starting")
        try:
            if client.is_server_ready() and client.is_model_ready(model):
                return
        except Exception:  # noqa: BLE001 - connection refused while it starts
            pass
        time.sleep(0.5)
    raise failure(f"was not ready within {limit_s:.0f} s")


def stop(server: subprocess.Popen, grace_s: float = 60) -> None:
    """SIGTERM by PID, then SIGKILL of its process group (the python-backend stubs) if it hangs."""
    server.terminate()
    try:
        server.wait(timeout=grace_s)
    except subprocess.TimeoutExpired:
        os.killpg(server.pid, signal.SIGKILL)
        server.wait(timeout=30)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repository", type=Path, required=True)
    parser.add_argument("--env", type=Path, required=True, help="venv: nvidia-pytriton, rmbg-toolkit[ort]")
    parser.add_argument("--http-port", type=int, default=8000)
    parser.add_argument("--grpc-port", type=int, default=8001)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="tritonserver-") as workdir:
        try:
            server = start(args.env, args.repository, args.http_port, args.grpc_port, Path(workdir), log=None)
        except LaunchError as err:
            print(f"error: {err}", file=sys.stderr)
            return 1
        signal.signal(signal.SIGTERM, lambda *_: server.terminate())
        try:
            return server.wait()
        except KeyboardInterrupt:
            server.terminate()
            return server.wait()


if __name__ == "__main__":
    sys.exit(main())
