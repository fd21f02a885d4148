"""Load test of `rmbg serve`: starts the server on a free loopback port, sends bounded load at
several concurrency levels with an async HTTP client, and reports throughput, p50/p90/p99 latency,
status counts, mean batch size (from /metrics) and server RSS (from /proc: at the start and end
of each level, and its peak sampled every 50 ms) as JSON and Markdown.

Every loop is bounded by a request count and a time limit; only 127.0.0.1 is ever contacted.

    python benchmarks/serve_load.py --model out/swin-t-512 --concurrency 1 4 16 --requests 200 \
        --soak-requests 1000 --soak-concurrency 16 --out /tmp/serve_load
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import free_port, machine, markdown_table, percentile, write_report
from latency import synthetic_photo_bytes

REPO_ROOT = Path(__file__).resolve().parents[1]


def rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


class PeakRss:
    """Samples the server's RSS every `interval_s` in a thread; `peak` is the largest seen (MiB)."""

    def __init__(self, pid: int, interval_s: float = 0.05) -> None:
        self.pid, self.interval_s, self.peak = pid, interval_s, rss_mib(pid)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)

    def _sample(self) -> None:
        while not self._stop.wait(self.interval_s):
            self.peak = max(self.peak, rss_mib(self.pid))

    def __enter__(self) -> PeakRss:
        self._thread.start()
        return self

    def __exit__(self, *_exc) -> None:
        self._stop.set()
        self._thread.join()


def start_server(model: str, port: int, extra: list[str]) -> subprocess.Popen:
    command = [sys.executable, "-c", "from rmbg_runtime.cli import main; main()", "serve"]
    command += [
        "--model",
        model,
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--log-level",
        "warning",
        *extra,
    ]
    proc = subprocess.Popen(command, cwd=REPO_ROOT)
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"the server exited with code {proc.returncode}")
        try:
            if httpx.get(f"http://127.0.0.1:{port}/readyz", timeout=2).status_code == 200:
                return proc
        except httpx.TransportError:
            pass
        time.sleep(0.5)
    proc.kill()
    raise SystemExit("the server did not become ready within 300 s")


def scrape(url: str) -> dict[str, float]:
    values = {}
    for line in httpx.get(f"{url}/metrics", timeout=10).text.splitlines():
        if line and not line.startswith("#"):
            name, value = line.rsplit(" ", 1)
            values[name] = float(value)
    return values


async def load(
    url: str, body: bytes, concurrency: int, requests: int, time_limit_s: float, params: dict, on_done=None
) -> dict:
    """`requests` POSTs with `concurrency` in flight, stopping early at `time_limit_s`."""
    latencies: list[float] = []
    statuses: Counter[str] = Counter()
    issued = 0
    deadline = time.monotonic() + time_limit_s
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)

    async def worker(client: httpx.AsyncClient) -> None:
        nonlocal issued
        while issued < requests and time.monotonic() < deadline:
            issued += 1
            start = time.perf_counter()
            try:
                response = await client.post(f"{url}/v1/remove", content=body, params=params)
                statuses[str(response.status_code)] += 1
                if response.status_code == 200:
                    latencies.append(time.perf_counter() - start)
            except httpx.HTTPError as err:
                statuses[type(err).__name__] += 1
            done = sum(statuses.values())
            if on_done is not None:
                on_done(done)

    start = time.perf_counter()
    async with httpx.AsyncClient(timeout=300, limits=limits) as client:
        await asyncio.gather(*(worker(client) for _ in range(concurrency)))
    wall = time.perf_counter() - start
    return {
        "concurrency": concurrency,
        "requests": sum(statuses.values()),
        "ok": len(latencies),
        "wall_s": round(wall, 2),
        "throughput_rps": round(len(latencies) / wall, 3),
        "p50_s": round(percentile(latencies, 50), 3) if latencies else None,
        "p90_s": round(percentile(latencies, 90), 3) if latencies else None,
        "p99_s": round(percentile(latencies, 99), 3) if latencies else None,
        "statuses": dict(statuses),
    }


def mean_batch(before: dict, after: dict) -> float:
    batches = after["rmbg_batch_size_count"] - before["rmbg_batch_size_count"]
    return (
        round((after["rmbg_batch_size_sum"] - before["rmbg_batch_size_sum"]) / batches, 2) if batches else 0.0
    )


