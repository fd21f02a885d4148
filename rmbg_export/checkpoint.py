"""Reading official BiRefNet / RMBG-2.0 checkpoints into our model, strictly."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import torch

from .architecture import BACKBONES, PATCH_ORDERS, SWIN_CONFIGS
from .errors import ExportError
from .files import sha256_file
from .model import BiRefNet, create_model
from .patch_order import patch_order_from_code
from .sources import ResolvedSource, resolve_source

WRAPPER_PREFIXES = ("module.", "_orig_mod.")
TRAINING_ONLY_PREFIXES = ("decoder.conv_ms_spvn_", "decoder.gdt_convs_pred_")


@dataclass(frozen=True)
class CheckpointInfo:
    source: str
    origin: str  # file, folder or hub
    weights_path: str
    sha256: str
    backbone: str
    patch_order: str
    patch_order_origin: str
    stored_dtype: str
    num_params: int
    ignored_missing: tuple[str, ...] = field(default=())


def read_state_dict(path: Path) -> dict[str, torch.Tensor]:
    """Tensors of a .safetensors or torch pickle (weights_only) file, with clear errors."""
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            state = load_file(str(path))
        else:
            state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # noqa: BLE001 - every reader failure means the same to the user
        raise ExportError(
            f"{path} could not be read as a checkpoint ({type(err).__name__}); the file is corrupt or "
            "incomplete: download it again."
        ) from None
    for wrapper in ("state_dict", "model"):
        if isinstance(state, dict) and set(state) == {wrapper} and isinstance(state[wrapper], dict):
            state = state[wrapper]
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise ExportError(f"{path} holds no tensor dictionary, so it is not a model checkpoint.")
    return state


def normalise_keys(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Strip DataParallel / torch.compile prefixes and upcast half-precision tensors to float32."""
    out = {}
    for key, value in state.items():
        while key.startswith(WRAPPER_PREFIXES):
            key = key.split(".", 1)[1]
        out[key] = value.float() if value.is_floating_point() else value
    return out


def infer_backbone(state: dict[str, torch.Tensor]) -> str:
    try:
        embed_dim = state["bb.patch_embed.proj.weight"].shape[0]
        window = round(
            (state["bb.layers.0.blocks.0.attn.relative_position_bias_table"].shape[0] ** 0.5 + 1) / 2
        )
    except KeyError:
        raise ExportError(
            "the checkpoint has no Swin backbone weights (bb.patch_embed.*): it is not a BiRefNet or "
            "RMBG-2.0 checkpoint of May 2024 or later."
        ) from None
    depth3 = len({k.split(".")[4] for k in state if k.startswith("bb.layers.2.blocks.")})
    for name, config in SWIN_CONFIGS.items():
        if (config.embed_dim, config.window_size, config.depths[2]) == (embed_dim, window, depth3):
            return name
    raise ExportError(
        f"the checkpoint's backbone (embed {embed_dim}, window {window}, {depth3} blocks in stage 3) is "
        f"not one of {', '.join(BACKBONES)}."
    )


def resolve_patch_order(
    requested: str | None, code_text: str | None, code_name: str = "birefnet.py"
) -> tuple[str, str]:
    """(patch order, where it came from). `code_name` names the code file in messages."""
    from_code = patch_order_from_code(code_text) if code_text else None
    if requested is not None:
        if requested not in PATCH_ORDERS:
            raise ExportError(f"patch order {requested!r} is unknown; use one of {', '.join(PATCH_ORDERS)}.")
        note = f" (the code file says {from_code})" if from_code and from_code != requested else ""
        return requested, "argument" + note
    if from_code:
        return from_code, "code file"
    why = (
        f"{code_name} beside the weights matches neither or both known patch-code forms"
        if code_text
        else "no birefnet.py beside the weights"
    )
    raise ExportError(
        f"the patch order cannot be told from this source ({why}); pass --patch-order legacy for "
        "RMBG-2.0 and checkpoints trained before Nov 2024, einops for later ones."
    )


