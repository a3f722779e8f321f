"""Persistent WebSocket connections to a Llama WebSocket service, pooled and drained.

The protocol has no request ids and no cancel message: a reply belongs to the request before
it on the same socket. So a connection whose reply was abandoned (the caller barged in) is
*draining*: a background task reads and discards the rest of that reply up to its ``done`` or
``error`` before the connection may carry another request. If the drain does not finish in
time the connection is closed, never reused. Late chunks therefore never reach another turn.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from typing import Any

from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidHandshake, InvalidURI

from vc.reconnect import RemoteService
from vc.wsauth import auth_headers
from vc_llm_llama_ws import protocol

log = logging.getLogger("vc.llm.llama-ws")


class ServerUnavailable(ConnectionError):
    """The service cannot be reached; the message says where and why."""


class LlamaConnection:
    """One WebSocket to the service, carrying one request at a time."""

    def __init__(self, ws: ClientConnection, url: str) -> None:
        self.ws = ws
        self.url = url
        self.in_flight = False  # a request was sent and its done/error not yet read
        self.drain_task: asyncio.Task[None] | None = None
        self.discarded = 0  # messages thrown away by drains (tests read it)
        self.requests = 0

    @property
    def closed(self) -> bool:
        return self.ws.state.name in ("CLOSING", "CLOSED")

    @property
    def usable(self) -> bool:
        """Open and not carrying (or draining) a request."""
        return (
            not self.closed
            and not self.in_flight
            and (self.drain_task is None or self.drain_task.done())
        )

    async def send(self, request: protocol.ChatRequest) -> None:
        if self.in_flight:
            raise RuntimeError("a request is already in flight on this connection")
        await self.ws.send(request.to_json())
        self.in_flight = True
        self.requests += 1

    async def receive(self) -> protocol.Reply:
        """The next reply message of the request in flight."""
        reply = protocol.parse_reply(await self.ws.recv())
        if reply.final:
            self.in_flight = False
        return reply

    def abandon(self, timeout: float) -> None:
        """The consumer stopped listening mid-reply: drain the rest in the background."""
        if not self.in_flight or self.closed:
            return
        if self.drain_task is None or self.drain_task.done():
            self.drain_task = asyncio.ensure_future(self._drain(timeout))

    async def _drain(self, seconds: float) -> None:
        t0 = time.monotonic()
        try:
            async with asyncio.timeout(seconds):
                while self.in_flight:
                    await self.receive()
                    self.discarded += 1
            log.debug(
                "drained an abandoned reply (%d messages) in %.2fs",
                self.discarded,
                time.monotonic() - t0,
            )
        except (TimeoutError, ConnectionClosed, protocol.ProtocolError, OSError) as e:
            log.info(
                "closing a connection whose abandoned reply did not finish (%s)", type(e).__name__
            )
            await self.close()

    async def wait_drained(self, seconds: float) -> bool:
        """Wait for a drain in progress; False if the connection is not usable afterwards."""
        if self.drain_task is not None and not self.drain_task.done():
            with contextlib.suppress(TimeoutError, asyncio.CancelledError):
                await asyncio.wait_for(asyncio.shield(self.drain_task), seconds)
        return self.usable

    async def close(self) -> None:
        self.in_flight = False
        with contextlib.suppress(Exception):
            await self.ws.close()


async def open_connection(url: str, seconds: float, token: str = "") -> LlamaConnection:
    """Connect (bounded by ``seconds``); raises ServerUnavailable with a clear reason."""
    try:
        ws = await asyncio.wait_for(
            connect(
                url,
                additional_headers=auth_headers(token),
                open_timeout=seconds,
                ping_interval=20,
                ping_timeout=20,
                max_size=4 << 20,
                close_timeout=2,
            ),
            seconds,
        )
    except TimeoutError:
        raise ServerUnavailable(
            f"Llama WebSocket service at {url} did not answer within {seconds:g}s"
        ) from None
    except InvalidURI as e:
        raise ServerUnavailable(f"invalid Llama WebSocket URL {url!r}: {e}") from None
    except (OSError, InvalidHandshake) as e:
        raise ServerUnavailable(
            f"cannot connect to the Llama WebSocket service at {url}: {e}"
        ) from None
    return LlamaConnection(ws, url)


class ConnectionPool:
    """A few open connections kept ready so a call's first turn pays no connect time.

    Every connection attempt is reported to ``service`` (reachable or not): while the service
    is unreachable the provider's shared retry loop (:mod:`vc.reconnect`) refills the pool.
    """

    def __init__(self, url: str, size: int, timeout: float,
                 service: RemoteService | None = None, token: str = "") -> None:
        self.url = url
        self.token = token
        self.size = max(0, size)
        self.timeout = timeout
        self.service = service
        self._idle: list[LlamaConnection] = []
        self._refill: asyncio.Task[None] | None = None
        self._closed = False
        self._tasks: set[asyncio.Task[None]] = set()

    @property
    def idle(self) -> int:
        return len(self._idle)

    async def open(self) -> LlamaConnection:
        """A new connection (raises ServerUnavailable); the outcome is reported to ``service``."""
        try:
            conn = await open_connection(self.url, self.timeout, self.token)
        except ServerUnavailable as e:
            if self.service is not None:
                self.service.lost(str(e))
            raise
        if self.service is not None:
            self.service.reached()
        return conn

    async def fill(self) -> None:
        """Open connections until ``size`` are idle; raises ServerUnavailable on failure."""
        while len(self._idle) < self.size and not self._closed:
            self._idle.append(await self.open())

    def refill_soon(self) -> None:
        if self._closed or len(self._idle) >= self.size:
            return
        if self._refill is None or self._refill.done():
            self._refill = asyncio.ensure_future(self._refill_once())

    async def _refill_once(self) -> None:
        # One try: a failure is reported as lost, and the provider's retry loop refills.
        with contextlib.suppress(ServerUnavailable):
            await self.fill()

    def take_idle(self) -> LlamaConnection | None:
        """A ready pooled connection without waiting, or None (the pool refills itself)."""
        conn = None
        while self._idle and conn is None:
            candidate = self._idle.pop()
            if candidate.usable:
                conn = candidate
            else:
                self._spawn(candidate.close())
        self.refill_soon()
        return conn

    def _spawn(self, coro: Any) -> None:
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def get(self) -> LlamaConnection:
        """A ready connection: a pooled one, or a new one (raises ServerUnavailable)."""
        while self._idle:
            conn = self._idle.pop()
            if conn.usable:
                self.refill_soon()
                return conn
            await conn.close()
        conn = await self.open()
        self.refill_soon()
        return conn

    def release(self, conn: LlamaConnection) -> None:
        """Give back a connection after use: kept if clean and the pool has room, else closed
        (a connection still draining an interrupted reply is judged once the drain ends)."""
        if not self._closed and conn.usable and len(self._idle) < self.size:
            self._idle.append(conn)
            return
        self._spawn(self._put_after_drain(conn))

    async def _put_after_drain(self, conn: LlamaConnection) -> None:
        await conn.wait_drained(self.timeout)
        if not self._closed and conn.usable and len(self._idle) < self.size:
            self._idle.append(conn)
        else:
            await conn.close()

    async def close(self) -> None:
        self._closed = True
        for task in list(self._tasks):
            task.cancel()
        if self._refill is not None:
            self._refill.cancel()
        idle, self._idle = self._idle, []
        for conn in idle:
            await conn.close()
