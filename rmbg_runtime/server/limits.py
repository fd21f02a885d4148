"""Request-body limits as plain ASGI middleware.

Size: a declared Content-Length over the limit is refused before a byte of the body is read; a
chunked body is cut off as soon as it passes the limit. Time: the whole body must arrive within the
read deadline, counted from the request head, so a client that trickles or stalls its upload gets
408 and frees what it holds instead of holding it for as long as it likes."""

from __future__ import annotations

import asyncio
import json
import time


class BodyTooLarge(Exception):
    def __init__(self, limit: int) -> None:
        super().__init__(f"the request body is larger than the limit of {limit / (1 << 20):g} MB")
        self.limit = limit


class BodyTooSlow(Exception):
    def __init__(self, deadline_s: float) -> None:
        super().__init__(
            f"the request body did not arrive within --read-timeout-s {deadline_s:g}; send it faster "
            "or in full."
        )


async def send_json_error(send, status: int, detail: str, *headers: tuple[bytes, bytes]) -> None:
    """A whole JSON error response (`{"detail": ...}`) sent from ASGI middleware, before any route."""
    body = json.dumps({"detail": detail}).encode()
    start = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()), *headers]
    await send({"type": "http.response.start", "status": status, "headers": start})
    await send({"type": "http.response.body", "body": body})


def too_large_message(limit: int) -> str:
    return f"{BodyTooLarge(limit)}; send a smaller image or start the server with a larger --max-body-mb."


class BodyLimit:
    def __init__(self, app, max_bytes: int, on_refused=lambda _scope: None) -> None:
        self.app, self.max_bytes, self.on_refused = app, max_bytes, on_refused

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        declared = dict(scope["headers"]).get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.max_bytes:
            self.on_refused(scope)
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
        await send_json_error(send, 413, too_large_message(self.max_bytes), (b"connection", b"close"))


class BodyDeadline:
    """Raises BodyTooSlow from `receive` once the body is not complete `deadline_s` after the request
    started; later receives (the app listening for a disconnect) are not limited."""

    def __init__(self, app, deadline_s: float) -> None:
        self.app, self.deadline_s = app, deadline_s

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        deadline = time.monotonic() + self.deadline_s
        body_done = False

        async def receive_in_time():
            nonlocal body_done
            if body_done:
                return await receive()
            try:
                message = await asyncio.wait_for(receive(), max(0.0, deadline - time.monotonic()))
            except asyncio.TimeoutError:
                raise BodyTooSlow(self.deadline_s) from None
            body_done = message["type"] != "http.request" or not message.get("more_body", False)
            return message

        return await self.app(scope, receive_in_time, send)
