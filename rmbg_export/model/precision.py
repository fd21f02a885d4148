"""What a module declares about its precision in the exported fp16 graph (onnx/fp16.py resolves it to
the traced graph's node names, as onnx/int8.py does for `keep_float_in_int8`)."""

from __future__ import annotations

from typing import NamedTuple


class Fp32Island(NamedTuple):
    """The declaring module computes in fp32 in the fp16 graph, except the nodes of its children
    `fp16_children` and its own nodes of the op types `fp16_ops`; the module says why."""

    rule: str
    fp16_children: tuple[str, ...] = ()
    fp16_ops: tuple[str, ...] = ()
