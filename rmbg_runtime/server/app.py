"""The HTTP application: endpoints over one `Pipeline`.

Every request is admitted (or refused with 503) before its body is read, so memory is bounded by
`max_queue + max_batch` images; the CPU stages run in the pipeline's thread pool and inference on
its batcher, never on the event loop.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from concurrent.futures import Future
from typing import Literal

import numpy as np
from fastapi import FastAPI, Query, Request
from fastapi.exceptions import HTTPException
from fastapi.responses import JSONResponse, Response

from ..batching import QueueFull
from ..errors import ImageError, RmbgError
from ..pipeline import OutputOptions, Pipeline, Result
from ..remover import parse_color
from .limits import BodyLimit, BodyTooLarge, too_large_message
from .metrics import Metrics
from .page import add_page_routes
from .settings import ServerSettings

log = logging.getLogger("rmbg.serve")
MEDIA_TYPES = {"png": "image/png", "webp": "image/webp"}
RETRY_AFTER_S = 1
DISCONNECT_POLL_S = 0.05
CLIENT_CLOSED = 499  # nginx's code for a client that went away; never sent, only counted
IMAGE_BODY = {
    "requestBody": {
        "required": True,
        "content": {
            "image/*": {"schema": {"type": "string", "format": "binary"}},
            "multipart/form-data": {
                "schema": {"type": "object", "properties": {"file": {"type": "string", "format": "binary"}}}
            },
        },
    }
}


class HttpError(Exception):
    def __init__(self, status: int, detail: str, headers: dict[str, str] | None = None) -> None:
        super().__init__(detail)
        self.status, self.detail, self.headers = status, detail, headers or {}


class ServerState:
    def __init__(self, pipeline: Pipeline, settings: ServerSettings, metrics: Metrics) -> None:
        self.pipeline, self.settings, self.metrics = pipeline, settings, metrics
        self.admit_limit = settings.max_queue + pipeline.max_batch
        self.in_flight = 0
        self.ready = threading.Event()
        self.warmup_error: str | None = None

    def warm_up(self) -> None:
        """One inference before /readyz says yes: the first call builds kernels and arenas."""
        spec = self.pipeline.spec
        tensor = np.zeros((3, spec.height, spec.width), np.float32)
        try:
            self.pipeline.batcher.submit(tensor).result()
            self.ready.set()
        except Exception as err:  # noqa: BLE001 - reported by /readyz, the process stays up
            self.warmup_error = f"warm-up inference failed: {err}"


def parse_background(value: str | None) -> tuple[int, int, int] | None:
    if value is None:
        return None
    try:
        return parse_color(value)
    except RmbgError as err:
        raise HttpError(422, str(err)) from None


def parse_rembg_color(value: str | None) -> tuple[int, int, int, int] | None:
    """rembg's `bgc`: "r,g,b,a", each 0-255."""
    if value in (None, ""):
        return None
    try:
        rgba = tuple(int(part) for part in value.split(","))
    except ValueError:
        rgba = ()
    if len(rgba) != 4 or not all(0 <= c <= 255 for c in rgba):
        raise HttpError(422, f"bgc {value!r} must be four integers 0-255 as r,g,b,a.")
    return rgba


def parse_flag(name: str, value: str | None) -> bool:
    if value is None or value.strip().lower() in ("", "0", "false", "no", "off"):
        return False
    if value.strip().lower() in ("1", "true", "yes", "on"):
        return True
    raise HttpError(422, f"{name} {value!r} must be true or false.")


def server_timing(timings: dict[str, float]) -> str:
    return ", ".join(f"{stage};dur={seconds * 1000:.1f}" for stage, seconds in timings.items())


async def read_image(request: Request) -> tuple[bytes, dict[str, str]]:
    """The image (raw body or multipart `file`) and the multipart form's text fields."""
    content_type = request.headers.get("content-type", "")
    if content_type.startswith("multipart/form-data"):
        form = await request.form(max_files=1, max_fields=32)
        upload = form.get("file")
        if upload is None or isinstance(upload, str):
            raise HttpError(400, "the multipart body has no part named 'file'; send the image as 'file'.")
        fields = {k: v for k, v in form.items() if isinstance(v, str)}
        return await upload.read(), fields
    return await request.body(), {}


