"""What an operator chooses for one server process (one model on one device)."""

from __future__ import annotations

from dataclasses import dataclass

from ..images import DEFAULT_MAX_PIXELS
from ..pipeline import DEFAULT_PNG_COMPRESS_LEVEL


@dataclass(frozen=True)
class ServerSettings:
    model_dir: str
    host: str = "127.0.0.1"
    port: int = 8000
    backend: str = "auto"
    device_id: int = 0
    precision: str | None = None  # ONNX graph for ONNX Runtime; default int8 on CPU if exported, else fp32
    max_batch: int | None = None  # default: the export's
    max_delay_ms: float = 5.0  # how long the batcher waits for a batch to fill
    max_queue: int = 32  # images waiting for inference; more are refused with 503
    max_body_mb: float = 32.0
    max_pixels: int = DEFAULT_MAX_PIXELS
    threads: int | None = None  # CPU stages (decode, pre/post-processing, encode)
    timeout_s: float = 60.0
    png_compress_level: int = DEFAULT_PNG_COMPRESS_LEVEL
    log_level: str = "info"
    ui: bool = True  # the browser page at /

    @property
    def max_body_bytes(self) -> int:
        return int(self.max_body_mb * (1 << 20))
