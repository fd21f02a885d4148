"""`rmbg remove`: background removal for files, folders, globs and stdin/stdout."""

from __future__ import annotations

import glob
import io
import os
import signal
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from .errors import RmbgError
from .images import DEFAULT_MAX_PIXELS

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".webp", ".bmp", ".tif", ".tiff", ".gif", ".jfif"}
FORMATS = ("png", "webp")


@dataclass(frozen=True)
class Job:
    source: Path | None  # None: standard input
    target: Path | None  # None: standard output

    @property
    def label(self) -> str:
        return str(self.source) if self.source else "<stdin>"


def expand_inputs(inputs: list[str]) -> list[tuple[Path, Path]]:
    """(file, path relative to its input root) for every image named by files, folders or globs."""
    found: list[tuple[Path, Path]] = []
    for item in inputs:
        matches = sorted(glob.glob(item, recursive=True)) if glob.has_magic(item) else [item]
        if not matches:
            raise RmbgError(f"{item} matches no file.")
        for match in map(Path, matches):
            if match.is_dir():
                found += [
                    (p, p.relative_to(match))
                    for p in sorted(match.rglob("*"))
                    if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES
                ]
            elif match.exists():
                found.append((match, Path(match.name)))
            else:
                raise RmbgError(f"{match} does not exist.")
    return found


def plan_jobs(inputs: list[str], output: str, fmt: str) -> list[Job]:
    if inputs == ["-"]:
        target = None if output == "-" else Path(output)
        return [Job(None, target)]
    if "-" in inputs:
        raise RmbgError("'-' (standard input) cannot be mixed with other inputs.")
    files = expand_inputs(inputs)
    single_file = len(files) == 1 and Path(inputs[0]).is_file()
    if output == "-":
        if not single_file:
            raise RmbgError("--output - (standard output) takes exactly one input image.")
        return [Job(files[0][0], None)]
    out = Path(output)
    if single_file and out.suffix.lower() in (".png", ".webp"):
        return [Job(files[0][0], out)]
    return [Job(src, out / rel.with_suffix(f".{fmt}")) for src, rel in files]


def encode(image, fmt: str) -> bytes:
    buffer = io.BytesIO()
    if fmt == "webp":
        image.save(buffer, "WEBP", lossless=True, exact=True)  # exact: keep colours under alpha 0
    else:
        image.save(buffer, "PNG", optimize=False, compress_level=6)
    return buffer.getvalue()


