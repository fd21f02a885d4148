"""Flicker of a clip's masks with and without temporal smoothing (`rmbg remove --smooth`, issue 19).

A synthetic clip: a textured subject that rests, moves across and rests again on a static textured
background, rendered as RGB frames. Its masks come from a real export run by `rmbg_runtime.Remover`
(fixture Swin-T weights from tests/data/fill.py at --resolution, unless --model names an export).
Fixture weights do not segment the subject, so the truth is the model's own mask of the CLEAN
frames: flicker is what the noise adds, lag is what a filter adds. Each scenario degrades the clean
frames once (fresh noise every frame) and runs them through the same model:

- clean: no noise (the masks are the truth; a filter can only add lag here);
- sensor noise: Gaussian noise of --noise levels (of 255) per pixel and channel;
- sensor noise + JPEG: the same, then a JPEG round trip at --jpeg-quality (Pillow), as a codec's
  quantisation;
- no model, edge wobble: the subject's own anti-aliased matte as truth, observed with its edge
  shifted by --wobble px (fresh every frame) and a little noise in the edge band, as a trained
  network's masks of a hard edge flicker (the fixture's masks have no hard edges).

For every filter (none; plain EMAs; rmbg_runtime.temporal.MaskSmoother, the change-gated EMA, at
its defaults and other settings; a per-pixel One Euro filter, Casiez et al. 2012) it prints:
flicker = mean |alpha_t - alpha_{t-1}| over the pixels whose truth does not change from t-1 to t;
error where the truth changes (lag) = mean |alpha_t - truth_t| over the pixels whose truth changes,
and over those whose truth changes by at least --large levels; error everywhere = mean
|alpha_t - truth_t| over all pixels and frames; and each filter's cost per 1920x1080 frame
(median of --cost-runs). The CPU is printed.

    python benchmarks/flicker.py --out /tmp/flicker
"""

from __future__ import annotations

import argparse
import io
import json
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "benchmarks"), str(ROOT / "scripts"), str(ROOT / "tests" / "data")]

from common import cpu_line, machine, markdown_table  # noqa: E402

from rmbg_runtime.temporal import MaskSmoother  # noqa: E402

Filter = Callable[[np.ndarray], np.ndarray]


class PlainEma:
    """alpha-independent EMA: state += weight * (alpha - state). Smooths noise and motion alike."""

    def __init__(self, weight: float) -> None:
        self.weight = np.float32(weight)
        self.state: np.ndarray | None = None

    def __call__(self, alpha: np.ndarray) -> np.ndarray:
        if self.state is None:
            self.state = alpha.astype(np.float32)
            return alpha.copy()
        self.state += self.weight * (alpha - self.state)
        return (self.state + np.float32(0.5)).astype(np.uint8)


class OneEuro:
    """Per-pixel One Euro filter (Casiez, Roussel, Vogel, CHI 2012), time in frames: the EMA's cutoff
    (cycles per frame) is min_cutoff + beta * |speed|, the speed (levels per frame) itself low-passed
    at d_cutoff."""

    def __init__(self, min_cutoff: float, beta: float, d_cutoff: float = 1.0) -> None:
        self.min_cutoff, self.beta = np.float32(min_cutoff), np.float32(beta)
        self.speed_weight = np.float32(_one_euro_weight(d_cutoff))
        self.state: np.ndarray | None = None
        self.speed: np.ndarray | None = None

    def __call__(self, alpha: np.ndarray) -> np.ndarray:
        if self.state is None:
            self.state = alpha.astype(np.float32)
            self.speed = np.zeros_like(self.state)
            return alpha.copy()
        change = alpha - self.state
        self.speed += self.speed_weight * (change - self.speed)
        self.state += _one_euro_weight(self.min_cutoff + self.beta * np.abs(self.speed)) * change
        return (self.state + np.float32(0.5)).astype(np.uint8)


def _one_euro_weight(cutoff):
    """The EMA weight of a first-order low-pass at `cutoff` cycles per frame (sampling period 1)."""
    return 1 / (1 + 1 / (np.float32(2 * np.pi) * cutoff))


CANDIDATES: dict[str, Callable[[], Filter]] = {
    "none": lambda: np.copy,
    "EMA weight 0.5": lambda: PlainEma(0.5),
    "EMA weight 0.25": lambda: PlainEma(0.25),
    "MaskSmoother() (defaults)": MaskSmoother,
    "MaskSmoother(0.25, 4, 16)": lambda: MaskSmoother(0.25, 4, 16),
    "MaskSmoother(0.1, 8, 32)": lambda: MaskSmoother(0.1, 8, 32),
    "One Euro (0.05, 0.01)": lambda: OneEuro(0.05, 0.01),
    "One Euro (0.03, 0.02)": lambda: OneEuro(0.03, 0.02),
    "One Euro (0.05, 0.05)": lambda: OneEuro(0.05, 0.05),
}


