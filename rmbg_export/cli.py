"""`rmbg-export`: export a checkpoint (the default command) or inspect one; `triton` and
`preflight` read an export only, so this module and theirs load without torch."""

from __future__ import annotations

import dataclasses
import signal
import sys
from pathlib import Path

import click

from rmbg_runtime.contract import EXPORT_PRECISIONS, GRAPH_PRECISIONS
from rmbg_runtime.errors import RmbgError

from .architecture import BACKBONES, DEFORM_CONV_MODES, PATCH_ORDERS
from .errors import ExportError
from .options import DEFAULT_DEFORM_CONV, DEFAULT_OPSET, DEFAULT_OPT_LEVEL, DEFAULT_PRECISION, EngineOptions


class DefaultGroup(click.Group):
    """A group whose first argument, when it names no sub-command, goes to `export`."""

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        if args and args[0] not in self.commands and args[0] not in ("--help", "-h", "--version"):
            args = ["export", *args]
        return super().parse_args(ctx, args)


@click.group(cls=DefaultGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="rmbg-toolkit")
def cli() -> None:
    """Export BiRefNet / RMBG-2.0 checkpoints to ONNX and TensorRT.

    rmbg-export SOURCE --output DIR runs the export; SOURCE is a checkpoint file, a folder or a hub
    repo id such as ZhengPeng7/BiRefNet or briaai/RMBG-2.0.
    """


# BiRefNet's checkpoints are trained at 1024 (the HR ones at 2048); memory grows with the pixels
# (a Swin-L export at 1024 peaks at 9 GiB RSS), so 4096, 16x the pixels of 1024, is the most that a
# large machine can trace; 99968 asked for a 149 GiB allocation before anything was said.
MAX_RESOLUTION = 4096


def parse_resolution(_ctx, _param, value: str) -> tuple[int, int]:
    """'1024' or 'HxW' (height x width), e.g. '768x1024'."""
    try:
        parts = [int(p) for p in value.lower().split("x")]
    except ValueError:
        parts = []
    if len(parts) == 1:
        parts *= 2
    if len(parts) != 2:
        raise click.BadParameter(f"{value!r} is not a size: use 1024 or HxW such as 768x1024.")
    if max(parts) > MAX_RESOLUTION:  # multiples of 32 are checked with the other options (pipeline.py)
        raise click.BadParameter(
            f"{value!r}: each side may be at most {MAX_RESOLUTION} (BiRefNet is trained at 1024, its HR "
            "checkpoints at 2048); pick e.g. 1024 or 768x1024."
        )
    return parts[0], parts[1]