def run_level(url: str, pid: int, body: bytes, concurrency: int, args) -> dict:
    before = scrape(url)
    rss_start = rss_mib(pid)
    with PeakRss(pid) as rss:
        row = asyncio.run(load(url, body, concurrency, args.requests, args.time_limit_s, params(args)))
    row |= {"mean_batch": mean_batch(before, scrape(url)), "rss_start_mib": round(rss_start, 1)}
    row |= {"rss_end_mib": round(rss_mib(pid), 1), "rss_peak_mib": round(rss.peak, 1)}
    return row


def run_soak(url: str, pid: int, body: bytes, args) -> dict:
    """RSS at request `soak_mark` and at the end: growth between them is what a leak looks like."""
    marks: dict[str, float] = {}

    def on_done(done: int) -> None:
        if done == args.soak_mark and "at_mark" not in marks:
            marks["at_mark"] = rss_mib(pid)

    before = scrape(url)
    row = asyncio.run(
        load(
            url, body, args.soak_concurrency, args.soak_requests, args.time_limit_s * 5, params(args), on_done
        )
    )
    end = rss_mib(pid)
    at_mark = marks.get("at_mark", float("nan"))
    row |= {
        "mean_batch": mean_batch(before, scrape(url)),
        f"rss_at_request_{args.soak_mark}_mib": round(at_mark, 1),
        "rss_end_mib": round(end, 1),
        "rss_growth_pct": round(100 * (end - at_mark) / at_mark, 2),
    }
    return row


def params(args) -> dict:
    return {"format": args.format, **({"mask_only": "true"} if args.mask_only else {})}


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--model", required=True, help="export folder (model.json)")
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 4, 16])
    parser.add_argument("--requests", type=int, default=100, help="requests per concurrency level")
    parser.add_argument("--time-limit-s", type=float, default=300, help="per level")
    parser.add_argument("--soak-requests", type=int, default=0, help="a long run for the RSS check (0: none)")
    parser.add_argument("--soak-concurrency", type=int, default=16)
    parser.add_argument(
        "--soak-mark", type=int, default=200, help="RSS is read at this request and at the end"
    )
    parser.add_argument("--image-size", default="1024x768", help="WxH of the synthetic JPEG sent")
    parser.add_argument("--format", choices=["png", "webp"], default="png")
    parser.add_argument("--mask-only", action="store_true")
    parser.add_argument("--out", type=Path, default=Path("serve_load"))
    parser.add_argument("server_args", nargs=argparse.REMAINDER, help="after --: passed to rmbg serve")
    args = parser.parse_args()
    width, height = (int(v) for v in args.image_size.lower().split("x"))
    body = synthetic_photo_bytes(width, height)
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    extra = [a for a in args.server_args if a != "--"]
    server = start_server(args.model, port, extra)
    try:
        rows = [run_level(url, server.pid, body, c, args) for c in args.concurrency]
        soak = run_soak(url, server.pid, body, args) if args.soak_requests else None
    finally:
        os.kill(server.pid, signal.SIGTERM)
        server.wait(timeout=120)
    report = {
        "machine": machine(),
        "model": args.model,
        "server_args": extra,
        "image": f"{width}x{height} JPEG, {len(body)} bytes",
        "levels": rows,
        "soak": soak,
        "server_exit_code": server.returncode,
    }
    write_serve_report(report, args.out)


def write_serve_report(report: dict, out: Path) -> None:
    columns = [
        ("concurrency", "concurrency"), ("requests", "requests"), ("ok", "ok"), ("img/s", "throughput_rps"),
        ("p50 s", "p50_s"), ("p90 s", "p90_s"), ("p99 s", "p99_s"), ("mean batch", "mean_batch"),
        ("statuses", "statuses"), ("RSS start MiB", "rss_start_mib"), ("RSS end MiB", "rss_end_mib"),
        ("RSS peak MiB", "rss_peak_mib"),
    ]  # fmt: skip
    notes = [f"Image: {report['image']}. Server args: {' '.join(report['server_args']) or '(defaults)'}."]
    table = markdown_table(report["levels"], columns)
    if report["soak"]:
        table += "\n\nSoak:\n\n```\n" + json.dumps(report["soak"], indent=2) + "\n```"
    write_report(out, "serve_load", report, f"rmbg serve load: {report['model']}", notes, table)


if __name__ == "__main__":
    main()
