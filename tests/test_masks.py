"""One mask comparator for the export's parity gates and `rmbg compare`: probabilities and 8-bit
masks of the same image give the same figures."""

from __future__ import annotations

import numpy as np

from rmbg_runtime.evaluation.differences import mask_differences
from rmbg_runtime.masks import mask_agreement


def test_uint8_masks_and_their_probabilities_agree_the_same_way():
    rng = np.random.default_rng(0)
    a, b = rng.integers(0, 256, (32, 48), dtype=np.uint8), rng.integers(0, 256, (32, 48), dtype=np.uint8)
    on_levels, on_probabilities = mask_agreement(a, b), mask_agreement(a / 255.0, b / 255.0)
    assert on_levels == on_probabilities
    differences = mask_differences(a, b)
    diff = np.abs(a.astype(int) - b.astype(int))
    assert differences["max_abs_diff"] == diff.max()
    assert np.isclose(differences["mae"], diff.mean() / 255)
    fg_a, fg_b = a > 127, b > 127
    assert np.isclose(differences["iou_at_half"], (fg_a & fg_b).sum() / (fg_a | fg_b).sum())


def test_a_nan_candidate_disagrees_everywhere():
    reference = np.zeros((4, 4), np.float32)
    agreement = mask_agreement(reference, np.full((4, 4), np.nan, np.float32))
    assert not agreement.finite and agreement.iou_at_half == 0.0
