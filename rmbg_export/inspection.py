"""What `rmbg-export inspect` reports about a checkpoint source."""

from __future__ import annotations

from .checkpoint import (
    dominant_float_dtype,
    infer_backbone,
    load_into,
    normalise_keys,
    read_state_dict,
    resolve_patch_order,
)
from .errors import ExportError
from .files import sha256_file
from .model import create_model
from .sources import resolve_source


def inspect_checkpoint(source: str, *, patch_order: str | None = None, revision: str | None = None):
    """(field, value) rows; a checkpoint that does not load strictly is reported, not raised."""
    resolved = resolve_source(source, revision)
    raw = read_state_dict(resolved.weights)
    state = normalise_keys(raw)
    backbone = infer_backbone(state)
    code_text = resolved.code.read_text(errors="replace") if resolved.code else None
    try:
        order, order_origin = resolve_patch_order(patch_order, code_text)
    except ExportError:
        order, order_origin = None, "unknown: no code file beside the weights (pass --patch-order)"
    model = create_model(backbone, order or "legacy")
    try:
        ignored = load_into(model, state, resolved.description)
        strict = "yes" + (f" (training-only heads absent: {len(ignored)} keys)" if ignored else "")
    except ExportError as err:
        strict = f"no: {err}"
    return [
        ("source", f"{resolved.description} ({resolved.origin})"),
        ("weights", str(resolved.weights)),
        ("sha256", sha256_file(resolved.weights)),
        ("backbone", backbone),
        ("parameters", f"{sum(p.numel() for p in model.parameters()):,}"),
        ("stored dtype", dominant_float_dtype(raw)),
        ("patch order", f"{order or '?'} ({order_origin})"),
        ("loads strictly", strict),
    ]
