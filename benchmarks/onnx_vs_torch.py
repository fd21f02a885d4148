"""ONNX Runtime CPU against PyTorch eager on the same model and input, side by side in one run.

Each configuration runs in its own process, so its peak resident memory (VmHWM) is its own.
Weights do not change the cost, so the model keeps its initial weights unless --checkpoint is given.

    python benchmarks/onnx_vs_torch.py --backbone swin_v1_t --resolution 1024 --runs 5
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import machine, markdown_table, peak_rss_gib, run_child, summarize, time_runs

MODES = ("native", "grid_sample")


def build_model(args):
    from rmbg_export import create_model, load_model

    if args.checkpoint:
        return load_model(args.checkpoint, patch_order=args.patch_order)
    return create_model(args.backbone, args.patch_order)


def child(args) -> None:
    import numpy as np

    x = np.random.default_rng(0).standard_normal((args.batch, 3, args.resolution, args.resolution))
    x = x.astype(np.float32)
    if args.child == "torch":
        import torch

        torch.set_num_threads(args.threads or torch.get_num_threads())
        model = build_model(args)
        tensor = torch.from_numpy(x)

        def step():
            with torch.inference_mode():
                model(tensor)
    else:
        import onnxruntime as ort

        options = ort.SessionOptions()
        if args.threads:
            options.intra_op_num_threads = args.threads
        session = ort.InferenceSession(args.onnx, options, providers=["CPUExecutionProvider"])
        name = session.get_inputs()[0].name

        def step():
            session.run(None, {name: x})

    stats = summarize(time_runs(step, args.runs, args.warmup))
    stats["peak_rss_gib"] = peak_rss_gib()
    print(json.dumps(stats))


def export_graphs(args, folder: Path) -> dict[str, Path]:
    from rmbg_export.onnx.trace import trace_to_onnx

    model = build_model(args)
    paths = {}
    for mode in args.modes:
        paths[mode] = folder / f"{mode}.onnx"
        trace_to_onnx(model, paths[mode], resolution=(args.resolution, args.resolution), deform_conv=mode)
    return paths


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--backbone", default="swin_v1_t")
    parser.add_argument("--patch-order", default="legacy")
    parser.add_argument("--checkpoint")
    parser.add_argument("--resolution", type=int, default=1024)
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--threads", type=int, default=0, help="0: the library default")
    parser.add_argument("--modes", nargs="+", default=list(MODES), choices=MODES)
    parser.add_argument("--json", type=Path, help="Write the results here too.")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("--onnx", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        return child(args)

    passthrough = [
        f"--backbone={args.backbone}",
        f"--patch-order={args.patch_order}",
        f"--resolution={args.resolution}",
        f"--batch={args.batch}",
        f"--runs={args.runs}",
        f"--warmup={args.warmup}",
        f"--threads={args.threads}",
    ]
    if args.checkpoint:
        passthrough.append(f"--checkpoint={args.checkpoint}")
    with tempfile.TemporaryDirectory() as tmp:
        graphs = export_graphs(args, Path(tmp))
        rows = [{"backend": "PyTorch eager fp32"} | run_child([__file__, *passthrough, "--child", "torch"])]
        for mode, path in graphs.items():
            result = run_child([__file__, *passthrough, "--child", "ort", "--onnx", str(path)])
            rows.append({"backend": f"ONNX Runtime CPU fp32, {mode} DeformConv"} | result)
    for row in rows:
        row["vs_torch"] = f"{rows[0]['median_s'] / row['median_s']:.2f}x"
        for key in ("median_s", "p90_s", "min_s", "max_s", "peak_rss_gib"):
            row[key] = round(row[key], 3)
    report = {"machine": machine(), "config": vars(args), "results": rows}
    print(
        f"{args.backbone} {args.resolution}x{args.resolution} batch {args.batch}, {args.runs} runs "
        f"after {args.warmup} warm-up, on {report['machine']['cpu']} ({report['machine']['cores']} cores)"
    )
    print(
        markdown_table(
            rows,
            [
                ("backend", "backend"),
                ("median s", "median_s"),
                ("p90 s", "p90_s"),
                ("min s", "min_s"),
                ("max s", "max_s"),
                ("peak RSS GiB", "peak_rss_gib"),
                ("speed vs torch", "vs_torch"),
            ],
        )
    )
    if args.json:
        args.json.write_text(json.dumps(report, indent=2, default=str))


if __name__ == "__main__":
    main()
