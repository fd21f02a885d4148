"""For maintainers with an NVIDIA GPU and TensorRT: the whole GPU path in one run.

Exports fixture-weight models (Swin-T and Swin-L, 1024x1024 by default), builds fp16 and fp32
engines (each checked against the fp32 ONNX graph in ONNX Runtime by the export itself), then times
the engines through the runtime's TensorRT backend against PyTorch eager fp32 / fp16 on the same GPU:
median, p90, p99 over --runs runs after --warmup, host array in to host array out for all of them.

    python scripts/gpu_check.py --out /tmp/gpu_check --runs 100
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT / "benchmarks"), str(ROOT / "tests" / "data")]

from common import machine, markdown_table, summarize, time_runs  # noqa: E402

FIXTURES = {"swin_v1_t": "swin_v1_t_legacy_b1_512x512", "swin_v1_l": "swin_v1_l_legacy_b1_512x512"}


def fixture_checkpoint(backbone: str, folder: Path) -> Path:
    """A safetensors checkpoint with the conformance weights of `fill.py`."""
    import fill
    import torch
    from safetensors.torch import save_file

    from rmbg_export import create_model

    manifest = json.loads((ROOT / "tests" / "data" / f"{FIXTURES[backbone]}.json").read_text())["state_dict"]
    model = create_model(backbone, "legacy")
    weights = fill.conformance_state_dict({k: (tuple(s), d) for k, (s, d) in manifest.items()})
    model.load_state_dict({k: torch.from_numpy(v) for k, v in weights.items()}, strict=False)
    path = folder / f"{backbone}.safetensors"
    save_file(model.state_dict(), str(path))
    return path


def export(checkpoint: Path, out: Path, precision: str, args) -> dict:
    from rmbg_export.export_run import EngineOptions, ExportOptions, run_export

    options = ExportOptions(
        source=str(checkpoint),
        output=out,
        height=args.resolution,
        width=args.resolution,
        max_batch=args.max_batch,
        precision=precision,
        patch_order="legacy",
        deform_conv=args.deform_conv,
        engine=EngineOptions(timing_cache=out.parent / "timing.cache"),
    )
    return json.loads(run_export(options).read_text())


def time_engine(folder: Path, batch, args) -> dict:
    from rmbg_runtime.backends import BackendConfig, open_backend
    from rmbg_runtime.metadata import read_model_spec

    backend = open_backend(read_model_spec(folder), BackendConfig("tensorrt"))
    stats = summarize(time_runs(lambda: backend.run(batch), args.runs, args.warmup))
    backend.close()
    return stats


def time_torch(checkpoint: Path, batch, half: bool, args) -> dict:
    import torch

    from rmbg_export import load_model

    model = load_model(checkpoint, patch_order="legacy").cuda()
    dtype = torch.float16 if half else torch.float32
    model = model.to(dtype)

    def step():
        with torch.inference_mode():
            x = torch.from_numpy(batch).cuda().to(dtype)
            return torch.sigmoid(model(x)).float().cpu().numpy()

    return summarize(time_runs(step, args.runs, args.warmup))


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--backbones", nargs="+", default=list(FIXTURES), choices=list(FIXTURES))
    parser.add_argument("--resolution", type=int, default=1024)
    parser.add_argument("--max-batch", type=int, default=4)
    parser.add_argument("--deform-conv", default="native", choices=["native", "grid_sample"])
    parser.add_argument("--runs", type=int, default=100)
    parser.add_argument("--warmup", type=int, default=10)
    args = parser.parse_args()

    from rmbg_export.onnx.verify import synthetic_images

    args.out.mkdir(parents=True, exist_ok=True)
    batch = synthetic_images(1, args.resolution, args.resolution, seed=0)
    rows = []
    for backbone in args.backbones:
        checkpoint = fixture_checkpoint(backbone, args.out)
        for precision in ("fp16", "fp32"):
            folder = args.out / f"{backbone}_{precision}"
            meta = export(checkpoint, folder, precision, args)
            parity = meta["engine"]["parity"]
            rows.append(
                {
                    "model": backbone,
                    "backend": f"TensorRT {precision} engine",
                    "mask_mae": f"{parity['mask_mae']:.2e}",
                    "iou": f"{parity['iou_at_half']:.5f}",
                    **time_engine(folder, batch, args),
                }
            )
        for half in (False, True):
            rows.append(
                {
                    "model": backbone,
                    "backend": f"PyTorch eager {'fp16' if half else 'fp32'}",
                    **time_torch(checkpoint, batch, half, args),
                }
            )
    for row in rows:
        for key in ("median_s", "p90_s", "p99_s"):
            row[key.replace("_s", "_ms")] = round(row.pop(key) * 1000, 2)
    report = {"machine": machine(), "args": vars(args), "results": rows}
    (args.out / "gpu_check.json").write_text(json.dumps(report, indent=2, default=str))
    print(
        f"{args.resolution}x{args.resolution} batch 1 on {report['machine']['gpu']}, {args.runs} runs after "
        f"{args.warmup} warm-up (host array in, host array out)"
    )
    print(
        markdown_table(
            rows,
            [
                ("model", "model"),
                ("backend", "backend"),
                ("median ms", "median_ms"),
                ("p90 ms", "p90_ms"),
                ("p99 ms", "p99_ms"),
                ("mask MAE vs ORT fp32", "mask_mae"),
                ("IoU@0.5", "iou"),
            ],
        )
    )


if __name__ == "__main__":
    main()
