"""Video through `Remover.remove_background_video` and `rmbg remove` (issue 19, the streaming run):
every frame in order with its timestamps, at the clip's size and rate; each frame's alpha is the
Remover's mask of the same decoded frame (within the codec's loss); the audio survives; a failure or
Ctrl-C leaves no output; bad inputs are one sentence each and the rest of a run goes on.

Real files throughout: synthetic clips made with PyAV (tests/video_clips.py), the session's real
export on ONNX Runtime CPU, outputs decoded with PyAV (libvpx-vp9 for WebM's alpha), and the real
`rmbg` command in a subprocess."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

av = pytest.importorskip("av")

from video_clips import TONE_HZ, dominant_hz, make_audio_only, make_clip, make_corrupt_clip, read_back  # noqa: E402

from rmbg_runtime.errors import UsageError  # noqa: E402
from rmbg_runtime.jobs import plan_jobs  # noqa: E402
from rmbg_runtime.progress import ProgressLine  # noqa: E402
from rmbg_runtime.remover import Remover  # noqa: E402
from rmbg_runtime.temporal import MaskSmoother  # noqa: E402
from rmbg_runtime.video.io import INSTALL, VideoError, open_video  # noqa: E402

REPO_ROOT = Path(__file__).resolve().parents[1]
RMBG = [sys.executable, "-c", "from rmbg_runtime.cli import main; main()"]
slow = pytest.mark.slow  # each runs a real export's network on every frame of a clip

FRAMES = 6  # ~1 s of inference a frame on the 2-core CI machine
# The alpha of each kind against the Remover's mask of the same decoded frame, in 8-bit levels (max
# |diff|, mean |diff|). PNG frames are exact; ProRes 4444's 16-bit alpha is exact to the rounding (read
# back as 8 bits, levels 128-254 come back one higher: mean 0.9 on these mid-grey masks, worst 1);
# VP9 (crf 20) codes the alpha plane lossily: on the fixture export's textured masks mean 1.5, worst 9
# measured (on smooth shapes tests/test_video_io.py measures mean 0.02-0.15, worst 22-36 at edges);
# H.264 --mask-only (grey as limited-range luma, crf 18) likewise.
ALPHA_LOSS = {"frames": (0, 0.0), "prores": (1, 1.0), "webm": (48, 2.5), "h264": (48, 2.5)}


# ---- reading outputs back ------------------------------------------------------------------------


def audio_seconds(decoded) -> float:
    return len(decoded.audio) / decoded.audio_rate


def frame_folder(folder: Path) -> list[np.ndarray]:
    names = sorted(folder.iterdir())
    assert [p.name for p in names] == [f"frame_{i:06d}.png" for i in range(1, len(names) + 1)]
    return [np.asarray(Image.open(p)) for p in names]


def assert_alpha_close(kind: str, got: np.ndarray, want: np.ndarray) -> None:
    worst, mean = ALPHA_LOSS[kind]
    diff = np.abs(got.astype(np.int16) - want.astype(np.int16))
    assert diff.max() <= worst and diff.mean() <= mean, (kind, diff.max(), diff.mean())


# ---- fixtures ------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def remover(exported_model_dir):
    with Remover(exported_model_dir, backend="onnxruntime-cpu") as remover:
        yield remover


@pytest.fixture(scope="module")
def clips(tmp_path_factory):
    folder = tmp_path_factory.mktemp("clips")
    return {
        "audio": make_clip(folder / "audio.mp4", frames=FRAMES, audio=True),
        "vfr": make_clip(folder / "vfr.mp4", frames=FRAMES, vfr=True),
        "rotated": make_clip(folder / "rotated.mp4", frames=FRAMES, rotation=90),
    }


@pytest.fixture(scope="module")
def masks(remover, clips):
    """The Remover's 8-bit mask of each decoded frame of each clip (what remove_video must write)."""

    def of(path: Path) -> list[np.ndarray]:
        with open_video(path) as reader:
            images = [frame.image for frame in reader.frames()]
        return [np.asarray(m) for m in remover.remove_backgrounds(images, mask_only=True)]

    return {name: of(clip.path) for name, clip in clips.items()}


