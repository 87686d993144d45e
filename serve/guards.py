"""ASGI middleware at the HTTP edge: the token check and what a request body may cost, before any route runs.

Both answer with vlreward's JSON error body and take their statuses from serve/status.py, like the routes do.

Where slow clients are stopped:
- Headers are parsed by uvicorn inside Ray Serve's proxy. uvicorn 0.54 has no header read timeout and Serve
  passes it only `keep_alive_timeout_s`, so a client that never finishes its headers holds one socket (and a
  few KB) in the proxy; it never reaches the ingress and takes no request slot. A header timeout needs a load
  balancer in front (nginx `client_header_timeout`, an Envoy/ALB idle timeout).
- Bodies are read by the ingress through Serve's ASGI receive proxy: `BodyGuard` times them out and bounds
  how many slow ones are received at once, so stalled uploads cost only their senders.

`AdmissionGate` (outermost) lets `vlreward serve` stop gracefully: once its `Admission` is drained (SIGTERM,
Ctrl-C) new requests get a 503 at once while those admitted before finish.
"""

from __future__ import annotations

import asyncio
import secrets

from rewards.errors import (ModelNotReadyError, OverloadedError, PayloadTooLargeError, RequestTimeoutError,
                            UnauthorizedError, VLRewardError)
from serve.errors import error_response
from serve.status import error_headers, status_of

# what stays open when a token is set: liveness, the web page (it asks for the token) and the API docs
PUBLIC_PATHS = frozenset({"/healthz", "/", "/openapi.json", "/docs", "/docs/oauth2-redirect", "/redoc"})
DISCONNECT = {"type": "http.disconnect"}


async def send_error(send, error: VLRewardError, retry_after_s: float = 1.0, close: bool = False) -> None:
    """Answer with vlreward's JSON error body straight from ASGI middleware, at the status the table gives;
    `close`: with `Connection: close`, so the client does not send its next request on this connection."""
    status = status_of(error)
    response = error_response(status, error.code, str(error), error_headers(status, retry_after_s))
    headers = response.raw_headers + ([(b"connection", b"close")] if close else [])
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": response.body})


def route_path(scope) -> str:
    """The path inside the app: without the prefix it is mounted under (Serve's route_prefix)."""
    path, root = scope["path"], scope.get("root_path", "")
    return (path[len(root):] or "/") if root and path.startswith(root) else path


class TokenGuard:
    """With a token set, every path but PUBLIC_PATHS needs `Authorization: Bearer <token>` (else 401).

    It runs before routing and body parsing, so an unauthenticated client cannot make the service read its body.
    """

    def __init__(self, app, token: str):
        self.app, self.token = app, token

    async def __call__(self, scope, receive, send):
        if scope["type"] == "http" and route_path(scope) not in PUBLIC_PATHS:
            try:
                check_bearer(dict(scope["headers"]).get(b"authorization", b""), self.token)
            except UnauthorizedError as error:
                return await send_error(send, error)
        await self.app(scope, receive, send)


def check_bearer(authorization: bytes | str, token: str) -> None:
    """UnauthorizedError unless `authorization` (an HTTP header or gRPC metadata value) is `Bearer <token>`; the
    comparison takes the same time wherever the two differ."""
    supplied = authorization.encode() if isinstance(authorization, str) else authorization
    if not secrets.compare_digest(supplied, f"Bearer {token}".encode()):
        raise UnauthorizedError("missing or wrong bearer token")


class Admission:
    """Whether one ingress replica still admits requests, and how many it admitted are in flight. `drain` closes it
    for good: the service is stopping."""

    def __init__(self):
        self.open, self.in_flight, self.refused, self.last_arrival = True, 0, 0, 0.0

    def admit(self) -> None:
        """Count one more request in flight (the caller calls `done` when it is answered), or refuse it with
        ModelNotReadyError (503) once drained."""
        self.last_arrival = asyncio.get_running_loop().time()
        if not self.open:
            self.refused += 1
            raise ModelNotReadyError("the service is shutting down; retry elsewhere or later")
        self.in_flight += 1

    def done(self) -> None:
        self.in_flight -= 1

    async def drain(self, grace_s: float, quiet_s: float = 0.5) -> dict:
        """Admit no more requests and wait, at most `grace_s`, until none is in flight and none has arrived for
        `quiet_s` (requests on their way through Serve's proxy still get their 503). The counts: in flight when
        it began, in flight still (cut off when the caller stops now), refused so far."""
        loop = asyncio.get_running_loop()
        self.open, start, in_flight = False, loop.time(), self.in_flight
        while loop.time() - start < grace_s and (self.in_flight or loop.time() - self.last_arrival < quiet_s):
            await asyncio.sleep(0.05)
        return {"in_flight": in_flight, "left": self.in_flight, "refused": self.refused}


