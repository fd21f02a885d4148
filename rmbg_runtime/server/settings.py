"""What an operator chooses for one server process (one model on one device)."""

from __future__ import annotations

from dataclasses import dataclass

from ..backends import BackendConfig
from ..images import DEFAULT_MAX_PIXELS
from ..stages import DEFAULT_PNG_COMPRESS_LEVEL


@dataclass(frozen=True)
class ServerSettings:
    model_dir: str
    host: str = "127.0.0.1"
    port: int = 8000
    backend: str = "auto"
    device_id: int = 0
    precision: str | None = None  # ONNX graph for ONNX Runtime; default int8 on CPU if exported, else fp32
    max_batch: int | None = None  # default: 1 on CPU backends (see run.py), else the export's
    max_delay_ms: float = 5.0  # how long the batcher waits for a batch to fill
    max_queue: int = 32  # images waiting for inference; more are refused with 503
    max_body_mb: float = 32.0
    max_pixels: int = DEFAULT_MAX_PIXELS
    threads: int | None = None  # CPU stages (decode, pre/post-processing, encode)
    engine_threads: int | None = None  # the engine's intra-op threads (ONNX Runtime)
    timeout_s: float = 60.0
    png_compress_level: int = DEFAULT_PNG_COMPRESS_LEVEL
    log_level: str = "info"
    ui: bool = True  # the browser page at /
    # Connections: a client must send its request head within header_timeout_s and its body within
    # read_timeout_s (else 408); idle keep-alive connections close after keep_alive_s; connections
    # past max_connections are closed at once (the cap also stays below the file-descriptor limit).
    max_connections: int = 512
    header_timeout_s: float = 10.0
    read_timeout_s: float = 30.0
    keep_alive_s: float = 5.0
    # Access: API keys (file of one key per line, and/or RMBG_API_KEYS); none means no key needed.
    api_key_file: str | None = None
    metrics_need_key: bool = False
    cors_origins: tuple[str, ...] = ()
    docs: bool = False  # /docs loads Swagger UI from a public CDN, so it is opt-in

    @property
    def backend_config(self) -> BackendConfig:
        """The backend this server opens; ONNX Runtime's CPU arena off, so memory taken by a burst
        is returned between requests."""
        return BackendConfig(
            self.backend,
            self.device_id,
            self.engine_threads,
            self.precision,
            verify_files=True,
            cpu_arena=False,
        )

    @property
    def max_body_bytes(self) -> int:
        return int(self.max_body_mb * (1 << 20))
