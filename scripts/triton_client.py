"""Send images to a Triton repository written by `rmbg-export triton`; write results, report latency.

    python scripts/triton_client.py photos/ --url 127.0.0.1:8000 --output out/ --concurrency 8
    python scripts/triton_client.py a.jpg --url 127.0.0.1:8001 --protocol grpc --network-only

The ensemble (default) takes encoded bytes and returns the cut-out PNG and the mask; --network-only
sends the preprocessed tensor to NAME_network and postprocesses here (rmbg_runtime). Prints
throughput, latency median / p90 / p99, and the batch sizes Triton's dynamic batcher formed for
the network during the run (from Triton's statistics). Needs `tritonclient[http,grpc]` (the
`triton` extra).
"""

from __future__ import annotations

import argparse
import io
import json
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

from rmbg_runtime.images import is_image_file


def image_files(paths: list[Path]) -> list[Path]:
    files: list[Path] = []
    for path in paths:
        if path.is_dir():
            files += sorted(p for p in path.iterdir() if is_image_file(p))
        elif path.is_file():
            files.append(path)
        else:
            raise SystemExit(f"error: {path} does not exist.")
    if not files:
        raise SystemExit("error: no images given (files, or folders holding .jpg/.png/.webp).")
    return files


def client_module(protocol: str):
    try:
        if protocol == "grpc":
            import tritonclient.grpc as module
        else:
            import tritonclient.http as module
    except ImportError:
        raise SystemExit("error: tritonclient is missing; pip install 'rmbg-toolkit[triton]'.") from None
    return module


class Sender:
    """One client per thread (tritonclient's clients are not shared across threads)."""

    def __init__(self, args) -> None:
        self.args, self.module = args, client_module(args.protocol)
        self.local = threading.local()
        if args.network_only:
            self.shape = self.network_shape()

    def client(self):
        if not hasattr(self.local, "client"):
            timeouts = {} if self.args.protocol == "grpc" else {"network_timeout": 600.0}
            self.local.client = self.module.InferenceServerClient(self.args.url, **timeouts)
        return self.local.client

    def network_shape(self) -> tuple[str, str, list[int]]:
        config = as_dict(self.client().get_model_config(f"{self.args.model}_network"))
        config = config.get("config", config)  # gRPC wraps it in a response message
        dims = [int(d) for d in config["input"][0]["dims"]]
        return config["input"][0]["name"], config["output"][0]["name"], dims

    def send(self, path: Path) -> tuple[dict[str, np.ndarray], float]:
        start = time.perf_counter()
        outputs = self.network(path) if self.args.network_only else self.ensemble(path)
        return outputs, time.perf_counter() - start

    def ensemble(self, path: Path) -> dict[str, np.ndarray]:
        data = np.array([[path.read_bytes()]], dtype=np.object_)
        tensor = self.module.InferInput("IMAGE", list(data.shape), "BYTES")
        tensor.set_data_from_numpy(data)
        wanted = ["MASK"] if self.args.mask_only else ["MASK", "CUTOUT"]
        requested = [self.module.InferRequestedOutput(name) for name in wanted]
        result = self.client().infer(self.args.model, [tensor], outputs=requested)
        return {name: result.as_numpy(name) for name in wanted}

    def network(self, path: Path) -> dict[str, np.ndarray]:
        from rmbg_runtime import load_image, postprocess, preprocess

        input_name, output_name, (_, height, width) = self.shape
        image = load_image(path)
        pixels = preprocess(image, (width, height))[None]
        tensor = self.module.InferInput(input_name, list(pixels.shape), "FP32")
        tensor.set_data_from_numpy(pixels)
        result = self.client().infer(f"{self.args.model}_network", [tensor])
        return {"MASK": postprocess(result.as_numpy(output_name)[0], image.size)[None]}

    def batch_counts(self) -> dict[int, int]:
        """Executions per batch size of the network model so far (Triton's statistics)."""
        stats = self.client().get_inference_statistics(f"{self.args.model}_network")
        stats = as_dict(stats)
        counts: dict[int, int] = {}
        for model in stats.get("model_stats", []):
            for entry in model.get("batch_stats", []):
                counts[int(entry["batch_size"])] = int(entry["compute_infer"]["count"])
        return counts


