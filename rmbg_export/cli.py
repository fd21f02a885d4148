"""`rmbg-export`: export a checkpoint (the default command) or inspect one."""

from __future__ import annotations

import sys

import click

from .errors import ExportError


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


@cli.command()
@click.argument("source")
@click.option("--patch-order", type=click.Choice(["legacy", "einops"]), help="Override the code file.")
@click.option("--revision", help="Hub revision (branch, tag or commit).")
def inspect(source: str, patch_order: str | None, revision: str | None) -> None:
    """Print what SOURCE holds and whether it loads strictly."""
    from .inspection import inspect_checkpoint

    for name, value in inspect_checkpoint(source, patch_order=patch_order, revision=revision):
        click.echo(f"{name:<18}{value}")


def main() -> None:
    try:
        cli.main(standalone_mode=False)
    except click.exceptions.Abort:
        click.echo("aborted", err=True)
        sys.exit(130)
    except click.ClickException as err:
        err.show()
        sys.exit(err.exit_code)
    except ExportError as err:
        click.echo(f"error: {err}", err=True)
        sys.exit(1)
    except KeyboardInterrupt:
        click.echo("interrupted; no output file was left half-written", err=True)
        sys.exit(130)
