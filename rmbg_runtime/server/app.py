"""The HTTP application: endpoints over one `Pipeline`.

A request is refused with 503 before its body is read when `max_queue + max_batch` images are in
flight, and admitted only once its body is in (within --read-timeout-s), so a slow upload holds a
connection but no image slot; the CPU stages run in the pipeline's thread pool and inference on its
batcher, never on the event loop. A request that times out or whose client leaves starts no further
stage.
"""

from __future__ import annotations

import asyncio
import logging
import re
import signal
import threading
import time
from collections.abc import Callable
from typing import Literal

from fastapi import FastAPI, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from starlette.exceptions import HTTPException
from starlette.requests import ClientDisconnect

from ..batching import QueueFull
from ..errors import BackendError, ImageError, RmbgError
from ..stages import OutputOptions, parse_color
from ..threaded import Abandoned, Prepared, Result
from .auth import ApiKeyGuard, ApiKeys
from .limits import BodyDeadline, BodyLimit, BodyTooLarge, BodyTooSlow, too_large_message
from .metrics import CountRequests
from .page import add_page_routes
from .run import Served
from .settings import ServerSettings

log = logging.getLogger("rmbg.serve")
MEDIA_TYPES = {"png": "image/png", "webp": "image/webp"}
RETRY_AFTER_S = 1
RECOVERY_PROBE_S = 5.0  # how often a failed backend is tried again while the server is not ready
CLIENT_CLOSED = 499  # nginx's code for a client that went away; never sent, only counted
MAX_SHOWN_VALUE = 40  # characters of a client's value quoted back in an error
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
    """What the endpoints share: the pipeline, its metrics, the admission count and readiness.

    Readiness: not ready until one warm-up inference is done; a backend failure (BackendError)
    makes it not ready again, so /readyz and the image endpoints answer 503 while a probe retries
    one inference every RECOVERY_PROBE_S seconds until the backend works again."""

    def __init__(self, served: Served, settings: ServerSettings, keys: ApiKeys) -> None:
        self.pipeline, self.metrics = served.pipeline, served.metrics
        self.settings, self.keys = settings, keys
        self.admit_limit = self.pipeline.admit_limit
        self.in_flight = 0
        self.ready = threading.Event()
        self.not_ready_reason = "warming up"
        self.backend_failed: str | None = None  # why the backend stopped working, until it recovers
        self._probe_lock = threading.Lock()
        self._probing = False

    def warm_up(self) -> None:
        """One inference before /readyz says yes: the first call builds kernels and arenas. A
        backend that fails it is treated as any backend failure (not ready, probed until it works)."""
        try:
            self.pipeline.warm_up()
            self.ready.set()
        except BackendError as err:
            log.error("the warm-up inference failed: %s", err)
            self.on_backend_failure(err)
        except Exception as err:  # noqa: BLE001 - reported by /readyz, the process stays up
            self.not_ready_reason = f"warm-up inference failed: {err}"

    def on_backend_failure(self, err: BackendError) -> None:
        """Not ready from now on; a probe thread (one at a time) waits for the backend to recover."""
        self.backend_failed = f"the backend failed: {err}"
        self.not_ready_reason = self.backend_failed
        self.ready.clear()
        with self._probe_lock:
            if self._probing:
                return
            self._probing = True
        threading.Thread(target=self._probe_until_recovered, name="rmbg-recovery", daemon=True).start()

    def _probe_until_recovered(self) -> None:
        while True:
            time.sleep(RECOVERY_PROBE_S)
            try:
                self.pipeline.warm_up()
            except Exception as err:  # noqa: BLE001 - still failing: keep not ready, try again
                log.warning("the backend is still failing: %s", err)
                continue
            with self._probe_lock:
                self._probing = False
            self.backend_failed = None
            self.ready.set()
            log.info("the backend works again; ready")
            return

    def refusal(self) -> HttpError | None:
        """Why a new image request is refused before its body is read (503), or None."""
        if self.backend_failed is not None:
            return HttpError(503, f"{self.backend_failed}; retry later.", {"Retry-After": str(RETRY_AFTER_S)})
        if self.in_flight < self.admit_limit:
            return None
        return HttpError(
            503, f"the server is at capacity ({self.in_flight} images in flight); retry later.",
            {"Retry-After": str(RETRY_AFTER_S)},
        )  # fmt: skip