@cli.command()
@click.argument("source")
@click.option(
    "-o",
    "--output",
    type=click.Path(file_okay=False, path_type=Path),
    required=True,
    help="Folder for model.onnx, model_fp16.onnx, model.engine and model.json.",
)
@click.option(
    "--resolution",
    default="1024",
    callback=parse_resolution,
    show_default=True,
    help="Network input size: one number or HxW (height x width), multiples of 32.",
)
@click.option("--max-batch", default=4, show_default=True, help="Largest batch the graph/engine serves.")
@click.option(
    "--precision", type=click.Choice(EXPORT_PRECISIONS), default=DEFAULT_PRECISION, show_default=True
)
@click.option(
    "--deform-conv",
    type=click.Choice(DEFORM_CONV_MODES),
    default=DEFAULT_DEFORM_CONV,
    show_default=True,
    help="ONNX DeformConv operator, or GridSample + MatMul (no plugins).",
)
@click.option(
    "--patch-order",
    type=click.Choice(PATCH_ORDERS),
    help="Image-patch channel order; read from the hub code file when not given.",
)
@click.option(
    "--backbone", type=click.Choice(list(BACKBONES)), help="Check the checkpoint holds this backbone."
)
@click.option("--revision", help="Hub revision (branch, tag or commit).")
@click.option(
    "--opset", default=DEFAULT_OPSET, show_default=True, help="ONNX opset (19+ for native DeformConv)."
)
@click.option("--verify/--no-verify", default=True, show_default=True, help="Check each stage's numbers.")
@click.option("--onnx-only", is_flag=True, help="Stop after the ONNX stage (no GPU or TensorRT needed).")
@click.option(
    "--cpu-int8",
    is_flag=True,
    help="Also write model_int8.onnx for ONNX Runtime CPU (static QDQ), gated against fp32.",
)
@click.option(
    "--calibration-images",
    type=click.Path(file_okay=False, exists=True, path_type=Path),
    help="Photos to calibrate the int8 graph on (default: synthetic images, a weak calibration).",
)
@click.option(
    "--openvino",
    is_flag=True,
    help="Also write OpenVINO IR (model_openvino.xml/.bin; with --cpu-int8 an int8 IR) checked against fp32.",
)
@click.option(
    "--workspace-gib",
    type=click.FloatRange(min=0, min_open=True),
    default=None,
    help="TensorRT workspace limit in GiB.",
)
@click.option(
    "--opt-level",
    type=click.IntRange(0, 5),
    default=DEFAULT_OPT_LEVEL,
    show_default=True,
    help="TensorRT builder optimization level.",
)
@click.option(
    "--opt-batch",
    type=click.IntRange(min=1),
    default=None,
    help="Batch size TensorRT tunes for (default: 1).",
)
@click.option(
    "--timing-cache",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="TensorRT timing cache file, read and updated (default: OUTPUT/timing-GPU-trtVERSION.cache).",
)
@click.option("--tf32", is_flag=True, help="Let TensorRT use TF32 in fp32 layers (off: fp32 means fp32).")
@click.option(
    "--weak-typing",
    is_flag=True,
    help="TensorRT 10.x only: build the fp32 graph with the FP16 flag and pinned fp32 layers.",
)
def export(source: str, output: Path, resolution: tuple[int, int], **kw) -> None:
    """Export SOURCE to ONNX (and a TensorRT engine unless --onnx-only)."""
    from .export_run import ExportOptions, run_export

    engine = EngineOptions(**{f.name: kw.pop(f.name) for f in dataclasses.fields(EngineOptions)})
    options = ExportOptions(
        source=source, output=output, height=resolution[0], width=resolution[1], engine=engine, **kw
    )
    run_export(options, log=click.echo)


@cli.command()
@click.argument("source")
@click.option("--patch-order", type=click.Choice(PATCH_ORDERS), help="Override the code file.")
@click.option("--revision", help="Hub revision (branch, tag or commit).")
def inspect(source: str, patch_order: str | None, revision: str | None) -> None:
    """Print what SOURCE holds and whether it loads strictly."""
    from .inspection import inspect_checkpoint

    for name, value in inspect_checkpoint(source, patch_order=patch_order, revision=revision):
        click.echo(f"{name:<18}{value}")


@cli.command()
@click.argument("folder", type=click.Path(file_okay=False, exists=True, path_type=Path))
@click.option("--tensorrt", "version", required=True, help="Target TensorRT version, e.g. 10.13 or 11.4.")
@click.option(
    "--precision", type=click.Choice(EXPORT_PRECISIONS), default=DEFAULT_PRECISION, show_default=True
)
@click.option("--weak-typing", is_flag=True, help="Check the weakly typed path (TensorRT 10.x).")
def preflight(folder: Path, version: str, precision: str, weak_typing: bool) -> None:
    """Check an export's graph against TensorRT's ONNX operator support, without TensorRT."""

    from rmbg_runtime.contract import GRAPH_FILES

    from .tensorrt.plan import build_plan
    from .tensorrt.preflight import load_graph, needs_plugins, require_supported, require_version

    plan = build_plan(require_version(version), precision, weak_typing=weak_typing)
    graph = folder / GRAPH_FILES[plan.graph]
    if not graph.is_file():
        raise ExportError(f"{graph} does not exist; export with --precision {precision} first.")
    model = load_graph(graph)
    require_supported(model, version, graph.name)
    plugin = " (DeformConv through the ModulatedDeformConv2d plugin)" if needs_plugins(model) else ""
    click.echo(f"{graph.name}: every node is supported by TensorRT {version}; {plan.describe()}{plugin}.")


