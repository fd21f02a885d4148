"""API keys: every `/v1/` and `/api/` request (and `/metrics` with --metrics-need-key) must carry one
of the operator's keys as `X-Api-Key: KEY` or `Authorization: Bearer KEY`; the rest (health probes,
the schema, a static page) stays open. Keys come from --api-key-file (one a line, `#` comments) and
the RMBG_API_KEYS variable (comma- or space-separated); the file is read again on SIGHUP. Keys are
compared in constant time and never logged."""

from __future__ import annotations

import hmac
import logging
import os
from pathlib import Path

from ..errors import RmbgError
from .limits import send_json_error

log = logging.getLogger("rmbg.serve")
ENV_VARIABLE = "RMBG_API_KEYS"
PROTECTED_PREFIXES = ("/v1/", "/api/")


def read_key_file(path: str) -> list[str]:
    try:
        lines = Path(path).read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as err:
        reason = getattr(err, "strerror", None) or err
        raise RmbgError(f"cannot read the API key file {path}: {reason}.") from None
    return [line.strip() for line in lines if line.strip() and not line.lstrip().startswith("#")]


class ApiKeys:
    """The keys in force; `reload()` swaps them in one assignment, so requests never see a partial set."""

    def __init__(self, key_file: str | None, environ: dict[str, str] | None = None) -> None:
        self.key_file = key_file
        self.from_env = (environ if environ is not None else os.environ).get(ENV_VARIABLE, "")
        self.keys = self._load()

    @property
    def required(self) -> bool:
        return bool(self.keys)

    def _load(self) -> tuple[bytes, ...]:
        keys = self.from_env.replace(",", " ").split()
        if self.key_file is not None:
            from_file = read_key_file(self.key_file)
            if not from_file:  # most likely caught half-written: never read as "no key needed"
                raise RmbgError(f"the API key file {self.key_file} holds no key; write one key per line.")
            keys += from_file
        return tuple(key.encode() for key in dict.fromkeys(keys))

    def reload(self) -> None:
        """Read the key file again (SIGHUP); a file that fails to read keeps the keys in force."""
        try:
            self.keys = self._load()
        except RmbgError as err:
            log.error("API keys not reloaded, the previous ones stay in force: %s", err)
            return
        log.info("API keys reloaded: %d in force", len(self.keys))

    def accepts(self, candidate: bytes) -> bool:
        # compare_digest against every key, without stopping at the first match, so the time taken
        # says nothing about which key (or how much of one) matched
        matched = False
        for key in self.keys:
            matched |= hmac.compare_digest(key, candidate)
        return matched


def presented_key(headers: list[tuple[bytes, bytes]]) -> bytes | None:
    for name, value in headers:
        if name == b"x-api-key":
            return value.strip()
        if name == b"authorization" and value[:7].lower() == b"bearer ":
            return value[7:].strip()
    return None


class ApiKeyGuard:
    """ASGI middleware: 401 with WWW-Authenticate for a protected path without a valid key."""

    def __init__(self, app, keys: ApiKeys, protect_metrics: bool, on_refused=lambda _scope: None) -> None:
        self.app, self.keys, self.on_refused = app, keys, on_refused
        self.protected_paths = ("/metrics",) if protect_metrics else ()

    def protects(self, path: str) -> bool:
        return path.startswith(PROTECTED_PREFIXES) or path in self.protected_paths

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http" or not self.keys.required or not self.protects(scope["path"]):
            return await self.app(scope, receive, send)
        key = presented_key(scope["headers"])
        if key is not None and self.keys.accepts(key):
            return await self.app(scope, receive, send)
        self.on_refused(scope)
        reason = "no API key" if key is None else "an API key that is not valid"
        detail = f"the request has {reason}; send one as 'X-Api-Key: KEY' or 'Authorization: Bearer KEY'."
        await send_json_error(send, 401, detail, (b"www-authenticate", b'Bearer realm="rmbg"'))
