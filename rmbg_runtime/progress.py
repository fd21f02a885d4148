"""The one progress line of every command that works through many images (`rmbg remove`, `eval`,
`compare`): "done/total images" (with the rate, failures and time left where the run counts them),
redrawn with a carriage return on a terminal; off a terminal, plain lines every PLAIN_LINE_EVERY_S
seconds (or at each tenth of the run) and at the end, so a log grows by a bounded number of lines.
Errors go through `error`, so that they never land in the middle of the status line."""

from __future__ import annotations

import sys
import time

PLAIN_LINE_EVERY_S = 10.0


class ProgressLine:
    def __init__(self, total: int = 0, *, enabled: bool = True, stream=None, rates: bool = True) -> None:
        """`rates`: img/s, failures and time left on the line, and plain lines by time (`rmbg remove`,
        whose runs may be long); without, plain lines at each tenth (`eval`, `compare`)."""
        self.total, self.done, self.failed = total, 0, 0
        self.stream = stream or sys.stderr
        self.enabled, self.rates = enabled, rates
        self.interactive = enabled and self.stream.isatty()
        self.line_open = False  # a \r line is on screen without its newline
        self.start = self.last_plain = time.perf_counter()
        self.last_tenth = 0

    def update(self, count: int, failed: int = 0) -> None:
        """`count` more images done, `failed` of them failed."""
        self.report(self.done + count, self.total, failed)

    def report(self, done: int, total: int, failed: int = 0) -> None:
        """Where the run stands (the callback form: done so far, of total)."""
        self.done, self.total = done, total
        self.failed += failed
        if not self.enabled:
            return
        now, line = time.perf_counter(), self.text()
        finished = self.done >= self.total
        if self.interactive:
            self.stream.write(f"\r{line} " + ("\n" if finished else ""))
            self.line_open = not finished
        else:
            tenth = self.done * 10 // max(1, self.total)
            due = now - self.last_plain >= PLAIN_LINE_EVERY_S if self.rates else tenth > self.last_tenth
            if finished or due:
                self.stream.write(f"{line}\n")
                self.last_plain, self.last_tenth = now, tenth
        self.stream.flush()

    def text(self) -> str:
        line = f"{self.done}/{self.total} images"
        if not self.rates:
            return line
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