def subject_positions(frames: int, size: int) -> list[float]:
    """The subject's centre x per frame: a quarter of the clip at rest, half moving, a quarter at rest."""
    rest = frames // 4
    start, end = 0.27 * size, 0.73 * size
    moving = frames - 2 * rest
    return [start] * rest + [start + (end - start) * (i + 1) / moving for i in range(moving)] + [end] * rest


def render_clip(frames: int, size: int, seed: int) -> list[np.ndarray]:
    """Clean RGB uint8 frames: a checked ellipse (anti-aliased edge) over a static wavy texture."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:size, 0:size].astype(np.float32)
    background = np.stack([128 + 60 * np.sin(x / 7 + c) * np.cos(y / 11 - c) for c in range(3)], -1)
    background = np.clip(background + rng.normal(0, 20, background.shape), 0, 255)
    subject = np.stack([200 + 40 * np.sign(np.sin(x / 5)), 60 + 30 * np.sign(np.sin(y / 5)), 90 + 0 * x], -1)
    return [_over(background, subject, _ellipse_coverage(size, cx)) for cx in subject_positions(frames, size)]


def _ellipse_coverage(size: int, cx: float, cy: float | None = None, scale: float = 1.0) -> np.ndarray:
    """float32 (size, size) share of each pixel inside the subject's ellipse (4x4 supersampling)."""
    supersample = 4
    cy = size / 2 if cy is None else cy
    y, x = np.mgrid[0 : size * supersample, 0 : size * supersample].astype(np.float32) / supersample
    inside = ((x - cx) / (0.18 * size * scale)) ** 2 + ((y - cy) / (0.27 * size * scale)) ** 2 <= 1
    return inside.reshape(size, supersample, size, supersample).mean(axis=(1, 3), dtype=np.float32)


def _over(background: np.ndarray, subject: np.ndarray, coverage: np.ndarray) -> np.ndarray:
    blend = background * (1 - coverage[..., None]) + subject * coverage[..., None]
    return np.clip(blend + 0.5, 0, 255).astype(np.uint8)


