"""What `rmbg-export inspect` reports about a checkpoint source."""

from __future__ import annotations

from .checkpoint import load_into, read_checkpoint, resolve_patch_order
from .errors import ExportError
from .files import sha256_file
from .model import create_model


def inspect_checkpoint(source: str, *, patch_order: str | None = None, revision: str | None = None):
    """(field, value) rows; a checkpoint that does not load strictly is reported, not raised."""
    ckpt = read_checkpoint(source, revision)
    try:
        order, order_origin = resolve_patch_order(patch_order, ckpt.code_text, ckpt.code_name)
    except ExportError:
        what = "the code file is ambiguous" if ckpt.code_text else "no code file beside the weights"
        order, order_origin = None, f"unknown: {what} (pass --patch-order)"
    model = create_model(ckpt.backbone, order or "legacy")  # the order changes no parameter
    try:
        ignored = load_into(model, ckpt.state, ckpt.resolved.description)
        strict = "yes" + (f" (training-only heads absent: {len(ignored)} keys)" if ignored else "")
    except ExportError as err:
        strict = f"no: {err}"
    return [
        ("source", f"{ckpt.resolved.description} ({ckpt.resolved.origin})"),
        ("weights", str(ckpt.resolved.weights)),
        ("sha256", sha256_file(ckpt.resolved.weights)),
        ("backbone", ckpt.backbone),
        ("parameters", f"{sum(p.numel() for p in model.parameters()):,}"),
        ("stored dtype", ckpt.stored_dtype),
        ("patch order", f"{order or '?'} ({order_origin})"),
        ("loads strictly", strict),
    ]
