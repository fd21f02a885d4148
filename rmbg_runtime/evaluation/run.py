"""`rmbg eval` and `rmbg compare`: predictions through `Remover`, figures, report folder."""

from __future__ import annotations

import heapq
import itertools
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from ..errors import RmbgError
from ..images import load_image
from ..jobs import check_outputs
from .differences import mask_differences
from .metrics import DisMetrics, to_gt_size
from .pairs import images_in, pair_by_stem
from .report import write_report
from .sheets import contact_sheet, error_map

Predict = Callable[[list[Path]], list[np.ndarray]]  # images -> uint8 (H, W) masks at their size


@dataclass
class Progress:
    """Where a run stands: `report(done, total)` after each image, `error(message)` for each image
    that failed (the run goes on; its row in per_image.csv holds the message)."""

    total: int
    report: Callable[[int, int], None] = lambda _done, _total: None
    error: Callable[[str], None] = lambda _message: None
    done: int = 0

    def step(self, count: int = 1) -> None:
        self.done += count
        self.report(self.done, self.total)


def tracker(
    total: int, report: Callable[[int, int], None] | None, on_error: Callable[[str], None] | None
) -> Progress:
    progress = Progress(total)
    progress.report = report or progress.report
    progress.error = on_error or progress.error
    return progress


def remover_predict(remover) -> Predict:
    def predict(paths: list[Path]) -> list[np.ndarray]:
        return [np.asarray(m) for m in remover.remove_backgrounds(paths, mask_only=True)]

    return predict


class WorstImages:
    """The `count` images with the largest error and their two masks, kept while the run goes, so
    the contact sheet needs no second prediction and memory stays bounded by `count`."""

    def __init__(self, count: int) -> None:
        self.count, self._heap, self._order = count, [], itertools.count()

    def offer(self, error: float, path: Path, a: np.ndarray, b: np.ndarray) -> None:
        if self.count:
            heapq.heappush(self._heap, (error, next(self._order), path, a, b))
            if len(self._heap) > self.count:
                heapq.heappop(self._heap)

    def sheet(self, titles: list[str], label: str) -> Image.Image:
        """One row per kept image, worst first: the image, mask a, mask b, |a - b|."""
        rows = [
            (
                f"{path.name}  {label} {error:.5f}",
                [load_image(path), Image.fromarray(a, "L"), Image.fromarray(b, "L"), error_map(a, b)],
            )
            for error, _, path, a, b in sorted(self._heap, key=lambda item: item[0], reverse=True)
        ]
        return contact_sheet(rows, titles)


def chunks(items: list, size: int) -> list[list]:
    return [items[i : i + size] for i in range(0, len(items), size)]


def read_mask(path: Path) -> np.ndarray:
    """uint8 (H, W): decoded as images are (every Pillow mode, 16-bit rescaled), then grey."""
    try:
        return np.asarray(load_image(path).convert("L"))
    except RmbgError as err:
        raise RmbgError(f"the mask {err}") from None


def predict_each(predict: Predict, paths: list[Path]) -> list[np.ndarray | RmbgError]:
    """A batch's masks; when the batch fails, each image alone, so that one bad image costs its own
    row and not its batch's."""
    try:
        return list(predict(paths))
    except RmbgError as err:
        if len(paths) == 1:
            return [err]
    return [predict_each(predict, [path])[0] for path in paths]


def evaluate(
    pairs: list[tuple[Path, Path]],
    predict: Predict,
    *,
    batch: int = 1,
    hce: bool = True,
    save_masks: Path | None = None,
    progress: Progress | None = None,
    worst: WorstImages | None = None,
) -> tuple[dict, list[dict]]:
    """Dataset summary and per-image rows; an image whose prediction or ground-truth mask fails costs
    its own row (with the error) and the run goes on. `worst` keeps the images with the largest MAE
    for the contact sheet."""
    metrics, rows = DisMetrics(hce), []
    progress = progress or Progress(len(pairs))
    start = time.perf_counter()
    for chunk in chunks(pairs, batch):
        for (image, mask), pred in zip(chunk, predict_each(predict, [i for i, _ in chunk]), strict=True):
            try:
                if isinstance(pred, RmbgError):
                    raise pred
                gt = read_mask(mask)
            except RmbgError as err:
                rows.append({"image": image.name, "error": str(err)})
                progress.error(str(err))
                continue
            pred = to_gt_size(pred, gt)
            figures = metrics.step(pred, gt)
            rows.append({"image": image.name, **figures})
            if worst is not None:
                worst.offer(figures["MAE"], image, gt, pred)
            if save_masks is not None:
                save_masks.mkdir(parents=True, exist_ok=True)
                Image.fromarray(pred, "L").save(save_masks / f"{image.stem}.png")
        progress.step(len(chunk))
    evaluated = [r for r in rows if "error" not in r]
    if not evaluated:
        raise RmbgError(nothing_done("evaluated", rows))
    summary = metrics.summary() | {
        "images": len(evaluated),
        "failed": len(rows) - len(evaluated),
        "seconds_per_image": round((time.perf_counter() - start) / len(pairs), 3),
    }
    return summary, rows


