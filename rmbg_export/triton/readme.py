"""The repository's README: what each model is, how to start Triton on it, the TensorRT pin."""

from __future__ import annotations

from rmbg_runtime.contract import EngineRecord, ModelSpec

from .configs import TritonOptions, onnx_graph_precision, openvino_ir_precision, python_backend

CONTAINER = "nvcr.io/nvidia/tritonserver:<yy.mm>-py3"


def tensorrt_pin(engine: EngineRecord) -> str:
    version, gpu = engine.tensorrt_version, engine.gpu_name
    return (
        f"model.plan was built with TensorRT {version} on {gpu}: it loads only in a Triton release whose "
        f"TensorRT is exactly {version}, on that GPU model. NVIDIA's Frameworks Support Matrix lists "
        "each release's TensorRT; in a container, `ls /usr/lib/x86_64-linux-gnu/libnvinfer.so.*` "
        "shows it. Or serve with --network python, which runs the engine through rmbg_runtime's "
        "own TensorRT backend."
    )


def repository_readme(spec: ModelSpec, options: TritonOptions) -> str:
    names = options.model_names()
    lines = [
        f"# Triton model repository for `{names['ensemble']}`",
        "",
        f"Written by `rmbg-export triton` from `{spec.folder}` ({spec.backbone}, "
        f"{spec.height}x{spec.width}, {spec.precision}, max batch {spec.network_max_batch}).",
        "",
        "| model | what it does |",
        "|---|---|",
        f"| `{names['ensemble']}` | the ensemble: send `IMAGE` (encoded bytes, one image per request), get "
        "`MASK` (uint8, the image's size) and `CUTOUT` (RGBA PNG bytes) |",
        f"| `{names['pre']}` | python backend: decode, EXIF orientation, the model card's resize and "
        "normalisation (rmbg_runtime) |",
        f"| `{names['network']}` | {_network_line(spec, options)}; dynamic batching up to "
        f"{spec.network_max_batch}, {options.instances} instance(s) per {options.kind.upper()} |",
        f"| `{names['post']}` | python backend: the model card's mask resize, the cut-out PNG "
        "(rmbg_runtime) |",
        "",
        "## Start Triton",
        "",
        "The python-backend models import `rmbg_runtime`: install it into the Python that Triton's",
        "python backend runs (in NVIDIA's container, the system Python). Triton releases whose python",
        "backend predates NumPy 2 (2.51 = 24.10 seen) need `numpy<2` there.",
        "",
        "```",
        "docker run --gpus all --rm -p 8000:8000 -p 8001:8001 -v $PWD:/models \\",
        f"  {CONTAINER} bash -c \\",
        "  \"pip install 'rmbg-toolkit[ort]' 'numpy<2' && tritonserver --model-repository=/models\"",
        "```",
        "",
        "Without Docker, on a CPU (python-backend models only): `python scripts/local_tritonserver.py",
        "--repository THIS_FOLDER --env VENV`, where VENV has `nvidia-pytriton` and `rmbg-toolkit[ort]`.",
        "",
        "Send images: `python scripts/triton_client.py IMAGES --url 127.0.0.1:8000 --output OUT`.",
    ]
    if options.network == "tensorrt":
        lines += ["", "## TensorRT version pin", "", tensorrt_pin(spec.engine)]
    return "\n".join(lines) + "\n"


def _network_line(spec: ModelSpec, options: TritonOptions) -> str:
    if options.network == "tensorrt":
        return f"TensorRT plan ({spec.engine.precision})"
    if options.network == "onnxruntime":
        accelerator = " with ORT's TensorRT accelerator (fp16, engine cache)" if options.ort_tensorrt else ""
        return f"ONNX Runtime backend, {onnx_graph_precision(spec, options)} graph{accelerator}"
    if options.network == "openvino":
        return f"OpenVINO backend, {openvino_ir_precision(spec)} IR (model.xml/model.bin)"
    where = {
        "auto": "rmbg_runtime's auto backend (TensorRT, else ONNX Runtime CUDA)",
        "openvino": "rmbg_runtime's OpenVINO backend (the export's IR)",
        "onnxruntime-cpu": "rmbg_runtime's ONNX Runtime CPU backend",
    }[python_backend(spec, options)]
    return f"python backend: {where}"
