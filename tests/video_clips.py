"""Synthetic video clips made with PyAV, for the video tests and benchmarks: moving coloured shapes
(whose true alpha is known) on a textured static background, as H.264 in MP4 with or without an AAC
sine tone, at a constant or variable frame rate, with a display rotation, in limited or full range;
and the same clip damaged halfway."""

from __future__ import annotations

from dataclasses import dataclass
from fractions import Fraction
from functools import cache
from pathlib import Path

import numpy as np

TONE_HZ = 440.0
AUDIO_RATE = 48_000
VFR_STEPS_MS = (40, 20, 60, 33, 47, 25, 80)  # irregular frame durations, cycled, for a VFR clip


@dataclass(frozen=True)
class Clip:
    """What a made clip holds, for comparing with what a reader or a writer gives back."""

    path: Path
    width: int  # coded size (before the display rotation)
    height: int
    frames: int
    time_base: Fraction  # of the encoder: the pts below are in it
    pts: tuple[int, ...]
    duration_s: float  # last pts + one frame's duration
    rotation: int  # degrees counter-clockwise, as set on the display matrix
    audio_s: float  # seconds of sine tone (0 without audio)
    color_range: str  # "limited" or "full"


@cache
def background(width: int, height: int) -> np.ndarray:
    """uint8 (H, W, 3): a static texture (smooth waves plus a fine checker) for the shapes to move on."""
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
    waves = np.stack(
        [
            0.5 + 0.25 * np.sin(xx * 0.21 + yy * 0.05),
            0.5 + 0.25 * np.sin(yy * 0.17 - xx * 0.07 + 1.0),
            0.5 + 0.25 * np.cos((xx + yy) * 0.11),
        ],
        axis=-1,
    )
    checker = ((xx // 4 + yy // 4) % 2)[..., None] * 0.1
    return np.rint(np.clip(waves + checker - 0.05, 0, 1) * 255).astype(np.uint8)


def subject_alpha(index: int, width: int, height: int) -> np.ndarray:
    """uint8 (H, W): the true alpha of frame `index`: a disc moving left to right and a square moving
    down, both with a one-pixel soft edge."""
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
    radius = min(width, height) * 0.22
    cx = width * (0.2 + 0.6 * ((index * 0.07) % 1.0))
    disc = np.clip(radius - np.hypot(xx - cx, yy - height * 0.5) + 0.5, 0, 1)
    side = min(width, height) * 0.18
    top = height * (0.1 + 0.6 * ((index * 0.05) % 1.0))
    left = width * 0.68
    inside = np.minimum.reduce([xx - left, left + side - xx, yy - top, top + side - yy])
    square = np.clip(inside + 0.5, 0, 1)
    return np.rint(np.maximum(disc, square) * 255).astype(np.uint8)


def scene(index: int, width: int, height: int) -> tuple[np.ndarray, np.ndarray]:
    """(uint8 (H, W, 3) RGB, uint8 (H, W) true alpha) of frame `index`: a red disc and a blue square
    over `background`."""
    alpha = subject_alpha(index, width, height)
    xx = np.arange(width)[None, :]
    subject = np.where((xx > width * 0.6)[..., None], (40, 70, 220), (220, 50, 40)).astype(np.float32)
    a = alpha[..., None].astype(np.float32) / 255
    rgb = subject * a + background(width, height).astype(np.float32) * (1 - a)
    return np.rint(rgb).astype(np.uint8), alpha


def make_clip(
    path: Path,
    *,
    width: int = 96,
    height: int = 64,
    frames: int = 20,
    rate: int = 25,
    audio: bool = False,
    vfr: bool = False,
    rotation: int = 0,
    color_range: str = "limited",
    faststart: bool = False,
    pix_fmt: str = "yuv420p",
) -> Clip:
    """`frames` frames of `scene`: H.264 in MP4 (MOV or MKV by `path`'s suffix; VP9 for .webm). `vfr`
    gives irregular frame durations (VFR_STEPS_MS) in a 1/1000 time base; `audio` adds a 440 Hz AAC
    tone as long as the video; `rotation` sets the display matrix (counter-clockwise degrees);
    `color_range` "full" codes full-range YUV (tagged so), "limited" the usual 16-235; `pix_fmt`
    "yuv444p" allows odd sizes."""
    import av

    if vfr:
        time_base = Fraction(1, 1000)
        steps = [VFR_STEPS_MS[i % len(VFR_STEPS_MS)] for i in range(frames)]
    else:
        time_base = Fraction(1, rate)
        steps = [1] * frames
    pts = tuple(int(p) for p in np.cumsum([0, *steps[:-1]]))
    duration_s = float((pts[-1] + steps[-1]) * time_base)
    options = {"movflags": "+faststart"} if faststart else {}
    with av.open(str(path), "w", options=options) as container:
        codec = "libvpx-vp9" if path.suffix == ".webm" else "libx264"
        video = container.add_stream(codec, rate=rate)
        video.width, video.height, video.pix_fmt = width, height, pix_fmt
        video.codec_context.time_base = time_base
        video.codec_context.color_range = 2 if color_range == "full" else 1
        video.codec_context.colorspace = 1  # BT.709, tagged, so a reader need not guess
        video.codec_context.options = (
            {"deadline": "realtime", "crf": "10", "b": "0"}
            if codec == "libvpx-vp9"
            else {"preset": "ultrafast", "crf": "12"}
        )
        if rotation:
            video.set_display_rotation(rotation)
        sound = _add_tone(container) if audio else None
        audio_s = 0.0
        for index, p in enumerate(pts):
            frame = _yuv_frame(scene(index, width, height)[0], color_range, pix_fmt)
            frame.pts, frame.time_base, frame.duration = p, time_base, steps[index]
            container.mux(video.encode(frame))
            if sound is not None:
                audio_s = _mux_tone_until(container, sound, audio_s, float((p + steps[index]) * time_base))
        container.mux(video.encode(None))
        if sound is not None:
            container.mux(sound.encode(None))
    return Clip(path, width, height, frames, time_base, pts, duration_s, rotation, audio_s, color_range)


def make_audio_only(path: Path, seconds: float = 0.5) -> Path:
    """An M4A-like MP4 with only an AAC tone: a container without a video stream."""
    import av

    with av.open(str(path), "w", format="mp4") as container:
        sound = _add_tone(container)
        _mux_tone_until(container, sound, 0.0, seconds)
        container.mux(sound.encode(None))
    return path


def make_corrupt_clip(path: Path, frames: int = 20, *, at_packet: bool = False, **kw) -> Clip:
    """A clip whose second half is missing, as a download or a copy that stopped: the MP4 (index
    first, so it opens) cut at 60 % of its bytes, inside a packet; or, `at_packet`, exactly where
    the video packet of the frame at 60 % starts, so that no packet is read short."""
    import av

    clip = make_clip(path, frames=frames, faststart=True, **kw)
    data = path.read_bytes()
    cut = int(len(data) * 0.6)
    if at_packet:
        with av.open(str(path)) as container:
            starts = [p.pos for p in container.demux(video=0) if p.size]
        cut = sorted(starts)[int(frames * 0.6)]
    path.write_bytes(data[:cut])
    return clip


def _yuv_frame(rgb: np.ndarray, color_range: str, pix_fmt: str):
    import av

    frame = av.VideoFrame.from_ndarray(rgb, format="rgb24")
    return frame.reformat(
        format=pix_fmt,
        dst_colorspace="ITU709",
        dst_color_range="JPEG" if color_range == "full" else "MPEG",
    )


def _add_tone(container):
    sound = container.add_stream("aac", rate=AUDIO_RATE)
    sound.layout = "mono"
    return sound


def _mux_tone_until(container, sound, start_s: float, end_s: float) -> float:
    """Mux the tone's samples from `start_s` to `end_s` in AAC-sized frames; return the new end."""
    import av

    samples_per_frame = 1024
    done = round(start_s * AUDIO_RATE)
    while done < end_s * AUDIO_RATE:
        t = (done + np.arange(samples_per_frame)) / AUDIO_RATE
        tone = (0.3 * np.sin(2 * np.pi * TONE_HZ * t)).astype(np.float32)[None]
        frame = av.AudioFrame.from_ndarray(tone, format="fltp", layout="mono")
        frame.sample_rate, frame.pts, frame.time_base = AUDIO_RATE, done, Fraction(1, AUDIO_RATE)
        container.mux(sound.encode(frame))
        done += samples_per_frame
    return done / AUDIO_RATE


@dataclass(frozen=True)
class Decoded:
    """A written clip decoded again, independently of rmbg_runtime's reader."""

    format_name: str
    codec: str
    pix_fmt: str  # of the decoded frames: yuva* where the alpha was read back
    width: int
    height: int
    average_rate: Fraction | None
    duration_s: float | None
    color_range: int  # the stream's tags (1 limited, 2 full; 1 = BT.709 colorspace)
    colorspace: int
    times_s: tuple[float, ...]  # each frame's pts in seconds
    rotations: tuple[int, ...]
    rgba: tuple[np.ndarray, ...]  # uint8 (H, W, 4) per frame
    audio_codec: str | None
    audio: np.ndarray | None  # float32 samples of the first channel
    audio_rate: int | None


def read_back(path: Path) -> Decoded:
    """Every frame (RGBA) and the audio of `path`. VP9 goes through libvpx-vp9's decoder: FFmpeg's
    native vp9 decoder ignores the alpha that WebM keeps in BlockAdditional side data."""
    import av

    with av.open(str(path)) as container:
        video = container.streams.video[0]
        decoder = av.CodecContext.create("libvpx-vp9", "r") if video.codec_context.name == "vp9" else None
        frames, samples = [], []
        audio = container.streams.audio[0] if container.streams.audio else None
        for packet in container.demux(*[s for s in (video, audio) if s is not None]):
            if packet.stream is video:
                # demux's last, empty packet flushes the decoder
                frames += decoder.decode(packet if packet.size else None) if decoder else packet.decode()
            else:
                samples += [f.to_ndarray().reshape(f.layout.nb_channels, -1)[0] for f in packet.decode()]
        duration = float(video.duration * video.time_base) if video.duration else None
        if duration is None and container.duration:
            duration = container.duration / 1_000_000
        return Decoded(
            format_name=container.format.name,
            codec=video.codec_context.name,
            pix_fmt=frames[0].format.name if frames else "",
            width=video.codec_context.width,
            height=video.codec_context.height,
            average_rate=video.average_rate,
            duration_s=duration,
            color_range=int(video.codec_context.color_range),
            colorspace=int(video.codec_context.colorspace),
            times_s=tuple(float(f.pts * video.time_base) for f in frames),
            rotations=tuple(round(f.rotation) % 360 for f in frames),
            rgba=tuple(
                f.to_ndarray(format="rgba", src_color_range=int(f.color_range), dst_color_range="JPEG")
                for f in frames
            ),
            audio_codec=audio.codec_context.name if audio is not None else None,
            audio=np.concatenate(samples).astype(np.float32) if samples else None,
            audio_rate=audio.codec_context.sample_rate if audio is not None else None,
        )


def dominant_hz(samples: np.ndarray, rate: int) -> float:
    """The strongest frequency of `samples`: the tone survived if this is TONE_HZ."""
    spectrum = np.abs(np.fft.rfft(samples * np.hanning(len(samples))))
    return float(np.fft.rfftfreq(len(samples), 1 / rate)[np.argmax(spectrum)])
