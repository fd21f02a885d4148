"""TensorRT stage. Every call into `tensorrt` lives in build.py; decisions live in plan.py and
preflight.py as plain functions, tested without TensorRT."""
