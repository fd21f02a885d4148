"""model.json has one owner (rmbg_runtime/contract.py): files written before it still load and are
written back unchanged, the writer's records are what the readers read, and the names and numbers
the contract holds are the ones every side uses."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import pytest
from conftest import stand_in_engine_record

from rmbg_runtime import ModelError, read_model_spec
from rmbg_runtime.contract import (
    EXPORT_PRECISIONS,
    GRAPH_FILES,
    GRAPH_PRECISIONS,
    IMAGENET_MEAN,
    IMAGENET_STD,
    METADATA_NAME,
    RUN_PRECISIONS,
    SCHEMA_VERSION,
    EngineRecord,
    ModelSpec,
)

# Written by the exporter as it was before the contract module (commit 1b909ae): a 64x96 Swin-T export
# with fp32, fp16 and int8 graphs, plus an engine record with every key build.py wrote then.
V1 = Path(__file__).parent / "data" / "model_json_v1.json"


def v1() -> dict:
    return json.loads(V1.read_text())


def write(folder: Path, raw: dict) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / METADATA_NAME).write_text(json.dumps(raw))
    return folder


def test_a_model_json_written_before_the_contract_loads_and_writes_back_unchanged(tmp_path):
    raw = v1()
    spec = read_model_spec(write(tmp_path, raw))
    assert spec.to_dict() == raw
    assert json.loads(json.dumps(spec.to_dict())) == raw  # what the exporter would write, byte for byte data
    assert (spec.height, spec.width, spec.size, spec.max_batch) == (64, 96, (96, 64), 2)
    assert spec.graphs["int8"].float_nodes == 64 and spec.graph_path("fp16") == tmp_path / "model_fp16.onnx"
    assert spec.engine.profile.max == (2, 3, 64, 96) and spec.engine.plugins == ("ModulatedDeformConv2d",)
    without_engine = {k: v for k, v in raw.items() if k != "engine"}
    spec = read_model_spec(write(tmp_path / "onnx_only", without_engine))
    assert spec.engine is None and spec.to_dict() == without_engine


def test_the_engine_record_the_exporter_makes_is_the_one_the_reader_reads():
    """The record step (tensorrt.plan.engine_record) writes exactly the keys a v1 file holds, and the
    reader gives back the same record."""
    record = stand_in_engine_record(64, 96, "fp16", 2, "0" * 64)
    spec = ModelSpec.from_dict(v1(), "/x").with_engine(record)
    engine = spec.to_dict()["engine"]
    assert set(engine) == set(v1()["engine"]) - {"parity"}  # parity comes from the verify step
    assert ModelSpec.from_dict(spec.to_dict(), "/x").engine == record
    assert engine["builder_optimization_level"] == 3 and engine["graph"] == "model_fp16.onnx"


@pytest.mark.parametrize(
    ("damage", "message"),
    [
        (lambda raw: raw["input"].pop("height"), r"lacks or mangles the field 'height'"),
        (
            lambda raw: raw["engine"].pop("compute_capability"),
            r"lacks or mangles the field 'compute_capability'",
        ),
        (lambda raw: raw["input"].update(mean=[0.5, 0.5]), r"lacks or mangles the field .*one value per RGB"),
        (lambda raw: raw["onnx"]["graphs"].update(bf16={}), r"lacks or mangles the field graphs \['bf16'\]"),
        (lambda raw: raw.update(precision="int4"), r"names the precision 'int4' \(known: fp16, fp32\)"),
        (lambda raw: raw.update(schema_version=2), r"has schema version 2, this runtime reads version 1"),
    ],
)
def test_an_unusable_model_json_is_named_in_one_sentence(tmp_path, damage, message):
    raw = v1()
    damage(raw)
    with pytest.raises(ModelError, match=message):
        read_model_spec(write(tmp_path, raw))


def test_a_missing_int8_graph_names_the_option_that_makes_it(tmp_path):
    raw = v1()
    del raw["onnx"]["graphs"]["int8"]
    spec = read_model_spec(write(tmp_path, raw))
    with pytest.raises(ModelError, match=r"has no int8 ONNX graph; export again with --cpu-int8 \(e\.g\."):
        spec.graph_path("int8")
    with pytest.raises(ModelError, match=r"precision 'fp8' is unknown; use one of fp32, fp16, int8\."):
        spec.graph_path("fp8")
    del raw["onnx"]["graphs"]["fp16"]
    with pytest.raises(ModelError, match=r"has no fp16 ONNX graph; export again with --precision fp16 "):
        read_model_spec(write(tmp_path, raw)).graph_path("fp16")


def test_the_spec_is_frozen_and_stages_add_to_a_copy():
    spec = ModelSpec.from_dict(v1(), "/x")
    with pytest.raises(AttributeError):
        spec.precision = "fp32"
    before = copy.deepcopy(spec.to_dict())
    grown = spec.with_parity("new", {"mae": 1.0})
    assert spec.to_dict() == before and grown.parity["new"] == {"mae": 1.0}


def test_one_set_of_names_and_numbers():
    """Normalisation, precision and file names: the runtime, the exporter and both CLIs use the
    contract's, not copies of it."""
    import numpy as np

    from rmbg_export import cli as export_cli
    from rmbg_export.onnx import verify
    from rmbg_runtime import backends, processing

    assert np.array_equal(processing.IMAGENET_MEAN, np.float32(IMAGENET_MEAN))
    assert np.array_equal(processing.IMAGENET_STD, np.float32(IMAGENET_STD))
    assert verify.IMAGENET_MEAN is IMAGENET_MEAN and verify.IMAGENET_STD is IMAGENET_STD
    assert backends.PRECISIONS == RUN_PRECISIONS and set(EXPORT_PRECISIONS) < set(GRAPH_PRECISIONS)
    assert set(GRAPH_FILES) == set(GRAPH_PRECISIONS)
    for command in ("export", "preflight"):
        precision = next(p for p in export_cli.cli.commands[command].params if p.name == "precision")
        assert tuple(precision.type.choices) == EXPORT_PRECISIONS
    assert SCHEMA_VERSION == v1()["schema_version"]


