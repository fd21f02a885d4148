"""rmbg_runtime.temporal.MaskSmoother on synthetic alpha sequences (no model): noise in a static matte
is averaged, steps and moving edges are followed without lag beyond the stated bounds."""

from __future__ import annotations

import math

import numpy as np
import pytest

from rmbg_runtime.temporal import DEFAULT_MIN_WEIGHT, DEFAULT_MOTION, DEFAULT_NOISE, MaskSmoother

HEIGHT, WIDTH = 48, 96
# A step below `motion` leaves at most max_lag levels after its own frame (8 at the defaults), which
# shrink by (1 - min_weight) a frame until under half a level: then the rounded output is the new
# value. Counting the step's frame: 11 frames at the defaults.
MAX_LAG = MaskSmoother().max_lag
SETTLE_FRAMES = 1 + math.ceil(math.log(0.5 / MAX_LAG) / math.log(1 - DEFAULT_MIN_WEIGHT))


def run(smoother: MaskSmoother, frames) -> np.ndarray:
    return np.stack([smoother(frame) for frame in frames]).astype(np.int16)


def horizontal_ramp() -> np.ndarray:
    """A soft matte: 0 at the left, 255 at the right."""
    return np.broadcast_to(np.linspace(0, 255, WIDTH), (HEIGHT, WIDTH))


def noisy_static_clip(frames: int, sigma: float, seed: int = 0) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    matte = horizontal_ramp()
    noisy = [matte + rng.normal(0, sigma, matte.shape) for _ in range(frames)]
    return [np.clip(np.rint(frame), 0, 255).astype(np.uint8) for frame in noisy]


def soft_edge(position: float, width: float) -> np.ndarray:
    """255 left of `position`, 0 right of it, a linear ramp `width` pixels wide between."""
    x = np.arange(WIDTH, dtype=np.float64)
    row = np.clip((position - x) / width + 0.5, 0, 1) * 255
    return np.broadcast_to(np.rint(row), (HEIGHT, WIDTH)).astype(np.uint8)


def mean_frame_change(alphas: np.ndarray) -> float:
    return float(np.abs(np.diff(alphas, axis=0)).mean())


def test_flicker_of_a_static_noisy_matte_falls_at_least_fourfold():
    frames = noisy_static_clip(80, sigma=3)
    raw = np.stack(frames).astype(np.int16)
    smoothed = run(MaskSmoother(), frames)
    warm = slice(10, None)  # past the first frames, which start from one noisy frame
    assert mean_frame_change(smoothed[warm]) * 4 <= mean_frame_change(raw[warm])
    # ... and it is closer to the true matte, not just stiller
    truth = horizontal_ramp()
    assert np.abs(smoothed[warm] - truth).mean() * 2 <= np.abs(raw[warm] - truth).mean()


@pytest.mark.parametrize("step", [DEFAULT_MOTION, 100, 255, -DEFAULT_MOTION, -255])
def test_a_large_step_passes_through_in_its_own_frame(step):
    before = 0 if step > 0 else 255
    frames = [np.full((HEIGHT, WIDTH), before, np.uint8)] * 5 + [
        np.full((HEIGHT, WIDTH), before + step, np.uint8)
    ]
    smoothed = run(MaskSmoother(), frames)
    assert (smoothed[-1] == before + step).all()


@pytest.mark.parametrize("step", [1, 3, DEFAULT_NOISE, 12, 20, DEFAULT_MOTION - 1, -5, -20])
def test_a_small_step_is_reached_within_the_stated_frames(step):
    frames = [np.full((HEIGHT, WIDTH), 100, np.uint8)] * 5 + [
        np.full((HEIGHT, WIDTH), 100 + step, np.uint8)
    ] * 20
    smoothed = run(MaskSmoother(), frames)[5:]
    # monotone towards the new value, never past it, there by SETTLE_FRAMES and from then on
    assert (np.sign(step) * np.diff(smoothed, axis=0) >= 0).all()
    assert (np.abs(smoothed - 100) <= abs(step)).all()
    assert (smoothed[SETTLE_FRAMES - 1 :] == 100 + step).all(), smoothed[:, 0, 0]


def test_a_fast_moving_edge_has_no_lag():
    """Every pixel the edge crosses changes by >= `motion` levels a frame: output = input."""
    frames = [soft_edge(10 + 2 * t, width=8) for t in range(30)]  # 2 px/frame over 8 px: 64 levels
    smoothed = run(MaskSmoother(), frames)
    assert (smoothed == np.stack(frames)).all()


