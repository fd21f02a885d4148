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
from collections.abc import Iterator
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Any

from PIL import Image

from ..errors import ImageError, RmbgError

VIDEO_SUFFIXES: tuple[str, ...] = (".mp4", ".mov", ".m4v", ".mkv", ".webm", ".avi")
OUTPUT_KINDS: dict[str, str] = {".webm": "webm", ".mov": "prores", ".mp4": "h264"}
FRAMES_KIND = "frames"  # a folder of PNGs: any output path without a suffix in OUTPUT_KINDS
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
    av.logging.set_level(av.logging.ERROR)  # FFmpeg's warnings would interleave with the progress line
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
        pending = self._first
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