def test_engine_records_carry_their_profile_typed():
    record = EngineRecord.from_dict(v1()["engine"])
    assert record.max_batch == 2 and record.profile.as_dict() == v1()["engine"]["profile"]


def test_openvino_ir_records_round_trip_and_a_file_without_them_has_none(tmp_path):
    from rmbg_runtime.contract import OPENVINO_FILES, OpenVinoModel

    assert read_model_spec(write(tmp_path / "old", v1())).openvino is None  # written before IR existed
    ir = OpenVinoModel(
        xml=OPENVINO_FILES["fp32"], xml_sha256="1" * 64, bin="model_openvino.bin", bin_sha256="2" * 64,
        graph=GRAPH_FILES["fp32"], parity={"mask_mae": 1e-8, "max_abs_diff": 1e-7},
    )  # fmt: skip
    spec = ModelSpec.from_dict(v1(), "/x").with_openvino("2026.4.1", "fp32", ir)
    raw = spec.to_dict()
    assert raw["openvino"] == {"version": "2026.4.1", "models": {"fp32": _plain_ir(ir)}}
    back = read_model_spec(write(tmp_path / "new", raw))
    assert back.openvino_ir("fp32") == ir and back.to_dict() == raw
    with pytest.raises(ModelError, match=r"has no OpenVINO int8 IR; export again with --openvino --cpu-int8"):
        back.openvino_ir("int8")
    raw["openvino"]["models"]["fp16"] = raw["openvino"]["models"]["fp32"]
    with pytest.raises(ModelError, match=r"lacks or mangles the field .*openvino models \['fp16'\]"):
        read_model_spec(write(tmp_path / "bad", raw))


def _plain_ir(ir) -> dict:
    import dataclasses

    return dataclasses.asdict(ir)