def nothing_done(verb: str, rows: list[dict]) -> str:
    if not rows:
        return f"no image could be {verb}: the folder holds no image file."
    return f"no image could be {verb}: all {len(rows)} failed, the first with: {rows[0]['error']}"


def birefnet_layout(save_masks: Path, model_dir: Path, images: Path) -> Path:
    """BiRefNet's eval reads predictions from PRED_ROOT/<method>/<testset>/<name>.png; a DIS5K test
    set keeps its images in <testset>/im."""
    testset = images.parent.name if images.name in ("im", "images") else images.name
    return save_masks / model_dir.resolve().name / testset


def run_eval(
    remover, images: Path, masks: Path, out: Path, *, worst: int = 8, hce: bool = True,
    save_masks: Path | None = None, progress: Callable[[int, int], None] | None = None,
    on_error: Callable[[str], None] | None = None,
) -> dict:  # fmt: skip
    pairs, unmatched = pair_by_stem(images, masks)
    target = birefnet_layout(save_masks, Path(remover.spec.folder), images) if save_masks else None
    if target is not None:
        check_outputs(
            [(image, target / f"{image.stem}.png") for image, _ in pairs],
            "choose a --save-masks folder outside the images and masks",
            other_inputs=[mask for _, mask in pairs],
        )
    kept = WorstImages(worst)
    summary, rows = evaluate(
        pairs, remover_predict(remover), batch=remover.backend.max_batch, hce=hce, save_masks=target,
        progress=tracker(len(pairs), progress, on_error), worst=kept,
    )  # fmt: skip
    summary |= {
        "model": str(remover.spec.folder),
        "backend": remover.backend_name,
        "images_without_mask": len(unmatched),
    }
    sheet = kept.sheet(["image", "ground truth", "prediction", "|error|"], "MAE") if worst else None
    write_report(out, f"rmbg eval: {images}", summary, rows, sheet)
    return summary


def run_compare(
    remover_a, remover_b, images: Path, out: Path, *, worst: int = 8,
    progress: Callable[[int, int], None] | None = None, on_error: Callable[[str], None] | None = None,
) -> dict:  # fmt: skip
    files = sorted(images_in(images).values()) if images.is_dir() else [images]
    predict_a, predict_b = remover_predict(remover_a), remover_predict(remover_b)
    steps = tracker(len(files), progress, on_error)
    rows, kept = [], WorstImages(worst)
    for path in files:
        try:
            a, b = predict_a([path])[0], predict_b([path])[0]
        except RmbgError as err:
            rows.append({"image": path.name, "error": str(err)})
            steps.error(str(err))
        else:
            rows.append({"image": path.name, **mask_differences(a, b)})
            kept.offer(rows[-1]["mae"], path, a, b)
        steps.step()
    compared = [r for r in rows if "error" not in r]
    if not compared:
        raise RmbgError(nothing_done("compared", rows))
    summary = {
        "images": len(compared),
        "failed": len(rows) - len(compared),
        "mean_mae": float(np.mean([r["mae"] for r in compared])),
        "worst_mae": max(r["mae"] for r in compared),
        "max_abs_diff": max(r["max_abs_diff"] for r in compared),
        "mean_iou_at_half": float(np.mean([r["iou_at_half"] for r in compared])),
        "min_iou_at_half": min(r["iou_at_half"] for r in compared),
        "mean_share_over_8": float(np.mean([r["share_over_8"] for r in compared])),
        "a": f"{remover_a.spec.folder} ({remover_a.backend_name})",
        "b": f"{remover_b.spec.folder} ({remover_b.backend_name})",
    }
    sheet = kept.sheet(["image", "A", "B", "|A - B|"], "MAE") if worst else None
    write_report(out, f"rmbg compare: {images}", summary, rows, sheet)
    return summary
