"""Where two masks of the same image differ (e.g. an fp16 engine against the fp32 graph)."""

from __future__ import annotations

import numpy as np

from ..masks import mask_agreement

GRAY_LEVEL_STEP = 8


def mask_differences(a: np.ndarray, b: np.ndarray) -> dict[str, float]:
    """uint8 (H, W) masks -> MAE (in [0, 1]), max |diff| (gray levels), IoU at 0.5 (masks.py's
    comparator), and the share of pixels differing by more than 8 gray levels."""
    agreement = mask_agreement(a, b)
    diff = np.abs(a.astype(np.int16) - b.astype(np.int16))
    return {
        "mae": agreement.mask_mae,
        "max_abs_diff": round(agreement.max_abs_diff * 255),
        "iou_at_half": agreement.iou_at_half,
        "share_over_8": float((diff > GRAY_LEVEL_STEP).mean()),
    }
