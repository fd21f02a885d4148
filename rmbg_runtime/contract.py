"""`model.json`, the contract between the exporter and everything that reads an export.

One frozen type per part of the file. The exporter builds a `ModelSpec` and writes `to_dict()`;
the runtime, the Triton generator and the TensorRT build read it through `ModelSpec.from_dict`
(`metadata.read_model_spec` for a folder). The file names, tensor names, normalisation and precision
names live here and nowhere else. Standard library only: the exporter imports this module, this
module never imports the exporter.

Bump SCHEMA_VERSION on any change an existing reader must know about; a field that is only added
with a default does not need it.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .errors import ModelError

SCHEMA_VERSION = 1
METADATA_NAME = "model.json"
ENGINE_NAME = "model.engine"
GRAPH_FILES = {"fp32": "model.onnx", "fp16": "model_fp16.onnx", "int8": "model_int8.onnx"}
# OpenVINO IR converted from each ONNX graph (xml; the .bin beside it has the same stem). bf16 is
# the fp32 IR run in bf16 arithmetic (CPUs with avx512_bf16 or AMX), gated on its own.
OPENVINO_FILES = {
    "fp32": "model_openvino.xml",
    "bf16": "model_openvino.xml",
    "int8": "model_openvino_int8.xml",
}
# OpenVINO's INFERENCE_PRECISION_HINT for each: the CPU plugin would pick bf16 by itself on such CPUs.
OPENVINO_ARITHMETIC = {"fp32": "f32", "bf16": "bf16", "int8": "f32"}
INT8_RUNS_ON = "onnxruntime-cpu"  # the int8 graph is QDQ for ONNX Runtime's CPU provider

# What `rmbg-export --precision` makes: the export's main graph and the engine's precision.
EXPORT_PRECISIONS = ("fp16", "fp32")
# The ONNX graphs an export may hold (int8: ONNX Runtime CPU only).
GRAPH_PRECISIONS = ("fp32", "fp16", "int8")
# What a runtime backend may be asked to run: the graphs, and bf16 (OpenVINO's bf16 arithmetic).
RUN_PRECISIONS = (*GRAPH_PRECISIONS, "bf16")

INPUT_NAME = "image"
OUTPUT_NAME = "mask"
BATCH_DIM = "batch"
# The model card's normalisation (ImageNet statistics), applied after scaling pixels by 1/255.
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

REEXPORT = "run `rmbg-export` again for this folder"
# How each graph is made: the fp32 graph is always exported, the fp16 one unless --precision fp32.
MAKE_GRAPH = {
    "fp32": REEXPORT,
    "fp16": "export again with --precision fp16 (the default)",
    "int8": "export again with --cpu-int8 (e.g. `rmbg-export SOURCE --output DIR --onnx-only --cpu-int8`)",
}


def _plain(value: Any) -> Any:
    """JSON's view of a value: dataclasses and mappings as dicts (None fields of a graph entry or
    engine record left out), tuples as lists."""
    if dataclasses.is_dataclass(value):
        skip = getattr(value, "_omit_when_none", ())
        return {
            f.name: _plain(getattr(value, f.name))
            for f in dataclasses.fields(value)
            if f.metadata.get("in_file", True) and not (f.name in skip and getattr(value, f.name) is None)
        }
    if isinstance(value, Mapping):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value


def _by_precision(entries: Mapping, known: tuple[str, ...], build, what: str) -> dict:
    """{precision: build(entry)} for a mapping keyed by precision; unknown precisions are refused."""
    unknown = set(entries) - set(known)
    if unknown:
        raise ValueError(f"{what} {sorted(unknown)} (known: {', '.join(known)})")
    return {name: build(entry) for name, entry in entries.items()}


def _build(cls, data: Mapping, **converted):
    """`cls` from the file's mapping: every field the file has (unknown keys ignored), `converted`
    for the nested ones; a missing field without a default raises KeyError naming it."""
    values = {}
    for f in dataclasses.fields(cls):
        if not f.metadata.get("in_file", True):
            continue
        if f.name in converted:
            values[f.name] = converted[f.name]
        elif f.name in data:
            values[f.name] = data[f.name]
        elif f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
            raise KeyError(f.name)
    return cls(**values)


def _triple(values) -> tuple[float, float, float]:
    triple = tuple(float(v) for v in values)
    if len(triple) != 3:
        raise ValueError(f"{list(values)} is not one value per RGB channel")
    return triple


@dataclass(frozen=True, kw_only=True)
class ModelInfo:
    architecture: str = "BiRefNet"
    backbone: str
    patch_order: str
    patch_order_origin: str
    source: str
    source_kind: str
    checkpoint_sha256: str
    checkpoint_dtype: str
    num_params: int


@dataclass(frozen=True, kw_only=True)
class InputSpec:
    name: str = INPUT_NAME
    dtype: str = "float32"
    layout: str = "NCHW"
    channels: str = "RGB"
    height: int
    width: int
    resize: str = "bilinear"
    scale: float = 1 / 255
    mean: tuple[float, float, float] = IMAGENET_MEAN
    std: tuple[float, float, float] = IMAGENET_STD

    @classmethod
    def from_dict(cls, data: Mapping) -> InputSpec:
        return _build(
            cls,
            data,
            height=int(data["height"]),
            width=int(data["width"]),
            mean=_triple(data["mean"]),
            std=_triple(data["std"]),
        )


@dataclass(frozen=True, kw_only=True)
class OutputSpec:
    name: str = OUTPUT_NAME
    dtype: str = "float32"
    layout: str = "NCHW"
    kind: str = "probability"


@dataclass(frozen=True, kw_only=True)
class BatchRange:
    dim: str = BATCH_DIM
    min: int = 1
    max: int

    @classmethod
    def from_dict(cls, data: Mapping) -> BatchRange:
        return _build(cls, data, min=int(data.get("min", 1)), max=int(data["max"]))


@dataclass(frozen=True, kw_only=True)
class GraphEntry:
    """One ONNX graph of the export; the int8 graph also says what was quantised and on what."""

    _omit_when_none = ("runs_on", "quantised_nodes", "float_nodes", "float_rules", "calibration")

    path: str
    sha256: str
    runs_on: str | None = None
    quantised_nodes: int | None = None
    float_nodes: int | None = None
    float_rules: tuple[str, ...] | None = None
    calibration: str | None = None

    @classmethod
    def from_dict(cls, data: Mapping) -> GraphEntry:
        rules = data.get("float_rules")
        return _build(cls, data, float_rules=None if rules is None else tuple(rules))


@dataclass(frozen=True, kw_only=True)
class OnnxInfo:
    opset: int
    deform_conv: str
    graphs: Mapping[str, GraphEntry] = field(default_factory=dict)

    @classmethod
    def from_dict(cls, data: Mapping) -> OnnxInfo:
        graphs = _by_precision(data["graphs"], GRAPH_PRECISIONS, GraphEntry.from_dict, "graphs")
        return _build(cls, data, graphs=graphs)


@dataclass(frozen=True, kw_only=True)
class OpenVinoModel:
    """One OpenVINO IR (xml + bin), converted from an ONNX graph and gated against the fp32 graph."""

    xml: str
    xml_sha256: str
    bin: str
    bin_sha256: str
    graph: str  # the ONNX file it was converted from
    parity: Mapping[str, Any] = field(default_factory=dict)  # against the fp32 ONNX graph


@dataclass(frozen=True, kw_only=True)
class OpenVinoInfo:
    """The export's OpenVINO IR, by precision (fp32, int8), and the OpenVINO that wrote them."""

    version: str
    models: Mapping[str, OpenVinoModel] = field(default_factory=dict)

    @classmethod
    def from_dict(cls, data: Mapping) -> OpenVinoInfo:
        model = functools.partial(_build, OpenVinoModel)
        models = _by_precision(data["models"], tuple(OPENVINO_FILES), model, "openvino models")
        return _build(cls, data, models=models)


