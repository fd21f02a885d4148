"""The config of each model in the repository, as dicts for `pbtxt.config_text`.

Every fact comes from model.json (names, input size, data types, max batch) or from the engine's
record in it (profile, TensorRT version); nothing is typed in by the user twice.
"""

from __future__ import annotations

from dataclasses import dataclass

from rmbg_runtime.backends.onnxruntime import default_precision
from rmbg_runtime.contract import ModelSpec
from rmbg_runtime.triton import CUTOUT, ENSEMBLE_INPUT, MASK, PIXELS, PROBABILITY, RGB

from ..errors import ExportError
from .pbtxt import Enum

NETWORKS = ("tensorrt", "onnxruntime", "openvino", "python")
KINDS = ("gpu", "cpu")
TRITON_TYPES = {"float32": "TYPE_FP32", "float16": "TYPE_FP16", "uint8": "TYPE_UINT8"}
RUNNERS = {
    "tensorrt": {"platform": "tensorrt_plan"},
    "onnxruntime": {"platform": "onnxruntime_onnx"},
    "openvino": {"backend": "openvino"},  # the IR as model.xml/model.bin in the version folder
    "python": {"backend": "python"},  # rmbg_runtime's own backends (TensorRT, ONNX Runtime, OpenVINO)
}


@dataclass(frozen=True)
class TritonOptions:
    name: str = "rmbg"
    network: str = "tensorrt"
    kind: str = "gpu"
    instances: int = 1
    pre_post_instances: int = 2
    max_queue_delay_us: int = 5000
    preferred_batch: tuple[int, ...] = ()
    engine_threads: int | None = None  # intra-op threads per CPU network instance
    precision: str | None = None  # the ONNX graph the python network runs in ONNX Runtime
    ort_tensorrt: bool = False
    ort_tensorrt_cache: str = "/tmp/rmbg-ort-trt-cache"
    max_pixels: int | None = None

    def model_names(self) -> dict[str, str]:
        n = self.name
        return {"ensemble": n, "pre": f"{n}_pre", "network": f"{n}_network", "post": f"{n}_post"}


def validate(spec: ModelSpec, options: TritonOptions) -> None:
    if options.network not in NETWORKS:
        raise ExportError(f"--network {options.network} is unknown; use one of {', '.join(NETWORKS)}.")
    if options.kind not in KINDS:
        raise ExportError(f"--kind {options.kind} is unknown; use gpu or cpu.")
    if options.network == "tensorrt" and spec.engine is None:
        raise ExportError(
            f"{spec.folder} holds no TensorRT engine (it was exported with --onnx-only); run rmbg-export "
            "without --onnx-only on the serving GPU, or pick --network onnxruntime or python."
        )
    if options.network == "tensorrt" and options.kind == "cpu":
        raise ExportError("a TensorRT engine runs only on a GPU; use --kind gpu, or --network onnxruntime.")
    if options.network == "openvino" and options.kind == "gpu":
        raise ExportError("the OpenVINO IR is served on the CPU here; use --kind cpu, or --network tensorrt.")
    if options.network == "openvino" and not spec.openvino_models:
        raise ExportError(
            f"{spec.folder} holds no OpenVINO IR; export with --openvino (e.g. `rmbg-export SOURCE --output "
            "DIR --onnx-only --openvino`), or pick --network onnxruntime."
        )
    if options.ort_tensorrt and (options.network != "onnxruntime" or options.kind != "gpu"):
        raise ExportError("--ort-tensorrt applies to --network onnxruntime --kind gpu only.")
    if options.instances < 1 or options.pre_post_instances < 1:
        raise ExportError("--instances and --pre-post-instances must be at least 1.")
    if options.max_queue_delay_us < 0:
        raise ExportError(f"--max-queue-delay-us {options.max_queue_delay_us} must not be negative.")
    largest = spec.network_max_batch
    too_big = [b for b in options.preferred_batch if not 1 <= b <= largest]
    if too_big:
        raise ExportError(
            f"--preferred-batch {too_big[0]} lies outside 1..{largest}, the export's batch "
            "range; pick sizes within it or re-export with a larger --max-batch."
        )


def onnx_graph_precision(spec: ModelSpec, options: TritonOptions) -> str:
    """The graph rmbg_runtime's ONNX Runtime backend would run on that device (int8 on CPUs where the
    export made one, the export's precision on CUDA), except fp32 for ORT's TensorRT accelerator,
    which makes its own fp16 engine."""
    if options.ort_tensorrt:
        return "fp32"
    return default_precision(spec, "cpu" if options.kind == "cpu" else "cuda")


def openvino_ir_precision(spec: ModelSpec) -> str:
    """The IR Triton's OpenVINO backend runs: int8 where the export made one, else fp32 (the
    serving host's CPU is not known here, so never the bf16 entry; Triton's backend has no
    INFERENCE_PRECISION_HINT parameter, and OpenVINO runs bf16 by itself on CPUs that have it)."""
    from rmbg_runtime.backends.openvino import default_precision as openvino_default

    return openvino_default(spec, bf16_arithmetic=False)


def python_backend(spec: ModelSpec, options: TritonOptions) -> str:
    """The runtime backend a python-backend network opens: `auto` on a GPU; on a CPU OpenVINO when
    the export holds IR, else ONNX Runtime CPU."""
    if options.kind == "gpu":
        return "auto"
    return "openvino" if spec.openvino_models else "onnxruntime-cpu"


