"""`rmbg eval` and `rmbg compare` when images or masks fail: each costs its own row, the report is
still written (per_image.csv with the error, worst.png), every failure is one line, exit 1."""

from __future__ import annotations

import csv
import json
import subprocess
import sys
from pathlib import Path

import pytest
from PIL import Image
from synthetic import composite

from rmbg_runtime.evaluation.run import evaluate, remover_predict

pytestmark = pytest.mark.slow  # real exports and subprocesses

REPO_ROOT = Path(__file__).resolve().parents[1]
RMBG = [sys.executable, "-c", "from rmbg_runtime.cli import main; main()"]
DAMAGED = (Path(__file__).parent / "data" / "fuzz" / "png_truncated_ihdr.png").read_bytes()


def rmbg(*args) -> subprocess.CompletedProcess:
    return subprocess.run(
        [*RMBG, *map(str, args)], capture_output=True, text=True, cwd=REPO_ROOT, timeout=600
    )


def dataset(root: Path, count: int, bad_images=(), bad_masks=()) -> Path:
    (root / "im").mkdir(parents=True)
    (root / "gt").mkdir()
    for i in range(count):
        sample = composite(i)
        image, mask = root / "im" / f"s{i}.png", root / "gt" / f"s{i}.png"
        Image.fromarray(sample.image).save(image)
        Image.fromarray(sample.alpha_u8, "L").save(mask)
        if i in bad_images:
            image.write_bytes(DAMAGED)
        if i in bad_masks:
            mask.write_bytes(DAMAGED)
    return root


def error_lines(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if line.startswith("error:")]


def test_one_bad_image_in_a_batch_of_eight_costs_one_row(exported_model_dir, tmp_path):
    from rmbg_runtime import Remover
    from rmbg_runtime.evaluation.pairs import pair_by_stem

    root = dataset(tmp_path / "set", 8, bad_images={3})
    pairs, _ = pair_by_stem(root / "im", root / "gt")
    remover = Remover(exported_model_dir, "onnxruntime-cpu")
    summary, rows = evaluate(pairs, remover_predict(remover), batch=8, hce=False)
    assert summary["images"] == 7 and summary["failed"] == 1
    assert [r["image"] for r in rows if "error" in r] == ["s3.png"]


def test_eval_with_a_bad_image_and_a_bad_mask_writes_the_report_and_exits_1(exported_model_dir, tmp_path):
    root = dataset(tmp_path / "set", 5, bad_images={1}, bad_masks={4})
    out = tmp_path / "report"
    result = rmbg(
        "eval", "-m", exported_model_dir, root / "im", "--masks", root / "gt", "--out", out, "--no-hce"
    )
    assert result.returncode == 1, result.stderr
    assert "Traceback" not in result.stderr
    summary = json.loads((out / "summary.json").read_text())
    assert summary["images"] == 3 and summary["failed"] == 2
    rows = list(csv.DictReader((out / "per_image.csv").open()))
    failed = {r["image"]: r["error"] for r in rows if r["error"]}
    assert set(failed) == {"s1.png", "s4.png"} and "the mask" in failed["s4.png"]
    assert all(r["MAE"] for r in rows if not r["error"])
    assert (out / "worst.png").is_file()
    errors = error_lines(result.stderr)
    assert len(errors) == 2 and "s1.png" in errors[0] and "s4.png" in errors[1]
    assert "2 of 5 images failed" in result.stderr


def test_compare_with_a_bad_image_reports_it_and_fails_the_gate(exported_model_dir, tmp_path):
    root = dataset(tmp_path / "set", 3, bad_images={0})
    out = tmp_path / "cmp"
    args = ("compare", exported_model_dir, exported_model_dir, root / "im", "--out", out)
    result = rmbg(*args, "--backend-a", "onnxruntime-cpu", "--backend-b", "onnxruntime-cpu", "--max-mae", "1")
    assert result.returncode == 1, result.stderr
    assert "Traceback" not in result.stderr
    rows = list(csv.DictReader((out / "per_image.csv").open()))
    assert [bool(r["error"]) for r in rows] == [True, False, False]
    assert (out / "worst.png").is_file() and json.loads((out / "summary.json").read_text())["failed"] == 1
    errors = error_lines(result.stderr)
    assert len(errors) == 1 and "s0.png could not be decoded" in errors[0]
    # progress: one line per step in a log, never "1/3 images2/3 images"
    progress = [line for line in result.stderr.splitlines() if line.endswith(" images")]
    assert progress == ["1/3 images", "2/3 images", "3/3 images"]


def test_compare_over_an_empty_folder_says_so(exported_model_dir, tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    result = rmbg("compare", exported_model_dir, exported_model_dir, empty, "--out", tmp_path / "o")
    assert result.returncode == 1
    assert result.stderr.strip().splitlines()[-1] == (
        "error: no image could be compared: the folder holds no image file."
    )


def test_eval_where_every_image_fails_names_the_first_error(exported_model_dir, tmp_path):
    root = dataset(tmp_path / "set", 2, bad_images={0, 1})
    result = rmbg(
        "eval", "-m", exported_model_dir, root / "im", "--masks", root / "gt", "--out", tmp_path / "r"
    )
    assert result.returncode == 1
    assert len(error_lines(result.stderr)) == 3  # two images, then the run's own sentence
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith("error: no image could be evaluated: all 2 failed, the first with:")
    assert "see the errors above" not in result.stderr
