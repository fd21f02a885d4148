"""Parity of exported graphs: fp32 graph against PyTorch, fp16 graph against the fp32 graph."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from rmbg_runtime.contract import IMAGENET_MEAN, IMAGENET_STD
from rmbg_runtime.masks import MaskAgreement, mask_agreement

from ..errors import ExportError

FP32_MAX_DIFF, FP32_MEAN_DIFF = 1e-3, 1e-4  # ../shared/conformance/README.md
FP16_MAX_MAE = 2e-3


def synthetic_images(count: int, height: int, width: int, seed: int = 0) -> np.ndarray:
    """Normalised (count, 3, H, W) float32 batches that look like photos: smooth shading, a few
    hard-edged shapes and sensor noise, so both flat regions and edges are exercised."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
    images = []
    for _ in range(count):
        base = rng.uniform(0.2, 0.8, 3)[:, None, None] + 0.3 * np.stack(
            [np.sin(xx / width * rng.uniform(1, 6) + rng.uniform(0, 6)) * (yy / height) for _ in range(3)]
        )
        for _ in range(3):
            cy, cx, r = (
                rng.uniform(0, height),
                rng.uniform(0, width),
                rng.uniform(0.1, 0.3) * min(height, width),
            )
            inside = (yy - cy) ** 2 + (xx - cx) ** 2 < r**2
            base = np.where(inside, rng.uniform(0, 1, 3)[:, None, None], base)
        img = np.clip(base + rng.normal(0, 0.02, base.shape), 0, 1)
        images.append((img - np.array(IMAGENET_MEAN)[:, None, None]) / np.array(IMAGENET_STD)[:, None, None])
    return np.stack(images).astype(np.float32)


def ort_session(path: Path, providers: list[str] | None = None):
    """A session for checks: the CPU arena is off so that a Swin-L check at 1024 does not keep
    gigabytes reserved beside the PyTorch model (the export must fit a 16-24 GB machine)."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.log_severity_level = 3
    options.enable_cpu_mem_arena = False
    return ort.InferenceSession(str(path), options, providers=providers or ["CPUExecutionProvider"])


@dataclass(frozen=True)
class Fp32Parity:
    max_abs_diff: float
    mean_abs_diff: float
    batch_sizes: tuple[int, ...]

    def as_dict(self) -> dict:
        return asdict(self)


def run_graph(onnx_path: Path, inputs: list[np.ndarray]) -> list[np.ndarray]:
    """The graph's output for each input batch, in ONNX Runtime CPU."""
    session = ort_session(onnx_path)
    name = session.get_inputs()[0].name
    return [session.run(None, {name: batch})[0] for batch in inputs]


def check_fp32_graph(model, onnx_path: Path, inputs: list[np.ndarray]) -> tuple[Fp32Parity, list[np.ndarray]]:
    """Our PyTorch model (sigmoid of its logits) against the graph in ONNX Runtime CPU. Also returns
    the graph's outputs: the reference of every later check (fp16 graph, engine)."""
    import torch

    with torch.inference_mode():  # all references first: PyTorch's activations are gone before ORT runs
        references = [torch.sigmoid(model(torch.from_numpy(batch))).numpy() for batch in inputs]
    outputs = run_graph(onnx_path, inputs)
    diffs = []
    for batch, expected, got in zip(inputs, references, outputs, strict=True):
        if got.shape != expected.shape:
            raise ExportError(
                f"the ONNX graph returned {got.shape} for input {batch.shape}; expected {expected.shape}."
            )
        diffs.append(np.abs(got.astype(np.float64) - expected).ravel())
    diff = np.concatenate(diffs)
    parity = Fp32Parity(float(diff.max()), float(diff.mean()), tuple(b.shape[0] for b in inputs))
    if not (parity.max_abs_diff <= FP32_MAX_DIFF and parity.mean_abs_diff <= FP32_MEAN_DIFF):  # NaN fails too
        raise ExportError(
            f"the fp32 ONNX graph disagrees with PyTorch (max |diff| {parity.max_abs_diff:.2e}, mean "
            f"{parity.mean_abs_diff:.2e}; limits {FP32_MAX_DIFF:.0e} / {FP32_MEAN_DIFF:.0e}); "
            "please report it with the command line, or try --deform-conv grid_sample."
        )
    return parity, outputs


def check_fp16_graph(
    fp16_path: Path, inputs: list[np.ndarray], fp32_outputs: list[np.ndarray], max_mae: float = FP16_MAX_MAE
) -> MaskAgreement:
    """The mixed-precision graph in ONNX Runtime CPU against the fp32 graph's outputs."""
    got = np.concatenate(run_graph(fp16_path, inputs))
    agreement = mask_agreement(np.concatenate(fp32_outputs), got)
    if not agreement.finite:
        raise ExportError("the fp16 graph produced NaN or Inf; export with --precision fp32 and report it.")
    if agreement.mask_mae > max_mae:
        raise ExportError(
            f"the fp16 graph's masks differ from fp32 by MAE {agreement.mask_mae:.2e} (limit {max_mae:.0e}); "
            "export with --precision fp32."
        )
    return agreement


def nonfinite_tensors(onnx_path: Path, batch: np.ndarray, limit: int = 5) -> list[str]:
    """Names of intermediate float tensors holding NaN or Inf (every node output is inspected).

    Memory grows with the graph's activations: meant for small resolutions and tests."""
    import onnx

    model = onnx.load(str(onnx_path))
    typed = onnx.shape_inference.infer_shapes(model)
    floats = {
        v.name
        for v in typed.graph.value_info
        if v.type.tensor_type.elem_type in (onnx.TensorProto.FLOAT, onnx.TensorProto.FLOAT16)
    }
    produced = {name for node in model.graph.node for name in node.output}
    existing = {o.name for o in model.graph.output}
    model.graph.output.extend(onnx.ValueInfoProto(name=n) for n in sorted((floats & produced) - existing))
    import onnxruntime as ort

    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    names = [o.name for o in session.get_outputs()]
    values = session.run(None, {session.get_inputs()[0].name: batch})
    return [n for n, v in zip(names, values, strict=True) if not np.isfinite(v).all()][:limit]
