"""Video throughput of `rmbg remove` (issue 19): frames/s of a 1080p and a 4K clip through the
streaming run (rmbg_runtime.video.run.remove_video, what `rmbg remove clip.mp4 -o out.webm` runs),
per output kind, with each stage's time per frame (decode, preprocess, inference, postprocess,
encode: summed over the frames, so overlapping stages add up to more than the wall time), against
the same frames as PNG files through `rmbg remove`'s image path (the same warmed pipeline, PNG out).
Then the peak RSS of a short and a 6x longer low-resolution clip, each in a fresh process, to show
that memory does not grow with the clip's length.

Clips: tests/video_clips.py (H.264 + AAC, moving shapes on a textured background). Model: fixture
Swin-T weights exported at --resolution (the network input is fixed by the export, so a small one
keeps the run short; the frames are still decoded, resized, rendered and encoded at full size),
unless --model names an export. The CPU model and its flags are printed.

    python benchmarks/video.py --out /tmp/video                                  # 30 frames a clip
    python benchmarks/video.py --frames 6 --resolution 64 --memory-frames 20     # a quick look
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
HERE = [ROOT, ROOT / "benchmarks", ROOT / "scripts", ROOT / "tests", ROOT / "tests" / "data"]
sys.path[:0] = [str(path) for path in HERE]

from common import cpu_line, machine, markdown_table, peak_rss_gib  # noqa: E402

from rmbg_runtime.backends import BackendConfig  # noqa: E402
from rmbg_runtime.stages import OutputOptions  # noqa: E402
from rmbg_runtime.threaded import Pipeline  # noqa: E402

SIZES = {"1080p": (1920, 1080), "4k": (3840, 2160)}
KINDS = {"webm": ".webm", "prores": ".mov", "h264": ".mp4"}
STAGES = ("decode", "preprocess", "inference", "postprocess", "encode")
MEMORY_SIZE = (320, 180)


def open_pipeline(model: Path, threads: int | None) -> Pipeline:
    pipeline = Pipeline.open(model, BackendConfig("onnxruntime-cpu", precision="fp32"), threads=threads)
    pipeline.warm_up()
    return pipeline


def video_row(pipeline: Pipeline, clip: Path, target: Path, label: str, kind: str) -> dict:
    from rmbg_runtime.video.run import remove_video

    report = remove_video(pipeline, clip, target, OutputOptions(), kind=kind)
    row = {
        "clip": label,
        "path": f"video -> {kind}",
        "frames": report.frames,
        "wall_s": round(report.wall_s, 2),
    }
    row["frames_per_s"] = round(report.frames_per_s, 2)
    row |= {f"{stage}_ms": round(1e3 * report.stage_s[stage] / report.frames, 1) for stage in STAGES}
    row["MiB_out"] = round(target.stat().st_size / 2**20, 1)
    return row


def image_row(pipeline: Pipeline, clip: Path, folder: Path, label: str) -> dict:
    """The clip's frames as PNG files through `rmbg remove`'s image path, timed from the PNGs in to
    the PNG cut-outs written (the frames are extracted beforehand, untimed)."""
    from rmbg_runtime.cli import _run_jobs
    from rmbg_runtime.jobs import plan_jobs
    from rmbg_runtime.progress import ProgressLine
    from rmbg_runtime.video.io import open_video

    frames = folder / "frames"
    frames.mkdir()
    with open_video(clip) as reader:
        for frame in reader.frames():
            frame.image.save(frames / f"{frame.index:06d}.png", compress_level=1)
    plan = plan_jobs([str(frames)], str(folder / "cut"))
    start = time.perf_counter()
    failures = _run_jobs(pipeline, plan.jobs, OutputOptions(), ProgressLine(enabled=False), smooth=False)
    wall = time.perf_counter() - start
    assert failures == 0, f"{failures} frames failed as images"
    count = len(plan.jobs)
    return {"clip": label, "path": "PNG files -> rmbg remove", "frames": count, "wall_s": round(wall, 2),
            "frames_per_s": round(count / wall, 2)}  # fmt: skip


def throughput(model: Path, args, tmp: Path) -> list[dict]:
    from video_clips import make_clip

    rows = []
    with open_pipeline(model, args.threads) as pipeline:
        for label in args.sizes.split(","):
            width, height = SIZES[label]
            print(f"making a {label} clip of {args.frames} frames", file=sys.stderr, flush=True)
            clip = make_clip(tmp / f"{label}.mp4", width=width, height=height, frames=args.frames, audio=True)
            for kind in args.kinds.split(","):
                print(f"{label} -> {kind}", file=sys.stderr, flush=True)
                rows.append(video_row(pipeline, clip.path, tmp / f"{label}{KINDS[kind]}", label, kind))
            print(f"{label} as PNG files", file=sys.stderr, flush=True)
            folder = tmp / f"{label}-images"
            folder.mkdir()
            rows.append(image_row(pipeline, clip.path, folder, label))
    return rows


def memory(model: Path, args, tmp: Path) -> list[dict]:
    """Peak RSS of the whole run (each clip in a fresh process: model load, pipeline, clip)."""
    from video_clips import make_clip

    rows = []
    for frames in (args.memory_frames, 6 * args.memory_frames):
        width, height = MEMORY_SIZE
        clip = make_clip(tmp / f"memory-{frames}.mp4", width=width, height=height, frames=frames, audio=True)
        command = [sys.executable, __file__, "--memory-child", str(clip.path), "--model", str(model)]
        child = subprocess.run(command, capture_output=True, text=True, check=True)
        rows.append(
            {"clip": f"{width}x{height}, {frames} frames ({frames / 25:.1f} s)", **json.loads(child.stdout)}
        )
    return rows


def memory_child(clip: Path, model: Path) -> None:
    from rmbg_runtime.video.run import remove_video

    with Pipeline.open(model, BackendConfig("onnxruntime-cpu", precision="fp32")) as pipeline:
        report = remove_video(pipeline, clip, clip.with_suffix(".webm"), OutputOptions())
    print(json.dumps({"frames": report.frames, "frames_per_s": round(report.frames_per_s, 2),
                      "peak_rss_GiB": peak_rss_gib()}))  # fmt: skip


def export_model(args, tmp: Path) -> Path:
    from flicker import export_fixture

    return args.model or export_fixture(tmp, args.resolution)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--model", type=Path, help="an export folder (default: fixture weights, exported)")
    parser.add_argument("--resolution", type=int, default=256, help="of the fixture export")
    parser.add_argument("--frames", type=int, default=30, help="frames of each throughput clip")
    parser.add_argument("--sizes", default="1080p,4k", help=f"of {', '.join(SIZES)}")
    parser.add_argument("--kinds", default=",".join(KINDS), help=f"output kinds, of {', '.join(KINDS)}")
    parser.add_argument("--threads", type=int, help="the CPU stages' pool [min(8, cores)]")
    parser.add_argument("--memory-frames", type=int, default=250, help="the short memory clip (25 fps)")
    parser.add_argument("--out", type=Path, default=Path("video-benchmark"))
    parser.add_argument("--memory-child", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.memory_child:
        memory_child(args.memory_child, args.model)
        return
    print(cpu_line(), flush=True)
    with tempfile.TemporaryDirectory(prefix="video-bench-") as tmp:
        model = export_model(args, Path(tmp))
        rows = throughput(model, args, Path(tmp))
        memory_rows = memory(model, args, Path(tmp))
    columns = [("clip", "clip"), ("path", "path"), ("frames", "frames"), ("wall s", "wall_s"),
               ("frames/s", "frames_per_s"), *[(f"{s} ms/frame", f"{s}_ms") for s in STAGES],
               ("MiB out", "MiB_out")]  # fmt: skip
    memory_columns = [("clip", "clip"), ("frames", "frames"), ("frames/s", "frames_per_s"),
                      ("peak RSS GiB", "peak_rss_GiB")]  # fmt: skip
    model_note = (
        f"export {args.model}" if args.model else f"fixture Swin-T weights exported at {args.resolution}"
    )
    text = (
        f"{cpu_line()}\n\n{model_note}, ONNX Runtime CPU fp32; {args.frames} frames a clip, "
        "H.264 + AAC in.\n\n"
        f"{markdown_table(rows, columns)}\n\nMemory (a fresh process each, WebM out):\n\n"
        f"{markdown_table(memory_rows, memory_columns)}\n"
    )
    args.out.mkdir(parents=True, exist_ok=True)
    report = {"machine": machine(), "cpu": cpu_line(), "args": {k: str(v) for k, v in vars(args).items()}}
    (args.out / "video.json").write_text(
        json.dumps({**report, "rows": rows, "memory": memory_rows}, indent=2) + "\n"
    )
    (args.out / "video.md").write_text(text)
    print(text)


if __name__ == "__main__":
    main()