# ---- the Python API ------------------------------------------------------------------------------


@slow
@pytest.mark.parametrize("kind", ["webm", "prores", "frames"])
def test_each_kind_has_every_frame_in_order_with_its_times_alpha_and_audio(
    remover, clips, masks, tmp_path, kind
):
    clip = clips["audio"]
    target = tmp_path / {"webm": "out.webm", "prores": "out.mov", "frames": "frames"}[kind]
    report = remover.remove_background_video(clip.path, target)
    assert report.frames == FRAMES and report.kind == kind and report.size == (clip.width, clip.height)
    assert set(report.stage_s) == {"decode", "preprocess", "inference", "postprocess", "encode"}
    if kind == "frames":
        rgba = frame_folder(target)
    else:
        decoded = read_back(target)
        assert decoded.times_s == pytest.approx([float(p * clip.time_base) for p in clip.pts], abs=1e-3)
        assert decoded.average_rate == 25
        assert decoded.duration_s == pytest.approx(clip.duration_s, abs=0.04)  # one frame
        assert decoded.audio_codec == {"webm": "opus", "prores": "aac"}[kind]
        assert audio_seconds(decoded) == pytest.approx(clip.audio_s, abs=0.03)  # one AAC/Opus frame
        assert dominant_hz(decoded.audio, decoded.audio_rate) == pytest.approx(TONE_HZ, abs=3)
        rgba = decoded.rgba
    assert len(rgba) == FRAMES and all(f.shape == (clip.height, clip.width, 4) for f in rgba)
    for got, want in zip(rgba, masks["audio"], strict=True):
        assert_alpha_close(kind, got[..., 3], want)


@slow
def test_mp4_mask_only_is_the_grey_mask_with_the_audio_copied(remover, clips, masks, tmp_path):
    clip = clips["audio"]
    target = tmp_path / "mask.mp4"
    remover.remove_background_video(clip.path, target, mask_only=True)
    decoded = read_back(target)
    assert decoded.codec == "h264" and len(decoded.rgba) == FRAMES
    for got, want in zip(decoded.rgba, masks["audio"], strict=True):
        assert_alpha_close("h264", got[..., 0], want)
    assert decoded.audio_codec == "aac"
    assert audio_seconds(decoded) == pytest.approx(clip.audio_s, abs=0.03)


@slow
def test_variable_frame_rate_and_rotation_are_kept(remover, clips, masks, tmp_path):
    vfr = clips["vfr"]
    decoded = read_back(remover.remove_background_video(vfr.path, tmp_path / "vfr.webm").target)
    assert decoded.times_s == pytest.approx([float(p * vfr.time_base) for p in vfr.pts], abs=1e-3)
    assert len(set(np.diff(decoded.times_s).round(3))) > 2  # really variable
    for got, want in zip(decoded.rgba, masks["vfr"], strict=True):
        assert_alpha_close("webm", got[..., 3], want)

    rotated = clips["rotated"]
    report = remover.remove_background_video(rotated.path, tmp_path / "rotated.mov")
    decoded = read_back(report.target)
    assert report.size == (rotated.height, rotated.width)  # displayed upright, turned by 90 degrees
    assert (decoded.width, decoded.height) == report.size and set(decoded.rotations) == {0}
    for got, want in zip(decoded.rgba, masks["rotated"], strict=True):
        assert_alpha_close("prores", got[..., 3], want)


@slow
def test_smooth_runs_the_mask_smoother_over_the_frames_in_order(remover, clips, masks, tmp_path):
    remover.remove_background_video(clips["audio"].path, tmp_path / "smooth", smooth=True)
    smoother = MaskSmoother()
    want = [smoother(mask) for mask in masks["audio"]]
    got = [frame[..., 3] for frame in frame_folder(tmp_path / "smooth")]
    assert any(not np.array_equal(w, m) for w, m in zip(want, masks["audio"], strict=True))  # it smooths
    for g, w in zip(got, want, strict=True):
        np.testing.assert_array_equal(g, w)


