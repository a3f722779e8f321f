"""Transports' HTTP routes: mounted once, before start(host); no path served twice."""

from __future__ import annotations

from typing import Any, ClassVar

import pytest
from fastapi import APIRouter, WebSocket
from fastapi.testclient import TestClient

from vc.hookspecs import hookimpl
from vc.providers import CallHost, TransportProvider
from vc.server import App, RouteConflict
from vc.testing import FAKE_STACK, config_from_ini, fake_registry


class Hooked(TransportProvider):
    """A transport whose routes are ``paths`` ((method, path); method "WS" for a WebSocket)."""

    paths: ClassVar[tuple[tuple[str, str], ...]] = ()
    calls: ClassVar[list[str]] = []

    def routes(self) -> APIRouter:
        Hooked.calls.append(f"routes {self.name} host={self.host is not None}")
        router = APIRouter()
        for method, path in self.paths:
            if method == "WS":
                async def socket(ws: WebSocket) -> None:
                    await ws.accept()
                    await ws.send_text("hi")
                    await ws.close()

                router.add_api_websocket_route(path, socket)
            else:
                async def handler() -> dict[str, str]:
                    return {}

                router.add_api_route(path, handler, methods=[method])
        return router

    async def start(self, host: CallHost) -> None:
        await super().start(host)
        Hooked.calls.append(f"start {self.name}")


def app_with(*transports: type[Hooked]) -> App:
    class Plugin:
        @hookimpl
        def register_transports(self, register: Any) -> None:
            for t in transports:
                register(t)

    registry = fake_registry(env={"VC_LOAD_PLUGINS": ""}, extra=[("routes", Plugin())])
    names = ", ".join(t.name for t in transports)
    config = config_from_ini(FAKE_STACK.replace("transports =", f"transports = {names}"), registry)
    return App(config, registry)


def transport(name: str, *paths: tuple[str, str]) -> type[Hooked]:
    return type(name.title(), (Hooked,), {"name": name, "paths": paths})


def test_two_transports_on_one_path_are_refused_naming_both() -> None:
    one = transport("one", ("POST", "/hooks/voice"))
    two = transport("two", ("GET", "/two/status"), ("POST", "/hooks/voice"))
    with pytest.raises(RouteConflict, match=r"'two' registers POST /hooks/voice.*'one'"):
        app_with(one, two)


def test_a_websocket_path_taken_twice_is_refused() -> None:
    one = transport("one", ("WS", "/media"))
    two = transport("two", ("WS", "/media"))
    with pytest.raises(RouteConflict, match="WS /media"):
        app_with(one, two)


def test_a_transport_cannot_take_cores_paths() -> None:
    with pytest.raises(RouteConflict, match=r"GET /healthz, which 'vc'"):
        app_with(transport("one", ("GET", "/healthz")))


def test_distinct_paths_and_methods_are_mounted_before_start() -> None:
    Hooked.calls.clear()
    one = transport("one", ("POST", "/one/voice"), ("WS", "/one/stream"))
    two = transport("two", ("GET", "/one/voice"), ("POST", "/two/voice"))  # another method
    app = app_with(one, two)
    with TestClient(app.http) as client:
        assert client.post("/one/voice").status_code == 200
        assert client.get("/one/voice").status_code == 200
        assert client.post("/two/voice").status_code == 200
        with client.websocket_connect("/one/stream") as ws:
            assert ws.receive_text() == "hi"
    # routes() is called while the server is built, before start(host): no host yet.
    assert Hooked.calls == ["routes one host=False", "routes two host=False"]
