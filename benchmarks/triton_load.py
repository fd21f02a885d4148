"""Load test of the Triton ensemble: writes a `--network python` repository for an export, starts the
`nvidia-pytriton` tritonserver on loopback (scripts/local_tritonserver.py), sends the same synthetic
JPEG as benchmarks/serve_load.py at several concurrency levels through scripts/triton_client.py, and
reports throughput, p50/p90/p99 latency and the batch sizes Triton's dynamic batcher formed.

    python benchmarks/triton_load.py --model out/swin-t-256 --env .venv-triton --concurrency 1 8 \
        --requests 48 --out /tmp/triton_load

Run benchmarks/serve_load.py with the same --model, --image-size and --requests right after it to
compare with `rmbg serve` on the same machine in the same session.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path
from types import SimpleNamespace

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT / "benchmarks"), str(ROOT / "scripts")]

import local_tritonserver  # noqa: E402
import triton_client  # noqa: E402
from common import free_port, machine, markdown_table, write_report  # noqa: E402
from latency import synthetic_photo_bytes  # noqa: E402


def level(url: str, image: Path, concurrency: int, requests: int) -> dict:
    args = SimpleNamespace(
        images=[image], url=url, protocol="http", model="rmbg", network_only=False, mask_only=False,
        concurrency=concurrency, repeat=requests, output=None,
    )  # fmt: skip
    report = triton_client.run(args)
    lat = report["latency_s"]
    return {
        "concurrency": concurrency,
        "requests": requests,
        "ok": report["images"],
        "errors": len(report["errors"]),
        "throughput_rps": round(report["throughput_img_s"], 2),
        "p50_s": round(lat["p50"], 3),
        "p90_s": round(lat["p90"], 3),
        "p99_s": round(lat["p99"], 3),
        "mean_batch": round(report["mean_batch"], 2),
        "batches": report["network_batches"],
    }


def main() -> None:
    formatter = argparse.RawDescriptionHelpFormatter
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=formatter)
    parser.add_argument("--model", type=Path, required=True, help="export folder (model.json)")
    parser.add_argument("--env", type=Path, default=ROOT / ".venv-triton", help="venv with nvidia-pytriton")
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 8])
    parser.add_argument("--requests", type=int, default=48, help="requests per concurrency level")
    parser.add_argument("--image-size", default="1024x768", help="WxH of the synthetic JPEG sent")
    parser.add_argument("--max-queue-delay-us", type=int, default=5000)
    parser.add_argument("--out", type=Path, default=Path("triton_load"))
    args = parser.parse_args()

    from rmbg_export.triton.configs import TritonOptions
    from rmbg_export.triton.repository import write_repository

    width, height = (int(v) for v in args.image_size.lower().split("x"))
    with tempfile.TemporaryDirectory(prefix="triton_load-") as work:
        work = Path(work)
        image = work / "photo.jpg"
        image.write_bytes(synthetic_photo_bytes(width, height))
        options = TritonOptions(network="python", kind="cpu", max_queue_delay_us=args.max_queue_delay_us)
        write_repository(args.model, work / "repo", options, log=lambda _line: None)
        http_port, grpc_port = free_port(), free_port()
        with open(work / "tritonserver.log", "wb") as log:
            server = local_tritonserver.start(args.env, work / "repo", http_port, grpc_port, work, log=log)
        try:
            url = f"127.0.0.1:{http_port}"
            local_tritonserver.wait_until_ready(server, url, "rmbg", log_path=work / "tritonserver.log")
            level(url, image, 1, 2)  # warm-up: first inference allocates ONNX Runtime's arena
            rows = [level(url, image, c, args.requests) for c in args.concurrency]
        finally:
            local_tritonserver.stop(server)
    report = {
        "machine": machine(),
        "model": str(args.model),
        "image": f"{width}x{height} JPEG",
        "max_queue_delay_us": args.max_queue_delay_us,
        "levels": rows,
    }
    write_triton_report(report, args.out)


def write_triton_report(report: dict, out: Path) -> None:
    columns = [
        ("concurrency", "concurrency"), ("requests", "requests"), ("ok", "ok"), ("img/s", "throughput_rps"),
        ("p50 s", "p50_s"), ("p90 s", "p90_s"), ("p99 s", "p99_s"), ("mean batch", "mean_batch"),
        ("batches", "batches"),
    ]  # fmt: skip
    notes = [
        f"Image: {report['image']}; max queue delay {report['max_queue_delay_us']} us; "
        "python network on ONNX Runtime CPU."
    ]
    title = f"Triton ensemble load: {report['model']}"
    write_report(out, "triton_load", report, title, notes, markdown_table(report["levels"], columns))


if __name__ == "__main__":
    main()
