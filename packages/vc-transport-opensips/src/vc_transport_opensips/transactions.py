"""SIP transactions over UDP (RFC 3261 §17): retransmissions in both directions.

* Server transactions remember their last response, so a retransmitted request is answered
  with it again; a non-2xx final response to an INVITE is retransmitted (timer G) until the
  ACK arrives or timer H fires. Finished non-INVITE transactions linger for timer J.
* Client transactions (our BYE, REFER...) retransmit their request (timer E) until a final
  response arrives or timer F fires.

2xx responses to INVITE are retransmitted by the dialog (§13.3.1.4), not here.
"""

from __future__ import annotations

import asyncio
import contextlib
import secrets
from collections.abc import Callable

from vc_transport_opensips.sipmsg import Request, Response

T1 = 0.5
T2 = 4.0
T4 = 5.0
TIMER_H = 64 * T1
TIMER_J = 64 * T1
TIMER_F = 64 * T1

Send = Callable[[bytes, tuple[str, int]], None]


def new_branch() -> str:
    return "z9hG4bK" + secrets.token_hex(10)


def server_key(req: Request, method: str | None = None) -> tuple[str, ...]:
    """Transaction key: branch + sent-by + method (ACK matches its INVITE), RFC 3261 §17.2.3."""
    via = req.top_via
    m = method or ("INVITE" if req.method == "ACK" else req.method)
    branch = via.parameters.get("branch") or ""
    sent_by = f"{via.host}:{via.port or 5060}"
    if branch.startswith("z9hG4bK"):
        return (branch, sent_by, m)
    # RFC 2543 peers: no magic cookie; fall back to the dialog/request identifiers.
    cseq, _ = req.cseq
    return (req.call_id, req.from_tag, str(cseq), sent_by, m)


class ServerTransaction:
    def __init__(
        self,
        req: Request,
        addr: tuple[str, int],
        send: Send,
        on_done: Callable[[ServerTransaction], None],
    ) -> None:
        self.request = req
        self.addr = addr
        self._send = send
        self._on_done = on_done
        self.key = server_key(req)
        self.last_response: bytes | None = None
        self.final_status = 0
        self.acked = asyncio.Event()
        self._timer: asyncio.Task[None] | None = None
        self.cancelled = False

    @property
    def is_invite(self) -> bool:
        return self.request.method == "INVITE"

    def respond(self, data: bytes, status: int) -> None:
        if self.final_status:
            return  # a transaction has one final response
        self.last_response = data
        self._send(data, self.addr)
        if status >= 200:
            self.final_status = status
            if self.is_invite and status >= 300:
                self._timer = asyncio.ensure_future(self._retransmit_final())
            else:
                self._timer = asyncio.ensure_future(
                    self._linger(TIMER_J if not self.is_invite else T4)
                )

    def retransmission(self) -> None:
        """The request came again: repeat the last response (if any)."""
        if self.last_response is not None:
            self._send(self.last_response, self.addr)

    def ack(self) -> None:
        self.acked.set()

    async def _retransmit_final(self) -> None:
        interval = T1
        loop = asyncio.get_running_loop()
        deadline = loop.time() + TIMER_H
        while loop.time() < deadline:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.acked.wait(), min(interval, deadline - loop.time()))
            if self.acked.is_set():
                break
            assert self.last_response is not None
            self._send(self.last_response, self.addr)
            interval = min(interval * 2, T2)
        await asyncio.sleep(T4)  # absorb ACK retransmissions (timer I)
        self._on_done(self)

    async def _linger(self, seconds: float) -> None:
        await asyncio.sleep(seconds)
        self._on_done(self)

    def close(self) -> None:
        if self._timer is not None:
            self._timer.cancel()


class ClientTransaction:
    def __init__(self, branch: str, data: bytes, addr: tuple[str, int], send: Send) -> None:
        self.branch = branch
        self.data = data
        self.addr = addr
        self._send = send
        self.final: asyncio.Future[Response] = asyncio.get_running_loop().create_future()
        self._provisional = False

    def received(self, resp: Response) -> None:
        if resp.status < 200:
            self._provisional = True
        elif not self.final.done():
            self.final.set_result(resp)

    async def run(self) -> Response | None:
        """Send and retransmit until a final response; None after timer F."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + TIMER_F
        interval = T1
        self._send(self.data, self.addr)
        while loop.time() < deadline:
            wait = min(T2 if self._provisional else interval, deadline - loop.time())
            try:
                return await asyncio.wait_for(asyncio.shield(self.final), wait)
            except TimeoutError:
                self._send(self.data, self.addr)
                interval = min(interval * 2, T2)
        return None