@slow
def test_a_clip_damaged_halfway_fails_in_one_sentence_and_leaves_nothing(remover, tmp_path):
    broken = make_corrupt_clip(tmp_path / "broken.mp4", frames=12)
    for target in (tmp_path / "out.webm", tmp_path / "frames"):
        with pytest.raises(VideoError) as failure:
            remover.remove_background_video(broken.path, target)
        message = str(failure.value)
        assert "broken.mp4" in message and "\n" not in message and message.endswith(".")
        assert not target.exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["broken.mp4"]  # no partial file or folder


# ---- the command line ----------------------------------------------------------------------------


def rmbg(*args, timeout: float = 300) -> subprocess.CompletedProcess:
    return subprocess.run(
        [*RMBG, *map(str, args)], capture_output=True, text=True, cwd=REPO_ROOT, timeout=timeout
    )


@slow
def test_a_folder_of_images_and_videos_with_bad_videos_among_them(exported_model_dir, tmp_path):
    folder = tmp_path / "in"
    folder.mkdir()
    Image.new("RGB", (40, 30), (200, 30, 30)).save(folder / "a.png")
    good = make_clip(folder / "good.mp4", frames=4, audio=True)
    (folder / "fake.mp4").write_text("not a video at all")
    make_audio_only(folder / "sound.mp4")
    make_corrupt_clip(folder / "broken.mov", frames=8)
    out = tmp_path / "out"
    result = rmbg("remove", folder, "-m", exported_model_dir, "-o", out, "--video-format", "mov")
    assert result.returncode == 1 and "Traceback" not in result.stderr, result.stderr
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 3, result.stderr
    for name, error in zip(["broken.mov", "fake.mp4", "sound.mp4"], errors, strict=True):
        assert name in error and error.endswith("."), error
    assert "3 of 5 files failed." in result.stderr
    assert sorted(p.name for p in out.iterdir()) == ["a.png", "good.mov"]
    assert Image.open(out / "a.png").mode == "RGBA"
    assert len(read_back(out / "good.mov").rgba) == good.frames

    made = {p.name: p.stat().st_mtime_ns for p in out.iterdir()}
    again = rmbg(
        "remove", folder, "-m", exported_model_dir, "-o", out, "--video-format", "mov", "--skip-existing"
    )
    assert again.returncode == 1 and "3 of 3 files failed." in again.stderr  # only the bad ones rerun
    assert {p.name: p.stat().st_mtime_ns for p in out.iterdir()} == made


@slow
def test_one_video_writes_its_frames_into_a_named_folder_with_a_progress_line(exported_model_dir, tmp_path):
    clip = make_clip(tmp_path / "clip.mp4", frames=3)
    result = rmbg("remove", clip.path, "-m", exported_model_dir, "-o", tmp_path / "frames", "--mask-only")
    assert result.returncode == 0, result.stderr
    assert [f.shape for f in frame_folder(tmp_path / "frames")] == [(64, 96)] * 3  # grey masks
    assert "1/1 files, 0 failed; " in result.stderr and "clip.mp4: 3 frames" in result.stderr
    assert "frames/s" in result.stderr


@slow
def test_ctrl_c_mid_clip_leaves_no_output(exported_model_dir, tmp_path):
    clip = make_clip(tmp_path / "long.mp4", frames=60)
    target = tmp_path / "out.webm"
    proc = subprocess.Popen(
        [*RMBG, "remove", str(clip.path), "-m", str(exported_model_dir), "-o", str(target)],
        stderr=subprocess.PIPE,
        text=True,
        cwd=REPO_ROOT,
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )
    partial = tmp_path / f".out.webm.partial-{proc.pid}"
    deadline = time.monotonic() + 180
    while not partial.exists() and time.monotonic() < deadline:  # the writer has started
        assert proc.poll() is None, proc.stderr.read()
        time.sleep(0.1)
    assert partial.exists(), "the writer never started"
    time.sleep(2.0)  # a few frames in (about 1 frame/s here)
    proc.send_signal(signal.SIGINT)
    _, stderr = proc.communicate(timeout=60)
    assert proc.returncode == 130 and "interrupted" in stderr, stderr
    assert "Traceback" not in stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["long.mp4"]


