"""Helpers shared by the benchmark scripts: timing statistics and a description of the machine."""

from __future__ import annotations

import argparse
import json
import os
import platform
import socket
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from importlib import metadata
from pathlib import Path


def backbone_parser(description: str) -> argparse.ArgumentParser:
    """The arguments of the benchmarks that export fixture (or real) weights per backbone."""
    parser = argparse.ArgumentParser(
        description=description, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--backbones", nargs="+", default=["swin_v1_t", "swin_v1_l"])
    parser.add_argument("--checkpoint", help="real weights instead of the fixture weights (one backbone)")
    parser.add_argument("--resolution", type=int, default=1024)
    return parser


def time_runs(fn: Callable[[], object], runs: int, warmup: int) -> list[float]:
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return times


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, round(q / 100 * (len(ordered) - 1))))
    return ordered[index]


def summarize(times: list[float]) -> dict:
    return {
        "runs": len(times),
        "median_s": statistics.median(times),
        "p90_s": percentile(times, 90),
        "p99_s": percentile(times, 99),
        "min_s": min(times),
        "max_s": max(times),
    }


def cpu_name() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def gpu_name() -> str | None:
    try:
        out = subprocess.run(
            ["nvidia-smi", "--query-gpu=name,driver_version", "--format=csv,noheader"],
            capture_output=True,
            text=True,
            timeout=10,
        )
        return out.stdout.strip() or None
    except (OSError, subprocess.TimeoutExpired):
        return None


def machine() -> dict:
    versions = {}
    for name in (
        "numpy",
        "pillow",
        "torch",
        "onnxruntime",
        "onnxruntime-gpu",
        "tensorrt",
        "cuda-python",
        "openvino",
    ):
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            pass
    return {
        "cpu": cpu_name(),
        "cores": os.cpu_count(),
        "gpu": gpu_name(),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "versions": versions,
    }


def cpu_line() -> str:
    """The CPU model, its cores and the flags that decide CPU kernels (rmbg_runtime.doctor)."""
    from rmbg_runtime.doctor import CPU_FLAGS, cpu_info

    cpu = cpu_info()
    flags = ", ".join(f"{flag} {'yes' if flag in cpu.flags else 'no'}" for flag in CPU_FLAGS)
    return f"CPU: {cpu.model}, {cpu.cores} cores; {flags}"


def peak_rss_gib() -> float:
    """This process's peak resident memory since its exec (VmHWM). Not ru_maxrss: on Linux that
    survives exec, so a child started by a large parent would report the parent's size."""
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmHWM:"):
                return round(int(line.split()[1]) / 2**20, 2)
    raise RuntimeError("/proc/self/status has no VmHWM line (Linux only)")


def free_port() -> int:
    """A free TCP port on 127.0.0.1 for a server under load."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def write_report(out: Path, stem: str, report: dict, title: str, notes: list[str], table: str) -> None:
    """`out/stem.json` (the whole report) and `out/stem.md` (title, machine, notes, table); the
    Markdown is printed too."""
    out.mkdir(parents=True, exist_ok=True)
    (out / f"{stem}.json").write_text(json.dumps(report, indent=2) + "\n")
    cpu = report["machine"]
    lines = [
        f"# {title}",
        "",
        f"Machine: {cpu['cpu']}, {cpu['cores']} cores, GPU {cpu['gpu']}.",
        *notes,
        "",
        table,
    ]
    (out / f"{stem}.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


def run_child(args: list[str]) -> dict:
    """Run this benchmark in a fresh process (so its peak memory is its own) and parse its JSON."""
    out = subprocess.run([sys.executable, *args], capture_output=True, text=True, check=False)
    if out.returncode != 0:
        raise RuntimeError(f"child {args} failed:\n{out.stderr[-3000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def markdown_table(rows: list[dict], columns: list[tuple[str, str]]) -> str:
    lines = ["| " + " | ".join(title for title, _ in columns) + " |", "|" + "---|" * len(columns)]
    for row in rows:
        lines.append("| " + " | ".join(str(row.get(key, "")) for _, key in columns) + " |")
    return "\n".join(lines)
