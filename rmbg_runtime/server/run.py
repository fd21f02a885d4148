"""Starting one server process: the model is opened (and refused in one sentence) before uvicorn
binds its port; SIGTERM / Ctrl-C stop accepting, let requests in flight finish (bounded by
--timeout-s), drain the batcher and exit 0."""

from __future__ import annotations

import logging
import signal

from ..pipeline import Pipeline
from .settings import ServerSettings

log = logging.getLogger("rmbg.serve")


def serve(settings: ServerSettings) -> None:
    import uvicorn

    from .app import create_app
    from .metrics import Metrics

    metrics = Metrics()
    pipeline = Pipeline.open(  # a bad folder or backend is refused here, before the port is bound
        settings.model_dir,
        settings.backend,
        device_id=settings.device_id,
        threads=settings.threads,
        precision=settings.precision,
        max_batch=settings.max_batch,
        max_delay_s=settings.max_delay_ms / 1000,
        max_queue=settings.max_queue,
        max_pixels=settings.max_pixels,
        observer=metrics.observer(),
    )
    logging.basicConfig(level=settings.log_level.upper(), format="%(levelname)s:     %(message)s")
    log.info(
        "serving %s with %s: max batch %d, max delay %g ms, max queue %d, %d CPU threads",
        settings.model_dir, pipeline.backend.name, pipeline.max_batch, settings.max_delay_ms,
        settings.max_queue, pipeline.threads,
    )  # fmt: skip
    config = uvicorn.Config(
        create_app(pipeline, settings, metrics),
        host=settings.host,
        port=settings.port,
        log_level=settings.log_level,
        timeout_graceful_shutdown=max(1, int(settings.timeout_s)),
        server_header=False,
    )
    # uvicorn handles SIGTERM (stop accepting, finish requests in flight) and then raises the signal
    # again for the handler it replaced: after a graceful stop that must not turn into exit 130.
    signal.signal(signal.SIGTERM, lambda _signum, _frame: None)
    uvicorn.Server(config).run()