def _describe(keys: list[str]) -> str:
    shown = ", ".join(keys[:3])
    return f"{len(keys)} ({shown}{', ...' if len(keys) > 3 else ''})"


def load_into(model: BiRefNet, state: dict[str, torch.Tensor], label: str) -> tuple[str, ...]:
    """Strict load; training-only heads may be absent as a group. Returns the keys left unset."""
    expected = model.state_dict()
    missing = [k for k in expected if k not in state]
    unexpected = [k for k in state if k not in expected]
    heads_absent = not any(k.startswith(TRAINING_ONLY_PREFIXES) for k in state)
    ignored = tuple(k for k in missing if heads_absent and k.startswith(TRAINING_ONLY_PREFIXES))
    missing = [k for k in missing if k not in ignored]
    wrong = [k for k in expected if k in state and state[k].shape != expected[k].shape]
    if missing or unexpected or wrong:
        parts = [
            f"{what} {_describe(keys)}"
            for what, keys in (
                ("missing keys", missing),
                ("unexpected keys", unexpected),
                ("shape mismatches", wrong),
            )
            if keys
        ]
        raise ExportError(
            f"{label} does not fit BiRefNet {model.backbone}: {'; '.join(parts)}; pass the right --backbone, "
            "or use a BiRefNet / RMBG-2.0 checkpoint of May 2024 or later."
        )
    model.load_state_dict(state, strict=False)
    return ignored


@dataclass(frozen=True)
class Checkpoint:
    """A checkpoint read and normalised, before it meets a model."""

    resolved: ResolvedSource
    state: dict[str, torch.Tensor]
    stored_dtype: str
    backbone: str
    code_text: str | None  # the model code shipped beside hub weights

    @property
    def code_name(self) -> str:
        return str(self.resolved.code) if self.resolved.code else "birefnet.py"


def read_checkpoint(source: str | Path, revision: str | None = None) -> Checkpoint:
    resolved = resolve_source(source, revision)
    raw = read_state_dict(resolved.weights)
    state = normalise_keys(raw)
    code_text = resolved.code.read_text(errors="replace") if resolved.code else None
    return Checkpoint(resolved, state, dominant_float_dtype(raw), infer_backbone(state), code_text)


def load_model(
    source: str | Path,
    *,
    patch_order: str | None = None,
    backbone: str | None = None,
    revision: str | None = None,
) -> BiRefNet:
    """An eval-mode BiRefNet with the weights of `source`; `model.checkpoint` says what was loaded."""
    ckpt = read_checkpoint(source, revision)
    order, order_origin = resolve_patch_order(patch_order, ckpt.code_text, ckpt.code_name)
    if backbone is not None and backbone != ckpt.backbone:
        raise ExportError(
            f"--backbone {backbone} was given, but the checkpoint holds a {ckpt.backbone} backbone; "
            "drop the option."
        )
    model = create_model(ckpt.backbone, order)
    ignored = load_into(model, ckpt.state, ckpt.resolved.description)
    model.checkpoint = CheckpointInfo(
        source=ckpt.resolved.description,
        origin=ckpt.resolved.origin,
        weights_path=str(ckpt.resolved.weights),
        sha256=sha256_file(ckpt.resolved.weights),
        backbone=ckpt.backbone,
        patch_order=order,
        patch_order_origin=order_origin,
        stored_dtype=ckpt.stored_dtype,
        num_params=sum(p.numel() for p in model.parameters()),
        ignored_missing=ignored,
    )
    return model


def dominant_float_dtype(state: dict[str, torch.Tensor]) -> str:
    counts: dict[str, int] = {}
    for value in state.values():
        if value.is_floating_point():
            name = str(value.dtype).removeprefix("torch.")
            counts[name] = counts.get(name, 0) + value.numel()
    return max(counts, key=counts.get) if counts else "none"
