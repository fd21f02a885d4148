"""Reading a clip frame by frame and writing the processed frames back, with PyAV (FFmpeg).

What is kept from input to output: every frame in order with its pts (variable frame rate too), the
size, the frame rate, the time base and so the duration; the audio stream, taken from the same demux
pass and copied (re-encoded where the container cannot hold it: Opus for WebM); the picture as it
displays: the reader turns frames upright by the display matrix, so the writer writes no rotation;
the colours: YUV of either range is converted to full-range RGB using the frame's own range and
matrix tags, and outputs are written as BT.709 limited range, tagged so.

PyAV is imported inside the functions, never at module level, so that importing this module (the CLI
does, for VIDEO_SUFFIXES) costs nothing and works without the `video` extra.
"""

from __future__ import annotations

import collections
import os
import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from .. import stages
from ..errors import ImageError, RmbgError
from ..files import partial_path

VIDEO_SUFFIXES: tuple[str, ...] = (".mp4", ".mov", ".m4v", ".mkv", ".webm", ".avi")
OUTPUT_KINDS: dict[str, str] = {".webm": "webm", ".mov": "prores", ".mp4": "h264"}
FRAMES_KIND = "frames"  # a folder of PNGs: an output path without a video suffix
FRAME_NAME = "frame_{:06d}.png"
DEFAULT_BACKGROUND = (255, 255, 255)  # what an RGBA cut-out is composited on for H.264 (no alpha)
INSTALL = "pip install 'rmbg-toolkit[video]'"

# Demuxers that FFmpeg uses for single pictures: a PNG or JPEG renamed .mp4 opens as a "video".
_IMAGE_DEMUXERS = ("image2", "_pipe")
_UPRIGHT = {90: Image.Transpose.ROTATE_90, 180: Image.Transpose.ROTATE_180, 270: Image.Transpose.ROTATE_270}


class VideoError(ImageError):
    """A clip that cannot be read: not a video, no video stream, or damaged. Like ImageError it fails
    this input only. `frames_read` is how many frames were yielded before the damage (0 at open)."""

    def __init__(self, message: str, frames_read: int = 0) -> None:
        super().__init__(message)
        self.frames_read = frames_read


@dataclass(frozen=True)
class VideoInfo:
    width: int  # the frames' size as the reader yields them (display orientation)
    height: int
    frame_rate: Fraction  # average
    time_base: Fraction  # of the video stream: VideoFrame.pts counts in it
    duration_s: float | None
    frame_count: int | None  # the container's figure: for progress only, may be None or approximate
    rotation: int  # counter-clockwise degrees of the source's display matrix: 0, 90, 180 or 270
    has_audio: bool


@dataclass
class VideoFrame:
    index: int  # 0, 1, 2 ... in presentation order
    image: Image.Image  # RGB, full range, display orientation
    pts: int | None  # in VideoInfo.time_base
    duration: int | None = None  # in VideoInfo.time_base, where the container says


def _av() -> Any:
    try:
        import av
    except ImportError:
        raise RmbgError(f"video needs PyAV, the video extra; {INSTALL}.") from None
    # FFmpeg prints each damaged packet's errors ("Invalid NAL unit size"...) to stderr, between the
    # progress lines; the VideoError's one sentence says what happened instead.
    av.logging.set_level(av.logging.FATAL)
    return av


def open_video(path: Path) -> VideoReader:
    """A reader of `path`'s first video stream, with its first frame already decoded so that a file
    FFmpeg opens but cannot decode fails here. Raises VideoError for anything that is not a video."""
    av = _av()
    path = Path(path)
    if not path.is_file():
        raise VideoError(f"{path} does not exist or is not a file; check the path.")
    try:
        container = av.open(str(path), "r")
    except (av.FFmpegError, UnicodeDecodeError) as err:
        raise VideoError(f"{path} is not a video FFmpeg can read ({_detail(err)}); give an MP4, MOV, MKV, "
                         "WebM or AVI file.") from None  # fmt: skip
    try:
        return VideoReader(path, container)
    except BaseException:
        container.close()
        raise


