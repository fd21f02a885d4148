"""The three python-backend models: pre (bytes -> tensor), network (batched inference), post.

Each generated `model.py` is one line, `from rmbg_runtime.triton.models import X as TritonPythonModel`,
so the code that runs in Triton is this package's, tested here and versioned with the runtime.
`triton_python_backend_utils` exists only inside Triton's stub, so it is imported in `initialize`.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from PIL import Image

from ..backends import BackendConfig, open_backend
from ..errors import RmbgError
from ..images import DEFAULT_MAX_PIXELS
from ..metadata import read_model_spec
from ..stages import (
    DEFAULT_PNG_COMPRESS_LEVEL,
    OutputOptions,
    decode,
    encode,
    postprocess,
    preprocess,
    render,
)
from . import CUTOUT, ENSEMBLE_INPUT, MASK, PIXELS, PROBABILITY, RGB


def parameters(args: dict) -> dict[str, str]:
    """The `parameters` of the model's config.pbtxt as plain strings."""
    config = json.loads(args["model_config"])
    return {k: v["string_value"] for k, v in config.get("parameters", {}).items()}


def version_folder(args: dict) -> Path:
    """Where model.json (and the network's files) lie: `<repository>/<model>/<version>/`."""
    return Path(args["model_repository"]) / args["model_version"]


class _Model:
    """Answers each request on its own; a failure costs that request only, in one sentence."""

    def initialize(self, args: dict) -> None:
        import triton_python_backend_utils as pb_utils

        self.pb = pb_utils
        self.params = parameters(args)
        self.setup(args)

    def setup(self, args: dict) -> None:
        raise NotImplementedError

    def answer(self, request) -> list:
        raise NotImplementedError

    def execute(self, requests: list) -> list:
        responses = []
        for request in requests:
            try:
                responses.append(self.pb.InferenceResponse(output_tensors=self.answer(request)))
            except (RmbgError, ValueError) as err:
                responses.append(self.pb.InferenceResponse(error=self.pb.TritonError(str(err))))
        return responses

    def input(self, request, name: str) -> np.ndarray:
        return self.pb.get_input_tensor_by_name(request, name).as_numpy()

    def finalize(self) -> None:
        pass


def single(array: np.ndarray, name: str) -> np.ndarray:
    if array.shape[0] != 1:
        raise ValueError(
            f"{name} holds {array.shape[0]} images; send one image per request (Triton batches "
            "concurrent requests for the network)."
        )
    return array[0]


class Preprocess(_Model):
    """Encoded image bytes -> the model card's normalised tensor, plus the decoded RGB image."""

    def setup(self, args: dict) -> None:
        self.spec = read_model_spec(version_folder(args))
        self.max_pixels = int(self.params.get("max_pixels", DEFAULT_MAX_PIXELS))

    def answer(self, request) -> list:
        data = single(self.input(request, ENSEMBLE_INPUT), ENSEMBLE_INPUT).reshape(-1)[0]
        image = decode(bytes(data), self.max_pixels)
        pixels = preprocess(image, self.spec)
        return [self.pb.Tensor(PIXELS, pixels[None]), self.pb.Tensor(RGB, np.asarray(image)[None])]


def backend_config(params: dict[str, str], device_id: int) -> BackendConfig:
    """The network model's `parameters` (written by `rmbg-export triton`) as the runtime's config."""
    threads = params.get("engine_threads")
    return BackendConfig(
        params.get("backend", "auto"),
        device_id=device_id,
        engine_threads=int(threads) if threads else None,
        precision=params.get("precision") or None,
    )


class Network(_Model):
    """The export on one of the runtime's backends; Triton's dynamic batcher fills the batches."""

    def setup(self, args: dict) -> None:
        spec = read_model_spec(version_folder(args))
        device_id = int(args.get("model_instance_device_id") or 0)
        self.backend = open_backend(spec, backend_config(self.params, device_id))
        self.input_name, self.output_name = spec.input_name, spec.output_name

    def execute(self, requests: list) -> list:
        """One backend run over every request Triton gathered (the backend splits what exceeds its
        max batch)."""
        try:
            tensors = [self.input(r, self.input_name) for r in requests]
            probs = self.backend.run(np.concatenate(tensors))
        except (RmbgError, ValueError) as err:
            error = self.pb.TritonError(str(err))
            return [self.pb.InferenceResponse(error=error) for _ in requests]
        bounds = np.cumsum([len(t) for t in tensors])[:-1]
        return [
            self.pb.InferenceResponse(output_tensors=[self.pb.Tensor(self.output_name, part)])
            for part in np.split(probs, bounds)
        ]

    def finalize(self) -> None:
        self.backend.close()


CUTOUT_OPTIONS = OutputOptions()  # the ensemble's output: the RGBA cut-out


class Postprocess(_Model):
    """Probability + RGB image -> the 8-bit mask at the image's size and the RGBA cut-out PNG."""

    def setup(self, args: dict) -> None:  # noqa: ARG002 - the stage needs no model files
        self.png_level = int(self.params.get("png_compress_level", DEFAULT_PNG_COMPRESS_LEVEL))

    def answer(self, request) -> list:
        prob = single(self.input(request, PROBABILITY), PROBABILITY)
        rgb = single(self.input(request, RGB), RGB)
        image = Image.fromarray(rgb, "RGB")
        alpha = postprocess(prob, image.size)
        cutout = encode(render(image, alpha, CUTOUT_OPTIONS), "png", self.png_level)
        return [
            self.pb.Tensor(MASK, alpha[None]),
            self.pb.Tensor(CUTOUT, np.array([[cutout]], dtype=np.object_)),
        ]
