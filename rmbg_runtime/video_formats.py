"""The names of video outputs, without PyAV (the `video` extra): --video-format's choices, which kind
an output name makes, and the one sentence when PyAV is missing. jobs.py plans runs from these and
from rmbg_runtime.video.io's suffixes (that module imports av only when a clip is opened), so a run of
images never imports av."""

from __future__ import annotations

from pathlib import PurePath

from .errors import RmbgError
from .video.io import FRAMES_KIND as FRAMES
from .video.io import INSTALL, VIDEO_SUFFIXES, output_kind

# --video-format (the kind of each video output in an output folder) -> that output's suffix
VIDEO_FORMATS: dict[str, str] = {"webm": ".webm", "mov": ".mov", "mp4": ".mp4", FRAMES: ".frames"}
DEFAULT_VIDEO_FORMAT = "webm"


def is_video_file(path: PurePath) -> bool:
    return path.suffix.lower() in VIDEO_SUFFIXES


def format_kind(video_format: str) -> str:
    """The kind a --video-format name writes."""
    return output_kind(PurePath(f"x{VIDEO_FORMATS[video_format]}"))


def check_video_support() -> None:
    """One sentence, before any work, when PyAV (the video extra) is not installed."""
    try:
        import av  # noqa: F401 - only whether it imports
    except ImportError:
        raise RmbgError(f"videos need PyAV, which is not installed here; {INSTALL}.") from None
