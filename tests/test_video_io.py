"""rmbg_runtime.video.io on synthetic clips (tests/video_clips.py): the reader yields every frame with
its pts, upright and in full-range RGB; the writer keeps frames, timing, audio and alpha, and leaves
nothing behind when it fails. Everything is checked by decoding the files again with PyAV."""

from __future__ import annotations

import signal
import subprocess
import sys
from fractions import Fraction
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

av = pytest.importorskip("av")

import video_clips  # noqa: E402

from rmbg_runtime import stages  # noqa: E402
from rmbg_runtime.errors import ImageError, RmbgError  # noqa: E402
from rmbg_runtime.video.io import OUTPUT_KINDS, VideoError, open_video, open_writer, output_kind  # noqa: E402

W, H = 96, 64


def read_all(path: Path):
    with open_video(path) as reader:
        return reader.info, list(reader.frames())


def cut_out(frame) -> Image.Image:
    """The frame with the scene's true alpha: what stages.render gives for a perfect mask."""
    return stages.render(frame.image, true_alpha(frame), stages.OutputOptions())


def true_alpha(frame) -> np.ndarray:
    alpha = video_clips.subject_alpha(frame.index, *frame.image.size)
    return alpha if frame.image.size == (W, H) else np.zeros(frame.image.size[::-1], np.uint8) + alpha.mean()


def transcode(src: Path, dst: Path, render=cut_out, **kw) -> list:
    """Every frame of `src` rendered and written to `dst`; the frames read (for comparing)."""
    with open_video(src) as reader, open_writer(dst, reader, **kw) as writer:
        frames = []
        for frame in reader.frames():
            writer.write(frame, render(frame))
            frames.append(frame)
    return frames


def leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.name.startswith("."))


def seconds(pts, time_base) -> list[float]:
    return [float(p * time_base) for p in pts]


@pytest.mark.parametrize("vfr", [False, True], ids=["cfr", "vfr"])
def test_reader_yields_every_frame_with_its_pts(tmp_path, vfr):
    clip = video_clips.make_clip(tmp_path / "clip.mp4", width=W, height=H, frames=20, vfr=vfr)
    info, frames = read_all(clip.path)
    assert [f.index for f in frames] == list(range(20))
    assert seconds([f.pts for f in frames], info.time_base) == pytest.approx(
        seconds(clip.pts, clip.time_base), abs=1e-3
    )
    assert (info.width, info.height) == (W, H)
    assert all(f.image.mode == "RGB" and f.image.size == (W, H) for f in frames)
    longest_frame_s = max(video_clips.VFR_STEPS_MS) / 1000 if vfr else 1 / 25
    assert info.duration_s == pytest.approx(clip.duration_s, abs=longest_frame_s)  # the muxer sets the last
    assert info.frame_count == 20
    assert info.rotation == 0 and not info.has_audio
    if not vfr:
        assert info.frame_rate == Fraction(25)


def test_reader_pixels_match_the_scene(tmp_path):
    clip = video_clips.make_clip(tmp_path / "clip.mp4", width=W, height=H, frames=3)
    _, frames = read_all(clip.path)
    for frame in frames:
        truth = video_clips.scene(frame.index, W, H)[0].astype(int)
        assert np.abs(np.asarray(frame.image, int) - truth).mean() < 6  # H.264 at crf 12


@pytest.mark.parametrize("suffix", [".mp4", ".webm"], ids=["h264", "vp9"])
def test_limited_and_full_range_decode_to_the_same_rgb(tmp_path, suffix):
    # FFmpeg decodes full-range H.264 as yuvj420p (the range in the pixel format), VP9 as yuv420p
    # with a range tag that the conversion must be told.
    limited = read_all(video_clips.make_clip(tmp_path / "limited.mp4", width=W, height=H, frames=3).path)[1]
    full = read_all(video_clips.make_clip(tmp_path / f"full{suffix}", width=W, height=H, frames=3,
                                          color_range="full").path)[1]  # fmt: skip
    for a, b in zip(limited, full, strict=True):
        difference = np.abs(np.asarray(a.image, int) - np.asarray(b.image, int))
        # Read as limited, a full-range clip would be ~15 levels off at black and white.
        assert difference.mean() < 2.5 and np.percentile(difference, 99) <= 8


