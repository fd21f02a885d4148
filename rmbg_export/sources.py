"""Resolving a checkpoint source (file, folder or hub repo id) to local files.

Hub downloads go through `huggingface_hub`, which honours HF_TOKEN, HF_HOME, HF_ENDPOINT and
HF_HUB_OFFLINE and keeps its usual cache layout; nothing here executes downloaded code.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from .errors import ExportError
from .patch_order import CODE_FILE_NAMES, find_code_file

WEIGHT_SUFFIXES = (".safetensors", ".pth", ".pt", ".bin")
HUB_WEIGHT_FILES = ("model.safetensors", "pytorch_model.bin")
_REPO_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")


@dataclass(frozen=True)
class ResolvedSource:
    weights: Path
    code: Path | None  # the model code shipped beside the weights, if any
    origin: str  # "file", "folder" or "hub"
    description: str  # what a person would call it: a path or "repo@revision"


def resolve_source(source: str | Path, revision: str | None = None) -> ResolvedSource:
    path = Path(source).expanduser()
    if path.is_file():
        if path.suffix not in WEIGHT_SUFFIXES:
            raise ExportError(
                f"{path} is not a checkpoint file: expected one of {', '.join(WEIGHT_SUFFIXES)}."
            )
        return ResolvedSource(path, find_code_file(path.parent), "file", str(path))
    if path.is_dir():
        return ResolvedSource(_weights_in_folder(path), find_code_file(path), "folder", str(path))
    if _REPO_ID.match(str(source)) and not str(source).startswith((".", "/")):
        return _download(str(source), revision)
    raise ExportError(
        f"{source} is neither an existing file or folder nor a hub repo id like ZhengPeng7/BiRefNet; "
        "check the path."
    )


def _weights_in_folder(folder: Path) -> Path:
    for name in HUB_WEIGHT_FILES:
        if (folder / name).is_file():
            return folder / name
    candidates = sorted(p for p in folder.iterdir() if p.is_file() and p.suffix in WEIGHT_SUFFIXES)
    if len(candidates) == 1:
        return candidates[0]
    if not candidates:
        raise ExportError(
            f"folder {folder} holds no checkpoint ({', '.join(WEIGHT_SUFFIXES)}); "
            "pass the weights file itself."
        )
    names = ", ".join(p.name for p in candidates[:4])
    raise ExportError(f"folder {folder} holds several checkpoints ({names}); pass the one to use.")


HUB_PROBE_TIMEOUT_S = 5.0  # one attempt: huggingface_hub's own retries took ~48 s with no network


def _download(repo_id: str, revision: str | None) -> ResolvedSource:
    from huggingface_hub import hf_hub_download
    from huggingface_hub.errors import EntryNotFoundError, LocalEntryNotFoundError

    unreachable = _hub_unreachable()  # then only the local cache can answer, at once
    weights = None
    for name in HUB_WEIGHT_FILES:
        try:
            weights = Path(
                hf_hub_download(repo_id, name, revision=revision, local_files_only=unreachable is not None)
            )
            break
        except (EntryNotFoundError, LocalEntryNotFoundError) as err:
            last_missing = err
        except Exception as err:  # noqa: BLE001 - mapped to one sentence below
            raise ExportError(_hub_error_sentence(repo_id, err)) from None
    if weights is None:
        if unreachable is not None:
            raise ExportError(unreachable_sentence(repo_id, unreachable))
        raise ExportError(_hub_error_sentence(repo_id, last_missing)) from None
    code = None
    for name in CODE_FILE_NAMES:
        try:
            code = Path(
                hf_hub_download(repo_id, name, revision=revision, local_files_only=unreachable is not None)
            )
            break
        except Exception:  # noqa: BLE001 - the code file is optional: --patch-order can stand in
            continue
    label = f"{repo_id}@{revision}" if revision else repo_id
    return ResolvedSource(weights, code, "hub", label)


def _hub_unreachable() -> str | None:
    """Why the hub cannot be reached (one short request through huggingface_hub's own HTTP session,
    so its proxy and HF_ENDPOINT settings apply), or None when it answers or offline mode is set
    (huggingface_hub then reads the cache itself)."""
    from huggingface_hub import constants
    from huggingface_hub.utils import get_session

    if constants.HF_HUB_OFFLINE:
        return None
    try:
        get_session().head(constants.ENDPOINT, timeout=HUB_PROBE_TIMEOUT_S)
    except Exception as err:  # noqa: BLE001 - any transport failure means unreachable
        return f"{constants.ENDPOINT}: {err or type(err).__name__}"
    return None


def unreachable_sentence(repo_id: str, reason: str) -> str:
    return (
        f"the hub cannot be reached ({reason}) and {repo_id} is not in the local hub cache; connect to "
        "the network (or set HF_ENDPOINT to a reachable mirror), or pass a local checkpoint file."
    )


def _hub_error_sentence(repo_id: str, err: Exception) -> str:
    from huggingface_hub.errors import (
        EntryNotFoundError,
        GatedRepoError,
        LocalEntryNotFoundError,
        RepositoryNotFoundError,
        RevisionNotFoundError,
    )

    if isinstance(err, GatedRepoError):
        return (
            f"{repo_id} is a gated repository: accept its licence on the hub page, then set HF_TOKEN "
            "(or run `hf auth login`) with a token of that account."
        )
    if isinstance(err, RepositoryNotFoundError):
        return (
            f"hub repository {repo_id} was not found, or it is private and no valid token was given; "
            "check the name or set HF_TOKEN."
        )
    if isinstance(err, RevisionNotFoundError):
        return f"{repo_id} has no such revision; check --revision."
    if isinstance(err, LocalEntryNotFoundError):
        return (
            f"{repo_id} is not in the local hub cache and the hub cannot be reached (offline mode or no "
            "network); download it once online, or pass a local checkpoint file."
        )
    if isinstance(err, EntryNotFoundError):
        return f"{repo_id} has none of {', '.join(HUB_WEIGHT_FILES)}; pass a checkpoint file instead."
    return f"downloading {repo_id} failed ({type(err).__name__}: {err}); check the network and HF_ENDPOINT."