class VideoReader:
    """Streams the frames of one clip, queueing the audio packets met on the way for the writer.
    A context manager: leaving it closes the file."""

    def __init__(self, path: Path, container: Any) -> None:
        self.path = path
        self._container = container
        format_name = container.format.name
        if any(part in format_name for part in _IMAGE_DEMUXERS):
            raise VideoError(f"{path} is a still image ({format_name}), not a video; give it its picture "
                             "suffix to process it as an image.")  # fmt: skip
        if not container.streams.video:
            kinds = ", ".join(sorted({s.type for s in container.streams})) or "nothing"
            raise VideoError(f"{path} has no video stream (it holds {kinds}); give a file with a picture "
                             "track.")  # fmt: skip
        self._video = container.streams.video[0]
        # Slice threads only: FFmpeg's frame threads delay frames and errors, and closing a frame-threaded
        # decoder that met a truncated packet hung the process (PyAV 18.1).
        self._video.thread_type = "SLICE"
        self.audio_stream = container.streams.audio[0] if container.streams.audio else None
        # Audio packets demuxed between video frames, waiting for the writer: as many as the frames in
        # flight between reader and writer cover, not the whole track (an interleaved file).
        self._audio: collections.deque = collections.deque()
        self._decoded = self._decode()
        try:
            self._first = next(self._decoded)
        except StopIteration:
            raise VideoError(
                f"{path} has a video stream without frames; give a clip with pictures."
            ) from None
        except (_av().FFmpegError, ClipDamaged) as err:
            self._decoded.close()
            raise VideoError(f"{path} could not be decoded ({_detail(err)}); the file is damaged.") from None
        self.info = self._read_info(self._first)

    def __enter__(self) -> VideoReader:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self._decoded.close()
        self._container.close()

    def frames(self) -> Iterator[VideoFrame]:
        """Every frame in presentation order. A clip damaged halfway yields the frames before the damage,
        then raises VideoError naming the frame reached (the caller's writer then leaves no output)."""
        av = _av()
        index = 0
        pending, self._first = self._first, None  # one pass: a second call yields nothing
        try:
            while pending is not None:
                yield self._video_frame(index, pending)
                index += 1
                pending = next(self._decoded, None)
        except (av.FFmpegError, ClipDamaged) as err:
            total = f" of {self.info.frame_count}" if self.info.frame_count else ""
            raise VideoError(
                f"{self.path} is damaged after frame {index}{total} ({_detail(err)}); repair or re-encode "
                "it.",
                frames_read=index,
            ) from None

    def take_audio(self) -> list[Any]:
        """The audio packets demuxed since the last call, in file order (for the writer to mux)."""
        packets = []
        while self._audio:
            packets.append(self._audio.popleft())
        return packets

    def _decode(self) -> Iterator[Any]:
        """The decoded video frames; raises ClipDamaged where the file is cut short. Threaded decoders
        conceal damaged data instead of raising, so the demuxer's evidence is what counts: a packet
        read short (flagged corrupt), or fewer packets than an MP4/MOV index lists."""
        streams = [self._video] + ([self.audio_stream] if self.audio_stream is not None else [])
        packets = 0
        for packet in self._container.demux(streams):
            if packet.stream is not self._video:
                if packet.size:
                    self._audio.append(packet)
                continue
            if packet.size:
                packets += 1
                if packet.is_corrupt:
                    raise ClipDamaged(f"packet {packets} is cut short")
            yield from packet.decode()  # the empty packets at the end flush the decoder
        indexed = self._video.frames if "mp4" in self._container.format.name else 0
        if packets < indexed:
            raise ClipDamaged(f"the file ends at packet {packets} of the {indexed} its index lists")

    def _video_frame(self, index: int, frame: Any) -> VideoFrame:
        # The frame's own range tag (PyAV 18.1 uses it when none is given, though its docstring says
        # "unspecified"): explicit, as a full-range VP9 frame is yuv420p, not yuvj420p, read as limited.
        rgb = frame.to_ndarray(format="rgb24", src_color_range=int(frame.color_range), dst_color_range="JPEG")
        image = Image.fromarray(rgb, "RGB")
        turn = _UPRIGHT.get(round(frame.rotation) % 360)
        if turn is not None:
            image = image.transpose(turn)
        return VideoFrame(index, image, frame.pts, frame.duration or None)

    def _read_info(self, first: Any) -> VideoInfo:
        stream, container = self._video, self._container
        rotation = round(first.rotation) % 360
        width, height = (first.height, first.width) if rotation in (90, 270) else (first.width, first.height)
        rate = stream.average_rate or stream.guessed_rate or stream.base_rate or Fraction(25)
        if stream.duration is not None:
            duration_s = float(stream.duration * stream.time_base)
        else:
            duration_s = container.duration / 1_000_000 if container.duration else None
        return VideoInfo(
            width=width,
            height=height,
            frame_rate=Fraction(rate),
            time_base=Fraction(stream.time_base),
            duration_s=duration_s,
            frame_count=stream.frames or None,
            rotation=rotation,
            has_audio=self.audio_stream is not None,
        )


