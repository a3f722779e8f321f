"""Issue 12 helpers: JSON parsing that fails only with ValueError, a log rate limit, and
``/healthz`` failing while a transport's listener is dead."""

from __future__ import annotations

import json
import logging
import os

import httpx
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from vc import jsonsafe
from vc.logs import LogThrottle
from vc.providers import ProviderContext, TransportProvider
from vc.server import App
from vc.testing import FAKE_STACK, config_from_ini, fake_registry

#: nox -s fuzz raises every property's budget to VC_FUZZ_EXAMPLES (5000).
FUZZ_EXAMPLES = int(os.environ.get("VC_FUZZ_EXAMPLES", "0"))

NESTED = "[" * 1000


@pytest.mark.parametrize(
    "bad", [NESTED, NESTED.encode(), '{"a": ' + NESTED, "{oops", b"\xff\xfe", "", None]
)
def test_jsonsafe_raises_only_valueerror(bad) -> None:
    with pytest.raises(ValueError) as e:
        jsonsafe.loads(bad)
    assert isinstance(e.value, jsonsafe.JsonError)
    if bad in (NESTED, NESTED.encode()):
        assert "nested too deeply" in str(e.value)


def test_jsonsafe_loads_object_wants_an_object() -> None:
    assert jsonsafe.loads_object('{"a": [1]}') == {"a": [1]}
    assert jsonsafe.loads("[1, 2]") == [1, 2]
    for not_object in ("[1]", "3", '"x"', "null"):
        with pytest.raises(jsonsafe.JsonError, match="expected a JSON object"):
            jsonsafe.loads_object(not_object)


@given(st.text(alphabet="[]{}\":,0a ", max_size=3000))
@settings(max_examples=max(200, FUZZ_EXAMPLES), deadline=None)
def test_jsonsafe_never_raises_anything_else(text: str) -> None:
    try:
        value = jsonsafe.loads(text)
    except jsonsafe.JsonError:
        return
    assert json.dumps(value) is not None or value is None


def test_log_throttle_first_n_then_a_count(caplog) -> None:
    caplog.set_level(logging.WARNING, logger="test.throttle")
    log = logging.getLogger("test.throttle")
    now = [100.0]
    throttle = LogThrottle(burst=3, interval=10.0, clock=lambda: now[0])
    logged = [throttle.log(log, logging.WARNING, "bad thing %d", i) for i in range(5000)]
    assert logged.count(True) == 3 and len(caplog.records) == 3
    assert throttle.suppressed == 4997 and throttle.total_suppressed == 4997
    now[0] += 10.0
    assert throttle.log(log, logging.WARNING, "bad thing %d", 5000)
    assert caplog.records[-1].getMessage() == "bad thing 5000 (4997 more like this suppressed)"
    assert throttle.suppressed == 0
    throttle.log(log, logging.WARNING, "x")
    throttle.log(log, logging.WARNING, "x")
    throttle.log(log, logging.WARNING, "x")  # over the burst of this interval
    throttle.flush(log, logging.WARNING, "bad things")
    assert caplog.records[-1].getMessage() == "1 more bad things suppressed"
    throttle.flush(log, logging.WARNING, "bad things")  # nothing pending: nothing logged
    assert len(caplog.records) == 7


class _Transport(TransportProvider):
    name = "probe"

    def __init__(self, alive: object) -> None:
        super().__init__(None, ProviderContext(profiles=[], log=logging.getLogger("t")))
        self._alive = alive

    def alive(self) -> bool:
        if isinstance(self._alive, Exception):
            raise self._alive
        return bool(self._alive)


async def test_healthz_fails_while_a_transport_is_dead() -> None:
    reg = fake_registry()
    app = App(config_from_ini(FAKE_STACK, reg), reg)
    client = httpx.AsyncClient(transport=httpx.ASGITransport(app=app.http), base_url="http://vc")
    async with client:
        app.transports["probe"] = _Transport(True)
        ok = await client.get("/healthz")
        assert ok.status_code == 200 and ok.json()["status"] == "ok"
        app.transports["probe"] = _Transport(False)
        dead = await client.get("/healthz")
        assert dead.status_code == 503
        assert dead.json()["status"] == "failing" and dead.json()["dead"] == ["transport.probe"]
        app.transports["probe"] = _Transport(RuntimeError("boom"))  # a broken check is dead too
        assert (await client.get("/healthz")).status_code == 503
    assert TransportProvider.alive(_Transport(False)) is True  # the default: alive
