"""How far two masks of the same image are apart: the one comparator of the export's parity gates
(fp16 graph, int8 graph, TensorRT engine against fp32) and of `rmbg compare`."""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np


@dataclass(frozen=True)
class MaskAgreement:
    mask_mae: float  # mean |difference|, in [0, 1]
    max_abs_diff: float  # in [0, 1]
    iou_at_half: float  # foreground (> 0.5) intersection over union
    finite: bool

    def as_dict(self) -> dict:
        return asdict(self)


def as_unit_interval(mask: np.ndarray) -> np.ndarray:
    """float64 in [0, 1]: uint8 masks are divided by 255, probabilities kept."""
    mask = np.asarray(mask)
    return mask / 255.0 if mask.dtype == np.uint8 else mask.astype(np.float64)


def mask_agreement(reference: np.ndarray, candidate: np.ndarray) -> MaskAgreement:
    """Probabilities or uint8 masks. A non-finite candidate pixel counts as a disagreement in every
    figure (NaN > 0.5 is False, so without this an all-NaN mask over an empty reference would score
    IoU 1)."""
    reference, candidate = as_unit_interval(reference), as_unit_interval(candidate)
    bad = ~np.isfinite(candidate)
    finite = not bool(bad.any())
    diff = np.abs(reference - candidate)
    ref_fg, cand_fg = reference > 0.5, candidate > 0.5
    union = (ref_fg | cand_fg | bad).sum()
    iou = float((ref_fg & cand_fg).sum() / union) if union else 1.0
    return MaskAgreement(float(diff.mean()), float(diff.max()), iou, finite)
