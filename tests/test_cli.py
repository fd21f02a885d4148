"""`rmbg remove` (and eval's --save-masks) on real files: the job plan never loses a user's file, output
names mean one thing, and every mistake is one sentence before any work.

Plan tests call rmbg_runtime.jobs directly; the rest run the real `rmbg` command in a subprocess on
the session's real export (ONNX Runtime CPU)."""

from __future__ import annotations

import hashlib
import io
import os
import pty
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from rmbg_runtime.errors import UsageError
from rmbg_runtime.files import is_complete_image
from rmbg_runtime.jobs import check_outputs, expand_inputs, plan_jobs
from rmbg_runtime.progress import ProgressLine as Progress

REPO_ROOT = Path(__file__).resolve().parents[1]
RMBG = [sys.executable, "-c", "from rmbg_runtime.cli import main; main()"]
slow = pytest.mark.slow  # each runs the rmbg command (a model load per run)


def photo(width: int, height: int, seed: int) -> Image.Image:
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:height, 0:width]
    base = np.stack([x * 255 / width, y * 255 / height, np.full_like(x, 128.0)], -1)
    return Image.fromarray(np.clip(base + rng.normal(0, 20, base.shape), 0, 255).astype(np.uint8))


def rmbg(*args, stdin: bytes | None = None, stdout=subprocess.PIPE) -> subprocess.CompletedProcess:
    return subprocess.run(
        [*RMBG, *map(str, args)],
        stdout=stdout,
        stderr=subprocess.PIPE,
        input=stdin,
        cwd=REPO_ROOT,
        timeout=300,
    )


def digests(root: Path) -> dict[str, str]:
    """Every file below `root` (not following links) and its sha256: the user's files, byte for byte."""
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file() and not p.is_symlink()
    }


def files_below(root: Path) -> list[str]:
    return sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.is_file())


def images_processed(stderr: bytes) -> int:
    """N from the final 'N/N images' progress line."""
    last = [line for line in stderr.decode().splitlines() if " images, " in line][-1]
    return int(last.split("/")[0])


@pytest.fixture()
def photos(tmp_path) -> Path:
    """a.jpg and a.png (one stem, two files) and sub/b.png."""
    root = tmp_path / "photos"
    (root / "sub").mkdir(parents=True)
    photo(60, 40, seed=1).save(root / "a.jpg")
    photo(50, 40, seed=2).save(root / "a.png")
    photo(40, 60, seed=3).save(root / "sub" / "b.png")
    return root


@pytest.fixture()
def model(exported_model_dir) -> Path:
    return exported_model_dir


# ---- issue 22: no output overwrites another output or an input -----------------------------------


@slow
def test_two_inputs_with_one_output_name_are_refused_before_any_work(model, photos, tmp_path):
    before = digests(photos)
    out = tmp_path / "out"
    refused = rmbg("remove", photos, "-m", model, "-o", out)
    stderr = refused.stderr.decode()
    assert refused.returncode == 2, stderr
    assert "a.jpg and" in stderr and "a.png would both be written to" in stderr and "--keep-suffix" in stderr
    assert stderr.count("\n") == 1 and "Traceback" not in stderr  # one sentence
    assert not out.exists()
    kept = rmbg("remove", photos, "-m", model, "-o", out, "--keep-suffix")
    assert kept.returncode == 0, kept.stderr
    assert files_below(out) == ["a.jpg.png", "a.png.png", "sub/b.png.png"]  # no two inputs share one
    assert Image.open(out / "a.jpg.png").size == (60, 40) and Image.open(out / "a.png.png").size == (50, 40)
    assert digests(photos) == before


@slow
def test_output_folder_equal_to_the_input_folder_never_overwrites_an_input(model, photos):
    before = digests(photos)
    refused = rmbg("remove", photos, "-m", model, "-o", photos)
    stderr = refused.stderr.decode()
    assert refused.returncode == 2 and "over an input" in stderr and "Traceback" not in stderr, stderr
    assert digests(photos) == before  # byte-identical, and nothing added
    single = rmbg("remove", photos / "a.png", "-m", model, "-o", photos / "a.png")
    assert single.returncode == 2 and b"over an input" in single.stderr
    assert digests(photos) == before