def shown(value: str) -> str:
    """A client's value as quoted back in an error: cut, so a 10 KB value is not echoed whole."""
    if len(value) <= MAX_SHOWN_VALUE:
        return repr(value)
    return f"{value[:MAX_SHOWN_VALUE]!r}... ({len(value)} characters)"


def parse_background(value: str | None) -> tuple[int, ...] | None:
    if value is None:
        return None
    if len(value) > MAX_SHOWN_VALUE:
        raise HttpError(422, f"background {shown(value)} is not a colour; give a name or #rrggbb.")
    try:
        return parse_color(value)
    except RmbgError as err:
        raise HttpError(422, str(err)) from None


def parse_rembg_color(value: str | None) -> tuple[int, int, int, int] | None:
    """rembg's `bgc`: "r,g,b,a", each 0-255 in plain ASCII digits."""
    if value in (None, ""):
        return None
    parts = value.split(",")
    if len(parts) == 4 and all(re.fullmatch(r"[0-9]{1,3}", part.strip()) for part in parts):
        rgba = tuple(int(part) for part in parts)
        if all(c <= 255 for c in rgba):
            return rgba  # type: ignore[return-value]
    raise HttpError(422, f"bgc {shown(value)} must be four integers 0-255 as r,g,b,a.")


def parse_flag(name: str, value: str | None) -> bool:
    if value is None or value.strip().lower() in ("", "0", "false", "no", "off"):
        return False
    if value.strip().lower() in ("1", "true", "yes", "on"):
        return True
    raise HttpError(422, f"{name} {shown(value)} must be true or false.")


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


async def client_gone(request: Request) -> None:
    """Returns when the client disconnects (the body is read by then: receive only says so)."""
    while (await request.receive())["type"] != "http.disconnect":
        pass


class Stages:
    """One image's CPU stages in the pipeline's pool; once `abandoned` is set, none starts."""

    def __init__(self, state: ServerState) -> None:
        self.pipeline, self.metrics = state.pipeline, state.metrics
        self.abandoned = threading.Event()

    async def run(self, work: Callable, *args):
        def counted():
            try:
                return work(*args, abandoned=self.abandoned)
            except Abandoned as err:
                self.metrics.abandoned.labels(err.stage).inc()
                raise

        return await asyncio.get_running_loop().run_in_executor(self.pipeline.pool, counted)


async def run_pipeline(state: ServerState, stages: Stages, data: bytes, options: OutputOptions) -> Result:
    pipeline = state.pipeline
    if not data:
        raise HttpError(400, "the request has no image data; send the image as the body or as 'file'.")
    try:
        prepared: Prepared = await stages.run(pipeline.prepare, data)
    except ImageError as err:
        raise HttpError(400, str(err)) from None
    try:
        future = pipeline.submit(prepared)
    except QueueFull as err:
        raise HttpError(503, f"{err}; retry later.", {"Retry-After": str(RETRY_AFTER_S)}) from None
    try:
        batch = await asyncio.wrap_future(future)
    except asyncio.CancelledError:  # timed out, the client left, or the server is shutting down
        future.cancel()  # a queued image costs no inference
        raise
    return await stages.run(pipeline.finish, prepared, batch, options)


async def run_in_time(state: ServerState, request: Request, data: bytes, options: OutputOptions) -> Result:
    """The pipeline, bounded by --timeout-s and by the client staying connected."""
    stages = Stages(state)
    work = asyncio.ensure_future(run_pipeline(state, stages, data, options))
    watch = asyncio.ensure_future(client_gone(request))
    try:
        done, _ = await asyncio.wait(
            {work, watch}, timeout=state.settings.timeout_s, return_when=asyncio.FIRST_COMPLETED
        )
    finally:
        watch.cancel()
        if not work.done():
            stages.abandoned.set()
            work.cancel()
    if work in done:
        return work.result()
    if watch in done:
        raise HttpError(CLIENT_CLOSED, "the client closed the connection")
    detail = f"the image was not done within --timeout-s {state.settings.timeout_s:g}; retry later."
    raise HttpError(504, detail)


