"""Per-stage latency of the runtime: encoded image in memory -> alpha at the image's size.

Stages: decode (bytes -> RGB), preprocess (resize + normalise), inference (backend), postprocess
(8-bit mask at the image's size), and end to end. Median, p90 and p99 per stage, for every batch
size and every backend present on the machine. Writes JSON and a Markdown table (and a PNG plot
when matplotlib is installed); the machine and library versions are recorded.

    python benchmarks/latency.py --model out/birefnet-lite --runs 20 --batch-sizes 1 2
"""

from __future__ import annotations

import argparse
import io
import json
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import machine, markdown_table, summarize

STAGES = ("decode", "preprocess", "inference", "postprocess", "end_to_end")


def synthetic_photo_bytes(width: int, height: int) -> bytes:
    """A JPEG that decodes and compresses like a photo: gradients, shapes, noise."""
    rng = np.random.default_rng(0)
    y, x = np.mgrid[0:height, 0:width].astype(np.float32)
    rgb = np.stack([x / width * 255, y / height * 255, (x + y) / (width + height) * 255], -1)
    rgb[((x - width / 2) ** 2 + (y - height / 2) ** 2) < (height / 3) ** 2] = (200, 60, 40)
    rgb += rng.normal(0, 8, rgb.shape).astype(np.float32)
    buffer = io.BytesIO()
    Image.fromarray(np.clip(rgb, 0, 255).astype(np.uint8)).save(buffer, "JPEG", quality=90)
    return buffer.getvalue()


def available_backends() -> list[str]:
    names = ["onnxruntime-cpu"]
    try:
        import onnxruntime

        if "CUDAExecutionProvider" in onnxruntime.get_available_providers():
            names.append("onnxruntime-cuda")
    except ImportError:
        return []
    from rmbg_runtime.backends.tensorrt import tensorrt_installed

    if tensorrt_installed():
        names.append("tensorrt")
    return names


def measure(remover, data: bytes, batch: int, runs: int, warmup: int) -> dict[str, dict]:
    from rmbg_runtime import postprocess, preprocess

    spec = remover.spec
    times: dict[str, list[float]] = {stage: [] for stage in STAGES}
    for i in range(warmup + runs):
        marks = [time.perf_counter()]
        images = [remover.load(data) for _ in range(batch)]
        marks.append(time.perf_counter())
        tensor = np.stack([preprocess(im, spec.size, spec.mean, spec.std) for im in images])
        marks.append(time.perf_counter())
        prob = remover.backend.run(tensor)
        marks.append(time.perf_counter())
        [postprocess(p[0], im.size) for p, im in zip(prob, images, strict=True)]
        marks.append(time.perf_counter())
        if i >= warmup:
            for stage, start, end in zip(STAGES, marks, marks[1:], strict=False):
                times[stage].append(end - start)
            times["end_to_end"].append(marks[-1] - marks[0])
    return {stage: summarize(values) for stage, values in times.items()}


def import_time() -> float:
    """Seconds to `import rmbg_runtime` in a fresh interpreter, beyond the interpreter's own start."""

    def run(code: str) -> float:
        start = time.perf_counter()
        subprocess.run([sys.executable, "-c", code], check=True)
        return time.perf_counter() - start

    base = min(run("pass") for _ in range(3))
    return min(run("import rmbg_runtime") for _ in range(3)) - base


def plot(rows: list[dict], path: Path) -> bool:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    labels = [f"{r['backend']}\nbatch {r['batch']}" for r in rows]
    fig, ax = plt.subplots(figsize=(8, 1 + 0.6 * len(rows)))
    left = np.zeros(len(rows))
    for stage in STAGES[:-1]:
        values = np.array([r[f"{stage}_ms"] for r in rows])
        ax.barh(labels, values, left=left, label=stage)
        left += values
    ax.set_xlabel("median ms per batch")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path)
    return True


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--model", type=Path, required=True, help="Folder written by rmbg-export.")
    parser.add_argument("--image", type=Path, help="An image file (default: a synthetic 12 MP JPEG).")
    parser.add_argument("--backends", nargs="+", help="Default: every backend present.")
    parser.add_argument("--batch-sizes", nargs="+", type=int, default=[1])
    parser.add_argument("--runs", type=int, default=20)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument(
        "--out", type=Path, default=Path("latency"), help="Prefix of the .json/.md/.png files."
    )
    args = parser.parse_args()

    from rmbg_runtime import Remover

    data = args.image.read_bytes() if args.image else synthetic_photo_bytes(4000, 3000)
    rows = []
    for backend in args.backends or available_backends():
        remover = Remover(args.model, backend)
        for batch in args.batch_sizes:
            stats = measure(remover, data, batch, args.runs, args.warmup)
            row = {"backend": remover.backend_name, "batch": batch}
            for stage, s in stats.items():
                row[f"{stage}_ms"] = round(s["median_s"] * 1000, 1)
                row[f"{stage}_p90_ms"] = round(s["p90_s"] * 1000, 1)
                row[f"{stage}_p99_ms"] = round(s["p99_s"] * 1000, 1)
            own = row["decode_ms"] + row["preprocess_ms"] + row["postprocess_ms"]
            row["runtime_share"] = (
                f"{100 * (row['preprocess_ms'] + row['postprocess_ms']) / row['end_to_end_ms']:.1f}%"
            )
            row["decode_pre_post_share"] = f"{100 * own / row['end_to_end_ms']:.1f}%"
            rows.append(row)
    width, height = Image.open(io.BytesIO(data)).size
    report = {
        "machine": machine(),
        "image": f"{width}x{height}",
        "runs": args.runs,
        "warmup": args.warmup,
        "import_rmbg_runtime_s": round(import_time(), 3),
        "results": rows,
    }
    columns = [("backend", "backend"), ("batch", "batch")]
    columns += [(f"{s} ms (p90)", f"{s}_cell") for s in STAGES]
    columns += [("pre+post share", "runtime_share")]
    for row in rows:
        for s in STAGES:
            row[f"{s}_cell"] = f"{row[f'{s}_ms']} ({row[f'{s}_p90_ms']})"
    table = markdown_table(rows, columns)
    header = (
        f"{width}x{height} image, {args.runs} runs after {args.warmup} warm-up, median (p90) per batch; "
        f"{report['machine']['cpu']} ({report['machine']['cores']} cores), GPU: {report['machine']['gpu']}; "
        f"import rmbg_runtime: {report['import_rmbg_runtime_s']} s"
    )
    args.out.parent.mkdir(parents=True, exist_ok=True)
    Path(f"{args.out}.json").write_text(json.dumps(report, indent=2))
    Path(f"{args.out}.md").write_text(header + "\n\n" + table + "\n")
    plotted = plot(rows, Path(f"{args.out}.png"))
    print(header)
    print(table)
    print(f"wrote {args.out}.json, {args.out}.md" + (f", {args.out}.png" if plotted else ""))


if __name__ == "__main__":
    main()
