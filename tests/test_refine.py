"""Foreground refinement against the reference formula with OpenCV's box blur, and its effect on
the synthetic set's soft edges, where the true foreground colours are known."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
from PIL import Image
from synthetic import composite, soft_band

from rmbg_runtime.refine import box_blur, estimate_foreground, refine_foreground


def reference_pass(image, foreground, background, alpha, size):
    """The blur-fusion step written directly with cv2.blur (OpenCV's default border)."""
    blurred_alpha = cv2.blur(alpha, (size, size))[..., None]
    blurred_fg = cv2.blur(foreground * alpha[..., None], (size, size)) / (blurred_alpha + 1e-5)
    blurred_bg = cv2.blur(background * (1 - alpha[..., None]), (size, size)) / ((1 - blurred_alpha) + 1e-5)
    a = alpha[..., None]
    return np.clip(blurred_fg + a * (image - a * blurred_fg - (1 - a) * blurred_bg), 0, 1), blurred_bg


def reference_foreground(image, alpha, radius=90):
    first, blurred_bg = reference_pass(image, image, image, alpha, radius)
    return reference_pass(image, first, blurred_bg, alpha, 6)[0]


@pytest.mark.parametrize("size", [1, 6, 7, 90])
def test_box_blur_is_opencvs(size):
    values = np.random.default_rng(size).random((120, 97, 3)).astype(np.float32)
    np.testing.assert_allclose(box_blur(values, size), cv2.blur(values, (size, size)), atol=2e-5)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_matches_the_reference_formula(seed):
    sample = composite(seed)
    image = sample.image.astype(np.float32) / 255
    ours = estimate_foreground(image, sample.alpha)
    reference = reference_foreground(image, sample.alpha)
    # Where alpha is 0 in 8 bits the colour is invisible and both divide rounding noise by 1e-5.
    visible = sample.alpha_u8 > 0
    assert np.abs(ours - reference)[visible].max() <= 1 / 255


def edge_error(colours: np.ndarray, sample) -> float:
    band = soft_band(sample.alpha)
    return float(np.abs(colours[band] - sample.foreground[band]).mean())


def test_refinement_removes_background_bleed_at_soft_edges():
    errors = []
    for seed in range(4):
        sample = composite(seed)
        cut = refine_foreground(Image.fromarray(sample.image), sample.alpha_u8)
        refined = np.asarray(cut, np.float32)[..., :3] / 255
        assert np.array_equal(np.asarray(cut)[..., 3], sample.alpha_u8)  # alpha untouched
        plain = sample.image.astype(np.float32) / 255  # an unrefined cut-out keeps the photo's colours
        errors.append((edge_error(plain, sample), edge_error(refined, sample)))
    print(
        "soft-edge foreground colour MAE, unrefined -> refined:", [f"{a:.3f} -> {b:.3f}" for a, b in errors]
    )
    assert all(refined < 0.6 * plain for plain, refined in errors), errors
