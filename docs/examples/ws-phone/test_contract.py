"""ws-phone against vc's transport contract: a real call through vc's engine, both ways."""

from __future__ import annotations

import asyncio
import contextlib

from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed
from ws_phone import WsPhone, WsPhoneSettings

from vc.providers import TransportProvider
from vc.testing.contracts import ContractCaller, TransportContract

FRAME = 320  # 20 ms of PCM16 at 8 kHz


class SoftPhone:
    """The caller's end: talks in real time (silence between utterances) and records what it hears."""

    def __init__(self, ws: ClientConnection) -> None:
        self.ws = ws
        self.heard = bytearray()
        self.to_say = bytearray()
        self.tasks = [asyncio.create_task(self._talk()), asyncio.create_task(self._listen())]

    @classmethod
    async def dial(cls, url: str) -> SoftPhone:
        return cls(await connect(url, max_size=None))

    def send_audio(self, pcm: bytes) -> None:
        self.to_say += pcm

    def received_audio(self) -> bytes:
        return bytes(self.heard)

    async def _talk(self) -> None:
        loop = asyncio.get_running_loop()
        start, n = loop.time(), 0
        with contextlib.suppress(ConnectionClosed):
            while True:
                n += 1
                await asyncio.sleep(max(0.0, start + n * 0.02 - loop.time()))
                frame = bytes(self.to_say[:FRAME]).ljust(FRAME, b"\0")
                del self.to_say[:FRAME]
                await self.ws.send(frame)

    async def _listen(self) -> None:
        with contextlib.suppress(ConnectionClosed):
            async for message in self.ws:
                if isinstance(message, bytes):
                    self.heard += message

    async def hangup(self) -> None:
        await self.ws.close()

    async def close(self) -> None:
        for task in self.tasks:
            task.cancel()
        await asyncio.gather(*self.tasks, return_exceptions=True)
        await self.ws.close()


class TestWsPhone(TransportContract):
    provider = WsPhone

    def make_settings(self) -> WsPhoneSettings:
        return WsPhoneSettings(token="s3cret")

    async def connect_caller(self, transport: TransportProvider, http_url: str) -> ContractCaller:
        url = http_url.replace("http://", "ws://") + "/ws-phone/call?from=contract&token=s3cret"
        return await SoftPhone.dial(url)