async def handle(state: ServerState, request: Request, endpoint: str, parse) -> Response:
    """Admission, body, pipeline, timeout and error mapping shared by the image endpoints.

    `parse(fields) -> OutputOptions` turns query and form fields into output options."""
    refusal = state.refusal()  # refused before reading a byte of the body
    if refusal is not None:
        return error_response(refusal)
    try:
        data, fields = await read_image(request)
        options = parse(fields)
    except Exception as err:  # noqa: BLE001 - each mapped to its status below
        return error_response(body_error(err, endpoint))
    refusal = state.refusal()  # bodies read meanwhile may have filled it
    if refusal is not None:
        return error_response(refusal)
    state.in_flight += 1
    state.metrics.in_flight.inc()
    try:
        result = await run_in_time(state, request, data, options)
        state.metrics.observe_stages(result.timings)
        return Response(
            result.data,
            media_type=MEDIA_TYPES[options.fmt],
            headers={"Server-Timing": server_timing(result.timings), "X-Batch-Size": str(result.batch_size)},
        )
    except HttpError as err:
        return error_response(err)
    except BackendError as err:
        log.error("the backend failed: %s", err)
        state.on_backend_failure(err)
        return error_response(HttpError(503, f"the backend failed: {err}; retry later.",
                                        {"Retry-After": str(RETRY_AFTER_S)}))  # fmt: skip
    except RmbgError as err:
        return error_response(HttpError(500, f"inference failed: {err}"))
    except Exception:  # a bug must cost one request, not the process
        log.exception("request to %s failed", endpoint)
        return error_response(HttpError(500, "internal error; the server log has the details."))
    finally:
        state.in_flight -= 1
        state.metrics.in_flight.dec()


def body_error(err: Exception, endpoint: str) -> HttpError:
    """What went wrong while reading and parsing the request, as the client's error it is."""
    if isinstance(err, HttpError):
        return err
    if isinstance(err, HTTPException):  # Starlette's, e.g. a malformed multipart body
        reason = str(err.detail).rstrip(".")
        detail = f"the multipart body is malformed ({reason}); send the image as one 'file' part."
        return HttpError(err.status_code, detail)
    if isinstance(err, BodyTooLarge):
        return HttpError(413, too_large_message(err.limit), {"Connection": "close"})
    if isinstance(err, BodyTooSlow):  # the rest of the body is unread: the connection cannot be reused
        return HttpError(408, str(err), {"Connection": "close"})
    if isinstance(err, ClientDisconnect):
        return HttpError(CLIENT_CLOSED, "the client closed the connection during the upload")
    log.error("reading the request to %s failed", endpoint, exc_info=err)
    return HttpError(500, "internal error; the server log has the details.")


def error_response(err: HttpError) -> Response:
    return JSONResponse({"detail": err.detail}, status_code=err.status, headers=err.headers)


def validation_error(_request: Request, err: RequestValidationError) -> Response:
    """FastAPI's 422 in one sentence, without the client's value echoed back."""
    first = err.errors()[0] if err.errors() else {}
    where = " ".join(str(part) for part in first.get("loc", ()))
    return error_response(HttpError(422, f"{where}: {first.get('msg', 'invalid value')}."))


def create_app(served: Served, settings: ServerSettings, keys: ApiKeys | None = None) -> FastAPI:
    """The application over `served` (from `run.open_served`: the pipeline with its metrics)."""
    keys = keys or ApiKeys(settings.api_key_file)
    state = ServerState(served, settings, keys)
    pipeline = state.pipeline

    async def lifespan(_app: FastAPI):
        warm = threading.Thread(target=state.warm_up, name="rmbg-warm-up", daemon=True)
        warm.start()
        reload_on_sighup(keys)
        yield
        await asyncio.get_running_loop().run_in_executor(None, pipeline.close)

    docs = "/docs" if settings.docs else None
    app = FastAPI(
        title="rmbg",
        summary="Background removal with an exported BiRefNet / RMBG-2.0 model.",
        lifespan=lifespan,
        docs_url=docs,
        redoc_url=None,
        swagger_ui_oauth2_redirect_url="/docs/oauth2-redirect" if docs else None,
    )
    app.router.redirect_slashes = False  # a redirect's Location would be built from the Host header
    app.state.rmbg = state
    app.add_exception_handler(RequestValidationError, validation_error)
    _image_routes(app, state)
    _operations_routes(app, state)
    if settings.ui:
        add_page_routes(app)
    _add_middleware(app, state)
    return app


