"""The int8 graph against the fp32 graph in ONNX Runtime CPU, side by side in one run.

For each backbone: a real export (`rmbg-export --onnx-only --cpu-int8`, fixture weights from
tests/data/fill.py unless --checkpoint) at --resolution, then each graph timed in its own process
(so its peak RSS is its own; batch 1, median / p90 over --runs after --warmup), and the int8 mask's
MAE / max |diff| against the fp32 graph on synthetic photos. Optionally the grid_sample form too.

    python benchmarks/cpu_int8.py --backbones swin_v1_t swin_v1_l --resolution 1024 --runs 5 \
        --out /tmp/cpu_int8
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT / "benchmarks"), str(ROOT / "scripts"), str(ROOT / "tests" / "data")]

from common import backbone_parser, machine, markdown_table, peak_rss_gib, run_child, summarize, time_runs  # noqa: E402


def child(args) -> None:
    """Time one graph; print its stats as the last line of JSON."""
    import numpy as np
    import onnxruntime as ort  # and nothing of rmbg_export: torch would count in the peak RSS

    options = ort.SessionOptions()
    options.log_severity_level = 3
    if args.threads:
        options.intra_op_num_threads = args.threads
    session = ort.InferenceSession(args.onnx, options, providers=["CPUExecutionProvider"])
    name = session.get_inputs()[0].name
    x = np.random.default_rng(5).standard_normal((1, 3, args.resolution, args.resolution)).astype(np.float32)
    stats = summarize(time_runs(lambda: session.run(None, {name: x}), args.runs, args.warmup))
    stats = {k: round(v, 3) if isinstance(v, float) else v for k, v in stats.items()}
    stats["peak_rss_gib"] = peak_rss_gib()
    print(json.dumps(stats))


def export(backbone: str, folder: Path, args) -> Path:
    from gpu_check import fixture_checkpoint

    from rmbg_export.export_run import ExportOptions, run_export

    source = args.checkpoint or str(fixture_checkpoint(backbone, folder))
    out = folder / f"{backbone}_{args.resolution}_{args.deform_conv}"
    options = ExportOptions(
        source=source, output=out, height=args.resolution, width=args.resolution, max_batch=1,
        precision="fp32", deform_conv=args.deform_conv, patch_order="legacy", verify=False,
        onnx_only=True, cpu_int8=True,
    )  # fmt: skip
    run_export(options, log=lambda line: print(line, file=sys.stderr))
    return out


def accuracy(folder: Path, resolution: int) -> dict:
    import numpy as np

    from rmbg_export.onnx.verify import run_graph, synthetic_images
    from rmbg_runtime.masks import mask_agreement

    inputs = [synthetic_images(1, resolution, resolution, seed=s) for s in (11, 12)]
    fp32 = np.concatenate(run_graph(folder / "model.onnx", inputs))
    int8 = np.concatenate(run_graph(folder / "model_int8.onnx", inputs))
    return mask_agreement(fp32, int8).as_dict()


def export_child(args) -> None:
    """The export in its own process, so that the quantiser's peak memory is measured."""
    folder = export(args.backbone_child, Path(args.tmp), args)
    print(json.dumps({"folder": str(folder), "export_peak_rss_gib": peak_rss_gib()}))


def measure(backbone: str, args, tmp: Path) -> list[dict]:
    common = [f"--resolution={args.resolution}", f"--deform-conv={args.deform_conv}"]
    if args.checkpoint:
        common.append(f"--checkpoint={args.checkpoint}")
    exported = run_child([__file__, *common, f"--backbone-child={backbone}", f"--tmp={tmp}"])
    folder = Path(exported["folder"])
    passthrough = [f"--resolution={args.resolution}", f"--runs={args.runs}", f"--warmup={args.warmup}"]
    passthrough.append(f"--threads={args.threads}")
    rows = []
    for graph in ("model.onnx", "model_int8.onnx"):
        stats = run_child([__file__, *passthrough, "--child", "--onnx", str(folder / graph)])
        rows.append({"backbone": backbone, "graph": graph, "deform_conv": args.deform_conv} | stats)
    fp32, int8 = rows
    int8["ratio_vs_fp32"] = round(int8["median_s"] / fp32["median_s"], 3)
    agreement = accuracy(folder, args.resolution)
    int8["mask_mae"] = f"{agreement['mask_mae']:.2e}"
    int8["max_abs_diff"] = f"{agreement['max_abs_diff']:.2e}"
    int8["export_peak_rss_gib"] = exported["export_peak_rss_gib"]
    int8["calibration_gate_mae"] = json.loads((folder / "model.json").read_text())["parity"][
        "int8_onnx_vs_fp32_onnx"
    ]["mask_mae"]
    return rows


def main() -> None:
    parser = backbone_parser(__doc__)
    parser.add_argument("--deform-conv", choices=["native", "grid_sample"], default="native")
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--threads", type=int, default=0, help="0: ONNX Runtime's default")
    parser.add_argument("--out", type=Path, default=Path("cpu_int8"))
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--onnx", help=argparse.SUPPRESS)
    parser.add_argument("--backbone-child", help=argparse.SUPPRESS)
    parser.add_argument("--tmp", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        return child(args)
    if args.backbone_child:
        return export_child(args)
    rows = []
    args.out.mkdir(parents=True, exist_ok=True)
    for backbone in args.backbones:
        with tempfile.TemporaryDirectory(prefix="cpu_int8-") as tmp:
            rows += measure(backbone, args, Path(tmp))
        report = {"machine": machine(), "resolution": args.resolution, "runs": args.runs, "rows": rows}
        (args.out / "cpu_int8.json").write_text(json.dumps(report, indent=2) + "\n")  # after each backbone
    columns = [
        ("backbone", "backbone"), ("graph", "graph"), ("DeformConv", "deform_conv"), ("median s", "median_s"),
        ("p90 s", "p90_s"), ("x fp32", "ratio_vs_fp32"), ("peak RSS GiB", "peak_rss_gib"),
        ("mask MAE", "mask_mae"), ("max |diff|", "max_abs_diff"), ("export RSS GiB", "export_peak_rss_gib"),
    ]  # fmt: skip
    cpu = report["machine"]
    table = markdown_table(rows, columns)
    size = f"{args.resolution}x{args.resolution}"
    text = f"Machine: {cpu['cpu']}, {cpu['cores']} cores. {size}, batch 1.\n\n{table}\n"
    (args.out / "cpu_int8.md").write_text(text)
    print(text)


if __name__ == "__main__":
    main()
