"""Reading `model.json`, the exporter's contract, and checking the files it names."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

from .errors import ModelError

SUPPORTED_SCHEMA = 1
METADATA_NAME = "model.json"
REEXPORT = "run `rmbg-export` again for this folder"


@dataclass(frozen=True)
class ModelSpec:
    folder: Path
    raw: dict
    backbone: str
    height: int
    width: int
    input_name: str
    output_name: str
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    min_batch: int
    max_batch: int
    precision: str
    graphs: dict[str, dict]  # "fp32" / "fp16" -> {"path", "sha256"}
    engine: dict | None

    @property
    def size(self) -> tuple[int, int]:
        """Network input size as Pillow's (width, height)."""
        return self.width, self.height

    def graph_path(self, precision: str) -> Path:
        entry = self.graphs.get(precision)
        if entry is None:
            raise ModelError(
                f"{self.folder} has no {precision} ONNX graph; {REEXPORT} with --precision {precision}."
            )
        return self.folder / entry["path"]


def read_model_spec(folder: str | Path) -> ModelSpec:
    folder = Path(folder)
    path = folder / METADATA_NAME
    if not path.is_file():
        raise ModelError(
            f"{folder} holds no {METADATA_NAME}: it is not a finished export; "
            f"run `rmbg-export SOURCE --output {folder}`."
        )
    try:
        raw = json.loads(path.read_text())
    except (OSError, ValueError) as err:
        raise ModelError(f"{path} is not valid JSON ({err}); {REEXPORT}.") from None
    return spec_from_dict(folder, raw, path)


def spec_from_dict(folder: str | Path, raw: dict, path: Path | None = None) -> ModelSpec:
    """A ModelSpec from model.json's content (the exporter also uses this before writing the file)."""
    folder = Path(folder)
    path = path or folder / METADATA_NAME
    version = raw.get("schema_version")
    if version != SUPPORTED_SCHEMA:
        raise ModelError(
            f"{path} has schema version {version}, this runtime reads version {SUPPORTED_SCHEMA}; "
            "upgrade rmbg-toolkit or re-export with the installed version."
        )
    try:
        inp, out, batch = raw["input"], raw["output"], raw["batch"]
        return ModelSpec(
            folder=folder,
            raw=raw,
            backbone=raw["model"]["backbone"],
            height=int(inp["height"]),
            width=int(inp["width"]),
            input_name=inp["name"],
            output_name=out["name"],
            mean=tuple(inp["mean"]),
            std=tuple(inp["std"]),
            min_batch=int(batch["min"]),
            max_batch=int(batch["max"]),
            precision=raw["precision"],
            graphs=dict(raw["onnx"]["graphs"]),
            engine=raw.get("engine"),
        )
    except (KeyError, TypeError, ValueError) as err:
        raise ModelError(f"{path} lacks or mangles the field {err}; {REEXPORT}.") from None


def sha256_file(path: Path, chunk: int = 1 << 24) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def verify_file(path: Path, expected_sha256: str) -> None:
    """Refuse a missing file or one whose content is not what the export wrote."""
    if not path.is_file():
        raise ModelError(f"{path} is missing; {REEXPORT}.")
    if sha256_file(path) != expected_sha256:
        raise ModelError(
            f"{path} does not match the sha256 recorded in {METADATA_NAME} (changed or damaged); {REEXPORT}."
        )
