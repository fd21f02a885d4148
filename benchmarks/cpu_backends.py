"""CPU engines side by side: ONNX Runtime fp32 / int8 against OpenVINO fp32 / int8, in one run.

For each backbone: a real export (`rmbg-export --onnx-only --cpu-int8 --openvino`, fixture weights
from tests/data/fill.py unless --checkpoint, max batch 4) at --resolution. Then
- latency: one process opens the engines (rmbg_runtime's backends) and runs them round-robin,
  so that noise from other work on the machine falls on all of them alike: batch-1 latency (median
  over --runs);
- throughput, start and memory: each engine in its own process (peak RSS its own; four engines
  holding batch-4 buffers at 1024 do not fit in 24 GiB): the open time with an empty OpenVINO cache
  (first start) and again with the cache it left (cached start; ONNX Runtime has no such cache, so
  it starts once), and one batch-4 run after a batch-1 warm-up;
- end to end: `rmbg remove` on a --photo-mp megapixel photo with each engine's backend.
The CPU model and the flags that decide CPU kernels (avx2, avx512_vnni, avx512_bf16, amx) are printed.

    python benchmarks/cpu_backends.py --backbones swin_v1_t swin_v1_l --resolution 1024 --runs 3 \
        --out /tmp/cpu_backends
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "benchmarks"), str(ROOT / "scripts"), str(ROOT / "tests" / "data")]

from common import backbone_parser, cpu_line, machine, markdown_table, peak_rss_gib, run_child  # noqa: E402

# (label, rmbg_runtime backend, precision); the first is the reference of the ratios.
ENGINES = [
    ("ORT fp32", "onnxruntime-cpu", "fp32"),
    ("ORT int8", "onnxruntime-cpu", "int8"),
    ("OpenVINO fp32", "openvino", "fp32"),
    ("OpenVINO bf16", "openvino", "bf16"),  # where the CPU has bf16 arithmetic (the export gates it there)
    ("OpenVINO int8", "openvino", "int8"),
]


def engines_of(folder: str) -> list[tuple[str, str, str]]:
    """ENGINES that the export holds (bf16 only where its CPU had bf16 arithmetic)."""
    spec = json.loads((Path(folder) / "model.json").read_text())
    return [e for e in ENGINES if e[1] != "openvino" or e[2] in spec["openvino"]["models"]]


THROUGHPUT_BATCH = 4


def batch(size: int, resolution: int):
    import numpy as np

    return np.random.default_rng(size).standard_normal((size, 3, resolution, resolution)).astype(np.float32)


def open_engine(folder: str, backend: str, precision: str):
    from rmbg_runtime.backends import BackendConfig, open_backend
    from rmbg_runtime.metadata import read_model_spec

    return open_backend(read_model_spec(folder), BackendConfig(backend, precision=precision))


def race_child(args) -> None:
    """The engines in one process, round-robin; prints medians as the last line of JSON."""
    import statistics

    engines = [
        open_engine(args.folder, backend, precision) for _, backend, precision in engines_of(args.folder)
    ]
    one = batch(1, args.resolution)
    for engine in engines:  # warm-up: first runs allocate and tune
        engine.run(one)
    latency: list[list[float]] = [[] for _ in engines]
    for _ in range(args.runs):
        for times, engine in zip(latency, engines, strict=True):
            start = time.perf_counter()
            engine.run(one)
            times.append(time.perf_counter() - start)
    # Other work on the machine slows them all alike; its size is printed beside the ratios.
    print(json.dumps({"latency_s": [statistics.median(t) for t in latency], "load_1min": os.getloadavg()[0]}))


def start_child(args) -> None:
    """One engine: open time (compilation or cache load), a batch-2 warm-up (OpenVINO compiles its
    dynamic-batch model at the first batch over 1), one timed batch-4 run, this process's peak RSS."""
    start = time.perf_counter()
    engine = open_engine(args.folder, args.backend, args.precision)
    opened = time.perf_counter() - start
    engine.run(batch(2, args.resolution))
    four = batch(THROUGHPUT_BATCH, args.resolution)
    start = time.perf_counter()
    engine.run(four)
    images_per_s = THROUGHPUT_BATCH / (time.perf_counter() - start)
    print(json.dumps({"open_s": opened, "images_per_s": images_per_s, "peak_rss_gib": peak_rss_gib()}))


def export_child(args) -> None:
    from gpu_check import fixture_checkpoint

    from rmbg_export.export_run import ExportOptions, run_export

    folder = Path(args.tmp)
    source = args.checkpoint or str(fixture_checkpoint(args.backbone_child, folder))
    out = folder / f"{args.backbone_child}_{args.resolution}"
    options = ExportOptions(
        source=source, output=out, height=args.resolution, width=args.resolution, max_batch=THROUGHPUT_BATCH,
        precision="fp32", patch_order="legacy", verify=False, onnx_only=True, cpu_int8=True, openvino=True,
    )  # fmt: skip
    run_export(options, log=lambda line: print(line, file=sys.stderr))
    print(json.dumps({"folder": str(out), "export_peak_rss_gib": peak_rss_gib()}))


def remove_photo(folder: Path, photo: Path, backend: str, out: Path) -> float:
    """`rmbg remove` wall time for one photo with `backend` (its default precision)."""
    command = [sys.executable, "-c", "from rmbg_runtime.cli import main; main()", "remove", str(photo)]
    command += ["-m", str(folder), "--backend", backend, "-o", str(out)]
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    start = time.perf_counter()
    subprocess.run(command, check=True, env=env, capture_output=True)
    return time.perf_counter() - start


