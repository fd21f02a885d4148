"""The browser page: `GET /` and its assets under `/ui/`, all shipped in the package.

Nothing is fetched from outside the server (no CDN, no fonts), so the page works on an air-gapped
network; the Content-Security-Policy makes the browser enforce that."""

from __future__ import annotations

from pathlib import Path

from fastapi import FastAPI
from fastapi.responses import FileResponse, Response
from fastapi.staticfiles import StaticFiles

STATIC_DIR = Path(__file__).with_name("static")
# blob: for the results the page holds as Object URLs (shown, downloaded, read back for the mask view).
CONTENT_SECURITY_POLICY = (
    "default-src 'self'; img-src 'self' blob:; connect-src 'self' blob:; "
    "object-src 'none'; base-uri 'none'; frame-ancestors 'none'"
)
PAGE_HEADERS = {
    "Content-Security-Policy": CONTENT_SECURITY_POLICY,
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-cache",  # revalidate, so an upgraded server never runs an old script
}


def add_page_routes(app: FastAPI) -> None:
    @app.api_route("/", methods=["GET", "HEAD"], include_in_schema=False)
    async def page() -> FileResponse:
        return FileResponse(STATIC_DIR / "index.html", media_type="text/html", headers=PAGE_HEADERS)

    app.mount("/ui", Assets(directory=STATIC_DIR), name="ui")


class Assets(StaticFiles):
    """Starlette's static files, revalidated on every load (ETag): the page's script and styles
    must match the server that serves them."""

    def file_response(self, *args, **kwargs) -> Response:
        response = super().file_response(*args, **kwargs)
        response.headers["Cache-Control"] = "no-cache"
        return response