class ClipDamaged(Exception):
    """Raised inside the reader where the demuxer shows the file is cut short; becomes a VideoError."""


def _detail(err: BaseException) -> str:
    return getattr(err, "strerror", None) or str(err) or type(err).__name__


@dataclass(frozen=True)
class _Encoding:
    container: str  # FFmpeg's muxer name: the temporary file's name has no suffix to guess it from
    codec: str
    pix_fmt: str
    options: dict[str, str]
    audio_codec: str  # where the source's audio cannot be copied into this container


_ENCODINGS = {
    # VP9 with alpha: libvpx codes the alpha plane as a second stream in WebM's BlockAdditional.
    # good/cpu-used 4 with row threads; crf 20: see the loss figures in tests/test_video_io.py.
    "webm": _Encoding("webm", "libvpx-vp9", "yuva420p",
                      {"crf": "20", "b": "0", "deadline": "good", "cpu-used": "4", "row-mt": "1"}, "libopus"),
    # ProRes 4444 with a 16-bit alpha channel, 10-bit colour: near-lossless, for editors.
    "prores": _Encoding("mov", "prores_ks", "yuva444p10le", {"profile": "4444", "alpha_bits": "16"}, "aac"),
    "h264": _Encoding("mp4", "libx264", "yuv420p", {"crf": "18", "preset": "veryfast"}, "aac"),
}  # fmt: skip
_BT709 = 1  # AVCOL_SPC / AVCOL_PRI / AVCOL_TRC BT.709: sRGB frames are written and tagged as BT.709
_LIMITED = 1  # AVCOL_RANGE_MPEG


def output_kind(path: Path) -> str:
    """The kind an output path asks for by its suffix; a path without a video suffix is a folder of
    frames. A video suffix that is only read (.mkv, .avi, .m4v) is refused rather than made a folder."""
    suffix = Path(path).suffix.lower()
    if suffix in OUTPUT_KINDS:
        return OUTPUT_KINDS[suffix]
    if suffix in VIDEO_SUFFIXES:
        raise RmbgError(f"{path}: {suffix} is read but not written; use .webm, .mov, .mp4 or a folder.")
    return FRAMES_KIND


def open_writer(
    path: Path, reader: VideoReader, kind: str | None = None, *, background: tuple[int, ...] | None = None
) -> VideoWriter:
    """A writer of `reader`'s clip to `path` as `kind` (OUTPUT_KINDS' values or "frames"; by default
    from the suffix). `background` is what "h264" composites cut-outs on (white by default)."""
    path = Path(path)
    kind = kind or output_kind(path)
    if kind == FRAMES_KIND:
        return _FramesWriter(path, reader)
    if kind not in _ENCODINGS:
        raise RmbgError(
            f"video output kind {kind!r} is unknown; use one of {', '.join([*_ENCODINGS, FRAMES_KIND])}."
        )
    return _ClipWriter(path, reader, _ENCODINGS[kind], background)


