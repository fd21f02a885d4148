"""`rmbg remove`: background removal for files, folders, globs and stdin/stdout, images and videos."""

from __future__ import annotations

import itertools
import os
import signal
import sys
import warnings
from pathlib import Path

from .backends import BACKENDS, PRECISIONS, BackendConfig
from .errors import BackendError, RmbgError, UsageError
from .files import is_complete_image, write_atomically
from .images import DEFAULT_MAX_PIXELS
from .jobs import Job, plan_jobs
from .progress import ProgressLine
from .stages import DEFAULT_PNG_COMPRESS_LEVEL, FORMATS, OutputOptions
from .threaded import Pipeline
from .video_formats import VIDEO_FORMATS, check_video_support

PRECISION_HELP = (
    "ONNX Runtime's graph (fp32, fp16, int8) or OpenVINO's precision (fp32, bf16, int8) [ONNX Runtime "
    "CPU: int8 if exported, else fp32; CUDA: the export's; OpenVINO: int8, else bf16 where gated and "
    "this CPU has it, else fp32]."
)


def _engine_options(click):
    """--device-id and --engine-threads: the same two options on every command that opens a backend."""
    device = click.option("--device-id", type=click.IntRange(min=0), default=0, show_default=True,
                          help="GPU to run on (TensorRT, ONNX Runtime CUDA).")  # fmt: skip
    threads = click.option(
        "--engine-threads",
        type=click.IntRange(min=1),
        default=None,
        help="The engine's intra-op threads (ONNX Runtime) [every core]; not the CPU stages (--threads).",
    )

    def decorate(command):
        return device(threads(command))

    return decorate


def _load_click():
    try:
        import click
    except ImportError:
        sys.stderr.write("error: the rmbg command needs click; pip install 'rmbg-toolkit[ort]' or [trt].\n")
        sys.exit(2)
    return click


def build_cli():
    click = _load_click()
    positive = click.IntRange(min=1)

    def color_option(_ctx, _param, value: str | None):
        """--background checked as the command line is read, so a typo is a usage error (exit 2)."""
        if value is None:
            return None
        from .stages import parse_color

        try:
            return parse_color(value)
        except RmbgError as err:
            raise click.BadParameter(str(err)) from None

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
        help="Output folder, a .png/.webp file for one input (its suffix sets the format), or - for "
        "standard output; for one video, a .webm (VP9 with alpha), .mov (ProRes 4444 with alpha) or .mp4 "
        "(H.264, no alpha: on --background, white by default) file, or a folder for its PNG frames.",
    )
    @click.option("--mask-only", is_flag=True, help="Write the 8-bit mask (grey PNG) instead of the cut-out.")
    @click.option(
        "--background",
        callback=color_option,
        help="Composite on this colour (name, #rrggbb, or #rrggbbaa: RGBA out) instead of transparency.",
    )
    @click.option(
        "--format", "fmt", type=click.Choice(FORMATS), help="Output format [png, or the -o suffix]."
    )
    @click.option(
        "--video-format",
        type=click.Choice(list(VIDEO_FORMATS)),
        help="What each video in an output folder becomes: NAME.webm, .mov, .mp4, or NAME.frames/ [webm].",
    )
    @click.option(
        "--smooth", is_flag=True, help="Steady a video's masks over time (less flicker on still scenes)."
    )
    @click.option(
        "--keep-suffix", is_flag=True, help="Name outputs a.jpg.png (so a.jpg and a.png do not clash)."
    )
    @click.option("--batch-size", type=positive, default=None, help="Images per inference call [model max].")
    @click.option("--skip-existing", is_flag=True, help="Leave inputs whose output exists and is complete.")
    @click.option("--backend", type=click.Choice(BACKENDS), default="auto", show_default=True)
    @_engine_options(click)
    @click.option(
        "--max-pixels",
        type=positive,
        default=DEFAULT_MAX_PIXELS,
        show_default=True,
        help="Refuse larger images (decompression-bomb guard).",
    )
    @click.option(
        "--precision",
        type=click.Choice(PRECISIONS),
        help=PRECISION_HELP,
    )
    @click.option("--refine", is_flag=True, help="Estimate foreground colours at soft edges (hair, fur).")
    @click.option(
        "--threads",
        type=positive,
        default=None,
        help="Threads for the CPU stages (decode, pre/post-processing, encode) [min(8, cores)].",
    )
    @click.option(
        "--png-compress-level",
        type=click.IntRange(0, 9),
        default=DEFAULT_PNG_COMPRESS_LEVEL,
        show_default=True,
        help="zlib level for PNG output: 1 is fast, 9 is small.",
    )
    @click.option("--quiet", is_flag=True, help="No progress line and no notes; errors only.")
    @click.option("-v", "--verbose", is_flag=True, help="Say which backend runs, with how many threads.")
    def remove(
        inputs,
        model_dir,
        output,
        mask_only,
        background,
        fmt,
        video_format,
        smooth,
        keep_suffix,
        batch_size,
        skip_existing,
        backend,
        device_id,
        engine_threads,
        max_pixels,
        precision,
        refine,
        threads,
        png_compress_level,
        quiet,
        verbose,
    ) -> None:
        """Remove the background of INPUTS (image and video files, folders, globs, or - for standard
        input)."""
        plan = plan_jobs(list(inputs), output, fmt, keep_suffix, video_format)
        _check_mask_options(mask_only, background, refine, plan.fmt)
        _check_standard_streams(plan.jobs)
        videos = any(job.video_kind for job in plan.jobs)
        if videos:
            check_video_support()  # PyAV missing: one sentence now, before the model loads
        elif smooth:
            raise UsageError("--smooth steadies a video's masks over time, but no input is a video; drop it.")
        jobs = [j for j in plan.jobs if not (skip_existing and j.target and is_complete(j))]
        notes = [f"skipped {skipped}" for skipped in plan.skipped]
        if not jobs:
            notes.append(f"all {len(plan.jobs)} outputs exist already; nothing to do")
        if not quiet:
            sys.stderr.writelines(f"note: {note}\n" for note in notes)
        if not jobs:
            return
        options = OutputOptions(mask_only, background, plan.fmt, png_compress_level, refine)
        config = BackendConfig(backend, device_id, engine_threads, precision)
        with Pipeline.open(
            model_dir, config, threads=threads, max_batch=batch_size, max_pixels=max_pixels
        ) as pipeline:
            if verbose:
                sys.stderr.write(f"note: {running_on(pipeline)}\n")
            progress = ProgressLine(len(jobs), enabled=not quiet and (len(jobs) > 1 or videos), videos=videos)
            failures = _run_jobs(pipeline, jobs, options, progress, smooth)
        if failures:
            click.echo(f"{failures} of {len(jobs)} {progress.unit} failed.", err=True)
            sys.exit(1)

    _add_serve(cli, click)
    _add_quality(cli, click)
    _add_doctor(cli, click)
    return cli