@slow
@pytest.mark.parametrize("as_glob", [False, True], ids=["folder", "glob"])
def test_rerun_into_an_output_folder_inside_the_input_reads_the_same_inputs(model, photos, as_glob):
    (photos / "a.png").rename(photos / "c.png")  # no stem clash: plain output names
    source = f"{photos}/**/*.png" if as_glob else photos
    out = photos / "out"
    args = ("remove", source, "-m", model, "-o", out)
    first, second = rmbg(*args), rmbg(*args)
    assert first.returncode == 0 and second.returncode == 0, second.stderr
    assert images_processed(first.stderr) == images_processed(second.stderr) == (2 if as_glob else 3)
    assert b"skipped" in second.stderr and b"(the output folder)" in second.stderr
    expected = ["c.png", "sub/b.png"] if as_glob else ["a.png", "c.png", "sub/b.png"]
    assert files_below(out) == expected  # never out/out/...


@slow
def test_skip_existing_redoes_a_cut_short_output_and_never_reads_partial_leftovers(model, photos):
    (photos / "a.png").unlink()
    out = photos / "out"
    args = ("remove", photos, "-m", model, "-o", out)
    assert rmbg(*args).returncode == 0
    whole = (out / "a.png").read_bytes()
    (out / "a.png").write_bytes(whole[: len(whole) // 2])  # a crash before the data reached the disk
    (out / ".sub.png.partial-99999").write_bytes(whole[:100])  # a write killed before its rename
    untouched = (out / "sub" / "b.png").stat().st_mtime_ns
    rerun = rmbg(*args, "--skip-existing")
    assert rerun.returncode == 0, rerun.stderr
    assert (out / "a.png").read_bytes() == whole  # the cut-short output was redone
    assert (out / "sub" / "b.png").stat().st_mtime_ns == untouched
    assert files_below(out) == [".sub.png.partial-99999", "a.png", "sub/b.png"]  # the leftover: no input


def test_complete_image_check(tmp_path):
    for fmt in ("PNG", "WEBP"):
        buffer = io.BytesIO()
        photo(20, 10, seed=4).save(buffer, fmt)
        whole, cut = tmp_path / f"whole.{fmt}", tmp_path / f"cut.{fmt}"
        whole.write_bytes(buffer.getvalue())
        cut.write_bytes(buffer.getvalue()[:-1])
        assert is_complete_image(whole) and not is_complete_image(cut)
    assert not is_complete_image(tmp_path / "missing.png")


def test_check_outputs_names_the_clashes_and_the_way_out(tmp_path):
    a, b, mask = tmp_path / "a.jpg", tmp_path / "a.png", tmp_path / "masks" / "a.png"
    check_outputs([(a, tmp_path / "out" / "a.png")], "pick another folder")  # no clash: no error
    with pytest.raises(UsageError, match=r"a\.jpg and .*a\.png would both be written to .*; pick another"):
        check_outputs([(a, tmp_path / "x.png"), (b, tmp_path / "x.png")], "pick another folder")
    with pytest.raises(UsageError, match="over an input"):
        check_outputs([(a, mask)], "pick another folder", other_inputs=[mask])


@slow
def test_eval_save_masks_never_overwrites_the_ground_truth(model, tmp_path):
    pytest.importorskip("py_sod_metrics")
    images, masks = tmp_path / "SET" / "im", tmp_path / model.name / "SET"
    images.mkdir(parents=True)
    masks.mkdir(parents=True)
    for seed in range(2):
        photo(40, 30, seed=seed).save(images / f"s{seed}.jpg")
        Image.fromarray(np.full((30, 40), 255 * seed, np.uint8), "L").save(masks / f"s{seed}.png")
    before = digests(masks)
    # BiRefNet's layout puts predictions in SAVE_MASKS/<model folder>/<test set>: the masks' folder here
    result = rmbg(
        "eval", "-m", model, images, "--masks", masks, "--save-masks", tmp_path, "--out", tmp_path / "r"
    )
    assert result.returncode == 2 and b"over an input" in result.stderr and b"--save-masks" in result.stderr
    assert digests(masks) == before


# ---- issue 23.3: globs and several folders keep the tree ---------------------------------------


@pytest.fixture()
def tree(tmp_path) -> Path:
    root = tmp_path / "tree"
    for i, sub in enumerate(("x", "y")):
        (root / sub).mkdir(parents=True)
        photo(30 + 10 * i, 20, seed=10 + i).save(root / sub / "a.jpg")
    return root


def test_globs_and_several_folders_keep_the_tree_in_the_plan(tree, tmp_path):
    out = tmp_path / "out"
    by_glob = plan_jobs([f"{tree}/**/*.jpg"], str(out))
    assert [j.target for j in by_glob.jobs] == [out / "x" / "a.png", out / "y" / "a.png"]
    by_folders = plan_jobs([str(tree / "x"), str(tree / "y")], str(out))
    assert [j.target for j in by_folders.jobs] == [out / "x" / "a.png", out / "y" / "a.png"]
    (tmp_path / "other" / "x").mkdir(parents=True)
    photo(20, 20, seed=5).save(tmp_path / "other" / "x" / "a.jpg")
    with pytest.raises(UsageError, match="would both be written to"):  # two folders named x
        plan_jobs([str(tree / "x"), str(tmp_path / "other" / "x")], str(out))


@slow
def test_glob_and_two_folders_write_one_output_per_input(model, tree, tmp_path):
    for name, inputs in (("g", [f"{tree}/**/*.jpg"]), ("f", [tree / "x", tree / "y"])):
        result = rmbg("remove", *inputs, "-m", model, "-o", tmp_path / name)
        assert result.returncode == 0, result.stderr
        assert files_below(tmp_path / name) == ["x/a.png", "y/a.png"]
        assert Image.open(tmp_path / name / "y" / "a.png").size == (40, 20)


# ---- issue 23.4: symbolic links are followed, loops reported ------------------------------------


@slow
def test_symlinked_folders_and_files_are_followed_and_loops_reported(model, tmp_path):
    elsewhere, root = tmp_path / "elsewhere", tmp_path / "photos"
    elsewhere.mkdir()
    (root / "real").mkdir(parents=True)
    photo(30, 20, seed=20).save(root / "real" / "a.jpg")
    photo(30, 20, seed=21).save(elsewhere / "c.jpg")
    (root / "linked").symlink_to(elsewhere, target_is_directory=True)
    (root / "linked_file.jpg").symlink_to(elsewhere / "c.jpg")
    (root / "real" / "loop").symlink_to(root, target_is_directory=True)
    (root / "broken.jpg").symlink_to(tmp_path / "gone.jpg")
    result = rmbg("remove", root, "-m", model, "-o", tmp_path / "out")
    stderr = result.stderr.decode()
    assert result.returncode == 0, stderr
    assert files_below(tmp_path / "out") == ["linked/c.png", "linked_file.png", "real/a.png"]
    assert (
        "note: skipped" in stderr and "loop (a link to" in stderr and "broken.jpg (a broken link)" in stderr
    )


# ---- issue 23.6 / 23.7: output names -------------------------------------------------------------


def encoded(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, "PNG")
    return buffer.getvalue()


@slow
def test_stdin_output_must_be_an_image_file_and_is_checked_before_the_model(model, tmp_path):
    data = encoded(photo(30, 20, seed=30))
    (tmp_path / "existing").mkdir()
    for output in (tmp_path / "newdir", tmp_path / "existing"):  # --model is not even read
        result = rmbg("remove", "-", "-m", tmp_path / "no-model", "-o", f"{output}/", stdin=data)
        assert result.returncode == 2 and b"must name a .png or .webp file" in result.stderr, result.stderr
    jpg = rmbg("remove", "-", "-m", model, "-o", tmp_path / "out.jpg", stdin=data)
    assert jpg.returncode == 2 and b"rmbg writes PNG or WebP" in jpg.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["existing"]
    webp = rmbg("remove", "-", "-m", model, "-o", tmp_path / "out.webp", stdin=data)
    assert webp.returncode == 0, webp.stderr
    assert Image.open(tmp_path / "out.webp").format == "WEBP"


@slow
def test_output_names_that_contradict_or_are_unknown_are_refused(model, photos, tmp_path):
    one = (photos / "a.jpg", "-m", model)
    for args, message in (
        (("-o", tmp_path / "o.jpg"), b"names a .jpg file"),
        (("-o", tmp_path / "o.tif"), b"names a .tif file"),
        (("-o", tmp_path / "f.png", "--format", "webp"), b"names a png file but --format is webp"),
        (("-o", tmp_path / "f.webp", "--format", "png"), b"names a webp file but --format is png"),
    ):
        result = rmbg("remove", *one, *args)
        assert result.returncode == 2 and message in result.stderr and b"Traceback" not in result.stderr
    several = rmbg("remove", photos, "-m", model, "-o", tmp_path / "x.png")
    assert several.returncode == 2 and b"names one file" in several.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["photos"]  # no o.jpg/ nor x.png/ folder
    webp = rmbg("remove", *one, "-o", tmp_path / "f.webp")
    assert webp.returncode == 0 and Image.open(tmp_path / "f.webp").format == "WEBP"
    png = rmbg("remove", *one, "-o", tmp_path / "g.png", "--format", "png")
    assert png.returncode == 0 and Image.open(tmp_path / "g.png").format == "PNG"


# ---- issue 23.8: mask-only ------------------------------------------------------------------------


@slow
def test_mask_only_refuses_options_it_would_ignore_and_writes_grey_png(model, photos, tmp_path):
    one = (photos / "a.jpg", "-m", model, "--mask-only")
    for extra, message in (
        (("--background", "white", "-o", tmp_path / "o"), b"--background would be ignored"),
        (("--refine", "-o", tmp_path / "o"), b"--refine would be ignored"),
        (("--format", "webp", "-o", tmp_path / "o"), b"WebP has no single-channel mode"),
        (("-o", tmp_path / "m.webp"), b"WebP has no single-channel mode"),
    ):
        result = rmbg("remove", *one, *extra)
        assert result.returncode == 2 and message in result.stderr, result.stderr
    assert not (tmp_path / "o").exists()
    result = rmbg("remove", *one, "-o", tmp_path / "o")
    assert result.returncode == 0 and Image.open(tmp_path / "o" / "a.png").mode == "L"


# ---- issue 23.9 / 23.13: one sentence, the right exit code ----------------------------------------


@slow
def test_range_and_usage_errors_exit_2_with_one_sentence(model, photos, tmp_path):
    one = (photos / "a.jpg", "-m", model, "-o", tmp_path / "o")
    cases = [
        (("--threads", "-2"), b"'--threads': -2 is not in the range x>=1"),
        (("--threads", "0"), b"'--threads': 0 is not in the range"),
        (("--batch-size", "-1"), b"'--batch-size': -1 is not in the range"),
        (("--batch-size", "0"), b"'--batch-size': 0 is not in the range"),
        (("--max-pixels", "0"), b"'--max-pixels': 0 is not in the range"),
        (("--background", "notacolour"), b"not a colour name"),
        (("--backend", "gpu"), b"'gpu' is not one of"),
    ]
    for extra, message in cases:
        result = rmbg("remove", *one, *extra)
        assert result.returncode == 2 and message in result.stderr, (extra, result.stderr)
        assert b"Traceback" not in result.stderr and b"--max-batch" not in result.stderr
    missing = rmbg("remove", photos / "nope.jpg", "-m", model, "-o", tmp_path / "o")
    assert missing.returncode == 2 and b"nope.jpg does not exist" in missing.stderr
    no_match = rmbg("remove", f"{tmp_path}/*.gif", "-m", model, "-o", tmp_path / "o")
    assert no_match.returncode == 2 and b"matches no image or video file" in no_match.stderr
    no_output = rmbg("remove", photos / "a.jpg", "-m", model)
    assert no_output.returncode == 2 and b"Missing option" in no_output.stderr
    assert not (tmp_path / "o").exists()


@slow
def test_existing_file_as_output_folder_and_empty_folder_are_refused(model, photos, tmp_path):
    existing = tmp_path / "existing.txt"
    existing.write_text("mine")
    result = rmbg("remove", photos, "-m", model, "-o", existing)
    assert result.returncode == 2 and b"is an existing file, not a folder" in result.stderr
    assert existing.read_text() == "mine"
    (tmp_path / "empty").mkdir()
    empty = rmbg("remove", tmp_path / "empty", "-m", model, "-o", tmp_path / "o")
    assert empty.returncode == 2 and b"holds no image or video file" in empty.stderr


@slow
def test_a_glob_skips_non_images_as_a_folder_does(model, tmp_path):
    mixed = tmp_path / "mixed"
    mixed.mkdir()
    photo(30, 20, seed=40).save(mixed / "a.jpg")
    (mixed / "notes.txt").write_text("not an image")
    result = rmbg("remove", f"{mixed}/*", "-m", model, "-o", tmp_path / "out")
    assert result.returncode == 0, result.stderr
    assert files_below(tmp_path / "out") == ["a.png"]


@slow
def test_standard_output_full_or_closed_is_one_sentence(model, photos):
    one = (photos / "a.jpg", "-m", model, "-o", "-")
    with open("/dev/full", "wb") as full:
        result = rmbg("remove", *one, stdout=full)
    assert result.returncode == 1 and b"cannot write to standard output (No space left" in result.stderr
    assert b"Traceback" not in result.stderr and b"Exception ignored" not in result.stderr
    closed = subprocess.run(
        [*RMBG, "remove", *map(str, one)],
        stderr=subprocess.PIPE,
        cwd=REPO_ROOT,
        timeout=300,
        preexec_fn=lambda: os.close(1),
    )
    assert closed.returncode == 2 and b"standard output is closed" in closed.stderr, closed.stderr
    reader_gone = subprocess.Popen(
        [*RMBG, "remove", *map(str, one)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, cwd=REPO_ROOT
    )
    reader_gone.stdout.close()  # like `| head -c 10` exiting early
    _, stderr = reader_gone.communicate(timeout=300)
    assert reader_gone.returncode == 1 and b"its reader closed it" in stderr and b"Traceback" not in stderr


# ---- issue 23.14: progress lines -----------------------------------------------------------------


@slow
def test_progress_is_plain_lines_off_a_terminal_and_quiet_means_errors_only(model, photos, tmp_path):
    (photos / "sub" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n broken")
    plain = rmbg("remove", photos, "-m", model, "-o", tmp_path / "a", "--keep-suffix")
    stderr = plain.stderr.decode()
    assert plain.returncode == 1 and "\r" not in stderr and "4/4 images" in stderr
    assert stderr.startswith("error: ") and "broken.png" in stderr and "\n\n" not in stderr
    quiet = rmbg("remove", photos, "-m", model, "-o", tmp_path / "b", "--keep-suffix", "--quiet")
    lines = quiet.stderr.decode().splitlines()
    assert quiet.returncode == 1 and lines[0].startswith("error: ") and "broken.png" in lines[0]
    assert lines[1:] == ["1 of 4 images failed."]


def read_all(leader: int) -> bytes:
    """Everything written to a closed pseudo-terminal (one read may return only part of it)."""
    chunks = []
    while True:
        try:
            chunk = os.read(leader, 4096)
        except OSError:  # EIO: the follower side is closed and drained
            break
        if not chunk:
            break
        chunks.append(chunk)
    return b"".join(chunks)


def test_progress_on_a_terminal_breaks_its_line_before_an_error():
    leader, follower = pty.openpty()
    with os.fdopen(follower, "w") as terminal:
        progress = Progress(2, enabled=True, stream=terminal)
        progress.error("first")  # no status line yet: no blank line
        progress.update(1)
        progress.error("second")
        progress.update(1)
        progress.finish()
    text = read_all(leader).decode().replace("\r\n", "\n")
    os.close(leader)
    assert text.startswith("error: first\n\r1/2 images")
    assert "s left \nerror: second\n\r2/2 images" in text and text.endswith("s left \n")


# ---- interrupts ----------------------------------------------------------------------------------


def wait_until_blocked_on_fifo(proc: subprocess.Popen, timeout: float = 120) -> None:
    """Until the process waits in open() for a FIFO's reader (Linux: wchan 'wait_for_partner')."""
    wchan = Path(f"/proc/{proc.pid}/wchan")
    deadline = time.monotonic() + timeout
    while proc.poll() is None and time.monotonic() < deadline:
        if wchan.read_text().strip() == "wait_for_partner":
            return
        time.sleep(0.05)
    raise AssertionError(f"the process never blocked on the FIFO (exit code {proc.poll()})")


def stop_cli_while_writing(model: Path, source: Path, out: Path, signum: int):
    """Start `rmbg remove`, make its output's temporary file a FIFO so that the write blocks with the
    partial file in place, then send `signum`. Returns (exit code, stderr, the FIFO's path)."""
    proc = subprocess.Popen(
        [*RMBG, "remove", str(source), "-m", str(model), "-o", str(out), "--quiet"],
        stderr=subprocess.PIPE,
        cwd=REPO_ROOT,
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )
    out.mkdir()
    fifo = out / f".{source.stem}.png.partial-{proc.pid}"  # the name write_atomically picks
    os.mkfifo(fifo)
    wait_until_blocked_on_fifo(proc)
    proc.send_signal(signum)
    _, stderr = proc.communicate(timeout=60)
    return proc.returncode, stderr.decode(), fifo


@slow
@pytest.mark.parametrize(
    ("signum", "code"), [(signal.SIGINT, 130), (signal.SIGTERM, 143)], ids=["SIGINT", "SIGTERM"]
)
def test_interrupted_while_writing_leaves_no_partial(model, photos, tmp_path, signum, code):
    out = tmp_path / "out"
    returncode, stderr, fifo = stop_cli_while_writing(model, photos / "a.jpg", out, signum)
    assert returncode == code and "interrupted" in stderr, stderr
    assert not fifo.exists() and list(out.iterdir()) == []


# ---- carried over from test_remover.py -----------------------------------------------------------


@slow
def test_folder_recursive_reports_failures_and_continues(model, photos, tmp_path):
    (photos / "sub" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n broken")
    (photos / "notes.txt").write_text("not an image")
    (photos / "a.png").unlink()
    out = tmp_path / "out"
    result = rmbg("remove", photos, "--model", model, "--output", out, "--batch-size", "2")
    stderr = result.stderr.decode()
    assert result.returncode == 1
    assert "broken.png" in stderr and "1 of 3 images failed" in stderr and "img/s" in stderr
    assert files_below(out) == ["a.png", "sub/b.png"]
    assert Image.open(out / "a.png").mode == "RGBA"


@slow
def test_glob_webp_and_skip_existing(model, photos, tmp_path):
    out = tmp_path / "cut"
    args = ("remove", f"{photos}/**/*.png", f"{photos}/*.jpg", "-m", model, "-o", out, "--keep-suffix")
    first = rmbg(*args, "--format", "webp")
    assert first.returncode == 0, first.stderr
    assert files_below(out) == ["a.jpg.webp", "a.png.webp", "sub/b.png.webp"]
    assert Image.open(out / "a.jpg.webp").mode == "RGBA"
    before = (out / "a.jpg.webp").stat().st_mtime_ns
    second = rmbg(*args, "--format", "webp", "--skip-existing")
    assert second.returncode == 0 and b"nothing to do" in second.stderr
    assert (out / "a.jpg.webp").stat().st_mtime_ns == before


@slow
def test_stdin_to_stdout_with_background(model):
    result = rmbg(
        "remove", "-", "-m", model, "-o", "-", "--background", "white", stdin=encoded(photo(30, 20, 8))
    )
    assert result.returncode == 0, result.stderr
    image = Image.open(io.BytesIO(result.stdout))
    assert image.mode == "RGB" and image.size == (30, 20)


@slow
def test_failed_write_is_reported_and_leaves_nothing(model, photos, tmp_path):
    out = tmp_path / "out"
    (out / "a.png").mkdir(parents=True)  # the target name is taken by a folder: the rename fails
    result = rmbg("remove", photos / "a.jpg", "-m", model, "-o", out)
    assert result.returncode == 1 and b"cannot write" in result.stderr and b"Traceback" not in result.stderr
    assert [p.name for p in out.iterdir()] == ["a.png"] and (out / "a.png").is_dir()


@slow
def test_missing_model_is_one_sentence(photos, tmp_path):
    result = rmbg("remove", photos / "a.jpg", "-m", tmp_path, "-o", tmp_path / "o")
    assert result.returncode == 1 and b"holds no model.json" in result.stderr
    assert b"Traceback" not in result.stderr


def test_expand_inputs_leaves_out_the_output_folder_only_inside_a_root(photos):
    inside = expand_inputs([str(photos)], photos / "sub")
    assert [str(f.relative) for f in inside.files] == ["a.jpg", "a.png"]
    same = expand_inputs([str(photos)], photos)  # cannot leave out everything: the clash check guards
    assert len(same.files) == 3