async def wait_for_inference(future: Future, request: Request):
    """The batch result; cancels the queued image (no inference spent) if the client goes away."""
    waiter = asyncio.wrap_future(future)
    while True:
        done, _ = await asyncio.wait({waiter}, timeout=DISCONNECT_POLL_S)
        if done:
            return waiter.result()
        if await request.is_disconnected():
            future.cancel()
            raise HttpError(CLIENT_CLOSED, "the client closed the connection")


async def run_pipeline(state: ServerState, request: Request, data: bytes, options: OutputOptions) -> Result:
    loop, pipeline = asyncio.get_running_loop(), state.pipeline
    if not data:
        raise HttpError(400, "the request has no image data; send the image as the body or as 'file'.")
    try:
        prepared = await loop.run_in_executor(pipeline.pool, pipeline.prepare, data)
    except ImageError as err:
        raise HttpError(400, str(err)) from None
    try:
        future = pipeline.submit(prepared)
    except QueueFull as err:
        raise HttpError(503, f"{err}; retry later.", {"Retry-After": str(RETRY_AFTER_S)}) from None
    try:
        batch = await wait_for_inference(future, request)
    except asyncio.CancelledError:  # the timeout below, or the server shutting down
        future.cancel()
        raise
    return await loop.run_in_executor(pipeline.pool, pipeline.finish, prepared, batch, options)


async def handle(state: ServerState, request: Request, endpoint: str, parse) -> Response:
    """Admission, body, pipeline, timeout and error mapping shared by the image endpoints.

    `parse(fields) -> OutputOptions` turns query and form fields into output options."""
    metrics, start = state.metrics, time.perf_counter()
    if state.in_flight >= state.admit_limit:
        response = error_response(
            HttpError(503, f"the server is at capacity ({state.in_flight} images in flight); retry later.",
                      {"Retry-After": str(RETRY_AFTER_S)})
        )  # fmt: skip
        metrics.count(endpoint, 503)
        return response
    state.in_flight += 1
    metrics.in_flight.inc()
    try:
        data, fields = await read_image(request)
        options = parse(fields)
        result = await asyncio.wait_for(run_pipeline(state, request, data, options), state.settings.timeout_s)
        metrics.observe_stages(result.timings)
        response = Response(
            result.data,
            media_type=MEDIA_TYPES[options.fmt],
            headers={"Server-Timing": server_timing(result.timings), "X-Batch-Size": str(result.batch_size)},
        )
    except HttpError as err:
        response = error_response(err)
    except HTTPException as err:  # Starlette's own, e.g. a malformed multipart body
        response = error_response(HttpError(err.status_code, str(err.detail)))
    except BodyTooLarge as err:
        response = error_response(HttpError(413, too_large_message(err.limit)))
    except asyncio.TimeoutError:
        detail = f"the image was not done within --timeout-s {state.settings.timeout_s:g}; retry later."
        response = error_response(HttpError(504, detail))
    except RmbgError as err:
        response = error_response(HttpError(500, f"inference failed: {err}"))
    except Exception:  # a bug must cost one request, not the process
        log.exception("request to %s failed", endpoint)
        response = error_response(HttpError(500, "internal error; the server log has the details."))
    finally:
        state.in_flight -= 1
        metrics.in_flight.dec()
    metrics.count(endpoint, response.status_code)
    metrics.latency.labels(endpoint).observe(time.perf_counter() - start)
    return response


def error_response(err: HttpError) -> Response:
    return JSONResponse({"detail": err.detail}, status_code=err.status, headers=err.headers)


