"""The gcp-logging observer: when it takes over logging, the project lookup, and real calls."""

from __future__ import annotations

import asyncio
import contextlib
import io
import logging
import sys
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from gcp_helpers import parse_lines
from vc_gcp.observer import HANDLER_NAME, CloudLoggingObserver, CloudLoggingSettings
from vc_gcp.trace import TraceContext, current_trace

from vc import logs
from vc.call import CallInfo
from vc.engine import Engine
from vc.testing import FAKE_STACK, config_from_ini, fake_registry
from vc.testing.calls import LoopbackConnection, run_loopback_call, speech

TRACE_A = "11111111111111111111111111111111"
TRACE_B = "22222222222222222222222222222222"


@pytest.fixture
def root_logging() -> Iterator[logging.Logger]:
    root = logging.getLogger()
    level, handlers = root.level, list(root.handlers)
    yield root
    root.handlers[:] = handlers
    root.setLevel(level)


def settings(**kw) -> CloudLoggingSettings:
    return CloudLoggingSettings(**{"metadata_lookup": False, **kw})


@pytest.mark.parametrize(
    ("mode", "env", "installed"),
    [
        ("auto", {}, False),
        ("auto", {"K_SERVICE": "vc", "K_REVISION": "vc-00001-abc"}, True),
        ("auto", {"KUBERNETES_SERVICE_HOST": "10.0.0.1"}, True),
        ("off", {"K_SERVICE": "vc"}, False),
        ("always", {}, True),
    ],
)
def test_mode(root_logging, mode: str, env: dict[str, str], installed: bool) -> None:
    before = list(root_logging.handlers)
    obs = CloudLoggingObserver(settings(mode=mode), env=env, stream=io.StringIO())
    try:
        assert (obs.handler is not None) == installed
        assert (obs.handler in root_logging.handlers) == installed
        if not installed:
            assert root_logging.handlers == before
    finally:
        obs.uninstall()
    assert root_logging.handlers == before


def test_replaces_the_console_handler_vc_serve_installs_and_nothing_else(root_logging) -> None:
    logs.setup("info", "text")  # what `vc serve` does: a text handler on stderr
    console = root_logging.handlers[0]
    other = logging.StreamHandler(io.StringIO())  # a file-like sink someone added
    root_logging.addHandler(other)
    obs = CloudLoggingObserver(settings(mode="always"), env={})
    assert console not in root_logging.handlers
    assert other in root_logging.handlers
    assert obs.handler is not None and obs.handler.stream is sys.stdout
    assert [h.get_name() for h in root_logging.handlers].count(HANDLER_NAME) == 1
    # a second observer (another engine in the same process) replaces the first one's handler
    second = CloudLoggingObserver(settings(mode="always", stream="stderr"), env={})
    assert [h.get_name() for h in root_logging.handlers].count(HANDLER_NAME) == 1
    assert second.handler.stream is sys.stderr
    second.uninstall()
    obs.handler = None
    obs.uninstall()
    assert console in root_logging.handlers and other in root_logging.handlers


def test_service_and_version_for_error_reporting_come_from_cloud_run(root_logging) -> None:
    buf = io.StringIO()
    env = {"K_SERVICE": "vc-prod", "K_REVISION": "vc-prod-00042-xyz", "GOOGLE_CLOUD_PROJECT": "p"}
    obs = CloudLoggingObserver(settings(labels=["env=prod", "team = voice"]), env=env, stream=buf)
    root_logging.setLevel(logging.INFO)
    try:
        try:
            raise OSError("disk on fire")
        except OSError:
            logging.getLogger("vc.test").exception("boom")
    finally:
        obs.uninstall()
    (e,) = [e for e in parse_lines(buf.getvalue()) if e["logger"] == "vc.test"]
    assert e["serviceContext"] == {"service": "vc-prod", "version": "vc-prod-00042-xyz"}
    assert e["logging.googleapis.com/labels"] == {"env": "prod", "team": "voice"}


def test_labels_setting_rejects_malformed_pairs() -> None:
    with pytest.raises(ValueError, match="key=value"):
        CloudLoggingSettings(labels=["oops"])


class _Metadata(BaseHTTPRequestHandler):
    """The metadata server's documented behaviour for project-id (and a misbehaving twin)."""

    project = "vc-metadata-project"
    flavor = True

    def do_GET(self) -> None:
        if self.headers.get("Metadata-Flavor") != "Google":
            self.send_response(403)
            self.end_headers()
            return
        if self.path != "/computeMetadata/v1/project/project-id":
            self.send_response(404)
            self.end_headers()
            return
        body = self.project.encode()
        self.send_response(200)
        if self.flavor:
            self.send_header("Metadata-Flavor", "Google")
        self.send_header("Content-Type", "application/text")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


@contextlib.contextmanager
def metadata_server(flavor: bool = True) -> Iterator[str]:
    handler = type("Handler", (_Metadata,), {"flavor": flavor})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


