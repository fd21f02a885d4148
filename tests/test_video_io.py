"""rmbg_runtime.video.io on synthetic clips (tests/video_clips.py): the reader yields every frame with
its pts, upright and in full-range RGB; the writer keeps frames, timing, audio and alpha, and leaves
nothing behind when it fails. Everything is checked by decoding the files again with PyAV."""

from __future__ import annotations

from fractions import Fraction
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

av = pytest.importorskip("av")

import video_clips  # noqa: E402

from rmbg_runtime.errors import ImageError  # noqa: E402
from rmbg_runtime.video.io import VideoError, open_video  # noqa: E402

W, H = 96, 64


def read_all(path: Path):
    with open_video(path) as reader:
        return reader.info, list(reader.frames())


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


def test_limited_and_full_range_decode_to_the_same_rgb(tmp_path):
    limited = read_all(video_clips.make_clip(tmp_path / "limited.mp4", width=W, height=H, frames=3).path)[1]
    full = read_all(video_clips.make_clip(tmp_path / "full.mp4", width=W, height=H, frames=3,
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


@pytest.mark.parametrize("audio", [False, True], ids=["video", "video+audio"])
def test_corrupt_halfway_yields_the_good_frames_then_names_the_frame(tmp_path, audio):
    video_clips.make_corrupt_clip(tmp_path / "cut.mp4", frames=20, width=W, height=H, audio=audio)
    with open_video(tmp_path / "cut.mp4") as reader:
        good = []
        with pytest.raises(VideoError, match=r"is damaged after frame (\d+) of 20") as caught:
            for frame in reader.frames():
                good.append(frame)
    assert 5 <= len(good) < 20
    assert caught.value.frames_read == len(good)
    assert f"after frame {len(good)} of 20" in str(caught.value)
    for frame in good:  # what was yielded is whole, not concealment garbage
        truth = video_clips.scene(frame.index, W, H)[0].astype(int)
        assert np.abs(np.asarray(frame.image, int) - truth).mean() < 6