def running_on(pipeline: Pipeline) -> str:
    engine = pipeline.backend.engine_threads
    return (
        f"running on {pipeline.backend.name} with {engine or 'its default'} engine threads and "
        f"{pipeline.threads} threads for the CPU stages"
    )


def _check_mask_options(mask_only: bool, background, refine: bool, fmt: str | None = None) -> None:
    """Options that would be ignored, or a mask that could not stay single-channel, are refused."""
    if not mask_only:
        return
    ignored = [
        name for name, given in (("--background", background is not None), ("--refine", refine)) if given
    ]
    if ignored:
        raise UsageError(
            f"--mask-only writes the mask alone, so {' and '.join(ignored)} would be ignored; "
            "drop one of them."
        )
    if fmt == "webp":
        raise UsageError(
            "WebP has no single-channel mode, so a --mask-only WebP would be RGB; write masks as PNG "
            "(--format png or an -o name ending in .png)."
        )


def _check_standard_streams(jobs: list[Job]) -> None:
    """Closed standard streams are found before the model loads, not after inference."""
    if any(job.source is None for job in jobs) and sys.stdin is None:
        raise UsageError("standard input is closed; pipe an image into rmbg or name an input file.")
    if any(job.target is None for job in jobs) and sys.stdout is None:
        raise UsageError("standard output is closed; redirect it to a file or name one with -o FILE.png.")


def _write_stdout(data: bytes) -> None:
    try:
        sys.stdout.buffer.write(data)
        sys.stdout.buffer.flush()
    except OSError as err:
        # The buffered bytes would fail again when Python flushes stdout at exit: send them nowhere.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        if isinstance(err, BrokenPipeError):
            raise RmbgError(
                "cannot write to standard output because its reader closed it; let the reading command "
                "read the whole image, or write to a file with -o FILE.png."
            ) from None
        raise RmbgError(
            f"cannot write to standard output ({err.strerror or err}); redirect it to a file with room."
        ) from None


def is_complete(job: Job) -> bool:
    """Whether the job's output exists whole. A video's writer renames its output (file or frames
    folder) into place only after the last frame, so for a video, existing is being complete."""
    if job.video_kind is None:
        return is_complete_image(job.target)
    return job.target.exists()