def end_to_end(folder: Path, megapixels: float, tmp: Path) -> dict:
    import numpy as np
    from PIL import Image

    width = int((megapixels * 1e6 * 4 / 3) ** 0.5)
    height = int(width * 3 / 4)
    rng = np.random.default_rng(0)
    photo = tmp / "photo.jpg"
    Image.fromarray(rng.integers(0, 255, (height, width, 3), np.uint8)).save(photo, quality=90)
    times = {}
    for backend in ("onnxruntime-cpu", "openvino"):
        times.setdefault(backend, []).append(remove_photo(folder, photo, backend, tmp / f"{backend}.png"))
    return {"photo": f"{width}x{height}", **{k: round(v[0], 2) for k, v in times.items()}}


def measure(backbone: str, args, tmp: Path) -> tuple[list[dict], dict]:
    common = [f"--resolution={args.resolution}"]
    if args.checkpoint:
        common.append(f"--checkpoint={args.checkpoint}")
    exported = run_child([__file__, *common, f"--backbone-child={backbone}", f"--tmp={tmp}"])
    folder = exported["folder"]
    spec = json.loads((Path(folder) / "model.json").read_text())
    race = run_child([__file__, *common, f"--runs={args.runs}", "--race", f"--folder={folder}"])
    rows = []
    for index, (label, backend, precision) in enumerate(engines_of(folder)):
        cache = tmp / f"cache-{index}"
        os.environ["RMBG_OPENVINO_CACHE_DIR"] = str(cache)  # empty: the first start compiles
        child = [__file__, *common, "--start", f"--folder={folder}", f"--backend={backend}"]
        child.append(f"--precision={precision}")
        first = run_child(child)
        cached = run_child(child) if backend == "openvino" else first
        latency = race["latency_s"][index]
        gate = _gate_mae(spec, backend, precision)
        rows.append({
            "backbone": backbone, "engine": label, "latency_s": round(latency, 3),
            "ratio": round(latency / race["latency_s"][0], 2),
            "images_per_s": round(max(first["images_per_s"], cached["images_per_s"]), 2),
            "peak_rss_gib": max(first["peak_rss_gib"], cached["peak_rss_gib"]),
            "first_start_s": round(first["open_s"], 2), "cached_start_s": round(cached["open_s"], 2),
            "gate_mae": gate, "load_1min": round(race["load_1min"], 1),
        })  # fmt: skip
    os.environ.pop("RMBG_OPENVINO_CACHE_DIR", None)
    e2e = end_to_end(Path(folder), args.photo_mp, tmp) if args.photo_mp else {}
    return rows, {"backbone": backbone, **e2e, "export_peak_rss_gib": exported["export_peak_rss_gib"]}


def _gate_mae(spec: dict, backend: str, precision: str) -> str:
    """The export's own gate figure against the fp32 ONNX graph (mask MAE)."""
    if backend == "openvino":
        value = spec["openvino"]["models"][precision]["parity"]["mask_mae"]
    elif precision == "int8":
        value = spec["parity"]["int8_onnx_vs_fp32_onnx"]["mask_mae"]
    else:
        return "reference"
    return f"{value:.1e}"


def main() -> None:
    parser = backbone_parser(__doc__)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--photo-mp", type=float, default=12.0, help="end-to-end photo size; 0: skip")
    parser.add_argument("--out", type=Path, default=Path("cpu_backends"))
    for hidden in ("--folder", "--backend", "--precision", "--backbone-child", "--tmp"):
        parser.add_argument(hidden, help=argparse.SUPPRESS)
    parser.add_argument("--race", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--start", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.race:
        return race_child(args)
    if args.start:
        return start_child(args)
    if args.backbone_child:
        return export_child(args)
    print(cpu_line(), flush=True)
    rows, ends = [], []
    args.out.mkdir(parents=True, exist_ok=True)
    for backbone in args.backbones:
        with tempfile.TemporaryDirectory(prefix="cpu_backends-") as tmp:
            backbone_rows, e2e = measure(backbone, args, Path(tmp))
        rows += backbone_rows
        ends.append(e2e)
        report = {"machine": machine(), "cpu": cpu_line(), "resolution": args.resolution, "runs": args.runs,
                  "rows": rows, "end_to_end": ends}  # fmt: skip
        (args.out / "cpu_backends.json").write_text(json.dumps(report, indent=2) + "\n")
    columns = [
        ("backbone", "backbone"), ("engine", "engine"), ("batch-1 median s", "latency_s"),
        ("x ORT fp32", "ratio"), ("batch-4 img/s", "images_per_s"), ("peak RSS GiB", "peak_rss_gib"),
        ("first start s", "first_start_s"), ("cached start s", "cached_start_s"),
        ("gate mask MAE vs fp32", "gate_mae"), ("load avg (1 min) after the race", "load_1min"),
    ]  # fmt: skip
    e2e_columns = [
        ("backbone", "backbone"), ("photo", "photo"), ("rmbg remove ORT s", "onnxruntime-cpu"),
        ("rmbg remove OpenVINO s", "openvino"), ("export RSS GiB", "export_peak_rss_gib"),
    ]  # fmt: skip
    size = f"{args.resolution}x{args.resolution}"
    text = (
        f"{cpu_line()}\n\n{size}, fixture weights; batch 1: round-robin medians of {args.runs} runs in one "
        "process; batch 4, peak RSS and starts: each engine in its own process.\n\n"
        f"{markdown_table(rows, columns)}\n\nEnd to end (one run each, default precision per backend):\n\n"
        f"{markdown_table(ends, e2e_columns)}\n"
    )
    (args.out / "cpu_backends.md").write_text(text)
    print(text)


if __name__ == "__main__":
    main()