def _add_middleware(app: FastAPI, state: ServerState) -> None:
    """Innermost first: body limits, then API keys, then CORS, and the counter around them all."""
    settings = state.settings
    app.add_middleware(BodyDeadline, deadline_s=settings.read_timeout_s)
    app.add_middleware(BodyLimit, max_bytes=settings.max_body_bytes)
    app.add_middleware(ApiKeyGuard, keys=state.keys, protect_metrics=settings.metrics_need_key)
    if settings.cors_origins:
        from starlette.middleware.cors import CORSMiddleware

        app.add_middleware(
            CORSMiddleware,
            allow_origins=list(settings.cors_origins),
            allow_methods=["GET", "POST"],
            allow_headers=["X-Api-Key", "Authorization", "Content-Type"],
            expose_headers=["Server-Timing", "X-Batch-Size", "Retry-After"],
        )
    routes: frozenset[str] | None = None

    def route_paths() -> frozenset[str]:
        nonlocal routes
        routes = routes or frozenset(getattr(route, "path", "") for route in app.routes)
        return routes

    app.add_middleware(CountRequests, metrics=state.metrics, routes=route_paths)


def reload_on_sighup(keys: ApiKeys) -> None:
    if keys.key_file is None:
        return
    try:
        asyncio.get_running_loop().add_signal_handler(signal.SIGHUP, keys.reload)
    except (NotImplementedError, RuntimeError, ValueError):  # not the main thread, or no SIGHUP here
        log.warning("SIGHUP cannot reload the API keys here; restart the server to change them")


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
        return error_response(
            HttpError(400, "this server does not fetch URLs; POST the image as multipart 'file' instead.")
        )


def public_model_info(state: ServerState) -> dict:
    """What a client needs to know about the model, and nothing about the server's file system
    (model.json also holds the export command line, folders and checkpoint paths)."""
    spec, raw = state.pipeline.spec, state.pipeline.spec.raw
    model = raw.get("model", {})
    return {
        "model": {
            "architecture": model.get("architecture"),
            "backbone": spec.backbone,
            "checkpoint_sha256": model.get("checkpoint_sha256"),
            "num_params": model.get("num_params"),
            **({"source": model.get("source")} if model.get("source_kind") == "hub" else {}),
        },
        "resolution": {"height": spec.height, "width": spec.width},
        "precision": spec.precision,
        "batch": {"min": spec.min_batch, "max": spec.max_batch},
        "backend": state.pipeline.backend.name,
        "max_batch": state.pipeline.max_batch,
        "threads": {"cpu_stages": state.pipeline.threads, "engine": state.pipeline.backend.engine_threads},
        "max_delay_ms": state.settings.max_delay_ms,
        "max_queue": state.settings.max_queue,
        "versions": {name: v for name, v in raw.get("tools", {}).items() if isinstance(v, str)},
        "parity": numbers_only(raw.get("parity", {})),
        "schema_version": raw.get("schema_version"),
        "created": raw.get("created"),
    }


def numbers_only(value):
    """The numbers, flags and their nesting, without a string that could name a file."""
    if isinstance(value, dict):
        kept = {key: numbers_only(item) for key, item in value.items()}
        return {key: item for key, item in kept.items() if item is not None}
    if isinstance(value, list):
        return [item for item in map(numbers_only, value) if item is not None]
    return value if isinstance(value, (bool, int, float)) else None


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
        return JSONResponse({"status": state.not_ready_reason}, status_code=503)

    @app.get("/metrics")
    async def metrics() -> Response:
        """Prometheus text format."""
        return Response(state.metrics.render(), media_type=state.metrics.content_type)

    @app.get("/v1/model")
    async def model() -> dict:
        """The model (architecture, resolution, batch, precision, versions, parity) and the backend
        and batching settings it runs with."""
        return public_model_info(state)