def tensor(name: str, dtype: str, dims: list[int]) -> dict:
    return {"name": name, "data_type": Enum(dtype), "dims": dims}


def triton_type(spec: ModelSpec, side: str) -> str:
    dtype = (spec.input if side == "input" else spec.output).dtype
    if dtype not in TRITON_TYPES:
        raise ExportError(f"model.json's {side} dtype {dtype} has no Triton type; re-export the model.")
    return TRITON_TYPES[dtype]


def string_parameters(values: dict) -> list[dict]:
    return [{"key": k, "value": {"string_value": str(v)}} for k, v in values.items() if v is not None]


def instance_group(count: int, kind: str) -> list[dict]:
    return [{"count": count, "kind": Enum("KIND_GPU" if kind == "gpu" else "KIND_CPU")}]


def network_config(spec: ModelSpec, options: TritonOptions) -> dict:
    config = {
        "name": options.model_names()["network"],
        **RUNNERS[options.network],
        "max_batch_size": spec.network_max_batch,
        "input": [tensor(spec.input_name, triton_type(spec, "input"), [3, spec.height, spec.width])],
        "output": [tensor(spec.output_name, triton_type(spec, "output"), [1, spec.height, spec.width])],
        "dynamic_batching": {
            "preferred_batch_size": list(options.preferred_batch),
            "max_queue_delay_microseconds": options.max_queue_delay_us,
        },
        "instance_group": instance_group(options.instances, options.kind),
    }
    config.update(_network_extras(spec, options))
    return config


def _network_extras(spec: ModelSpec, options: TritonOptions) -> dict:
    if options.network == "tensorrt":
        facts = {"tensorrt_version": spec.engine.tensorrt_version, "built_on_gpu": spec.engine.gpu_name}
        return {"parameters": string_parameters(facts)}
    if options.network == "python":
        settings = {
            "backend": python_backend(spec, options),
            "engine_threads": options.engine_threads,
            "precision": options.precision,
        }
        return {"parameters": string_parameters(settings)}
    if options.network == "openvino":
        hints = {"PERFORMANCE_HINT": "LATENCY", "INFERENCE_NUM_THREADS": options.engine_threads}
        return {"parameters": string_parameters(hints)}
    extras: dict = {}
    if options.engine_threads:
        extras["parameters"] = string_parameters({"intra_op_thread_count": options.engine_threads})
    if options.ort_tensorrt:
        accelerator = {
            "name": "tensorrt",
            "parameters": [
                {"key": "precision_mode", "value": "FP16"},
                {"key": "max_workspace_size_bytes", "value": str(4 << 30)},
                {"key": "trt_engine_cache_enable", "value": "1"},
                {"key": "trt_engine_cache_path", "value": options.ort_tensorrt_cache},
            ],
        }
        extras["optimization"] = {"execution_accelerators": {"gpu_execution_accelerator": [accelerator]}}
    return extras


def pre_config(spec: ModelSpec, options: TritonOptions) -> dict:
    return {
        "name": options.model_names()["pre"],
        "backend": "python",
        "max_batch_size": 1,  # one encoded image per request; the network's batcher batches
        "input": [tensor(ENSEMBLE_INPUT, "TYPE_STRING", [1])],
        "output": [
            tensor(PIXELS, triton_type(spec, "input"), [3, spec.height, spec.width]),
            tensor(RGB, "TYPE_UINT8", [-1, -1, 3]),
        ],
        "instance_group": instance_group(options.pre_post_instances, "cpu"),
        "parameters": string_parameters({"max_pixels": options.max_pixels}),
    }


def post_config(spec: ModelSpec, options: TritonOptions) -> dict:
    return {
        "name": options.model_names()["post"],
        "backend": "python",
        "max_batch_size": 1,
        "input": [
            tensor(PROBABILITY, triton_type(spec, "output"), [1, spec.height, spec.width]),
            tensor(RGB, "TYPE_UINT8", [-1, -1, 3]),
        ],
        "output": [tensor(MASK, "TYPE_UINT8", [-1, -1]), tensor(CUTOUT, "TYPE_STRING", [1])],
        "instance_group": instance_group(options.pre_post_instances, "cpu"),
    }


def _step(model: str, inputs: dict[str, str], outputs: dict[str, str]) -> dict:
    """One ensemble step; maps go from the model's tensor name to the ensemble's tensor name."""
    return {
        "model_name": model,
        "model_version": -1,
        "input_map": [{"key": k, "value": v} for k, v in inputs.items()],
        "output_map": [{"key": k, "value": v} for k, v in outputs.items()],
    }


def ensemble_config(spec: ModelSpec, options: TritonOptions) -> dict:
    names = options.model_names()
    return {
        "name": names["ensemble"],
        "platform": "ensemble",
        "max_batch_size": 1,
        "input": [tensor(ENSEMBLE_INPUT, "TYPE_STRING", [1])],
        "output": [tensor(MASK, "TYPE_UINT8", [-1, -1]), tensor(CUTOUT, "TYPE_STRING", [1])],
        "ensemble_scheduling": {
            "step": [
                _step(names["pre"], {ENSEMBLE_INPUT: ENSEMBLE_INPUT}, {PIXELS: "pixels", RGB: "rgb"}),
                _step(names["network"], {spec.input_name: "pixels"}, {spec.output_name: "probability"}),
                _step(names["post"], {PROBABILITY: "probability", RGB: "rgb"}, {MASK: MASK, CUTOUT: CUTOUT}),
            ]
        },
    }
