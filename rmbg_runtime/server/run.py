"""Starting one server process: the model and the API keys are opened (and refused in one sentence)
before uvicorn binds its port; SIGTERM / Ctrl-C stop accepting, let requests in flight finish
(bounded by --timeout-s), drain the batcher and exit 0; SIGHUP reloads the API key file."""

from __future__ import annotations

import logging
import signal
from dataclasses import dataclass
from typing import TYPE_CHECKING

from ..backends import Backend, open_backend
from ..metadata import read_model_spec
from ..threaded import Pipeline
from .settings import ServerSettings

if TYPE_CHECKING:
    from .metrics import Metrics

# On CPUs batching buys no throughput (ONNX Runtime already spreads one image over every core) and
# costs memory: max batch 1 and no ONNX Runtime memory arena, measured in docs/benchmarks.md.
CPU_MAX_BATCH = 1

log = logging.getLogger("rmbg.serve")


def serve(settings: ServerSettings) -> None:
    import uvicorn

    from .app import create_app
    from .auth import ApiKeys
    from .connections import (
        ConnectionLimits,
        descriptor_bound_connections,
        guarded_protocol,
        install_log_filters,
    )

    keys = ApiKeys(settings.api_key_file)  # a bad key file is refused before the model loads
    served = open_served(settings)
    pipeline = served.pipeline
    logging.basicConfig(level=settings.log_level.upper(), format="%(levelname)s:     %(message)s")
    install_log_filters()
    max_connections = descriptor_bound_connections(settings.max_connections)
    log.info(
        "serving %s with %s: max batch %d, max delay %g ms, max queue %d, %d CPU threads, "
        "%d connections, API keys %s",
        settings.model_dir, pipeline.backend.name, pipeline.max_batch, settings.max_delay_ms,
        settings.max_queue, pipeline.threads, max_connections, "required" if keys.required else "off",
    )  # fmt: skip
    limits = ConnectionLimits(max_connections, settings.header_timeout_s)
    config = uvicorn.Config(
        create_app(served, settings, keys),
        host=settings.host,
        port=settings.port,
        http=guarded_protocol(limits),
        log_level=settings.log_level,
        timeout_graceful_shutdown=max(1, int(settings.timeout_s)),
        timeout_keep_alive=settings.keep_alive_s,  # type: ignore[arg-type] - a float works
        server_header=False,
    )
    # uvicorn handles SIGTERM and SIGINT (stop accepting, finish requests in flight) and then raises
    # the signal again for the handler it replaced: after a graceful stop that must not turn into
    # exit 130 or the CLI's message about output files.
    signal.signal(signal.SIGTERM, lambda _signum, _frame: None)
    signal.signal(signal.SIGINT, lambda _signum, _frame: None)
    uvicorn.Server(config).run()


def on_cpu(backend: Backend) -> bool:
    return backend.name.startswith(("onnxruntime-cpu", "openvino"))


@dataclass
class Served:
    """A pipeline and the metrics its batcher reports to, built together by `open_served`."""

    pipeline: Pipeline
    metrics: Metrics


def open_served(settings: ServerSettings) -> Served:
    """The export on its backend with fresh metrics wired to its batcher; a bad folder or backend is
    refused here, before the port is bound."""
    from .metrics import Metrics

    spec = read_model_spec(settings.model_dir)
    backend = open_backend(spec, settings.backend_config)
    metrics = Metrics()
    max_batch = settings.max_batch or (CPU_MAX_BATCH if on_cpu(backend) else None)
    try:
        pipeline = Pipeline(
            spec,
            backend,
            max_batch=max_batch,
            max_delay_s=settings.max_delay_ms / 1000,
            max_queue=settings.max_queue,
            threads=settings.threads,
            max_pixels=settings.max_pixels,
            observer=metrics.observer(),
        )
    except BaseException:
        backend.close()
        raise
    return Served(pipeline, metrics)