@pytest.mark.parametrize("rotation", [90, 180, 270])
def test_reader_turns_rotated_clips_upright(tmp_path, rotation):
    clip = video_clips.make_clip(tmp_path / "clip.mp4", width=W, height=H, frames=2, rotation=rotation)
    info, frames = read_all(clip.path)
    assert info.rotation == rotation
    upright = np.rot90(video_clips.scene(0, W, H)[0], k=rotation // 90).astype(int)  # counter-clockwise
    assert (info.width, info.height) == (upright.shape[1], upright.shape[0])
    assert frames[0].image.size == (info.width, info.height)
    assert np.abs(np.asarray(frames[0].image, int) - upright).mean() < 6


def test_reader_queues_the_audio_between_frames(tmp_path):
    clip = video_clips.make_clip(tmp_path / "clip.mp4", width=W, height=H, frames=20, audio=True)
    with open_video(clip.path) as reader:
        assert reader.info.has_audio
        queued = []
        for _ in reader.frames():
            queued.append(len(reader.take_audio()))
        queued.append(len(reader.take_audio()))
    # Interleaved: a few packets at a time, never the whole track at once.
    total = sum(queued)
    assert total >= clip.audio_s * video_clips.AUDIO_RATE / 1024 - 1
    assert max(queued) < total / 2


def test_not_a_video(tmp_path):
    text = tmp_path / "notes.mp4"
    text.write_text("not a video\n" * 50)
    with pytest.raises(VideoError, match="is not a video FFmpeg can read"):
        open_video(text)
    picture = tmp_path / "photo.mp4"
    Image.new("RGB", (32, 32), (10, 20, 30)).save(picture, "PNG")
    with pytest.raises(VideoError, match="is a still image"):
        open_video(picture)
    with pytest.raises(VideoError, match="does not exist"):
        open_video(tmp_path / "missing.mp4")


def test_audio_only_has_no_video_stream(tmp_path):
    path = video_clips.make_audio_only(tmp_path / "sound.mp4")
    with pytest.raises(VideoError, match=r"has no video stream \(it holds audio\)") as caught:
        open_video(path)
    assert isinstance(caught.value, ImageError)  # an input error: the run goes on with the next input
    assert caught.value.args[0].count(". ") == 0  # one sentence


@pytest.mark.parametrize(
    ("audio", "at_packet"),
    [(False, False), (True, False), (False, True)],
    ids=["video", "video+audio", "at-packet"],
)
def test_corrupt_halfway_yields_the_good_frames_then_names_the_frame(
    tmp_path, capfd, caplog, audio, at_packet
):
    # Inside a packet: the packet read short is flagged corrupt (and would make the decoder raise);
    # at a packet's start: fewer packets than the MP4's index lists.
    video_clips.make_corrupt_clip(
        tmp_path / "cut.mp4", frames=20, width=W, height=H, audio=audio, at_packet=at_packet
    )
    with open_video(tmp_path / "cut.mp4") as reader:
        good = []
        with pytest.raises(VideoError, match=r"is damaged after frame (\d+) of 20") as caught:
            for frame in reader.frames():
                good.append(frame)
    assert 5 <= len(good) < 20
    assert caught.value.frames_read == len(good)
    # the sentence, not FFmpeg's own lines about the damage (PyAV sends them to Python's logging)
    assert capfd.readouterr().err == "" and not [r for r in caplog.records if r.name.startswith("libav")]
    assert f"after frame {len(good)} of 20" in str(caught.value)
    for frame in good:  # what was yielded is whole, not concealment garbage
        truth = video_clips.scene(frame.index, W, H)[0].astype(int)
        assert np.abs(np.asarray(frame.image, int) - truth).mean() < 6


CLIP_KINDS = {"webm": ".webm", "prores": ".mov", "h264": ".mp4"}
# Alpha read back against what was written, in 8-bit levels, measured on these clips: VP9 (crf 20)
# is lossy (mean 0.02-0.15, worst pixel 22-36 on the shapes' one-pixel edges); ProRes 4444's 16-bit
# alpha is exact to the rounding (max 1).
ALPHA_LOSS = {"webm": (0.5, 48), "prores": (0.05, 1), "frames": (0.0, 0)}  # (mean, max)


@pytest.mark.parametrize("vfr", [False, True], ids=["cfr", "vfr"])
@pytest.mark.parametrize("kind", list(CLIP_KINDS))
def test_writer_keeps_frames_timing_and_audio(tmp_path, kind, vfr):
    clip = video_clips.make_clip(tmp_path / "src.mp4", width=W, height=H, frames=20, vfr=vfr, audio=True)
    out = tmp_path / f"out{CLIP_KINDS[kind]}"
    transcode(clip.path, out)
    source, written = video_clips.read_back(clip.path), video_clips.read_back(out)
    assert OUTPUT_KINDS[out.suffix] == kind
    assert (written.width, written.height) == (W, H)
    assert written.times_s == pytest.approx(
        seconds(clip.pts, clip.time_base), abs=1e-3
    )  # every frame, in order
    assert written.duration_s == pytest.approx(source.duration_s, abs=max(video_clips.VFR_STEPS_MS) / 1000)
    if not vfr:
        assert written.average_rate == 25
    assert written.audio_codec == ("opus" if kind == "webm" else "aac")
    assert len(written.audio) / written.audio_rate == pytest.approx(
        len(source.audio) / source.audio_rate, abs=0.03
    )
    assert video_clips.dominant_hz(written.audio, written.audio_rate) == pytest.approx(
        video_clips.TONE_HZ, abs=3
    )


@pytest.mark.parametrize("kind", ["webm", "prores", "frames"])
def test_alpha_read_back_equals_what_was_written(tmp_path, kind):
    clip = video_clips.make_clip(tmp_path / "src.mp4", width=W, height=H, frames=10)
    out = tmp_path / ("frames" if kind == "frames" else f"out{CLIP_KINDS[kind]}")
    frames = transcode(clip.path, out)
    if kind == "frames":
        names = sorted(p.name for p in out.iterdir())
        assert names == [f"frame_{i:06d}.png" for i in range(1, 11)]
        written = [np.asarray(Image.open(out / name)) for name in names]
    else:
        decoded = video_clips.read_back(out)
        assert decoded.pix_fmt.startswith("yuva")
        written = decoded.rgba
    assert len(written) == len(frames)
    error = np.abs(
        np.stack([w[..., 3] for w in written]).astype(int) - np.stack([true_alpha(f) for f in frames])
    )
    mean, worst = ALPHA_LOSS[kind]
    assert error.mean() <= mean and error.max() <= worst
    colour = np.abs(
        np.stack([w[..., :3] for w in written]).astype(int) - np.stack([np.asarray(f.image) for f in frames])
    )
    assert colour.mean() < (0.01 if kind == "frames" else 3)


def test_h264_composites_cut_outs_on_the_background(tmp_path):
    clip = video_clips.make_clip(tmp_path / "src.mp4", width=W, height=H, frames=5)
    frames = transcode(clip.path, tmp_path / "out.mp4", background=(0, 255, 0))
    decoded = video_clips.read_back(tmp_path / "out.mp4")
    assert decoded.pix_fmt == "yuv420p"
    for frame, rgba in zip(frames, decoded.rgba, strict=True):
        expected = np.asarray(stages.on_background(frame.image, true_alpha(frame), (0, 255, 0)), int)
        assert np.abs(rgba[..., :3].astype(int) - expected).mean() < 3
        assert (rgba[..., 3] == 255).all()


@pytest.mark.parametrize("kind", ["webm", "h264", "frames"])
def test_masks_are_written_grey(tmp_path, kind):
    clip = video_clips.make_clip(tmp_path / "src.mp4", width=W, height=H, frames=4)
    out = tmp_path / ("frames" if kind == "frames" else f"out{CLIP_KINDS[kind]}")
    options = stages.OutputOptions(mask_only=True)
    frames = transcode(clip.path, out, render=lambda f: stages.render(f.image, true_alpha(f), options))
    if kind == "frames":
        written = [np.asarray(Image.open(p)) for p in sorted(out.iterdir())]
        assert all(w.ndim == 2 for w in written)  # "L" PNGs
        assert all((w == true_alpha(f)).all() for w, f in zip(written, frames, strict=True))
        return
    for frame, rgba in zip(frames, video_clips.read_back(out).rgba, strict=True):
        assert (rgba[..., 3] == 255).all()
        grey = rgba[..., :3].astype(int)
        assert np.abs(grey - true_alpha(frame)[..., None]).mean() < 3


def test_rotated_input_is_written_upright(tmp_path):
    clip = video_clips.make_clip(tmp_path / "src.mp4", width=W, height=H, frames=3, rotation=90)
    frames = transcode(clip.path, tmp_path / "out.mp4", render=lambda f: f.image)
    decoded = video_clips.read_back(tmp_path / "out.mp4")
    assert (decoded.width, decoded.height) == (H, W) and set(decoded.rotations) == {0}
    written = decoded.rgba[0][..., :3].astype(int)
    # upright as the reader gave it; 4:2:0 chroma alone costs ~3.8 levels on this scene
    assert np.abs(written - np.asarray(frames[0].image, int)).mean() < 6
    upside_down = np.rot90(video_clips.scene(0, W, H)[0], k=-1).astype(int)  # the other way round
    assert np.abs(written - upside_down).mean() > 20


@pytest.mark.parametrize("kind", list(CLIP_KINDS))
def test_output_is_tagged_bt709_limited_and_decodes_to_the_source_colours(tmp_path, kind):
    clip = video_clips.make_clip(tmp_path / "src.mp4", width=W, height=H, frames=3, color_range="full")
    out = tmp_path / f"out{CLIP_KINDS[kind]}"
    frames = transcode(clip.path, out, render=lambda f: f.image)
    decoded = video_clips.read_back(out)
    assert (decoded.color_range, decoded.colorspace) == (1, 1)
    _, again = read_all(out)  # through the reader, which honours the tags
    for frame, other in zip(frames, again, strict=True):
        difference = np.abs(np.asarray(frame.image, int) - np.asarray(other.image, int))
        assert difference.mean() < 6  # 4:2:0 chroma alone costs ~3.8 levels on this scene


def test_an_exception_mid_write_leaves_nothing(tmp_path):
    clip = video_clips.make_clip(tmp_path / "src.mp4", width=W, height=H, frames=10, audio=True)
    for name in ("out.webm", "out.mov", "out.mp4", "frames"):
        out = tmp_path / name
        with pytest.raises(RuntimeError, match="stop"), open_video(clip.path) as reader:
            with open_writer(out, reader) as writer:
                for frame in reader.frames():
                    writer.write(frame, cut_out(frame))
                    if frame.index == 5:
                        raise RuntimeError("stop")
        assert not out.exists(), name
        assert leftovers(tmp_path) == [], name


def test_abort_keeps_the_previous_output(tmp_path):
    clip = video_clips.make_clip(tmp_path / "src.mp4", width=W, height=H, frames=4, audio=True)
    out = tmp_path / "out.mp4"
    out.write_bytes(b"previous")
    with open_video(clip.path) as reader:
        writer = open_writer(out, reader)
        frame = next(reader.frames())
        writer.write(frame, cut_out(frame))
        assert writer.partial.exists() and out.read_bytes() == b"previous"
        writer.abort()
    assert out.read_bytes() == b"previous" and leftovers(tmp_path) == []


def test_frames_folder_replaces_earlier_frames_but_not_other_files(tmp_path):
    clip = video_clips.make_clip(tmp_path / "src.mp4", width=W, height=H, frames=3)
    out = tmp_path / "frames"
    out.mkdir()
    for i in range(1, 6):  # an earlier, longer run
        (out / f"frame_{i:06d}.png").write_bytes(b"old")
    transcode(clip.path, out)
    assert sorted(p.name for p in out.iterdir()) == [f"frame_{i:06d}.png" for i in (1, 2, 3)]
    assert leftovers(tmp_path) == []
    (out / "notes.txt").write_text("mine")
    with pytest.raises(RmbgError, match="holds other files than frames"), open_video(clip.path) as reader:
        open_writer(out, reader)
    assert (out / "notes.txt").exists()


INTERRUPTED = """
import signal, sys, time
sys.path.insert(0, {tests!r})
import test_video_io as t
from rmbg_runtime.cli import Terminated
from rmbg_runtime.video.io import open_video, open_writer

def on_sigterm(_signum, _frame):
    raise Terminated  # as rmbg's main() does

signal.signal(signal.SIGTERM, on_sigterm)
with open_video({src!r}) as reader, open_writer({out!r}, reader) as writer:
    frames = list(reader.frames())
    for n in range(10_000):
        frame = frames[n % len(frames)]
        frame.pts = n
        writer.write(frame, t.cut_out(frame))
        if n == 3:
            print("writing", flush=True)
        time.sleep(0.01)
"""


@pytest.mark.slow
@pytest.mark.parametrize(
    ("name", "sig"), [("out.mp4", signal.SIGINT), ("out.webm", signal.SIGTERM), ("frames", signal.SIGINT)]
)
def test_interrupted_writer_leaves_nothing(tmp_path, name, sig):
    clip = video_clips.make_clip(tmp_path / "src.mp4", width=W, height=H, frames=5, audio=True)
    out = tmp_path / name
    code = INTERRUPTED.format(tests=str(Path(__file__).parent), src=str(clip.path), out=str(out))
    child = subprocess.Popen(
        [sys.executable, "-c", code], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        # A shell's background job inherits SIGINT ignored (then Python installs no KeyboardInterrupt):
        # give the child the terminal's disposition, as the CLI tests do.
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )  # fmt: skip
    try:
        assert child.stdout.readline() == "writing\n"
        assert any(p.name.startswith(f".{name}.partial-") for p in tmp_path.iterdir())
        child.send_signal(sig)
        _, stderr = child.communicate(timeout=30)
    finally:
        child.kill()
    assert ("KeyboardInterrupt" if sig == signal.SIGINT else "Terminated") in stderr
    assert not out.exists() and leftovers(tmp_path) == []


@pytest.mark.parametrize("kind", list(CLIP_KINDS))
def test_odd_sizes(tmp_path, kind):
    clip = video_clips.make_clip(tmp_path / "src.mkv", width=95, height=63, frames=3, pix_fmt="yuv444p")
    out = tmp_path / f"out{CLIP_KINDS[kind]}"
    frames = transcode(clip.path, out, render=lambda f: f.image)
    decoded = video_clips.read_back(out)
    # 4:2:0 H.264 needs even sizes: one more column and row, the edge repeated; the others keep 95x63
    assert (decoded.width, decoded.height) == ((96, 64) if kind == "h264" else (95, 63))
    for frame, rgba in zip(frames, decoded.rgba, strict=True):
        assert np.abs(rgba[:63, :95, :3].astype(int) - np.asarray(frame.image, int)).mean() < 6


def test_output_kind_by_suffix():
    assert [output_kind(Path(n)) for n in ("a.webm", "b.MOV", "c.mp4", "frames", "run.v2")] == [
        "webm",
        "prores",
        "h264",
        "frames",
        "frames",
    ]
    with pytest.raises(
        RmbgError, match=r"\.mkv is read but not written; use \.webm, \.mov, \.mp4 or a folder"
    ):
        output_kind(Path("clip.mkv"))
