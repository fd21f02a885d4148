"""What a run needs to know of video files without PyAV (the `video` extra): which inputs are videos,
which output name makes which kind of video, and the one sentence when PyAV is missing. jobs.py plans
runs from these, so that a run of images never imports av; rmbg_runtime.video.io re-exports them."""

from __future__ import annotations

from pathlib import PurePath

from .errors import RmbgError

VIDEO_SUFFIXES: tuple[str, ...] = (".mp4", ".mov", ".m4v", ".mkv", ".webm", ".avi")

# output suffix -> kind; an output folder is the kind FRAMES (one RGBA PNG a frame)
OUTPUT_KINDS: dict[str, str] = {".webm": "webm", ".mov": "prores", ".mp4": "h264"}
FRAMES = "frames"
KINDS: tuple[str, ...] = (*OUTPUT_KINDS.values(), FRAMES)

# --video-format (the kind of each video output in an output folder) -> that output's suffix
VIDEO_FORMATS: dict[str, str] = {"webm": ".webm", "mov": ".mov", "mp4": ".mp4", FRAMES: ".frames"}
DEFAULT_VIDEO_FORMAT = "webm"

INSTALL_HINT = 'pip install "rmbg-toolkit[video]"'


def is_video_file(path: PurePath) -> bool:
    return path.suffix.lower() in VIDEO_SUFFIXES


def output_kind(target: PurePath, kind: str | None = None) -> str:
    """The kind of video written to `target`: `kind` when given, else its suffix's, else frames."""
    if kind is not None:
        if kind not in KINDS:
            raise RmbgError(f"video kind {kind!r} is unknown; use one of {', '.join(KINDS)}.")
        return kind
    return OUTPUT_KINDS.get(target.suffix.lower(), FRAMES)


def format_kind(video_format: str) -> str:
    """The kind a --video-format name writes."""
    return output_kind(PurePath(f"x{VIDEO_FORMATS[video_format]}"))


def check_video_support() -> None:
    """One sentence, before any work, when PyAV (the video extra) is not installed."""
    try:
        import av  # noqa: F401 - only whether it imports
    except ImportError:
        raise RmbgError(f"videos need PyAV, which is not installed here; {INSTALL_HINT}.") from None
