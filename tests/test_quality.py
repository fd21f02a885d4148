"""`rmbg eval` and `rmbg compare` on the synthetic set, against PySODMetrics computed directly."""

from __future__ import annotations

import csv
import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import py_sod_metrics as sod
import pytest
from PIL import Image
from synthetic import composite

from rmbg_runtime.evaluation.pairs import pair_by_stem
from rmbg_runtime.evaluation.run import evaluate, read_mask

pytestmark = pytest.mark.slow  # whole-dataset runs: minutes on 2 cores; CI runs them

REPO_ROOT = Path(__file__).resolve().parents[1]
RMBG = [sys.executable, "-c", "from rmbg_runtime.cli import main; main()"]


@pytest.fixture(scope="module")
def dataset(tmp_path_factory) -> Path:
    """DIS5K's layout: <set>/im/*.jpg and <set>/gt/*.png."""
    root = tmp_path_factory.mktemp("synthetic") / "SYN-TE"
    (root / "im").mkdir(parents=True)
    (root / "gt").mkdir()
    for seed in range(4):
        sample = composite(seed)
        Image.fromarray(sample.image).save(root / "im" / f"sample{seed}.png")
        Image.fromarray(sample.alpha_u8, "L").save(root / "gt" / f"sample{seed}.png")
    Image.fromarray(composite(9).image).save(root / "im" / "no_mask.png")
    return root


def rmbg(*args) -> subprocess.CompletedProcess:
    return subprocess.run(
        [*RMBG, *map(str, args)], capture_output=True, text=True, cwd=REPO_ROOT, timeout=600
    )


def pysodmetrics_directly(pairs: list[tuple[Path, Path]]) -> dict[str, float]:
    fm, wfm, sm, em, mae, hce = (
        sod.Fmeasure(), sod.WeightedFmeasure(), sod.Smeasure(), sod.Emeasure(), sod.MAE(),
        sod.HumanCorrectionEffortMeasure(),
    )  # fmt: skip
    for pred, gt in pairs:
        p, g = read_mask(pred), read_mask(gt)
        for metric in (fm, wfm, sm, em, mae, hce):
            metric.step(pred=p, gt=g)
    return {
        "maxFm": fm.get_results()["fm"]["curve"].max(),
        "wFm": wfm.get_results()["wfm"],
        "MAE": mae.get_results()["mae"],
        "Sm": sm.get_results()["sm"],
        "meanEm": em.get_results()["em"]["curve"].mean(),
        "HCE": hce.get_results()["hce"],
    }


def test_eval_equals_pysodmetrics_on_its_own_predictions(exported_model_dir, dataset, tmp_path):
    out, saved = tmp_path / "report", tmp_path / "preds"
    result = rmbg(
        "eval", "-m", exported_model_dir, dataset / "im", "--masks", dataset / "gt", "--out", out,
        "--save-masks", saved, "--worst", "2",
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    summary = json.loads((out / "summary.json").read_text())
    assert summary["images"] == 4 and summary["images_without_mask"] == 1
    predictions = saved / exported_model_dir.name / "SYN-TE"  # BiRefNet's layout
    pairs = [(predictions / f"sample{i}.png", dataset / "gt" / f"sample{i}.png") for i in range(4)]
    for key, value in pysodmetrics_directly(pairs).items():
        assert abs(summary[key] - value) <= 1e-6, (key, summary[key], value)
    rows = list(csv.DictReader((out / "per_image.csv").open()))
    assert [r["image"] for r in rows] == [f"sample{i}.png" for i in range(4)]
    assert Image.open(out / "worst.png").size[1] > 2 * 160
    assert "maxFm" in (out / "summary.md").read_text() and "report in" in result.stdout


def test_perfect_prediction_scores_mae_0_and_sm_1(dataset):
    pairs, unmatched = pair_by_stem(dataset / "im", dataset / "gt")
    assert unmatched == ["no_mask"]
    # DIS ground truth is binarised at > 128, so the perfect prediction is the binary mask.
    masks = {image: np.where(read_mask(mask) > 128, 255, 0).astype(np.uint8) for image, mask in pairs}
    summary, rows = evaluate(pairs, lambda paths: [masks[p] for p in paths], batch=3)
    assert (
        summary["MAE"] == 0 and summary["Sm"] == pytest.approx(1.0) and summary["maxFm"] == pytest.approx(1.0)
    )
    assert summary["HCE"] == 0 and all(r["MAE"] == 0 for r in rows)


def test_compare_two_copies_of_one_export_is_zero(exported_model_dir, dataset, tmp_path):
    copy = shutil.copytree(exported_model_dir, tmp_path / "copy")
    out = tmp_path / "same"
    result = rmbg(
        "compare", exported_model_dir, copy, dataset / "im", "--out", out, "--backend-a", "onnxruntime-cpu",
        "--backend-b", "onnxruntime-cpu", "--max-mae", "0",
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    summary = json.loads((out / "summary.json").read_text())
    assert summary["images"] == 5 and summary["worst_mae"] == 0 and summary["max_abs_diff"] == 0
    assert summary["min_iou_at_half"] == 1.0


def test_compare_fp16_against_fp32_reports_the_fp16_checks_order(exported_model_dir, dataset, tmp_path):
    out = tmp_path / "fp16"
    args = ("compare", exported_model_dir, exported_model_dir, dataset / "im", "--out", out)
    result = rmbg(*args, "--precision-a", "fp32", "--precision-b", "fp16", "--backend-b", "onnxruntime-cpu")
    assert result.returncode == 0, result.stderr
    summary = json.loads((out / "summary.json").read_text())
    export_check = json.loads((exported_model_dir / "model.json").read_text())["parity"][
        "fp16_onnx_vs_fp32_onnx"
    ]
    print("compare fp16 vs fp32:", summary["mean_mae"], "export check:", export_check["mask_mae"])
    assert 0 < summary["mean_mae"] <= 2e-3 and summary["min_iou_at_half"] >= 0.99
    gate = rmbg(*args, "--precision-b", "fp16", "--max-mae", "1e-9", "--worst", "0")
    assert gate.returncode == 1 and "exceeds --max-mae" in gate.stderr