class AdmissionGate:
    """ASGI middleware (outermost): counts the requests in flight for an `Admission`; once it is drained, every
    request but /healthz is answered 503 (Retry-After, `Connection: close`) at once, its body unread."""

    def __init__(self, app, admission: Admission, retry_after_s: float = 1.0):
        self.app, self.admission, self.retry_after_s = app, admission, retry_after_s

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http" or route_path(scope) == "/healthz":
            return await self.app(scope, receive, send)
        try:
            self.admission.admit()
        except ModelNotReadyError as error:
            return await send_error(send, error, self.retry_after_s, close=True)
        try:
            await self.app(scope, receive, send)
        finally:
            self.admission.done()


class BodyGuard:
    """What one request body may cost: its size (413), the wait for its next chunk (408), and a place among the
    `max_slow_bodies` bodies received slowly at once (503 + Retry-After beyond them).

    A declared Content-Length over `max_bytes` is refused before anything is read; a chunked body is counted as
    it arrives. A body whose next chunk takes longer than `grace_s` is slow: it must take one of the slow-body
    places until it ends, and it gets `read_timeout_s` without progress before it is answered 408; when every
    place is taken, its chunk gets four more graces before the 503. A body that arrives in one go never waits for
    a place, so stalled clients cannot crowd out the rest. Once refused, the
    app sees the client as gone while the client gets the error.
    """

    def __init__(self, app, max_bytes: int, read_timeout_s: float = 10.0, max_slow_bodies: int = 64,
                 retry_after_s: float = 1.0, grace_s: float = 0.5):
        self.app, self.max_bytes, self.read_timeout_s = app, max_bytes, read_timeout_s
        self.max_slow_bodies, self.retry_after_s = max_slow_bodies, retry_after_s
        self.grace_s = min(grace_s, read_timeout_s)
        self.full_grace_s = min(4 * self.grace_s, read_timeout_s - self.grace_s)
        self.slow_bodies = 0  # bodies holding a slow-body place now

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        length = dict(scope["headers"]).get(b"content-length", b"0")
        if not length.isdigit() or int(length) > self.max_bytes:
            return await self.refuse(send, PayloadTooLargeError(
                f"body of {length.decode(errors='replace')[:20]} bytes exceeds the limit of {self.max_bytes}"))
        body = _Body()

        async def guarded_receive():
            if body.refused:
                return DISCONNECT
            if body.complete:  # after the body, receive only waits for a disconnect: no clock on that
                return await receive()
            error, message = await self.next_chunk(receive, body)
            if error is None and message["type"] == "http.request":
                body.received += len(message.get("body", b""))
                if body.received > self.max_bytes:
                    error = PayloadTooLargeError(f"body of more than {body.received} bytes exceeds the limit of "
                                                 f"{self.max_bytes}")
                body.complete = not message.get("more_body", False)
            if error is not None or body.complete or message["type"] != "http.request":
                self.release(body)
            if error is not None:
                body.refused = True
                await self.refuse(send, error)
                return DISCONNECT
            return message

        async def send_unless_refused(message):
            if not body.refused:
                await send(message)

        try:
            await self.app(scope, guarded_receive, send_unless_refused)
        except Exception:
            if not body.refused:
                raise  # once refused, the app failing on the body it never got is expected: the client has its answer
        finally:
            self.release(body)

    async def next_chunk(self, receive, body: "_Body") -> tuple[VLRewardError | None, dict | None]:
        """(None, the next message), or (the error to answer with, None) when it does not come in time."""
        chunk = asyncio.ensure_future(receive())
        waited = 0.0
        if not body.slow:
            done, _ = await asyncio.wait({chunk}, timeout=self.grace_s)
            if done:
                return None, chunk.result()
            waited = self.grace_s
            if self.slow_bodies >= self.max_slow_bodies:
                # every place is taken: a body merely delayed (a busy network or event loop) still gets a few
                # more graces to arrive before it is turned away; a stalled one is refused then
                done, _ = await asyncio.wait({chunk}, timeout=self.full_grace_s)
                if done:
                    return None, chunk.result()
                chunk.cancel()
                return OverloadedError(f"{self.max_slow_bodies} slow uploads are being received already; "
                                       "send the body at once or retry later"), None
            self.slow_bodies += 1
            body.slow = True
        done, _ = await asyncio.wait({chunk}, timeout=self.read_timeout_s - waited)
        if done:
            return None, chunk.result()
        chunk.cancel()
        return RequestTimeoutError(f"no part of the body arrived for {self.read_timeout_s:g} s"), None

    def release(self, body: "_Body") -> None:
        if body.slow:
            body.slow = False
            self.slow_bodies -= 1

    async def refuse(self, send, error: VLRewardError) -> None:
        await send_error(send, error, self.retry_after_s)


class _Body:
    """Where one request's body stands."""

    __slots__ = ("received", "complete", "refused", "slow")

    def __init__(self):
        self.received, self.complete, self.refused, self.slow = 0, False, False, False