def _run_jobs(pipeline, jobs: list[Job], options: OutputOptions, progress: ProgressLine, smooth: bool) -> int:
    """Every job through the staged pipeline, in order: runs of images together (so they batch), each
    video streamed on its own. Outputs are written in the main thread, so an interrupt always unwinds
    through the write that removes its partial file. Returns failures."""
    failures = 0
    try:
        for is_video, group in itertools.groupby(jobs, key=lambda job: job.video_kind is not None):
            if is_video:
                failures += sum(_run_video(pipeline, job, options, smooth, progress) for job in group)
            else:
                failures += _run_images(pipeline, list(group), options, progress)
    except BackendError as err:  # every later input would fail the same way: stop at the first
        progress.finish()
        done = f"{progress.done} of {progress.total} {progress.unit}"
        raise BackendError(f"stopped after {done}: {err}") from None
    progress.finish()
    return failures


def _run_video(pipeline, job: Job, options: OutputOptions, smooth: bool, progress: ProgressLine) -> int:
    """One video through the pipeline (video/run.py); returns 1 if it failed, else 0."""

    def frames(done: int, total: int | None) -> None:
        progress.frames(job.label, done, total)

    from .video.run import remove_video

    failure = None
    try:
        remove_video(
            pipeline, job.source, job.target, options, kind=job.video_kind, smooth=smooth, progress=frames
        )
    except BackendError:
        raise
    except RmbgError as err:  # this video's own failure (VideoError and the like): the run goes on
        failure = str(err)
    except OSError as err:
        failure = f"cannot write {job.target}: {err.strerror or err}"
    failed = int(failure is not None)
    if failure is not None:
        progress.error(failure)
    progress.update(1, failed)
    return failed


def _run_images(pipeline, jobs: list[Job], options: OutputOptions, progress: ProgressLine) -> int:
    """Images through the pipeline, batched; returns how many failed."""
    sources = (sys.stdin.buffer.read() if job.source is None else job.source for job in jobs)
    failures = 0
    results = pipeline.map(sources, options)
    for job in jobs:
        result = next(results)
        failed = 0
        if isinstance(result, RmbgError):
            progress.error(str(result))
            failed = 1
        elif job.target is None:
            _write_stdout(result.data)
        else:
            try:
                write_atomically(job.target, result.data)
            except OSError as err:
                progress.error(f"cannot write {job.target}: {err.strerror or err}")
                failed = 1
        failures += failed
        progress.update(1, failed)
    return failures


def _add_serve(cli, click) -> None:
    from .server.settings import ServerSettings

    defaults = ServerSettings(model_dir="")

    @cli.command()
    @click.option("-m", "--model", "model_dir", required=True, type=click.Path(file_okay=False))
    @click.option("--host", default=defaults.host, show_default=True, help="Address to bind.")
    @click.option("--port", type=click.IntRange(0, 65535), default=defaults.port, show_default=True)
    @click.option("--backend", default=defaults.backend, show_default=True)
    @_engine_options(click)
    @click.option(
        "--precision",
        type=click.Choice(PRECISIONS),
        help=PRECISION_HELP,
    )
    @click.option(
        "--max-batch",
        type=click.IntRange(min=1),
        help="Images per backend call [CPU: 1; GPU: the export's max].",
    )
    @click.option(
        "--max-delay-ms",
        type=click.FloatRange(min=0),
        default=defaults.max_delay_ms,
        show_default=True,
        help="How long a batch waits to fill.",
    )
    @click.option(
        "--max-queue",
        type=click.IntRange(min=1),
        default=defaults.max_queue,
        show_default=True,
        help="Images waiting for inference; more get 503.",
    )
    @click.option("--max-body-mb", type=click.FloatRange(min=0, min_open=True), default=defaults.max_body_mb,
                  show_default=True, help="Larger request bodies get 413.")  # fmt: skip
    @click.option("--max-pixels", type=click.IntRange(min=1), default=defaults.max_pixels, show_default=True)
    @click.option("--threads", type=click.IntRange(min=1), help="Threads for the CPU stages [min(8, cores)].")
    @click.option("--timeout-s", type=click.FloatRange(min=0, min_open=True), default=defaults.timeout_s,
                  show_default=True, help="Requests not done by then get 504.")  # fmt: skip
    @click.option("--png-compress-level", type=click.IntRange(0, 9), default=defaults.png_compress_level,
                  show_default=True)  # fmt: skip
    @click.option(
        "--log-level",
        type=click.Choice(["critical", "error", "warning", "info", "debug"]),
        default=defaults.log_level,
        show_default=True,
    )
    @click.option("--ui/--no-ui", default=defaults.ui, show_default=True, help="The browser page at /.")
    @_serve_access_options(click, defaults)
    def serve(**kwargs) -> None:
        """Serve the model over HTTP: POST /v1/remove, rembg's POST /api/remove, /healthz, /readyz,
        /metrics, /v1/model and a browser page at /. Needs the serve extra:
        pip install 'rmbg-toolkit[serve]'."""
        kwargs["cors_origins"] = tuple(kwargs["cors_origins"])
        try:
            from .server.run import serve as run_server
        except ImportError as err:
            raise RmbgError(
                f"rmbg serve needs the serve extra ({err.name} is missing); "
                "pip install 'rmbg-toolkit[serve]'."
            ) from None
        run_server(ServerSettings(**kwargs))


