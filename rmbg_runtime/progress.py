"""The one progress line of every command that works through many images (`rmbg remove`, `eval`,
`compare`): "done/total images" (with the rate, failures and time left where the run counts them;
in a run with videos, "done/total files" and the current video's frames, frames/s and time left),
redrawn with a carriage return on a terminal (a video's at most every REDRAW_EVERY_S seconds); off a
terminal, plain lines every PLAIN_LINE_EVERY_S seconds (or at each tenth of the run) and at the end,
so a log grows by a bounded number of lines. Errors go through `error`, so that they never land in the
middle of the status line."""

from __future__ import annotations

import sys
import time
from dataclasses import dataclass

PLAIN_LINE_EVERY_S = 10.0
REDRAW_EVERY_S = 0.2  # a terminal line redrawn per frame would cost more than the frame


@dataclass
class _Clip:
    """The video whose frames are being processed (or were last)."""

    label: str
    start: float
    done: int = 0
    total: int | None = None  # the container's frame count, when it has one
    end: float | None = None  # set when the video is done

    def text(self) -> str:
        rate = self.done / max((self.end or time.perf_counter()) - self.start, 1e-9)
        if self.end is not None:
            return f"{self.label}: {self.done} frames, {rate:.1f} frames/s"
        of = f"/{self.total}" if self.total else ""
        left = f", about {(self.total - self.done) / rate:.0f} s left" if self.total and rate else ""
        return f"{self.label}: {self.done}{of} frames, {rate:.1f} frames/s{left}"


class ProgressLine:
    def __init__(
        self, total: int = 0, *, enabled: bool = True, stream=None, rates: bool = True, videos: bool = False
    ) -> None:
        """`rates`: img/s, failures and time left on the line, and plain lines by time (`rmbg remove`,
        whose runs may be long); without, plain lines at each tenth (`eval`, `compare`). `videos`: the
        run holds videos, so it counts files, and the rates are the current video's frames."""
        self.total, self.done, self.failed = total, 0, 0
        self.stream = stream or sys.stderr
        self.enabled, self.rates, self.videos = enabled, rates, videos
        self.interactive = enabled and self.stream.isatty()
        self.line_open = False  # a \r line is on screen without its newline
        self.start = self.last_plain = self.last_drawn = time.perf_counter()
        self.last_tenth = 0
        self.clip: _Clip | None = None
        self.width = 0  # of the last line drawn on a terminal (in a run with videos)

    @property
    def unit(self) -> str:
        return "files" if self.videos else "images"

    def update(self, count: int, failed: int = 0) -> None:
        """`count` more images (or videos) done, `failed` of them failed."""
        self.report(self.done + count, self.total, failed)

    def report(self, done: int, total: int, failed: int = 0) -> None:
        """Where the run stands (the callback form: done so far, of total)."""
        self.done, self.total = done, total
        self.failed += failed
        if self.clip is not None and self.clip.end is None:
            self.clip.end = time.perf_counter()  # the video in progress was this file
        self._draw(finished=self.done >= self.total)

    def frames(self, label: str, done: int, total: int | None) -> None:
        """Where the video `label` stands: `done` frames written, of `total` (None: not known)."""
        now = time.perf_counter()
        if self.clip is None or self.clip.label != label or self.clip.end is not None:
            self.clip = _Clip(label, now)
        self.clip.done, self.clip.total = done, total
        if not self.interactive or now - self.last_drawn >= REDRAW_EVERY_S:
            self._draw(finished=False)

    def _draw(self, finished: bool) -> None:
        if not self.enabled:
            return
        now, line = time.perf_counter(), self.text()
        if self.interactive:
            if self.videos:  # a video's part of the line changes length: blank the old tail
                line, self.width = line.ljust(self.width), len(line)
            self.stream.write(f"\r{line} " + ("\n" if finished else ""))
            self.line_open = not finished
            self.last_drawn = now
        else:
            tenth = self.done * 10 // max(1, self.total)
            due = now - self.last_plain >= PLAIN_LINE_EVERY_S if self.rates else tenth > self.last_tenth
            if finished or due:
                self.stream.write(f"{line}\n")
                self.last_plain, self.last_tenth = now, tenth
        self.stream.flush()

    def text(self) -> str:
        line = f"{self.done}/{self.total} {self.unit}"
        if not self.rates:
            return line
        if self.videos:
            return f"{line}, {self.failed} failed" + (f"; {self.clip.text()}" if self.clip else "")
        rate = self.done / max(time.perf_counter() - self.start, 1e-9)
        left = (self.total - self.done) / rate if rate else 0
        return f"{line}, {rate:.2f} img/s, {self.failed} failed, about {left:.0f} s left"

    def error(self, message: str) -> None:
        self.finish()
        self.stream.write(f"error: {message}\n")
        self.stream.flush()

    def finish(self) -> None:
        if self.line_open:
            self.stream.write("\n")
            self.line_open = False
