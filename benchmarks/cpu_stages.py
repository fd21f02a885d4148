"""CPU cost of every non-inference stage for one large photo: on a GPU these stages, not the
engine, bound a server's throughput. No model is needed: the probability map is synthetic.

    python benchmarks/cpu_stages.py --size 4000x3000 --runs 5 --out /tmp/cpu_stages
"""

from __future__ import annotations

import argparse
import io
import json
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import machine, markdown_table, summarize
from latency import synthetic_photo_bytes

from rmbg_runtime import load_image, postprocess, preprocess
from rmbg_runtime.stages import OutputOptions, encode, render


def timed(fn, runs: int) -> tuple[dict, object]:
    """Median wall and CPU (this thread) seconds over `runs`, after one warm-up call."""
    result = fn()
    walls, cpus = [], []
    for _ in range(runs):
        wall, cpu = time.perf_counter(), time.thread_time()
        result = fn()
        cpus.append(time.thread_time() - cpu)
        walls.append(time.perf_counter() - wall)
    return {"wall": summarize(walls), "cpu": summarize(cpus)}, result


def _webp_default(image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, "WEBP", lossless=True, exact=True)
    return buffer.getvalue()


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--size", default="4000x3000", help="WxH of the synthetic JPEG")
    parser.add_argument("--network", default="1024x1024", help="WxH of the network input")
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--out", type=Path, default=Path("cpu_stages"))
    args = parser.parse_args()
    width, height = (int(v) for v in args.size.lower().split("x"))
    network = tuple(int(v) for v in args.network.lower().split("x"))
    data = synthetic_photo_bytes(width, height)
    # A subject with soft edges: most of the mask is 0 or 1, as in real cut-outs (PNG sizes depend on it).
    yy, xx = np.mgrid[0 : network[1], 0 : network[0]].astype(np.float32)
    radius = np.hypot(yy - network[1] / 2, xx - network[0] / 2) - 0.33 * min(network)
    prob = (1 / (1 + np.exp(radius / 3))).astype(np.float32)

    rows, stats = [], {}
    stats["decode (JPEG)"], image = timed(lambda: load_image(data), args.runs)
    stats["preprocess"], _ = timed(lambda: preprocess(image, network), args.runs)
    stats["postprocess (mask)"], alpha = timed(lambda: postprocess(prob, image.size), args.runs)
    stats["render cut-out (RGBA)"], cutout = timed(lambda: render(image, alpha, OutputOptions()), args.runs)
    refined = OutputOptions(refine=True)
    stats["render refined cut-out (--refine)"], _ = timed(
        lambda: render(image, alpha, refined), max(1, args.runs // 2)
    )
    sizes = {}
    for label, fmt, level in (
        ("encode PNG level 1", "png", 1),
        ("encode PNG level 6", "png", 6),
        ("encode WebP lossless (method 0)", "webp", 6),
    ):
        stats[label], encoded = timed(lambda f=fmt, lv=level: encode(cutout, f, lv), args.runs)
        sizes[label] = len(encoded)
    label = "encode WebP lossless (Pillow default, method 4)"
    stats[label], encoded = timed(lambda: _webp_default(cutout), max(1, args.runs // 2))
    sizes[label] = len(encoded)
    stats["encode mask PNG level 1"], _ = timed(
        lambda: encode(render(image, alpha, OutputOptions(True)), "png", 1), args.runs
    )
    for stage, s in stats.items():
        rows.append(
            {
                "stage": stage,
                "wall_ms": round(1000 * s["wall"]["median_s"], 1),
                "cpu_ms": round(1000 * s["cpu"]["median_s"], 1),
                "bytes": sizes.get(stage, ""),
            }
        )
    report = {"machine": machine(), "image": f"{width}x{height} JPEG ({len(data)} bytes)", "rows": rows}
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "cpu_stages.json").write_text(json.dumps(report, indent=2) + "\n")
    columns = [("stage", "stage"), ("median wall ms", "wall_ms"), ("median CPU ms", "cpu_ms")]
    table = markdown_table(rows, [*columns, ("output bytes", "bytes")])
    text = f"{report['image']}, network {args.network}; {report['machine']['cpu']}\n\n{table}\n"
    (args.out / "cpu_stages.md").write_text(text)
    print(text)


if __name__ == "__main__":
    main()