def _serve_access_options(click, defaults):
    """`rmbg serve`'s connection limits, API keys, CORS and /docs."""
    seconds = click.FloatRange(min=0, min_open=True)
    options = [
        click.option("--max-connections", type=click.IntRange(min=1), default=defaults.max_connections,
                     show_default=True, help="Open connections; more are closed at once (also kept "
                     "below the file-descriptor limit)."),
        click.option("--header-timeout-s", type=seconds, default=defaults.header_timeout_s, show_default=True,
                     help="A request head not in by then: 408 and close."),
        click.option("--read-timeout-s", type=seconds, default=defaults.read_timeout_s, show_default=True,
                     help="A request body not in by then (counted from its head): 408."),
        click.option("--keep-alive-s", type=seconds, default=defaults.keep_alive_s, show_default=True,
                     help="Idle keep-alive connections close after this."),
        click.option("--api-key-file", type=click.Path(dir_okay=False), help="API keys, one a line (also "
                     "RMBG_API_KEYS); /v1/ and /api/ then need X-Api-Key or Authorization: Bearer. "
                     "Reloaded on SIGHUP."),
        click.option("--metrics-need-key", is_flag=True, help="/metrics needs an API key too."),
        click.option("--cors-origin", "cors_origins", multiple=True, help="Origin allowed to call the "
                     "API from a browser (repeatable; none by default)."),
        click.option("--docs", is_flag=True, help="Serve Swagger UI at /docs (it loads from a public CDN)."),
    ]  # fmt: skip

    def decorate(command):
        for option in reversed(options):
            command = option(command)
        return command

    return decorate


def _exit_if_failed(summary: dict) -> None:
    if summary["failed"]:
        sys.stderr.write(f"{summary['failed']} of {summary['failed'] + summary['images']} images failed.\n")
        sys.exit(1)


def _import_evaluation():
    try:
        from .evaluation import run
    except ImportError as err:
        raise RmbgError(
            f"rmbg eval and compare need the eval extra ({err.name} is missing); "
            "pip install 'rmbg-toolkit[eval]'."
        ) from None
    return run


