"""Request-body limit as plain ASGI middleware: a declared Content-Length over the limit is refused
before a byte of the body is read; a chunked body is cut off as soon as it passes the limit."""

from __future__ import annotations

import json


class BodyTooLarge(Exception):
    def __init__(self, limit: int) -> None:
        super().__init__(f"the request body is larger than the limit of {limit / (1 << 20):g} MB")
        self.limit = limit


def too_large_message(limit: int) -> str:
    return f"{BodyTooLarge(limit)}; send a smaller image or start the server with a larger --max-body-mb."


class BodyLimit:
    def __init__(self, app, max_bytes: int, on_refused=lambda _path: None) -> None:
        self.app, self.max_bytes, self.on_refused = app, max_bytes, on_refused

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        declared = dict(scope["headers"]).get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.max_bytes:
            self.on_refused(scope["path"])
            return await self._refuse(send)
        seen = 0

        async def limited_receive():
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > self.max_bytes:
                    raise BodyTooLarge(self.max_bytes)
            return message

        return await self.app(scope, limited_receive, send)

    async def _refuse(self, send) -> None:
        body = json.dumps({"detail": too_large_message(self.max_bytes)}).encode()
        headers = [
            (b"content-type", b"application/json"),
            (b"content-length", str(len(body)).encode()),
            (b"connection", b"close"),
        ]
        await send({"type": "http.response.start", "status": 413, "headers": headers})
        await send({"type": "http.response.body", "body": body})
