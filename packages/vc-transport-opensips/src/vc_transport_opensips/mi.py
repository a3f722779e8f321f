"""OpenSIPS MI over ``mi_datagram``: JSON-RPC 2.0, one request per UDP datagram, asyncio only.

Every request carries its own id; replies are matched by id, so several commands can be in
flight at once and a late reply to a timed-out request is dropped. Nothing here blocks the
event loop.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import logging
import secrets
from typing import Any

from vc import jsonsafe

log = logging.getLogger("vc.transport.opensips.mi")


class MIError(Exception):
    """An MI command failed: no reply in time, or an error reply (``replied``)."""

    def __init__(self, message: str, code: int | None = None, replied: bool = False) -> None:
        super().__init__(message)
        self.code = code
        self.replied = replied


class _Protocol(asyncio.DatagramProtocol):
    def __init__(self, client: MIClient) -> None:
        self.client = client

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        self.client._reply(data)

    def error_received(self, exc: Exception) -> None:
        # ICMP port unreachable: OpenSIPS is not listening (yet); requests time out.
        log.debug("MI socket error: %s", exc)


class MIClient:
    def __init__(self, ip: str, port: int, timeout: float = 2.0) -> None:
        self.address = (ip, port)
        self.timeout = timeout
        self.transport: asyncio.DatagramTransport | None = None
        self._pending: dict[str, asyncio.Future[Any]] = {}
        self._ids = itertools.count(1)
        self._prefix = secrets.token_hex(3)

    async def start(self) -> None:
        loop = asyncio.get_running_loop()
        family_ip = "::" if ":" in self.address[0] else "0.0.0.0"
        self.transport, _ = await loop.create_datagram_endpoint(
            lambda: _Protocol(self), local_addr=(family_ip, 0)
        )

    async def close(self) -> None:
        for fut in self._pending.values():
            if not fut.done():
                fut.set_exception(MIError("MI client closed"))
        self._pending.clear()
        if self.transport is not None:
            self.transport.close()

    async def call(
        self,
        method: str,
        params: dict[str, Any] | list[Any] | None = None,
        limit: float | None = None,
    ) -> Any:
        """Run one MI command; returns its ``result`` or raises MIError."""
        if self.transport is None:
            raise MIError("MI client not started")
        req_id = f"{self._prefix}-{next(self._ids)}"
        msg: dict[str, Any] = {"jsonrpc": "2.0", "id": req_id, "method": method}
        if params is not None:
            msg["params"] = params
        fut: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._pending[req_id] = fut
        try:
            self.transport.sendto(json.dumps(msg).encode(), self.address)
            return await asyncio.wait_for(fut, limit or self.timeout)
        except TimeoutError:
            raise MIError(
                f"MI {method}: no reply from {self.address[0]}:{self.address[1]} "
                f"within {limit or self.timeout:.1f}s"
            ) from None
        finally:
            self._pending.pop(req_id, None)

    def _reply(self, data: bytes) -> None:
        try:
            msg = jsonsafe.loads(data)  # ValueError only, also for "[" * 1000 (RecursionError)
        except ValueError:
            log.warning("MI reply is not JSON (%d bytes): dropped", len(data))
            return
        if not isinstance(msg, dict):
            log.warning("MI reply is not a JSON object: dropped")
            return
        fut = self._pending.get(str(msg.get("id")))
        if fut is None or fut.done():
            log.debug("MI reply for an unknown or expired id %r", msg.get("id"))
            return
        if "error" in msg:
            err = msg["error"] if isinstance(msg["error"], dict) else {"message": str(msg["error"])}
            code = err.get("code")
            fut.set_exception(
                MIError(
                    f"MI error {code}: {err.get('message')}",
                    code if isinstance(code, int) else None,
                    replied=True,
                )
            )
        else:
            fut.set_result(msg.get("result"))
