"""Connections to a Vosk server, opened and configured before calls need them.

Opening a WebSocket (TCP, maybe TLS, the HTTP upgrade) and sending the config message costs
round trips the caller would otherwise wait for at the start of each call. The pool keeps
``size`` connections open and configured; a call takes one (or opens its own when the pool is
empty) and the pool refills in the background. Every connection attempt is reported to the
provider's :class:`vc.reconnect.RemoteService`; while the server is unreachable its shared retry
loop (backing off) refills the pool.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import deque

from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import WebSocketException
from websockets.protocol import State

from vc.reconnect import RemoteService
from vc_stt_vosk.protocol import config_message

#: Errors that mean "the server cannot be reached / talked to right now".
CONNECT_ERRORS = (OSError, TimeoutError, WebSocketException)


class VoskConnectionPool:
    def __init__(
        self,
        url: str,
        sample_rate: int,
        size: int,
        connect_timeout: float,
        log: logging.Logger,
        service: RemoteService | None = None,
    ) -> None:
        self.url = url
        self.sample_rate = sample_rate
        self.size = size
        self.connect_timeout = connect_timeout
        self.log = log
        self.service = service
        self._idle: deque[ClientConnection] = deque()
        self._refill: asyncio.Task[None] | None = None
        self._closed = False
        #: Whether the last attempt to reach the server worked.
        self.healthy = False
        self.connects = 0
        self.failures = 0

    async def connect(self, sample_rate: int | None = None) -> ClientConnection:
        """Open and configure one connection; raises one of CONNECT_ERRORS on failure."""
        try:
            ws = await asyncio.wait_for(
                # close_timeout: a server going away mid-call must not stall the call while
                # its side of the closing handshake drags on (reconnect instead).
                connect(self.url, open_timeout=self.connect_timeout, close_timeout=1.0,
                        compression=None, proxy=None, max_size=None),
                self.connect_timeout,
            )
            await ws.send(config_message(sample_rate or self.sample_rate))
        except CONNECT_ERRORS as e:
            self.healthy = False
            self.failures += 1
            if self.service is not None:
                self.service.lost(f"cannot reach the Vosk server at {self.url}: "
                                  f"{type(e).__name__}: {e}")
            raise
        self.healthy = True
        self.connects += 1
        if self.service is not None:
            self.service.reached()
        return ws

    async def fill(self) -> None:
        """Open connections until ``size`` are idle (one attempt each); raises on failure."""
        while len(self._idle) < self.size and not self._closed:
            self._idle.append(await self.connect())

    def refill_soon(self) -> None:
        if self.size and not self._closed and (self._refill is None or self._refill.done()):
            self._refill = asyncio.get_running_loop().create_task(self._refill_once())

    async def _refill_once(self) -> None:
        # One try: a failure is reported as lost, and the provider's retry loop refills.
        with contextlib.suppress(*CONNECT_ERRORS):
            await self.fill()

    async def acquire(self, sample_rate: int) -> ClientConnection:
        """A configured connection for one call: from the pool when one is open, else new."""
        while self._idle:
            ws = self._idle.popleft()
            if ws.state is State.OPEN and sample_rate == self.sample_rate:
                self.refill_soon()
                return ws
            await self._close(ws)
        self.refill_soon()
        return await self.connect(sample_rate)

    @property
    def idle(self) -> int:
        return sum(1 for ws in self._idle if ws.state is State.OPEN)

    @staticmethod
    async def _close(ws: ClientConnection) -> None:
        with contextlib.suppress(Exception):
            await asyncio.wait_for(ws.close(), 2.0)

    async def close(self) -> None:
        self._closed = True
        if self._refill is not None:
            self._refill.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._refill
        while self._idle:
            await self._close(self._idle.popleft())
