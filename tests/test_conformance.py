"""Our BiRefNet against the official code's recorded outputs (../shared/conformance)."""

from __future__ import annotations

import hashlib

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from conftest import ARCH_FIXTURES, fill, fixture_model, load_fixture

from rmbg_export.model import create_model

MAX_DIFF, MEAN_DIFF = 1e-3, 1e-4


@pytest.mark.parametrize("name", ARCH_FIXTURES)
def test_state_dict_matches_official_manifest(name):
    fx = load_fixture(name)
    state = create_model(fx["backbone"], fx["patch_order"]).state_dict()
    assert list(state) == list(fx["state_dict"]), "key names or their order differ"
    for key, (shape, dtype) in fx["state_dict"].items():
        assert list(state[key].shape) == shape, key
        assert str(state[key].dtype).removeprefix("torch.") == dtype, key


@pytest.mark.parametrize("name", ARCH_FIXTURES)
def test_integer_buffers_match_recorded_hashes(name):
    fx = load_fixture(name)
    state = create_model(fx["backbone"], fx["patch_order"]).state_dict()
    assert fx["int_buffer_sha256"]
    for key, digest in fx["int_buffer_sha256"].items():
        assert hashlib.sha256(state[key].contiguous().numpy().tobytes()).hexdigest() == digest, key


def assert_close_to_fixture(logits: np.ndarray, fx: dict) -> None:
    strided = logits[:, :, ::16, ::16]
    pooled = F.avg_pool2d(torch.from_numpy(logits), 32).numpy()
    for got, key in ((strided, "strided_s16"), (pooled, "pooled_k32")):
        diff = np.abs(got - np.asarray(fx[key], dtype=np.float64))
        assert diff.max() <= MAX_DIFF and diff.mean() <= MEAN_DIFF, (key, diff.max(), diff.mean())


@pytest.mark.parametrize("name", ARCH_FIXTURES)
def test_logits_match_official(name):
    fx = load_fixture(name)
    model = fixture_model(name)
    x = torch.from_numpy(fill.conformance_input(tuple(fx["input_shape"])))
    with torch.inference_mode():
        logits = model(x).numpy()
    assert list(logits.shape) == fx["output_shape"]
    assert_close_to_fixture(logits, fx)
    h, w = logits.shape[2:]
    corners = [logits[0, 0, 0, 0], logits[0, 0, h // 2, w // 3], logits[-1, 0, -1, -1]]
    np.testing.assert_allclose(corners, fx["corner_values"], atol=MAX_DIFF)


def test_patch_orders_differ_as_recorded():
    """The wrong order must be detectably wrong (~0.2 max): guards against an order-blind model."""
    fx = load_fixture("swin_v1_t_legacy_b1_512x512")
    model = fixture_model("swin_v1_t_legacy_b1_512x512")
    x = torch.from_numpy(fill.conformance_input(tuple(fx["input_shape"])))
    model.decoder.patch_order = "einops"
    try:
        with torch.inference_mode():
            logits = model(x).numpy()
    finally:
        model.decoder.patch_order = "legacy"
    diff = np.abs(logits[:, :, ::16, ::16] - np.asarray(fx["strided_s16"]))
    assert diff.max() > 0.01


def test_batch_size_is_not_baked_in(swin_t_legacy):
    x = torch.from_numpy(fill.conformance_input((3, 3, 64, 96), "batch"))
    with torch.inference_mode():
        batched = swin_t_legacy(x)
        single = torch.cat([swin_t_legacy(x[i : i + 1]) for i in range(3)])
    assert batched.shape == (3, 1, 64, 96)
    torch.testing.assert_close(batched, single, atol=1e-4, rtol=1e-4)