def create_app(pipeline: Pipeline, settings: ServerSettings, metrics: Metrics) -> FastAPI:
    """`metrics` must be the one whose observer the pipeline's batcher reports to."""
    state = ServerState(pipeline, settings, metrics)

    async def lifespan(_app: FastAPI):
        warm = threading.Thread(target=state.warm_up, name="rmbg-warm-up", daemon=True)
        warm.start()
        yield
        await asyncio.get_running_loop().run_in_executor(None, pipeline.close)

    app = FastAPI(
        title="rmbg",
        summary="Background removal with an exported BiRefNet / RMBG-2.0 model.",
        lifespan=lifespan,
    )
    app.state.rmbg = state
    _image_routes(app, state)
    _operations_routes(app, state)
    if settings.ui:
        add_page_routes(app)
    refused = lambda path: metrics.count(path, 413)  # noqa: E731
    app.add_middleware(BodyLimit, max_bytes=settings.max_body_bytes, on_refused=refused)
    return app


def _image_routes(app: FastAPI, state: ServerState) -> None:
    compress = state.settings.png_compress_level

    @app.post("/v1/remove", openapi_extra=IMAGE_BODY, response_class=Response)
    async def remove(
        request: Request,
        mask_only: bool = Query(False, description="Return the 8-bit mask instead of the cut-out."),
        background: str | None = Query(None, description="Composite on this colour (name or #rrggbb)."),
        format: Literal["png", "webp"] = Query("png", description="Output image format."),
        refine: bool = Query(False, description="Estimate foreground colours at soft edges (hair, fur)."),
    ) -> Response:
        """The image as the raw body or a multipart `file`; returns the cut-out (RGBA), the mask, or
        the image on a colour. `Server-Timing` says where the time went."""

        def parse(_fields: dict[str, str]) -> OutputOptions:
            return OutputOptions(mask_only, parse_background(background), format, compress, refine)

        return await handle(state, request, "/v1/remove", parse)

    @app.post("/api/remove", openapi_extra=IMAGE_BODY, response_class=Response)
    async def rembg_remove(request: Request) -> Response:
        """rembg's server API: multipart `file`, `om` (mask only), `bgc` ("r,g,b,a"); PNG out.
        `model` is ignored (this server runs one model); alpha matting (`a`) is not offered."""

        def parse(fields: dict[str, str]) -> OutputOptions:
            value = {**request.query_params, **fields}.get
            if parse_flag("a", value("a")):
                raise HttpError(422, "alpha matting (a=true) is not offered; leave it out.")
            mask_only, color = parse_flag("om", value("om")), parse_rembg_color(value("bgc"))
            return OutputOptions(mask_only, color, "png", compress)

        return await handle(state, request, "/api/remove", parse)

    @app.get("/api/remove", include_in_schema=False)
    async def rembg_remove_url() -> Response:
        state.metrics.count("/api/remove", 400)
        return error_response(
            HttpError(400, "this server does not fetch URLs; POST the image as multipart 'file' instead.")
        )


def _operations_routes(app: FastAPI, state: ServerState) -> None:
    @app.get("/healthz")
    async def healthz() -> dict:
        """The process is alive (Kubernetes liveness)."""
        return {"status": "alive"}

    @app.get("/readyz")
    async def readyz() -> Response:
        """The model is loaded and one warm-up inference is done (Kubernetes readiness)."""
        if state.ready.is_set():
            return JSONResponse({"status": "ready"})
        return JSONResponse({"status": state.warmup_error or "warming up"}, status_code=503)

    @app.get("/metrics")
    async def metrics() -> Response:
        """Prometheus text format."""
        return Response(state.metrics.render(), media_type=state.metrics.content_type)

    @app.get("/v1/model")
    async def model() -> dict:
        """What model.json says, plus the backend and the server's batching settings."""
        pipeline = state.pipeline
        return {
            "model": pipeline.spec.raw,
            "backend": pipeline.backend.name,
            "device_id": state.settings.device_id,
            "max_batch": pipeline.max_batch,
            "max_delay_ms": state.settings.max_delay_ms,
            "max_queue": state.settings.max_queue,
        }