class VideoWriter:
    """Writes rendered frames under a temporary name beside `path` and renames it into place at
    close(); abort() (and leaving the `with` block by an exception) removes everything written."""

    def __init__(self, path: Path, reader: VideoReader) -> None:
        self.path = path
        self.partial = partial_path(path)
        self.frames_written = 0
        self._reader = reader

    def __enter__(self) -> VideoWriter:
        return self

    def __exit__(self, exc_type: object, *exc: object) -> None:
        if exc_type is None:
            self.close()
        else:
            self.abort()

    def write(self, frame: VideoFrame, rendered: Image.Image) -> None:
        """`rendered` (stages.render's RGBA cut-out, "L" mask or RGB composite) as `frame`'s picture."""
        try:
            self._write(frame, rendered)
            self._mux_audio(self._reader.take_audio())
        except BaseException:
            self.abort()
            raise
        self.frames_written += 1

    def close(self) -> None:
        """Finish (flush the encoders, mux the audio read so far) and rename into place. Call it once
        the reader's frames() is exhausted, so that the audio after the last frame is in the queue."""
        try:
            self._mux_audio(self._reader.take_audio())
            self._finish()
            self._replace_target()
        except BaseException:
            self.abort()
            raise

    def abort(self) -> None:
        """Stop and remove what was written; the target is left as it was."""
        self._discard()

    def _write(self, frame: VideoFrame, rendered: Image.Image) -> None:
        raise NotImplementedError

    def _mux_audio(self, packets: list[Any]) -> None:
        pass  # a folder of frames has no audio: the packets are dropped, so the queue stays short

    def _finish(self) -> None:
        pass

    def _replace_target(self) -> None:
        os.replace(self.partial, self.path)

    def _discard(self) -> None:
        self.partial.unlink(missing_ok=True)


class _ClipWriter(VideoWriter):
    def __init__(self, path: Path, reader: VideoReader, encoding: _Encoding, background) -> None:
        super().__init__(path, reader)
        av = _av()
        info = reader.info
        self._encoding = encoding
        self._background = tuple(background or DEFAULT_BACKGROUND)[:3]  # no alpha in H.264: opaque
        self._last_pts: int | None = None
        path.parent.mkdir(parents=True, exist_ok=True)
        self._container = av.open(str(self.partial), "w", format=encoding.container)
        try:
            self._video = self._add_video(encoding, info)
            self._audio, self._copy_audio = self._add_audio(reader.audio_stream, encoding)
        except BaseException:
            self._discard()
            raise

    def _add_video(self, encoding: _Encoding, info: VideoInfo) -> Any:
        stream = self._container.add_stream(encoding.codec, rate=info.frame_rate, options=encoding.options)
        stream.width, stream.height = _coded_size(encoding, info.width, info.height)
        stream.pix_fmt = encoding.pix_fmt
        context = stream.codec_context
        context.time_base = info.time_base  # the source's pts go through unchanged
        context.colorspace = context.color_primaries = context.color_trc = _BT709
        context.color_range = _LIMITED
        return stream

    def _add_audio(self, source: Any, encoding: _Encoding) -> tuple[Any, bool]:
        """The output audio stream and whether packets are copied (True) or re-encoded (False)."""
        if source is None:
            return None, False
        try:
            return self._container.add_stream_from_template(source), True
        except ValueError:  # the container does not take this codec (WebM takes only Opus and Vorbis)
            pass
        rate = (
            48_000 if encoding.audio_codec == "libopus" else source.codec_context.sample_rate
        )  # Opus: 48 kHz
        stream = self._container.add_stream(encoding.audio_codec, rate=rate)
        stream.layout = source.codec_context.layout
        return stream, False

    def _write(self, frame: VideoFrame, rendered: Image.Image) -> None:
        av = _av()
        picture = _pad_to(self._picture(rendered), (self._video.width, self._video.height))
        # Not VideoFrame.from_image: it converts to RGB, dropping the alpha (PyAV 18.1).
        rgb = av.VideoFrame.from_ndarray(
            np.asarray(picture), format="rgba" if picture.mode == "RGBA" else "rgb24"
        )
        coded = rgb.reformat(format=self._encoding.pix_fmt, dst_colorspace="ITU709", dst_color_range="MPEG")
        coded.pts = self._next_pts(frame)
        coded.time_base = self._reader.info.time_base
        self._container.mux(self._video.encode(coded))

    def _picture(self, rendered: Image.Image) -> Image.Image:
        """RGBA for the codecs with alpha (an "L" mask or an RGB composite opaque); RGB for H.264, a
        cut-out composited on the background by stages.on_background."""
        if self._encoding.pix_fmt.startswith("yuva"):
            return rendered if rendered.mode == "RGBA" else rendered.convert("RGBA")
        if rendered.mode == "RGBA":
            alpha = np.asarray(rendered.getchannel("A"))
            return stages.on_background(rendered.convert("RGB"), alpha, self._background)
        return rendered if rendered.mode == "RGB" else rendered.convert("RGB")

    def _next_pts(self, frame: VideoFrame) -> int:
        """The source's pts, or one tick past the previous where it has none or repeats one (encoders
        refuse pts that do not increase)."""
        pts = frame.pts
        if pts is None or (self._last_pts is not None and pts <= self._last_pts):
            step = max(1, round(1 / (self._reader.info.frame_rate * self._reader.info.time_base)))
            pts = 0 if self._last_pts is None else self._last_pts + step
        self._last_pts = pts
        return pts

    def _mux_audio(self, packets: list[Any]) -> None:
        if self._audio is None:
            return
        for packet in packets:
            if self._copy_audio:
                packet.stream = self._audio
                self._container.mux(packet)
            else:
                for decoded in packet.decode():
                    self._container.mux(self._audio.encode(decoded))

    def _finish(self) -> None:
        self._container.mux(self._video.encode(None))
        if self._audio is not None and not self._copy_audio:
            self._container.mux(self._audio.encode(None))
        self._container.close()

    def _discard(self) -> None:
        try:
            self._container.close()
        except Exception:  # noqa: BLE001 - closing a half-written file may fail; it is deleted anyway
            pass
        super()._discard()


