"""One deformable convolution alone in ONNX Runtime CPU against a plain Conv of the same shape: how much
of DeformConv's time is its matmul (which the plain Conv also does) and how much the sampling.

The default shape is BiRefNet's costliest node at 1024x1024: the 7x7 DeformConv of decoder block 1,
64 -> 256 channels at 256x256 (a 256 x 3136 by 3136 x 65536 matmul, 105 GFLOP).

    python benchmarks/deform_conv_cpu.py --size 256 --channels 64 --out-channels 256 --kernel 7 --runs 5
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import machine, markdown_table, summarize, time_runs


def single_node_graph(kind: str, args) -> bytes:
    from onnx import TensorProto, helper, numpy_helper

    k, size = args.kernel, args.size
    weight = np.random.default_rng(0).standard_normal((args.out_channels, args.channels, k, k)) * 0.02
    inputs = [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, args.channels, size, size])]
    attributes = {"kernel_shape": [k, k], "pads": [k // 2] * 4}
    if kind == "DeformConv":
        inputs.append(helper.make_tensor_value_info("offset", TensorProto.FLOAT, [1, 2 * k * k, size, size]))
        inputs.append(helper.make_tensor_value_info("mask", TensorProto.FLOAT, [1, k * k, size, size]))
        node = helper.make_node("DeformConv", ["x", "w", "offset", "", "mask"], ["y"], **attributes)
    else:
        node = helper.make_node("Conv", ["x", "w"], ["y"], **attributes)
    output = helper.make_tensor_value_info("y", TensorProto.FLOAT, None)
    initializer = numpy_helper.from_array(weight.astype(np.float32), "w")
    graph = helper.make_graph([node], kind, inputs, [output], [initializer])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 19)]).SerializeToString()


def feeds(kind: str, args) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(1)
    k, size = args.kernel, args.size
    x = {"x": rng.standard_normal((1, args.channels, size, size)).astype(np.float32)}
    if kind == "Conv":
        return x
    offset = 2 * rng.standard_normal((1, 2 * k * k, size, size))  # a few pixels, as trained offsets are
    mask = rng.random((1, k * k, size, size))
    return x | {"offset": offset.astype(np.float32), "mask": mask.astype(np.float32)}


def main() -> None:
    formatter = argparse.RawDescriptionHelpFormatter
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=formatter)
    parser.add_argument("--size", type=int, default=256)
    parser.add_argument("--channels", type=int, default=64)
    parser.add_argument("--out-channels", type=int, default=256)
    parser.add_argument("--kernel", type=int, default=7)
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()
    import onnxruntime as ort

    rows = []
    for kind in ("Conv", "DeformConv"):
        session = ort.InferenceSession(single_node_graph(kind, args), providers=["CPUExecutionProvider"])
        inputs = feeds(kind, args)
        stats = summarize(time_runs(lambda s=session, i=inputs: s.run(None, i), args.runs, 1))
        rows.append({"node": kind} | {k: f"{v:.3f}" for k, v in stats.items() if k.endswith("_s")})
    gflop = 2 * args.out_channels * args.channels * args.kernel**2 * args.size**2 / 1e9
    cpu = machine()
    k, size = args.kernel, args.size
    shape = f"{args.channels} -> {args.out_channels} channels, {k}x{k} at {size}x{size}"
    print(f"Machine: {cpu['cpu']}, {cpu['cores']} cores. {shape}: a {gflop:.0f} GFLOP matmul.\n")
    columns = [("node", "node"), ("median s", "median_s"), ("p90 s", "p90_s"), ("min s", "min_s")]
    print(markdown_table(rows, columns))


if __name__ == "__main__":
    main()
