"""What the control plane refuses before it reads a body: a mutation without a valid token (401/403), headers
over `MAX_HEADER_BYTES` (431), a body over the upload limit, declared (413 at once) or chunked (413 as soon as
the limit is passed, the rest unread). A pure ASGI middleware: FastAPI reads a request's body before its
dependencies run, so the route-level token check alone would read a 40 MB upload and then say 401."""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

from fastapi import HTTPException
from fastapi.security import HTTPAuthorizationCredentials

from services import auth

MUTATING = {b"POST", b"PUT", b"PATCH", b"DELETE"}
MAX_HEADER_BYTES = 64 * 1024

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]


class RequestGuard:
    def __init__(self, app: Callable[[Scope, Receive, Send], Awaitable[None]], limit_bytes: int) -> None:
        self.app, self.limit_bytes = app, limit_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        refusal = self._refusal(scope)
        if refusal is not None:
            await _respond(send, *refusal)
            return
        await self._limited(scope, receive, send)

    def _refusal(self, scope: Scope) -> tuple[int, str, dict[str, str]] | None:
        headers = scope["headers"]
        if sum(len(k) + len(v) for k, v in headers) > MAX_HEADER_BYTES:
            return 431, f"request headers over {MAX_HEADER_BYTES} bytes", {}
        values = {k.lower(): v for k, v in headers}
        if scope["method"].encode() in MUTATING:
            try:
                auth.check(_credentials(values.get(b"authorization", b"")))
            except HTTPException as err:
                return err.status_code, err.detail, dict(err.headers or {})
        length = values.get(b"content-length")
        if length is not None and (not length.isdigit() or int(length) > self.limit_bytes):
            return 413, f"request body over the {self.limit_bytes >> 20} MB limit", {}
        return None

    async def _limited(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Count the body as it streams in; past the limit, answer 413 and let the app see a disconnect."""
        seen, refused, started = 0, False, False

        async def counted() -> Message:
            nonlocal seen, refused
            if refused:
                return {"type": "http.disconnect"}
            message = await receive()
            seen += len(message.get("body", b""))
            if seen > self.limit_bytes:
                refused = True
                if not started:
                    await _respond(send, 413, f"request body over the {self.limit_bytes >> 20} MB limit", {})
                return {"type": "http.disconnect"}
            return message

        async def guarded_send(message: Message) -> None:
            nonlocal started
            if refused:
                return  # the 413 is the answer; the app's own reply to the disconnect is dropped
            started = True
            await send(message)

        try:
            await self.app(scope, counted, guarded_send)
        except Exception:
            if not refused:  # the app's disconnect error after our 413 is expected; anything else is not
                raise


def _credentials(header: bytes) -> HTTPAuthorizationCredentials | None:
    scheme, _, token = header.decode("latin-1").partition(" ")
    if scheme.lower() != "bearer" or not token:
        return None
    return HTTPAuthorizationCredentials(scheme=scheme, credentials=token.strip())


async def _respond(send: Send, status: int, detail: str, headers: dict[str, str]) -> None:
    body = json.dumps({"detail": detail}).encode()
    raw = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    raw += [(k.lower().encode(), v.encode()) for k, v in headers.items()]
    await send({"type": "http.response.start", "status": status, "headers": raw})
    await send({"type": "http.response.body", "body": body})