class _FramesWriter(VideoWriter):
    """A folder of PNGs, frame_000001.png ...: RGBA cut-outs, grey masks or RGB composites, as
    rendered. The folder is built under the temporary name and renamed into place at close()."""

    def __init__(self, path: Path, reader: VideoReader) -> None:
        super().__init__(path, reader)
        if path.exists() and not _is_frames_folder(path):
            raise RmbgError(f"{path} exists and holds other files than frames; give a new or empty folder.")
        shutil.rmtree(self.partial, ignore_errors=True)
        self.partial.mkdir(parents=True)

    def _write(self, frame: VideoFrame, rendered: Image.Image) -> None:
        name = FRAME_NAME.format(frame.index + 1)
        (self.partial / name).write_bytes(stages.encode(rendered, "png"))

    def _replace_target(self) -> None:
        # A folder cannot replace a non-empty one in one rename: the old frames go aside first.
        previous = self.path.with_name(f".{self.path.name}.previous-{os.getpid()}")
        if self.path.exists():
            os.replace(self.path, previous)
        os.replace(self.partial, self.path)
        shutil.rmtree(previous, ignore_errors=True)

    def _discard(self) -> None:
        shutil.rmtree(self.partial, ignore_errors=True)


def _coded_size(encoding: _Encoding, width: int, height: int) -> tuple[int, int]:
    """The frame size to encode: H.264 in 4:2:0 takes only even sizes, so an odd one gets one more
    column or row (see _pad_to); VP9 and ProRes code any size."""
    if encoding.codec != "libx264":
        return width, height
    return width + width % 2, height + height % 2


def _pad_to(image: Image.Image, size: tuple[int, int]) -> Image.Image:
    """`image` grown to `size` by repeating its last column and row (no visible border)."""
    if image.size == size:
        return image
    pixels = np.asarray(image)
    grow = ((0, size[1] - image.height), (0, size[0] - image.width)) + ((0, 0),) * (pixels.ndim - 2)
    return Image.fromarray(np.pad(pixels, grow, mode="edge"), image.mode)


def _is_frames_folder(path: Path) -> bool:
    """Whether `path` is an empty folder or one holding only frame_*.png (an earlier run's output)."""
    return path.is_dir() and all(p.is_file() and p.match("frame_*.png") for p in path.iterdir())