def test_without_pyav_a_video_run_is_one_sentence_before_the_model_loads(tmp_path):
    clip = tmp_path / "clip.mp4"
    clip.write_bytes(b"never read")
    hide_av = "import sys; sys.modules['av'] = None; from rmbg_runtime.cli import main; main()"
    result = subprocess.run(
        [sys.executable, "-c", hide_av, "remove", str(clip), "-m", str(tmp_path / "no-model"), "-o",
         str(tmp_path / "out.webm")],
        capture_output=True, text=True, cwd=REPO_ROOT, timeout=60,
    )  # fmt: skip
    assert result.returncode == 1
    assert result.stderr == (f"error: videos need PyAV, which is not installed here; {INSTALL}.\n")


# ---- plans and the progress line (no model) ------------------------------------------------------


def test_video_plans_name_outputs_by_suffix_folder_and_video_format(tmp_path):
    clip, image = tmp_path / "clip.mp4", tmp_path / "a.jpg"
    for path in (clip, image, tmp_path / "clip.mov"):
        path.write_bytes(b"x")
    one = plan_jobs([str(clip)], str(tmp_path / "o.mov")).jobs
    assert [(j.target.name, j.video_kind) for j in one] == [("o.mov", "prores")]
    frames = plan_jobs([str(clip)], str(tmp_path / "frames")).jobs
    assert [(j.target, j.video_kind) for j in frames] == [(tmp_path / "frames", "frames")]
    in_folder = plan_jobs([str(clip)], str(tmp_path / "out"), video_format="mp4").jobs
    assert [(j.target, j.video_kind) for j in in_folder] == [(tmp_path / "out" / "clip.mp4", "h264")]

    mixed = plan_jobs([str(clip), str(image)], str(tmp_path / "out"), video_format="frames").jobs
    assert {(j.target.name, j.video_kind) for j in mixed} == {("clip.frames", "frames"), ("a.png", None)}
    with pytest.raises(UsageError, match="clip.mov and .*clip.mp4 would both be written"):
        plan_jobs([str(tmp_path)], str(tmp_path / "out"))  # clip.mp4 and clip.mov -> clip.webm
    kept = plan_jobs([str(tmp_path)], str(tmp_path / "out"), keep_suffix=True).jobs
    assert sorted(j.target.name for j in kept) == ["a.jpg.png", "clip.mov.webm", "clip.mp4.webm"]

    refusals = [
        (([str(clip)], "-"), "cannot go to standard output"),
        (([str(clip)], str(tmp_path / "o.png")), "must name a .webm, .mov or .mp4 file"),
        (([str(clip)], str(tmp_path / "o.mkv")), "must name a .webm, .mov or .mp4 file"),
        (([str(clip)], str(tmp_path / "o.webm"), None, False, "mov"), "--video-format is mov"),
        (([str(clip)], str(tmp_path)), "holds the input"),
        (([str(clip)], str(clip)), "over an input"),
        (([str(image)], str(tmp_path / "o.webm")), "rmbg writes PNG or WebP"),
    ]
    for args, message in refusals:
        with pytest.raises(UsageError, match=message):
            plan_jobs(*args)


def test_the_progress_line_shows_a_videos_frames_per_second_and_time_left():
    import io

    class Terminal(io.StringIO):
        def isatty(self) -> bool:
            return True

    terminal = Terminal()
    line = ProgressLine(1, stream=terminal, videos=True)
    line.last_drawn = 0.0  # draw the first frame at once
    line.frames("clip.mp4", 3, 30)
    shown = terminal.getvalue()
    assert shown.startswith("\r0/1 files, 0 failed; clip.mp4: 3/30 frames, ") and "frames/s, about" in shown
    line.update(1)
    last = terminal.getvalue().rsplit("\r", 1)[1]
    assert last.startswith("1/1 files, 0 failed; clip.mp4: 3 frames, ") and last.endswith("\n")
    assert last.rstrip().endswith("frames/s")
    assert len(last) >= len(shown.rsplit("\r", 1)[1]) + 1  # the longer line before it is blanked
