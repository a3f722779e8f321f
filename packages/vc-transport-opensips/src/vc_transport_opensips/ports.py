"""The RTP port pool: one UDP socket per call, bound atomically from a configured range.

Allocation *is* the bind: a port is tried by binding it, and a port something else holds
(``EADDRINUSE``) is skipped, so two processes sharing a range never race on a test bind.
Ports are even (RTP convention, RFC 3550 §11) and reused round-robin, so a port freed by one
call is the last to be handed out again (stray packets of the old call die out first).
"""

from __future__ import annotations

import asyncio
import errno
import logging
from collections import deque
from collections.abc import Callable
from typing import TypeVar

log = logging.getLogger("vc.transport.opensips.ports")

P = TypeVar("P", bound=asyncio.DatagramProtocol)


class PortsExhausted(Exception):
    """Every port of the range is in use."""


class PortPool:
    def __init__(self, bind_ip: str, min_port: int, max_port: int) -> None:
        self.bind_ip = bind_ip
        self.ephemeral = min_port == 0
        start = min_port + (min_port % 2)
        self._free: deque[int] = (
            deque(range(start, max_port + 1, 2)) if not self.ephemeral else deque()
        )
        self.in_use: set[int] = set()
        self.size = len(self._free)

    @property
    def free(self) -> int:
        return len(self._free)

    async def open(self, factory: Callable[[], P]) -> tuple[asyncio.DatagramTransport, P, int]:
        """Bind a socket for one call; raises PortsExhausted when no port can be had."""
        loop = asyncio.get_running_loop()
        if self.ephemeral:
            transport, protocol = await loop.create_datagram_endpoint(
                factory, local_addr=(self.bind_ip, 0)
            )
            port = transport.get_extra_info("sockname")[1]
            self.in_use.add(port)
            return transport, protocol, port
        for _ in range(len(self._free)):
            port = self._free.popleft()
            try:
                transport, protocol = await loop.create_datagram_endpoint(
                    factory, local_addr=(self.bind_ip, port)
                )
            except OSError as e:
                self._free.append(port)
                if e.errno in (errno.EADDRINUSE, errno.EACCES):
                    log.debug("RTP port %d is taken by another socket; trying the next", port)
                    continue
                raise
            self.in_use.add(port)
            return transport, protocol, port
        raise PortsExhausted(
            f"no free RTP port in {self.bind_ip} {min(self.in_use | set(self._free), default=0)}-"
            f"{max(self.in_use | set(self._free), default=0)} ({len(self.in_use)} in use)"
        )

    def release(self, port: int) -> None:
        if port not in self.in_use:
            return
        self.in_use.discard(port)
        if not self.ephemeral:
            self._free.append(port)