def _add_quality(cli, click) -> None:
    folder = click.Path(exists=True, file_okay=False, path_type=Path)

    @cli.command(name="eval")
    @click.option("-m", "--model", "model_dir", required=True, type=folder, help="Export folder.")
    @click.argument("images", type=folder)
    @click.option("--masks", required=True, type=folder, help="Ground-truth masks, paired by file name.")
    @click.option("--out", type=click.Path(file_okay=False, path_type=Path), default=Path("eval-report"),
                  show_default=True)  # fmt: skip
    @click.option("--backend", default="auto", show_default=True)
    @click.option("--precision", type=click.Choice(PRECISIONS), help=PRECISION_HELP)
    @_engine_options(click)
    @click.option(
        "--worst", type=click.IntRange(min=0), default=8, show_default=True, help="Rows in worst.png."
    )
    @click.option("--hce/--no-hce", default=True, show_default=True, help="Human correction effort (DIS).")
    @click.option("--save-masks", type=click.Path(file_okay=False, path_type=Path),
                  help="Keep predictions as SAVE_MASKS/<model>/<testset>/<name>.png (BiRefNet).")  # fmt: skip
    def evaluate(
        model_dir, images, masks, out, backend, precision, device_id, engine_threads, worst, hce, save_masks
    ) -> None:
        """Score an export on IMAGES against ground-truth masks: maxFm, wFm, MAE, Sm, meanEm, HCE."""
        from .remover import Remover

        run = _import_evaluation()
        with Remover(model_dir, BackendConfig(backend, device_id, engine_threads, precision)) as remover:
            summary = _evaluate(run, remover, images, masks, out, worst, hce, save_masks)
        click.echo(f"{summary['images']} images: " + ", ".join(
            f"{k} {summary[k]:.4f}" for k in ("maxFm", "wFm", "MAE", "Sm", "meanEm", "HCE") if k in summary
        ) + f"; report in {out}")  # fmt: skip
        _exit_if_failed(summary)

    def _evaluate(run, remover, images, masks, out, worst, hce, save_masks) -> dict:
        line = ProgressLine(rates=False)
        return run.run_eval(
            remover,
            images,
            masks,
            out,
            worst=worst,
            hce=hce,
            save_masks=save_masks,
            progress=line.report,
            on_error=line.error,
        )

    @cli.command()
    @click.argument("dir_a", type=folder)
    @click.argument("dir_b", type=folder)
    @click.argument("images", type=click.Path(exists=True, path_type=Path))
    @click.option("--backend-a", default="auto", show_default=True)
    @click.option("--backend-b", default="auto", show_default=True)
    @click.option("--precision-a", type=click.Choice(PRECISIONS), help="A's precision (as --precision).")
    @click.option("--precision-b", type=click.Choice(PRECISIONS), help="B's precision (as --precision).")
    @click.option("--out", type=click.Path(file_okay=False, path_type=Path), default=Path("compare-report"),
                  show_default=True)  # fmt: skip
    @click.option("--worst", type=click.IntRange(min=0), default=8, show_default=True)
    @click.option("--max-mae", type=float, help="Exit 1 when any image's mask MAE exceeds this.")
    @_engine_options(click)
    def compare(
        dir_a, dir_b, images, backend_a, backend_b, precision_a, precision_b, out, worst, max_mae,
        device_id, engine_threads,
    ):  # fmt: skip
        """Where two exports or backends differ on IMAGES: mask MAE, max |diff|, IoU, share > 8 levels."""
        from .remover import Remover

        run = _import_evaluation()
        line = ProgressLine(rates=False)
        with (
            Remover(dir_a, BackendConfig(backend_a, device_id, engine_threads, precision_a)) as a,
            Remover(dir_b, BackendConfig(backend_b, device_id, engine_threads, precision_b)) as b,
        ):
            summary = run.run_compare(
                a, b, images, out, worst=worst, progress=line.report, on_error=line.error
            )
        s = summary
        click.echo(
            f"{s['images']} images: mean MAE {s['mean_mae']:.2e}, worst {s['worst_mae']:.2e}, max |diff| "
            f"{s['max_abs_diff']} levels, min IoU {s['min_iou_at_half']:.5f}; report in {out}"
        )
        if max_mae is not None and summary["worst_mae"] > max_mae:
            click.echo(
                f"error: the worst image's MAE {summary['worst_mae']:.2e} exceeds --max-mae {max_mae:g}.",
                err=True,
            )
            sys.exit(1)
        _exit_if_failed(summary)


def _add_doctor(cli, click) -> None:
    @cli.command()
    @click.option("-m", "--model", "model_dir", type=click.Path(exists=True, file_okay=False, path_type=Path),
                  help="Export folder: also say which backend `auto` picks for it.")  # fmt: skip
    def doctor(model_dir: Path | None) -> None:
        """Which backends load here (and why not), the CPU and its flags, and `auto`'s choice."""
        from .doctor import report

        for line in report(model_dir):
            click.echo(line)


class Terminated(KeyboardInterrupt):
    """SIGTERM, raised in the main thread so that it unwinds like Ctrl-C."""


def main() -> None:
    def on_sigterm(_signum, _frame):
        raise Terminated  # unwind through the finally blocks that remove partial files

    signal.signal(signal.SIGTERM, on_sigterm)
    # Pillow warns about damage it can read past ("Corrupt EXIF data"); the run reports each file that
    # fails in one line of its own, and these warnings, written from the decode threads, would split
    # those lines.
    warnings.filterwarnings("ignore", category=UserWarning, module=r"PIL\.")
    cli = build_cli()
    import click

    try:
        cli.main(standalone_mode=False)
    except UsageError as err:
        sys.stderr.write(f"error: {err}\n")
        sys.exit(2)
    except RmbgError as err:
        sys.stderr.write(f"error: {err}\n")
        sys.exit(1)
    except (KeyboardInterrupt, click.exceptions.Abort) as err:  # click turns Ctrl-C into Abort
        terminated = isinstance(err, Terminated) or isinstance(err.__context__, Terminated)
        sys.stderr.write("\ninterrupted; no output file was left half-written\n")
        sys.exit(128 + (signal.SIGTERM if terminated else signal.SIGINT))
    except click.ClickException as err:  # usage errors
        err.show()
        sys.exit(err.exit_code)