@cli.command()
@click.argument("export_dir", type=click.Path(file_okay=False, exists=True, path_type=Path))
@click.option(
    "--repository",
    type=click.Path(file_okay=False, path_type=Path),
    required=True,
    help="Triton model repository to write into (other models there are left alone).",
)
@click.option("--name", default="rmbg", show_default=True, help="Ensemble name (and prefix).")
@click.option(
    "--network",
    type=click.Choice(["tensorrt", "onnxruntime", "openvino", "python"]),
    default="tensorrt",
    show_default=True,
    help="tensorrt: the engine as a plan; onnxruntime: a graph; openvino: the IR; python: rmbg_runtime.",
)
@click.option("--kind", type=click.Choice(["gpu", "cpu"]), default="gpu", show_default=True)
@click.option("--instances", default=1, show_default=True, help="Network instances per device.")
@click.option("--pre-post-instances", default=2, show_default=True, help="CPU instances of pre and post.")
@click.option("--max-queue-delay-us", default=5000, show_default=True, help="Dynamic batcher's wait.")
@click.option("--preferred-batch", type=int, multiple=True, help="Preferred batch size (repeatable).")
@click.option(
    "--engine-threads",
    type=click.IntRange(min=1),
    default=None,
    help="The engine's intra-op threads per CPU network instance (ONNX Runtime, OpenVINO) [every core].",
)
@click.option(
    "--precision",
    type=click.Choice(GRAPH_PRECISIONS),
    help="ONNX graph the python network runs in ONNX Runtime [CPU: int8 if exported, else fp32].",
)
@click.option("--ort-tensorrt", is_flag=True, help="ORT backend: TensorRT accelerator, fp16, cached.")
@click.option("--ort-tensorrt-cache", default="/tmp/rmbg-ort-trt-cache", show_default=True)
@click.option("--max-pixels", type=int, default=None, help="Largest decoded image (default: the runtime's).")
def triton(export_dir: Path, repository: Path, preferred_batch: tuple[int, ...], **kw) -> None:
    """Write a Triton Inference Server model repository for the export in EXPORT_DIR."""
    from .triton.configs import TritonOptions
    from .triton.repository import write_repository

    options = TritonOptions(preferred_batch=tuple(preferred_batch), **kw)
    write_repository(export_dir, repository, options, log=click.echo)


def _interrupt_on_sigterm() -> None:
    """Treat SIGTERM like Ctrl-C, so temporary files are removed on the way out."""

    def handler(_signum, _frame):
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, handler)


def main() -> None:
    _interrupt_on_sigterm()
    try:
        cli.main(standalone_mode=False)
    except (click.exceptions.Abort, KeyboardInterrupt):
        click.echo("interrupted; no output file was left half-written", err=True)
        sys.exit(130)
    except click.ClickException as err:
        err.show()
        sys.exit(err.exit_code)
    except (ExportError, RmbgError) as err:
        click.echo(f"error: {err}", err=True)
        sys.exit(1)
    except ModuleNotFoundError as err:  # `triton` and `preflight` run without the export extra
        click.echo(
            f"error: this command needs {err.name}, which is not installed: pip install "
            "'rmbg-toolkit[export]' (or [deploy] for `rmbg-export triton` and `preflight` alone).",
            err=True,
        )
        sys.exit(1)
    except OSError as err:  # a full disk, a read-only folder, a name taken by a folder
        where = f" {err.filename}" if err.filename else ""
        click.echo(
            f"error: cannot write{where} ({err.strerror or err}); free space or fix the output folder, "
            "then run the export again.",
            err=True,
        )
        sys.exit(1)