def write_atomically(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(f".{path.name}.partial-{os.getpid()}")
    try:
        partial.write_bytes(data)
        os.replace(partial, path)
    finally:
        partial.unlink(missing_ok=True)


class Progress:
    """One status line on stderr: done/total, files per second, failures."""

    def __init__(self, total: int, enabled: bool) -> None:
        self.total, self.done, self.failed = total, 0, 0
        self.enabled = enabled
        self.start = time.perf_counter()

    def update(self, count: int, failed: int = 0) -> None:
        self.done += count
        self.failed += failed
        if self.enabled:
            rate = self.done / max(time.perf_counter() - self.start, 1e-9)
            left = (self.total - self.done) / rate if rate else 0
            sys.stderr.write(
                f"\r{self.done}/{self.total} images, {rate:.2f} img/s, "
                f"{self.failed} failed, about {left:.0f} s left "
            )
            sys.stderr.flush()

    def finish(self) -> None:
        if self.enabled:
            sys.stderr.write("\n")


def _load_click():
    try:
        import click
    except ImportError:
        sys.stderr.write("error: the rmbg command needs click; pip install 'rmbg-toolkit[ort]' or [trt].\n")
        sys.exit(2)
    return click


def build_cli():
    click = _load_click()

    @click.group(context_settings={"help_option_names": ["-h", "--help"]})
    def cli() -> None:
        """Remove image backgrounds with an exported BiRefNet / RMBG-2.0 model."""

    @cli.command()
    @click.argument("inputs", nargs=-1, required=True)
    @click.option(
        "-m",
        "--model",
        "model_dir",
        required=True,
        type=click.Path(file_okay=False),
        help="Folder written by rmbg-export (holds model.json).",
    )
    @click.option(
        "-o",
        "--output",
        required=True,
        help="Output folder, a .png/.webp file for one input, or - for standard output.",
    )
    @click.option("--mask-only", is_flag=True, help="Write the 8-bit mask instead of the cut-out.")
    @click.option("--background", help="Composite on this colour (name or #rrggbb) instead of transparency.")
    @click.option("--format", "fmt", type=click.Choice(FORMATS), default="png", show_default=True)
    @click.option(
        "--batch-size", type=int, default=None, help="Images per inference call (default: model max)."
    )
    @click.option("--skip-existing", is_flag=True, help="Leave inputs whose output already exists.")
    @click.option(
        "--backend",
        default="auto",
        show_default=True,
        help="auto, tensorrt, onnxruntime-cuda or onnxruntime-cpu.",
    )
    @click.option(
        "--max-pixels",
        type=int,
        default=DEFAULT_MAX_PIXELS,
        show_default=True,
        help="Refuse larger images (decompression-bomb guard).",
    )
    @click.option("--quiet", is_flag=True, help="No progress line.")
    def remove(
        inputs,
        model_dir,
        output,
        mask_only,
        background,
        fmt,
        batch_size,
        skip_existing,
        backend,
        max_pixels,
        quiet,
    ) -> None:
        """Remove the background of INPUTS (files, folders, globs, or - for standard input)."""
        from .remover import Remover, parse_color

        if background is not None:
            parse_color(background)  # a bad colour fails before the model loads
        jobs = plan_jobs(list(inputs), output, fmt)
        if skip_existing:
            jobs = [j for j in jobs if j.target is None or not j.target.exists()]
        remover = Remover(model_dir, backend, max_pixels=max_pixels)
        step = max(1, min(batch_size or remover.backend.max_batch, 64))
        progress = Progress(len(jobs), enabled=not quiet and len(jobs) > 1)
        failures = 0
        for start in range(0, len(jobs), step):
            failures += _process(remover, jobs[start : start + step], mask_only, background, fmt, progress)
        progress.finish()
        if failures:
            click.echo(f"{failures} of {len(jobs)} images failed.", err=True)
            sys.exit(1)

    return cli


def _process(remover, jobs: list[Job], mask_only: bool, background, fmt: str, progress: Progress) -> int:
    """Run one batch; a failing image is reported and the rest continue. Returns the failures."""
    images, ready = [], []
    for job in jobs:
        try:
            source = sys.stdin.buffer.read() if job.source is None else job.source
            images.append(remover.load(source))
            ready.append(job)
        except RmbgError as err:
            sys.stderr.write(f"\nerror: {err}\n")
    failed = len(jobs) - len(ready)
    if ready:
        results = remover.remove_backgrounds(images, background=background, mask_only=mask_only)
        for job, result in zip(ready, results, strict=True):
            try:
                data = encode(result, fmt if job.target is None else _format_of(job.target, fmt))
                if job.target is None:
                    sys.stdout.buffer.write(data)
                    sys.stdout.buffer.flush()
                else:
                    write_atomically(job.target, data)
            except OSError as err:
                sys.stderr.write(f"\nerror: cannot write {job.target}: {err.strerror or err}\n")
                failed += 1
    progress.update(len(jobs), failed)
    return failed


def _format_of(path: Path, default: str) -> str:
    suffix = path.suffix.lower().lstrip(".")
    return suffix if suffix in FORMATS else default


def main() -> None:
    def on_sigterm(_signum, _frame):
        raise KeyboardInterrupt  # unwind through the finally blocks that remove partial files

    signal.signal(signal.SIGTERM, on_sigterm)
    cli = build_cli()
    try:
        cli.main(standalone_mode=False)
    except RmbgError as err:
        sys.stderr.write(f"error: {err}\n")
        sys.exit(1)
    except KeyboardInterrupt:
        sys.stderr.write("\ninterrupted\n")
        sys.exit(130)
    except Exception as err:  # click's own usage errors
        import click

        if isinstance(err, click.ClickException):
            err.show()
            sys.exit(err.exit_code)
        if isinstance(err, click.exceptions.Abort):
            sys.exit(130)
        raise