def test_project_from_the_metadata_server(root_logging) -> None:
    with metadata_server() as host:
        obs = CloudLoggingObserver(CloudLoggingSettings(), env={"K_SERVICE": "vc", "GCE_METADATA_HOST": host},
                                   stream=io.StringIO())
        try:
            assert obs.lookup is not None
            obs.lookup.join(10)
            assert obs.formatter.project == "vc-metadata-project"
        finally:
            obs.uninstall()


def test_an_answer_without_the_metadata_flavor_is_not_trusted(root_logging) -> None:
    buf = io.StringIO()
    root_logging.setLevel(logging.INFO)
    with metadata_server(flavor=False) as host:
        obs = CloudLoggingObserver(CloudLoggingSettings(), env={"K_SERVICE": "vc", "GCE_METADATA_HOST": host},
                                   stream=buf)
        try:
            obs.lookup.join(10)
            assert obs.formatter.project == ""
        finally:
            obs.uninstall()
    assert any("did not say which project" in e["message"] for e in parse_lines(buf.getvalue()))


def test_configured_project_needs_no_lookup(root_logging) -> None:
    obs = CloudLoggingObserver(CloudLoggingSettings(), env={"K_SERVICE": "vc", "GCP_PROJECT": "from-env"},
                               stream=io.StringIO())
    try:
        assert obs.lookup is None and obs.formatter.project == "from-env"
    finally:
        obs.uninstall()
    obs = CloudLoggingObserver(CloudLoggingSettings(project="explicit"),
                               env={"K_SERVICE": "vc", "GCP_PROJECT": "x"}, stream=io.StringIO())
    try:
        assert obs.formatter.project == "explicit"
    finally:
        obs.uninstall()


# -- real calls through a real engine -----------------------------------------------------------

STACK = FAKE_STACK + """
[stt.fake]
script = what are your opening hours
[vc]
transports =
observers = event-log, gcp-logging
[observer.gcp-logging]
mode = always
project = vc-test
metadata_lookup = false
[profile.sales]
match.to = +1555000*
greeting = Hello from sales.
"""


@pytest.fixture
async def engine(root_logging):
    reg = fake_registry(env={"VC_LOAD_PLUGINS": "vc-gcp"})
    eng = Engine(config_from_ini(STACK, reg), reg)
    root_logging.setLevel(logging.DEBUG)
    await eng.start()
    yield eng
    await eng.drain(2.0)
    await eng.stop()
    for obs in eng.observers:
        if isinstance(obs, CloudLoggingObserver):
            obs.uninstall()


async def one_call(engine: Engine, info: CallInfo) -> str:
    conn = LoopbackConnection(info)
    task = await run_loopback_call(engine, conn)
    await conn.wait_for_bot_audio(0, timeout=20)  # the greeting
    await conn.wait_for_bot_silence()
    end = conn.say(speech("what are your opening hours", 8000))
    await conn.wait_for_bot_audio(end, timeout=30)
    await conn.wait_for_bot_silence()
    conn.caller_hangs_up()
    outcome = await asyncio.wait_for(task, 20)
    await conn.stop()
    return outcome


async def test_every_line_of_concurrent_calls_is_labelled_with_its_own_call(engine) -> None:
    (obs,) = [o for o in engine.observers if isinstance(o, CloudLoggingObserver)]
    assert obs.handler is not None and obs.handler.stream is sys.stdout  # installed at engine start
    buf = io.StringIO()
    obs.install(buf)  # the same observer, read back here instead of through pytest's capture
    a = CallInfo(call_id="CA-a", transport="loopback", to="+15550001234",
                 params={"traceparent": f"00-{TRACE_A}-00f067aa0ba902b7-01"})
    b = CallInfo(call_id="CA-b", transport="loopback", to="+4420000000")

    async def in_request_b() -> str:  # as if the WebSocket request carried B's trace
        token = current_trace.set(TraceContext(TRACE_B, "0000000000000007", True))
        try:
            return await asyncio.create_task(one_call(engine, b))
        finally:
            current_trace.reset(token)

    outcomes = await asyncio.gather(one_call(engine, a), in_request_b())
    assert outcomes == ["completed", "completed"]
    entries = parse_lines(buf.getvalue())  # every stdout line is one JSON object
    for e in entries:
        assert {"severity", "message", "time", "logging.googleapis.com/sourceLocation"} <= set(e)
    calls = {"CA-a": [], "CA-b": []}
    for e in entries:
        call_id = e.get("logging.googleapis.com/labels", {}).get("call_id")
        if call_id in calls:
            calls[call_id].append(e)
    expected = {"CA-a": ("sales", TRACE_A), "CA-b": ("default", TRACE_B)}
    for call_id, lines in calls.items():
        profile, trace = expected[call_id]
        messages = [e["message"] for e in lines]
        assert "call started" in messages and "call ended" in messages, messages
        assert "transcript" in messages or "turn" in messages, messages
        for e in lines:
            assert e["logging.googleapis.com/labels"]["transport"] == "loopback", e
            assert e["logging.googleapis.com/labels"]["profile"] == profile, e
            assert e["logging.googleapis.com/trace"] == f"projects/vc-test/traces/{trace}", e
    started = next(e for e in calls["CA-a"] if e["message"] == "call started")
    assert started["data"]["to"] == "+15550001234"
