"""Where two masks of the same image differ (e.g. an fp16 engine against the fp32 graph)."""

from __future__ import annotations

import numpy as np

GRAY_LEVEL_STEP = 8


def mask_differences(a: np.ndarray, b: np.ndarray) -> dict[str, float]:
    """uint8 (H, W) masks -> MAE (in [0, 1]), max |diff| (gray levels), IoU at 0.5, and the share of
    pixels differing by more than 8 gray levels."""
    diff = np.abs(a.astype(np.int16) - b.astype(np.int16))
    fg_a, fg_b = a > 127, b > 127
    union = np.logical_or(fg_a, fg_b).sum()
    return {
        "mae": float(diff.mean() / 255),
        "max_abs_diff": int(diff.max()),
        "iou_at_half": float(np.logical_and(fg_a, fg_b).sum() / union) if union else 1.0,
        "share_over_8": float((diff > GRAY_LEVEL_STEP).mean()),
    }