def test_a_slow_soft_edge_lags_at_most_max_lag_and_settles():
    """16 levels a frame (below `motion`): the lag stays within max_lag (8 levels) and is gone
    SETTLE_FRAMES after the edge stops."""
    frames = [soft_edge(20 + 0.5 * t, width=8) for t in range(60)] + [soft_edge(50, width=8)] * SETTLE_FRAMES
    raw = np.stack(frames).astype(np.int16)
    smoothed = run(MaskSmoother(), frames)
    assert np.abs(smoothed - raw).max() <= MAX_LAG
    assert (smoothed[-1] == raw[-1]).all()


@pytest.mark.parametrize("settings", [(), (0.25, 4, 16), (0.1, 8, 32), (0.5, 20, 30), (0.05, 0, 64)])
def test_output_is_never_further_than_max_lag_from_the_frame(settings):
    """Any sequence (random walks and jumps of every size): |output - input| <= max_lag + rounding,
    and the bound is tight (reached here within a level), so it is not a loose promise."""
    smoother = MaskSmoother(*settings)
    rng = np.random.default_rng(3)
    walk = rng.integers(-40, 41, (60, HEIGHT, WIDTH)).cumsum(axis=0) + 128
    jumps = rng.integers(0, 256, (60, HEIGHT, WIDTH))
    frames = np.clip(np.concatenate([walk, jumps, walk[::-1]]), 0, 255).astype(np.uint8)
    smoothed = run(smoother, frames)
    bound = math.floor(smoother.max_lag + 0.5)
    assert bound - 1 <= np.abs(smoothed - frames).max() <= bound


def test_the_defaults_lag_at_most_8_levels():
    assert MAX_LAG == 8 and SETTLE_FRAMES == 11


def test_uint8_in_and_out_shape_kept_first_frame_unchanged():
    first, second = noisy_static_clip(2, sigma=3)
    smoother = MaskSmoother()
    out = smoother(first)
    assert out.dtype == np.uint8 and out.shape == first.shape
    assert (out == first).all() and out is not first
    out = smoother(second)
    assert out.dtype == np.uint8 and out.shape == second.shape


def test_output_stays_within_the_inputs_seen():
    """A mix of uint8 values: never outside [0, 255], never past the inputs' range at a pixel."""
    rng = np.random.default_rng(1)
    frames = [rng.integers(0, 256, (HEIGHT, WIDTH), dtype=np.uint8) for _ in range(20)]
    smoothed = run(MaskSmoother(), frames)
    raw = np.stack(frames).astype(np.int16)
    assert (smoothed >= np.minimum.accumulate(raw)).all() and (smoothed <= np.maximum.accumulate(raw)).all()


def test_an_unchanging_mask_comes_out_exactly():
    matte = horizontal_ramp().astype(np.uint8)
    smoothed = run(MaskSmoother(), [matte] * 10)
    assert (smoothed == matte).all()


def test_state_is_per_instance():
    """Two clips through two smoothers, interleaved, give what each gives alone."""
    clip_a = noisy_static_clip(12, sigma=4, seed=2)
    clip_b = [soft_edge(10 + 3 * t, width=6) for t in range(12)]
    alone_a, alone_b = run(MaskSmoother(), clip_a), run(MaskSmoother(), clip_b)
    smoother_a, smoother_b = MaskSmoother(), MaskSmoother()
    interleaved = [(smoother_a(a), smoother_b(b)) for a, b in zip(clip_a, clip_b, strict=True)]
    assert (np.stack([a for a, _ in interleaved]) == alone_a).all()
    assert (np.stack([b for _, b in interleaved]) == alone_b).all()


@pytest.mark.parametrize(
    "frame, message",
    [
        (np.zeros((HEIGHT, WIDTH), np.float32), "uint8 \\(H, W\\)"),
        (np.zeros((HEIGHT, WIDTH, 1), np.uint8), "uint8 \\(H, W\\)"),
        (np.zeros((HEIGHT + 1, WIDTH), np.uint8), "one MaskSmoother per clip"),
    ],
)
def test_wrong_frames_are_refused(frame, message):
    smoother = MaskSmoother()
    smoother(np.zeros((HEIGHT, WIDTH), np.uint8))
    with pytest.raises(ValueError, match=message):
        smoother(frame)


@pytest.mark.parametrize("settings", [{"min_weight": 0}, {"min_weight": 1.5}, {"noise": 32, "motion": 8}])
def test_wrong_settings_are_refused(settings):
    with pytest.raises(ValueError):
        MaskSmoother(**settings)
