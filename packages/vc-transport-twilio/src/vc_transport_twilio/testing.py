"""Run vc with the Twilio transport on 127.0.0.1 for tests, demos and benchmarks.

    async with TwilioCloud("http://placeholder") as cloud:
        async with serve_vc(ini_text, cloud) as server:
            call = await cloud.place_call()

:func:`serve_vc` builds the whole application (``vc.server.App``) from an INI text, points
``[transport.twilio]`` at the simulated cloud (public URL, credentials, REST base URL), starts
it and serves it with uvicorn on an ephemeral port, configured like ``vc serve``.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import Any

import attrs
import uvicorn

from vc.plugins import Registry
from vc.server import App
from vc_transport_twilio.simulator import TwilioCloud


class _Server(uvicorn.Server):
    def install_signal_handlers(self) -> None:  # the test process owns its signals
        pass


@attrs.define
class RunningVC:
    app: App
    url: str
    server: uvicorn.Server

    @property
    def engine(self) -> Any:
        return self.app.engine

    @property
    def transport(self) -> Any:
        return self.app.transports["twilio"]


def twilio_section(cloud: TwilioCloud, **overrides: Any) -> str:
    values: dict[str, Any] = {
        "public_url": cloud.public_url,
        "account_sid": cloud.account_sid,
        "auth_token": cloud.auth_token,
        "api_base_url": cloud.rest_url,
        **overrides,
    }
    lines = [f"{k} = {v}" for k, v in values.items() if v is not None]
    return "[transport.twilio]\n" + "\n".join(lines) + "\n"


@contextlib.asynccontextmanager
async def serve_vc(
    ini: str, cloud: TwilioCloud, registry: Registry | None = None, **twilio: Any
) -> AsyncIterator[RunningVC]:
    """Start vc (``ini`` plus a ``[transport.twilio]`` section for ``cloud``) on 127.0.0.1:0."""
    from vc.testing import config_from_ini, fake_registry

    reg = registry or fake_registry()
    text = ini + "\n" + twilio_section(cloud, **twilio)
    app = App(config_from_ini(text, reg), reg)
    server = _Server(
        uvicorn.Config(
            app.http, host="127.0.0.1", port=0, log_config=None, lifespan="off", ws_max_size=1 << 20
        )
    )  # as vc serve does
    task = asyncio.create_task(server.serve())
    while not server.started:
        if task.done():
            task.result()
            raise RuntimeError("uvicorn did not start")
        await asyncio.sleep(0.01)
    port = server.servers[0].sockets[0].getsockname()[1]
    url = f"http://127.0.0.1:{port}"
    cloud.local_url = url
    try:
        await app.start()
        yield RunningVC(app, url, server)
    finally:
        with contextlib.suppress(Exception):
            await app.stop()
        server.should_exit = True
        await task