@dataclass(frozen=True)
class Profile:
    """TensorRT's optimisation profile: the (N, 3, H, W) shapes at batch min, opt and max."""

    min: tuple[int, int, int, int]
    opt: tuple[int, int, int, int]
    max: tuple[int, int, int, int]

    @property
    def max_batch(self) -> int:
        return self.max[0]

    def as_dict(self) -> dict:
        return _plain(self)

    @classmethod
    def from_dict(cls, data: Mapping) -> Profile:
        return cls(*(tuple(int(d) for d in data[key]) for key in ("min", "opt", "max")))


@dataclass(frozen=True, kw_only=True)
class EngineRecord:
    """The TensorRT engine and the machine it was built for (an engine runs only there)."""

    _omit_when_none = ("parity",)

    path: str = ENGINE_NAME
    sha256: str
    tensorrt_version: str
    gpu_name: str
    compute_capability: str
    nvidia_driver_version: str | None  # from nvidia-smi, when it was on PATH
    cuda_driver_version: str  # the newest CUDA the build machine's driver runs
    tensorrt_cuda: str | None  # cu12 / cu13: the CUDA major TensorRT's own libraries were built for
    precision: str
    strongly_typed: bool
    fp16_builder_flag: bool
    fp32_layers_pinned: int
    tf32: bool
    graph: str  # the ONNX file the engine was built from
    profile: Profile
    plugins: tuple[str, ...] = ()
    builder_optimization_level: int
    workspace_gib: float | None
    timing_cache: str
    build_seconds: float
    parity: Mapping[str, Any] | None = None  # the engine against the fp32 graph, when verified

    @property
    def max_batch(self) -> int:
        return self.profile.max_batch

    @classmethod
    def from_dict(cls, data: Mapping) -> EngineRecord:
        return _build(
            cls, data, profile=Profile.from_dict(data["profile"]), plugins=tuple(data.get("plugins", ()))
        )


