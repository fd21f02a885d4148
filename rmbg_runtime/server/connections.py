"""Connection-level guards uvicorn does not have, as a subclass of its h11 protocol:

- a cap on open connections: one past the cap is answered 503 and closed at once, and the cap is
  kept below the file-descriptor limit, so accept() never runs out of descriptors;
- a header deadline: a client must send its whole request head within `header_timeout_s` of
  connecting (or of its previous response), else 408 and close (uvicorn's keep-alive timer restarts
  on every byte, so a client sending one byte at a time would hold its socket forever);
- half-close: a client that sends a complete request and then shuts down its sending side
  (SHUT_WR) is still reading and gets its answer. Since a full close looks the same from here, the
  server writes an interim `100 Continue`: a closed socket answers it with a reset, which is then
  taken as the client leaving (its queued image is dropped), while a half-closed one reads it and
  ignores it as HTTP/1.1 clients must.

Also two logging filters: access-log paths cut to a readable length, and asyncio's "out of system
resource" accept error reported once a minute instead of thousands of times a second."""

from __future__ import annotations

import logging
import resource
import socket
import time
from dataclasses import dataclass

import h11
from uvicorn.protocols.http.h11_impl import H11Protocol

log = logging.getLogger("rmbg.serve")
DESCRIPTORS_KEPT = 64  # for the model files, pool threads' files, logs and the listening socket
HALF_CLOSE_POLL_S = 0.05
MAX_LOGGED_PATH = 200
RESOURCE_LOG_INTERVAL_S = 60.0


@dataclass(frozen=True)
class ConnectionLimits:
    max_connections: int
    header_timeout_s: float


def canned_response(status: int, reason: str, text: str) -> bytes:
    body = text.encode()
    return (
        f"HTTP/1.1 {status} {reason}\r\ncontent-type: text/plain; charset=utf-8\r\n"
        f"content-length: {len(body)}\r\nconnection: close\r\n\r\n"
    ).encode() + body


FULL = canned_response(503, "Service Unavailable", "too many open connections; retry later.\n")
HEAD_TOO_SLOW = canned_response(408, "Request Timeout", "the request head did not arrive in time.\n")


def descriptor_bound_connections(wanted: int) -> int:
    """`wanted`, lowered to fit the process's file-descriptor limit (raised to its hard limit first)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != resource.RLIM_INFINITY and soft < hard:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
            soft = hard
        except (ValueError, OSError):
            pass
    if soft == resource.RLIM_INFINITY:
        return wanted
    return max(1, min(wanted, soft - DESCRIPTORS_KEPT))


def guarded_protocol(limits: ConnectionLimits) -> type[H11Protocol]:
    class GuardedH11Protocol(H11Protocol):
        def connection_made(self, transport) -> None:  # type: ignore[override]
            super().connection_made(transport)
            self.head_timer = None
            if len(self.connections) > limits.max_connections:
                transport.write(FULL)
                transport.close()
                return
            self._start_head_timer()

        def connection_lost(self, exc: Exception | None) -> None:
            self._stop_head_timer()
            super().connection_lost(exc)

        def handle_events(self) -> None:
            super().handle_events()
            if self.conn.their_state is not h11.IDLE:  # the request head is in
                self._stop_head_timer()

        def on_response_complete(self) -> None:
            super().on_response_complete()
            if not self.transport.is_closing() and self.conn.their_state is h11.IDLE:
                self._start_head_timer()  # the next request's head has the same deadline

        def eof_received(self) -> bool | None:
            cycle = self.cycle
            if cycle is None or cycle.response_complete or cycle.more_body or cycle.response_started:
                return None  # idle or mid-body: the client is gone, close as uvicorn does
            cycle.keep_alive = False  # close once the answer is written
            probe = h11.InformationalResponse(status_code=100, headers=[], reason=b"Continue")
            self.transport.write(self.conn.send(probe))
            cycle.waiting_for_100_continue = False
            self.loop.call_later(HALF_CLOSE_POLL_S, self._check_peer)
            return True  # keep the socket open for writing

        def _check_peer(self) -> None:
            cycle = self.cycle
            if self.transport.is_closing() or cycle is None or cycle.response_complete:
                return
            sock = self.transport.get_extra_info("socket")
            if sock is not None and sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR):
                self.transport.abort()  # reset: the client closed, it was no half-close
                return
            self.loop.call_later(HALF_CLOSE_POLL_S, self._check_peer)

        def _start_head_timer(self) -> None:
            self._stop_head_timer()
            self.head_timer = self.loop.call_later(limits.header_timeout_s, self._head_too_slow)

        def _stop_head_timer(self) -> None:
            if getattr(self, "head_timer", None) is not None:
                self.head_timer.cancel()
                self.head_timer = None

        def _head_too_slow(self) -> None:
            self.head_timer = None
            if self.transport.is_closing() or self.conn.their_state is not h11.IDLE:
                return
            if self.conn.trailing_data[0]:  # part of a head came: say why the socket closes
                self.transport.write(HEAD_TOO_SLOW)
            self.transport.close()

    return GuardedH11Protocol


class ShortPaths(logging.Filter):
    """uvicorn's access log line with the request path cut to MAX_LOGGED_PATH characters."""

    def filter(self, record: logging.LogRecord) -> bool:
        args = record.args
        if isinstance(args, tuple) and len(args) == 5 and isinstance(args[2], str):
            path = args[2]
            if len(path) > MAX_LOGGED_PATH:
                path = f"{path[:MAX_LOGGED_PATH]}...({len(path)} characters)"
                record.args = (*args[:2], path, *args[3:])
        return True


class OncePerInterval(logging.Filter):
    """Lets a message starting with `prefix` through at most once per `interval_s`."""

    def __init__(self, prefix: str, interval_s: float) -> None:
        super().__init__()
        self.prefix, self.interval_s, self.last = prefix, interval_s, float("-inf")

    def filter(self, record: logging.LogRecord) -> bool:
        if not str(record.msg).startswith(self.prefix):
            return True
        now = time.monotonic()
        if now - self.last < self.interval_s:
            return False
        self.last = now
        return True


def install_log_filters() -> None:
    logging.getLogger("uvicorn.access").addFilter(ShortPaths())
    logging.getLogger("asyncio").addFilter(
        OncePerInterval("socket.accept() out of system resource", RESOURCE_LOG_INTERVAL_S)
    )