def as_dict(answer) -> dict:
    """HTTP answers are dicts already; gRPC answers are protobuf messages."""
    if isinstance(answer, dict):
        return answer
    from google.protobuf.json_format import MessageToDict

    return MessageToDict(answer, preserving_proto_field_name=True)


def write_outputs(path: Path, outputs: dict[str, np.ndarray], folder: Path) -> None:
    from PIL import Image

    from rmbg_runtime.files import write_atomically

    if "CUTOUT" in outputs:
        write_atomically(folder / f"{path.stem}.png", bytes(outputs["CUTOUT"].reshape(-1)[0]))
    buffer = io.BytesIO()
    Image.fromarray(np.asarray(outputs["MASK"])[0], "L").save(buffer, "PNG")
    write_atomically(folder / f"{path.stem}.mask.png", buffer.getvalue())


def percentile(values: list[float], q: float) -> float:
    return float(np.percentile(np.asarray(values), q)) if values else float("nan")


def run(args) -> dict:
    files = image_files(args.images) * args.repeat
    sender = Sender(args)
    before = sender.batch_counts()
    latencies: list[float] = []
    errors: list[str] = []
    start = time.perf_counter()
    with ThreadPoolExecutor(args.concurrency) as pool:
        for path, future in [(p, pool.submit(sender.send, p)) for p in files]:
            try:
                outputs, seconds = future.result()
            except Exception as err:  # noqa: BLE001 - a failed request is reported, the rest go on
                errors.append(f"{path.name}: {err}")
                continue
            latencies.append(seconds)
            if args.output:
                write_outputs(path, outputs, args.output)
    wall = time.perf_counter() - start
    after = sender.batch_counts()
    formed = {b: after.get(b, 0) - before.get(b, 0) for b in after if after.get(b, 0) > before.get(b, 0)}
    executions = sum(formed.values())
    return {
        "images": len(latencies),
        "errors": errors,
        "concurrency": args.concurrency,
        "throughput_img_s": len(latencies) / wall if wall else 0.0,
        "latency_s": {q: percentile(latencies, float(q[1:])) for q in ("p50", "p90", "p99")},
        "network_batches": {str(b): n for b, n in sorted(formed.items())},
        "mean_batch": sum(b * n for b, n in formed.items()) / executions if executions else 0.0,
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("images", nargs="+", type=Path)
    parser.add_argument("--url", default="127.0.0.1:8000", help="host:port (HTTP 8000, gRPC 8001)")
    parser.add_argument("--protocol", choices=["http", "grpc"], default="http")
    parser.add_argument("--model", default="rmbg", help="the ensemble's name (--name of rmbg-export triton)")
    parser.add_argument("--network-only", action="store_true", help="preprocess here, send to NAME_network")
    parser.add_argument("--mask-only", action="store_true", help="ask the ensemble for MASK only")
    parser.add_argument("--concurrency", type=int, default=1)
    parser.add_argument("--repeat", type=int, default=1, help="send the image list this many times")
    parser.add_argument("--output", type=Path, help="folder for NAME.png cut-outs and NAME.mask.png masks")
    parser.add_argument("--json", type=Path, help="also write the report as JSON")
    args = parser.parse_args()
    report = run(args)
    lat = report["latency_s"]
    print(
        f"{report['images']} images, {len(report['errors'])} errors, concurrency {args.concurrency}: "
        f"{report['throughput_img_s']:.2f} img/s, latency p50 {lat['p50']:.3f} s, p90 {lat['p90']:.3f} s, "
        f"p99 {lat['p99']:.3f} s; network batches {report['network_batches']} "
        f"(mean {report['mean_batch']:.2f})"
    )
    for line in report["errors"]:
        print(f"error: {line}", file=sys.stderr)
    if args.json:
        args.json.write_text(json.dumps(report, indent=2) + "\n")
    return 1 if report["errors"] else 0


if __name__ == "__main__":
    sys.exit(main())