@dataclass(frozen=True, kw_only=True)
class ModelSpec:
    """The whole of model.json, plus the folder it describes (`folder` is not in the file)."""

    schema_version: int = SCHEMA_VERSION
    created: str
    command: str
    model: ModelInfo
    input: InputSpec
    output: OutputSpec = field(default_factory=OutputSpec)
    batch: BatchRange
    precision: str
    onnx: OnnxInfo
    parity: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)
    tools: Mapping[str, str] = field(default_factory=dict)
    engine: EngineRecord | None = None
    openvino: OpenVinoInfo | None = None  # absent in exports made without --openvino
    folder: Path = field(default=Path(), compare=False, metadata={"in_file": False})

    _omit_when_none = ("engine", "openvino")

    # ---- reading and writing

    @classmethod
    def from_dict(cls, raw: Mapping, folder: str | Path, source: Path | None = None) -> ModelSpec:
        """A ModelSpec from model.json's content; one sentence naming the field when it is unusable."""
        folder = Path(folder)
        source = source or folder / METADATA_NAME
        version = raw.get("schema_version") if isinstance(raw, Mapping) else None
        if version != SCHEMA_VERSION:
            raise ModelError(
                f"{source} has schema version {version}, this runtime reads version {SCHEMA_VERSION}; "
                "upgrade rmbg-toolkit or re-export with the installed version."
            )
        try:
            spec = _build(
                cls,
                raw,
                model=_build(ModelInfo, raw["model"]),
                input=InputSpec.from_dict(raw["input"]),
                output=_build(OutputSpec, raw["output"]),
                batch=BatchRange.from_dict(raw["batch"]),
                onnx=OnnxInfo.from_dict(raw["onnx"]),
                engine=EngineRecord.from_dict(raw["engine"]) if raw.get("engine") else None,
                openvino=OpenVinoInfo.from_dict(raw["openvino"]) if raw.get("openvino") else None,
            )
        except (KeyError, TypeError, ValueError, AttributeError) as err:
            raise ModelError(f"{source} lacks or mangles the field {err}; {REEXPORT}.") from None
        if spec.precision not in EXPORT_PRECISIONS:
            raise ModelError(
                f"{source} names the precision {spec.precision!r} (known: {', '.join(EXPORT_PRECISIONS)}); "
                f"{REEXPORT}."
            )
        return dataclasses.replace(spec, folder=folder)

    def to_dict(self) -> dict:
        """model.json's content, as `json.dumps` writes it."""
        return _plain(self)

    # ---- the exporter adds what each stage made

    def with_graph(self, precision: str, entry: GraphEntry) -> ModelSpec:
        graphs = {**self.onnx.graphs, precision: entry}
        return dataclasses.replace(self, onnx=dataclasses.replace(self.onnx, graphs=graphs))

    def with_parity(self, name: str, figures: Mapping[str, Any]) -> ModelSpec:
        return dataclasses.replace(self, parity={**self.parity, name: dict(figures)})

    def with_engine(self, engine: EngineRecord | None) -> ModelSpec:
        return dataclasses.replace(self, engine=engine)

    def with_openvino(self, version: str, precision: str, ir: OpenVinoModel) -> ModelSpec:
        models = {**(self.openvino.models if self.openvino else {}), precision: ir}
        return dataclasses.replace(self, openvino=OpenVinoInfo(version=version, models=models))

    # ---- what readers ask

    @property
    def raw(self) -> dict:
        """model.json's content (as `to_dict`)."""
        return self.to_dict()

    @property
    def backbone(self) -> str:
        return self.model.backbone

    @property
    def height(self) -> int:
        return self.input.height

    @property
    def width(self) -> int:
        return self.input.width

    @property
    def size(self) -> tuple[int, int]:
        """Network input size as Pillow's (width, height)."""
        return self.width, self.height

    @property
    def input_name(self) -> str:
        return self.input.name

    @property
    def output_name(self) -> str:
        return self.output.name

    @property
    def mean(self) -> tuple[float, float, float]:
        return self.input.mean

    @property
    def std(self) -> tuple[float, float, float]:
        return self.input.std

    @property
    def min_batch(self) -> int:
        return self.batch.min

    @property
    def max_batch(self) -> int:
        return self.batch.max

    @property
    def graphs(self) -> Mapping[str, GraphEntry]:
        return self.onnx.graphs

    def graph(self, precision: str) -> GraphEntry:
        if precision == "bf16":
            raise ModelError("bf16 is OpenVINO's arithmetic on the fp32 IR; run it with --backend openvino.")
        if precision not in GRAPH_PRECISIONS:
            raise ModelError(f"precision {precision!r} is unknown; use one of {', '.join(GRAPH_PRECISIONS)}.")
        entry = self.graphs.get(precision)
        if entry is None:
            raise ModelError(f"{self.folder} has no {precision} ONNX graph; {MAKE_GRAPH[precision]}.")
        return entry

    def graph_path(self, precision: str) -> Path:
        return self.folder / self.graph(precision).path

    @property
    def openvino_models(self) -> Mapping[str, OpenVinoModel]:
        return self.openvino.models if self.openvino else {}

    @property
    def openvino_files(self) -> list[str]:
        """Every IR file the export holds, each once (bf16 names the fp32 IR's)."""
        return sorted({name for ir in self.openvino_models.values() for name in (ir.xml, ir.bin)})

    def openvino_ir(self, precision: str) -> OpenVinoModel:
        ir = self.openvino_models.get(precision)
        if ir is None:
            raise ModelError(
                f"{self.folder} has no OpenVINO {precision} IR; export again with --openvino"
                + (" --cpu-int8" if precision == "int8" else "")
                + (" on a CPU with bf16 arithmetic (avx512_bf16 or AMX)" if precision == "bf16" else "")
                + " (e.g. `rmbg-export SOURCE --output DIR --onnx-only --openvino`)."
            )
        return ir

    @property
    def network_max_batch(self) -> int:
        """The export's max batch, capped by the engine's optimisation profile where there is one."""
        if self.engine is not None:
            return min(self.max_batch, self.engine.max_batch)
        return self.max_batch
