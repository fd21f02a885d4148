"""ONNX stage: fold BatchNorm, trace, derive the mixed-precision graph, verify in ONNX Runtime."""