def wobbling_mattes(frames: int, size: int, wobble: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(truth, observed) uint8 (N, H, W) without a model: the subject's own anti-aliased matte, and
    that matte as a trained network's flicker looks: the edge shifted by `wobble` px (std) and the
    size by wobble / 100 of it, fresh every frame, plus 2 levels of noise in the edge band."""
    rng = np.random.default_rng(seed)
    truth, observed = [], []
    for cx in subject_positions(frames, size):
        truth.append(np.rint(255 * _ellipse_coverage(size, cx)))
        cx, cy = cx + rng.normal(0, wobble), size / 2 + rng.normal(0, wobble)
        matte = 255 * _ellipse_coverage(size, cx, cy, 1 + rng.normal(0, wobble / 100))
        band = (matte > 0) & (matte < 255)
        observed.append(np.clip(np.rint(matte + band * rng.normal(0, 2, matte.shape)), 0, 255))
    return np.stack(truth).astype(np.uint8), np.stack(observed).astype(np.uint8)


def degrade(clean: list[np.ndarray], noise: float, jpeg_quality: int | None, seed: int) -> list[np.ndarray]:
    """Fresh Gaussian sensor noise on every frame, then optionally a JPEG round trip."""
    from PIL import Image

    rng = np.random.default_rng(seed)
    noisy = []
    for frame in clean:
        frame = np.clip(frame + rng.normal(0, noise, frame.shape) + 0.5, 0, 255).astype(np.uint8)
        if jpeg_quality is not None:
            buffer = io.BytesIO()
            Image.fromarray(frame).save(buffer, "JPEG", quality=jpeg_quality)
            frame = np.asarray(Image.open(buffer).convert("RGB"))
        noisy.append(frame)
    return noisy


def model_masks(remover, frames: list[np.ndarray], chunk: int = 8) -> np.ndarray:
    """uint8 (N, H, W): the masks `rmbg remove --mask-only` writes (the model card's 8-bit alpha)."""
    masks = []
    for start in range(0, len(frames), chunk):
        rendered = remover.remove_backgrounds(frames[start : start + chunk], mask_only=True)
        masks += [np.asarray(image) for image in rendered]
    return np.stack(masks)


def smoothed(make_filter: Callable[[], Filter], masks: np.ndarray) -> np.ndarray:
    smoother = make_filter()  # one per clip
    return np.stack([smoother(alpha) for alpha in masks])


def flicker_metrics(alpha: np.ndarray, truth: np.ndarray, large: int) -> dict:
    """The figures of the module docstring, in levels of 255."""
    alpha, truth = alpha.astype(np.int16), truth.astype(np.int16)
    truth_step = np.abs(np.diff(truth, axis=0))
    static = truth_step == 0
    error = np.abs(alpha - truth)
    return {
        "flicker": float(np.abs(np.diff(alpha, axis=0))[static].mean()),
        "error_changing": float(error[1:][~static].mean()),
        "error_large": float(error[1:][truth_step >= large].mean()),
        "error_all": float(error.mean()),
    }


def cost_ms(make_filter: Callable[[], Filter], runs: int) -> float:
    """Median ms per 1920x1080 frame (noisy masks, after the first frame)."""
    rng = np.random.default_rng(0)
    base = rng.integers(0, 256, (1080, 1920), dtype=np.uint8)
    frames = [np.clip(base + rng.integers(-40, 41, base.shape), 0, 255).astype(np.uint8) for _ in range(4)]
    smoother = make_filter()
    smoother(base)
    times = []
    for index in range(runs):
        start = time.perf_counter()
        smoother(frames[index % len(frames)])
        times.append(time.perf_counter() - start)
    return statistics.median(times) * 1e3


def export_fixture(folder: Path, resolution: int) -> Path:
    from gpu_check import fixture_checkpoint

    from rmbg_export.export_run import ExportOptions, run_export

    options = ExportOptions(
        source=str(fixture_checkpoint("swin_v1_t", folder)), output=folder / "model", height=resolution,
        width=resolution, max_batch=4, precision="fp32", patch_order="legacy", verify=False, onnx_only=True,
    )  # fmt: skip
    run_export(options, log=lambda line: print(line, file=sys.stderr))
    return folder / "model"


def measure(model: Path, args) -> list[dict]:
    from rmbg_runtime import Remover

    clean = render_clip(args.frames, args.size, args.seed)
    scenarios = {
        "clean": None,
        f"sensor noise {args.noise:g}": (args.noise, None),
        f"sensor noise {args.noise:g} + JPEG q{args.jpeg_quality}": (args.noise, args.jpeg_quality),
    }
    rows = []
    with Remover(model, "onnxruntime-cpu", precision="fp32") as remover:
        truth = model_masks(remover, clean)
        costs = {name: cost_ms(make, args.cost_runs) for name, make in CANDIDATES.items()}
        for index, (scenario, degradation) in enumerate(scenarios.items()):
            frames = clean if degradation is None else degrade(clean, *degradation, seed=args.seed + index)
            masks = truth if degradation is None else model_masks(remover, frames)
            for name, make in CANDIDATES.items():
                figures = flicker_metrics(smoothed(make, masks), truth, args.large)
                rows.append({"scenario": scenario, "filter": name, **figures, "ms_1080p": costs[name]})
            print(f"{scenario}: done", file=sys.stderr, flush=True)
    truth, masks = wobbling_mattes(args.frames, args.size, args.wobble, args.seed)
    for name, make in CANDIDATES.items():
        figures = flicker_metrics(smoothed(make, masks), truth, args.large)
        rows.append({"scenario": f"no model: edge wobble {args.wobble:g} px", "filter": name, **figures,
                     "ms_1080p": costs[name]})  # fmt: skip
    return rows


def table(rows: list[dict]) -> str:
    shown = [
        {**row, **{k: f"{row[k]:.2f}" for k in ("flicker", "error_changing", "error_large", "error_all")},
         "ms_1080p": f"{row['ms_1080p']:.1f}"}
        for row in rows
    ]  # fmt: skip
    columns = [
        ("scenario", "scenario"), ("filter", "filter"), ("flicker (truth static)", "flicker"),
        ("error where truth changes", "error_changing"), ("error where it changes >= large", "error_large"),
        ("error everywhere", "error_all"), ("ms per 1080p frame", "ms_1080p"),
    ]  # fmt: skip
    return markdown_table(shown, columns)


def main() -> None:
    formatter = argparse.RawDescriptionHelpFormatter
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=formatter)
    parser.add_argument("--model", type=Path, help="an export folder (default: fixture weights, exported)")
    parser.add_argument("--resolution", type=int, default=256, help="of the fixture export")
    parser.add_argument("--frames", type=int, default=48)
    parser.add_argument("--size", type=int, default=256, help="frame width and height")
    parser.add_argument("--noise", type=float, default=6.0, help="sensor noise, std in levels of 255")
    parser.add_argument("--jpeg-quality", type=int, default=75)
    parser.add_argument("--wobble", type=float, default=0.25, help="px: edge jitter of the no-model matte")
    parser.add_argument("--large", type=int, default=8, help="levels: a 'large' change of the truth")
    parser.add_argument("--cost-runs", type=int, default=20)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=Path("flicker"))
    args = parser.parse_args()
    print(cpu_line(), flush=True)
    with tempfile.TemporaryDirectory(prefix="flicker-") as tmp:
        model = args.model or export_fixture(Path(tmp), args.resolution)
        rows = measure(model, args)
    text = (
        f"{cpu_line()}\n\n{args.frames} frames of {args.size}x{args.size}, fixture weights unless --model; "
        f"levels of 255; large = a truth change of at least {args.large}; load average (1 min) after the run "
        f"{os.getloadavg()[0]:.1f} (the ms column is the one that depends on it).\n\n{table(rows)}\n"
    )
    args.out.mkdir(parents=True, exist_ok=True)
    report = {"machine": machine(), "cpu": cpu_line(), "args": {k: str(v) for k, v in vars(args).items()}}
    (args.out / "flicker.json").write_text(json.dumps({**report, "rows": rows}, indent=2) + "\n")
    (args.out / "flicker.md").write_text(text)
    print(text)


if __name__ == "__main__":
    main()
