"""A Twilio stand-in for tests, demos and benchmarks: it phones vc the way Twilio does.

:class:`TwilioCloud` plays Twilio's side of everything vc talks to:

* the voice webhook: a signed, form-encoded POST with Twilio's parameters; the TwiML answer is
  parsed like Twilio parses it;
* the Media Stream: a signed WebSocket upgrade to the ``<Stream url>``, then ``connected``,
  ``start`` (string-typed sequence numbers, ``customParameters`` from the ``<Parameter>``s,
  µ-law 8 kHz mono) and a ``media`` message every 20 ms on an absolute clock - silence
  between utterances, exactly like a phone line - plus ``dtmf`` and ``stop``;
* playback: bot audio is queued and "played" in real time; a ``mark`` is echoed only once
  the audio before it has played, and ``clear`` drops the queue (echoing the marks it
  dropped, as Twilio does);
* the ``<Connect action>`` request when vc closes the stream, and the REST API
  (:class:`~vc_transport_twilio.fake_rest.FakeTwilioREST`) for hang-ups, transfers and
  outbound calls.

Everything received is recorded with ``time.monotonic()`` timestamps.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import secrets
import time
import xml.etree.ElementTree as ET
from collections import defaultdict, deque
from collections.abc import Callable
from typing import Any
from urllib.parse import parse_qsl, urlsplit

import aiohttp

from vc import jsonsafe
from vc.audio import pcm_to_ulaw, rms, ulaw_to_pcm
from vc_transport_twilio.fake_rest import FakeTwilioREST, new_sid
from vc_transport_twilio.security import SignatureChecker

FRAME_S = 0.02
FRAME_BYTES = 160  # µ-law bytes in 20 ms at 8 kHz
SILENCE = b"\xff" * FRAME_BYTES


class _Mark:
    __slots__ = ("name",)

    def __init__(self, name: str) -> None:
        self.name = name


def parse_twiml(document: str) -> ET.Element:
    root = ET.fromstring(document)
    if root.tag != "Response":
        raise ValueError(f"TwiML root is <{root.tag}>, not <Response>")
    return root


class SimulatedCall:
    """One phone call as Twilio sees it."""

    def __init__(
        self, cloud: TwilioCloud, call_sid: str, from_: str, to: str, direction: str
    ) -> None:
        self.cloud = cloud
        self.call_sid = call_sid
        self.stream_sid = new_sid("MZ")
        self.from_ = from_
        self.to = to
        self.direction = direction
        self.twiml = ""
        self.webhook_status = 0
        self.stream_url = ""
        self.action_url = ""
        self.parameters: dict[str, str] = {}
        self.ws: aiohttp.ClientWebSocketResponse | None = None
        # What vc sent, with arrival times.
        self.media: list[tuple[float, bytes]] = []  # (t, pcm16 8 kHz)
        self.marks: list[tuple[float, str]] = []
        self.clears: list[float] = []
        self.protocol_errors: list[str] = []
        # What "the caller" heard, and the marks echoed back.
        self.played: list[tuple[float, bytes]] = []
        self.echoed: list[tuple[float, str]] = []
        #: Marks whose audio a ``clear`` dropped (Twilio echoes those too, at once).
        self.cleared_marks: list[str] = []
        self.closed_at: float | None = None
        self.close_code: int | None = None
        self.ended_by = ""  # "caller", "rest-hangup", "rest-redirect", "server"
        self.redirect_twiml = ""
        self.action_twiml = ""
        self.dialed = ""
        self._seq = 0
        self._chunk = 0
        self._pending: deque[bytes] = deque()
        self._queue: deque[bytes | _Mark] = deque()
        self._tasks: list[asyncio.Task[Any]] = []
        self._send_lock = asyncio.Lock()
        self._stopped = False
        self._done = asyncio.Event()
        self.speech_started: list[float] = []
        self.speech_ended: list[float] = []
        #: Caller speech actually sent: (time the frame was sent, µ-law 20 ms frame).
        self.sent: list[tuple[float, bytes]] = []
        #: When the stream's ``start`` message went out (the call is connected).
        self.connected_at: float | None = None

    # -- webhook -------------------------------------------------------------------------------

    def webhook_params(self, status: str = "ringing") -> dict[str, str]:
        c = self.cloud
        return {
            "AccountSid": c.account_sid,
            "ApiVersion": "2010-04-01",
            "CallSid": self.call_sid,
            "CallStatus": status,
            "Called": self.to,
            "CalledCity": "",
            "CalledCountry": "US",
            "CalledState": "",
            "CalledZip": "",
            "Caller": self.from_,
            "CallerCity": "",
            "CallerCountry": "US",
            "CallerState": "",
            "CallerZip": "",
            "Direction": self.direction,
            "From": self.from_,
            "FromCity": "",
            "FromCountry": "US",
            "FromState": "",
            "FromZip": "",
            "To": self.to,
            "ToCity": "",
            "ToCountry": "US",
            "ToState": "",
            "ToZip": "",
        }

    async def fetch_twiml(self, url: str, params: dict[str, str]) -> tuple[int, str]:
        status, body = await self.cloud.post_signed(url, params)
        return status, body

    async def answer(self, voice_url: str) -> None:
        """Fetch the voice webhook and do what its TwiML says (connect the stream)."""
        self.webhook_status, self.twiml = await self.fetch_twiml(voice_url, self.webhook_params())
        if self.webhook_status != 200:
            return
        root = parse_twiml(self.twiml)
        connect = root.find("Connect")
        stream = connect.find("Stream") if connect is not None else None
        if connect is None or stream is None:
            return  # <Reject>, <Say>/<Hangup>...
        self.action_url = connect.get("action", "")
        self.stream_url = stream.get("url", "")
        self.parameters = {
            p.get("name", ""): p.get("value", "") for p in stream.findall("Parameter")
        }
        await self.connect_stream()

    @property
    def rejected(self) -> bool:
        return "<Reject" in self.twiml

    # -- the stream ------------------------------------------------------------------------------

    async def open_socket(
        self, url: str | None = None, signature: str | None = None, sign: bool = True
    ) -> aiohttp.ClientWebSocketResponse:
        """The WebSocket upgrade, signed over the public wss:// URL like Twilio signs it."""
        url = url or self.stream_url
        headers = {"User-Agent": "Twilio.TmeWs/1.0"}
        if sign:
            headers["X-Twilio-Signature"] = signature or self.cloud.sign(url, {})
        return await self.cloud.session.ws_connect(
            self.cloud.local(url), headers=headers, max_msg_size=0, autoping=True
        )

    async def connect_stream(
        self, parameters: dict[str, str] | None = None, media_format: dict[str, Any] | None = None
    ) -> None:
        self.ws = await self.open_socket()
        await self._send(
            {"event": "connected", "protocol": "Call", "version": "1.0.0"}, sequence=False
        )
        await self._send(
            {
                "event": "start",
                "streamSid": self.stream_sid,
                "start": {
                    "accountSid": self.cloud.account_sid,
                    "streamSid": self.stream_sid,
                    "callSid": self.call_sid,
                    "tracks": ["inbound"],
                    "customParameters": self.parameters if parameters is None else parameters,
                    "mediaFormat": media_format
                    or {"encoding": "audio/x-mulaw", "sampleRate": 8000, "channels": 1},
                },
            }
        )
        self.connected_at = time.monotonic()
        self.cloud.live[self.call_sid] = self
        self.cloud._connected[self.call_sid].set()
        self._tasks = [
            asyncio.create_task(self._reader()),
            asyncio.create_task(self._microphone()),
            asyncio.create_task(self._player()),
        ]

    async def _send(self, message: dict[str, Any], sequence: bool = True) -> None:
        if sequence:
            self._seq += 1
            message = {
                "event": message["event"],
                "sequenceNumber": str(self._seq),
                **{k: v for k, v in message.items() if k != "event"},
            }
        await self.send_raw(json.dumps(message))

    async def send_raw(self, data: str | bytes) -> None:
        """Send one frame as is (for tests of malformed input)."""
        if self.ws is None or self.ws.closed:
            return
        async with self._send_lock:
            with contextlib.suppress(ConnectionError, RuntimeError):
                if isinstance(data, bytes):
                    await self.ws.send_bytes(data)
                else:
                    await self.ws.send_str(data)

    async def _microphone(self) -> None:
        start = time.monotonic()
        n = 0
        while not self._stopped:
            n += 1
            await asyncio.sleep(max(0.0, start + n * FRAME_S - time.monotonic()))
            if self._stopped:
                return
            frame = self._pending.popleft() if self._pending else SILENCE
            if frame is not SILENCE:
                self.sent.append((time.monotonic(), frame))
            self._chunk += 1
            await self._send(
                {
                    "event": "media",
                    "streamSid": self.stream_sid,
                    "media": {
                        "track": "inbound",
                        "chunk": str(self._chunk),
                        "timestamp": str((self._chunk - 1) * 20),
                        "payload": base64.b64encode(frame).decode("ascii"),
                    },
                }
            )

    async def _player(self) -> None:
        start = time.monotonic()
        n = 0
        while not self._done.is_set():
            n += 1
            await asyncio.sleep(max(0.0, start + n * FRAME_S - time.monotonic()))
            while self._queue and isinstance(self._queue[0], _Mark):
                await self._echo(self._queue.popleft().name)  # type: ignore[union-attr]
            if self._queue:
                self.played.append((time.monotonic(), self._queue.popleft()))  # type: ignore[arg-type]

    async def _echo(self, name: str) -> None:
        self.echoed.append((time.monotonic(), name))
        await self._send({"event": "mark", "streamSid": self.stream_sid, "mark": {"name": name}})

    async def _reader(self) -> None:
        assert self.ws is not None
        try:
            async for msg in self.ws:
                if msg.type != aiohttp.WSMsgType.TEXT:
                    self.protocol_errors.append(f"non-text frame {msg.type}")
                    continue
                await self._on_message(time.monotonic(), msg.data)
        finally:
            self.closed_at = time.monotonic()
            self.close_code = self.ws.close_code
            self._stopped = True
            self._done.set()
            self.cloud.live.pop(self.call_sid, None)
            if not self.ended_by:
                self.ended_by = "server"
                self.cloud._spawn(self._after_stream())

    async def _on_message(self, t: float, text: str) -> None:
        try:
            data = jsonsafe.loads_object(text)
        except ValueError:
            self.protocol_errors.append(f"bad JSON {text[:60]!r}")
            return
        event = data.get("event")
        if data.get("streamSid") != self.stream_sid:
            self.protocol_errors.append(f"{event} with streamSid {data.get('streamSid')!r}")
        if event == "media":
            media = data.get("media")
            payload = media.get("payload") if isinstance(media, dict) else None
            try:
                raw = base64.b64decode(payload, validate=True) if isinstance(payload, str) else None
            except ValueError:  # (binascii.Error is one)
                raw = None
            if raw is None:
                self.protocol_errors.append("media without a base64 payload")
                return
            pcm = ulaw_to_pcm(raw)
            self.media.append((t, pcm))
            self._queue.append(pcm)
        elif event == "mark":
            mark = data.get("mark")
            name = mark.get("name") if isinstance(mark, dict) else None
            if not isinstance(name, str):
                self.protocol_errors.append("mark without mark.name")
                return
            self.marks.append((t, name))
            self._queue.append(_Mark(name))
        elif event == "clear":
            self.clears.append(t)
            dropped = [i.name for i in self._queue if isinstance(i, _Mark)]
            self._queue.clear()
            self.cleared_marks += dropped
            for name in dropped:
                await self._echo(name)
        else:
            self.protocol_errors.append(f"unknown event {event!r}")

    async def _after_stream(self) -> None:
        """vc closed the stream: Twilio continues with the <Connect action> TwiML."""
        if not self.action_url:
            return
        params = {**self.webhook_params("in-progress"), "StreamSid": self.stream_sid}
        status, self.action_twiml = await self.fetch_twiml(self.action_url, params)
        if status == 200:
            self._follow(self.action_twiml)

    def _follow(self, document: str) -> None:
        with contextlib.suppress(ET.ParseError, ValueError):
            dial = parse_twiml(document).find("Dial")
            if dial is not None:
                target = next(iter(dial), None)
                self.dialed = ((target.text if target is not None else dial.text) or "").strip()

    # -- what the caller does ------------------------------------------------------------------

    def say(self, pcm: bytes) -> float:
        """Speak PCM16 8 kHz audio into the call (after what is already queued).

        Returns the time the speech will have been sent completely.
        """
        ulaw = pcm_to_ulaw(pcm)
        if len(ulaw) % FRAME_BYTES:
            ulaw += b"\xff" * (FRAME_BYTES - len(ulaw) % FRAME_BYTES)
        backlog = len(self._pending) * FRAME_S
        for i in range(0, len(ulaw), FRAME_BYTES):
            self._pending.append(ulaw[i : i + FRAME_BYTES])
        start = time.monotonic() + backlog
        self.speech_started.append(start)
        self.speech_ended.append(start + len(ulaw) / 8000)
        return self.speech_ended[-1]

    async def press(self, digit: str) -> None:
        await self._send(
            {
                "event": "dtmf",
                "streamSid": self.stream_sid,
                "dtmf": {"track": "inbound_track", "digit": digit},
            }
        )

    async def hangup(self) -> None:
        """The caller hangs up: Twilio sends ``stop`` and closes the socket."""
        self.ended_by = self.ended_by or "caller"
        await self._stop_and_close()

    async def drop(self) -> None:
        """The socket dies without a ``stop`` (network failure)."""
        self.ended_by = self.ended_by or "caller"
        self._stopped = True
        if self.ws is not None:
            await self.ws.close()

    async def _stop_and_close(self) -> None:
        self._stopped = True
        await self._send(
            {
                "event": "stop",
                "streamSid": self.stream_sid,
                "stop": {"accountSid": self.cloud.account_sid, "callSid": self.call_sid},
            }
        )
        if self.ws is not None:
            await self.ws.close()

    async def close(self) -> None:
        self._stopped = True
        if self.ws is not None and not self.ws.closed:
            await self.ws.close()
        for t in self._tasks:
            t.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    # -- reading what happened --------------------------------------------------------------------

    def bot_audio(self, after: float = 0.0) -> bytes:
        return b"".join(pcm for t, pcm in self.media if t >= after)

    def speech_frames(self, after: float = 0.0, level: float = 0.001) -> list[tuple[float, bytes]]:
        """Received bot media frames that are not silence."""
        return [(t, p) for t, p in self.media if t >= after and rms(p) > level]

    async def wait_for(
        self, predicate: Callable[[], Any], within: float = 30.0, what: str = "condition"
    ) -> Any:
        deadline = time.monotonic() + within
        while time.monotonic() < deadline:
            value = predicate()
            if value:
                return value
            await asyncio.sleep(0.01)
        raise TimeoutError(f"{self.call_sid}: no {what} within {within}s")

    async def wait_for_bot_speech(self, after: float = 0.0, within: float = 30.0) -> float:
        """Time of the first non-silent bot frame received after ``after``."""
        frames = await self.wait_for(lambda: self.speech_frames(after), within, "bot speech")
        return frames[0][0]

    async def wait_for_bot_silence(self, quiet: float = 0.8, within: float = 60.0) -> float:
        """Wait until no bot audio arrived for ``quiet`` seconds and playback is done."""

        def quiet_now() -> bool:
            last = self.media[-1][0] if self.media else 0.0
            return time.monotonic() - last >= quiet and not self._queue

        await self.wait_for(quiet_now, within, "bot silence")
        return self.media[-1][0] if self.media else 0.0

    async def wait_closed(self, within: float = 30.0) -> None:
        async with asyncio.timeout(within):
            await self._done.wait()


class TwilioCloud:
    """Twilio's side of vc's world: phones in, streams, answers REST requests.

    ``public_url`` is what vc is configured with; requests for it are sent to ``local_url``
    (where the test server listens), as a load balancer would forward them.
    """

    def __init__(
        self,
        local_url: str,
        public_url: str = "https://vc.example.com",
        account_sid: str = "",
        auth_token: str = "",
        voice_path: str = "/twilio/voice",
    ) -> None:
        self.local_url = local_url.rstrip("/")
        self.public_url = public_url.rstrip("/")
        self.account_sid = account_sid or new_sid("AC")
        self.auth_token = auth_token or secrets.token_hex(16)
        self.voice_path = voice_path
        self.signer = SignatureChecker(self.auth_token)
        self.rest = FakeTwilioREST(self.account_sid, (self.account_sid, self.auth_token))
        self.rest.on_update = self._rest_update
        self.rest.on_create = self._rest_create
        self.calls: dict[str, SimulatedCall] = {}
        self.live: dict[str, SimulatedCall] = {}
        self.webhook_requests: list[tuple[float, str, int]] = []  # (t, url, status)
        self._connected: defaultdict[str, asyncio.Event] = defaultdict(asyncio.Event)
        self._session: aiohttp.ClientSession | None = None
        self._background: set[asyncio.Task[Any]] = set()

    async def start(self) -> None:
        self._session = aiohttp.ClientSession()
        await self.rest.start()

    async def stop(self) -> None:
        for call in list(self.calls.values()):
            await call.close()
        for t in list(self._background):
            t.cancel()
        await self.rest.stop()
        if self._session is not None:
            await self._session.close()

    async def __aenter__(self) -> TwilioCloud:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    @property
    def session(self) -> aiohttp.ClientSession:
        assert self._session is not None, "start() the TwilioCloud first"
        return self._session

    @property
    def rest_url(self) -> str:
        return self.rest.url

    def local(self, public: str) -> str:
        """Where a public URL (https:// or wss://) is served in this test."""
        parts = urlsplit(public)
        pub = urlsplit(self.public_url)
        local = urlsplit(self.local_url)
        scheme = {"https": "http", "wss": "ws"}.get(parts.scheme, parts.scheme)
        if parts.netloc == pub.netloc:
            if local.scheme == "http" and scheme in ("ws", "wss"):
                scheme = "ws"
            path = parts.path
            prefix = pub.path.rstrip("/")
            if prefix and path.startswith(prefix):
                path = path[len(prefix) :]
            return parts._replace(
                scheme=scheme, netloc=local.netloc, path=local.path.rstrip("/") + path
            ).geturl()
        return public

    def sign(self, url: str, params: dict[str, str]) -> str:
        return self.signer.sign(url, params)

    async def post_signed(
        self,
        url: str,
        params: dict[str, str],
        signature: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> tuple[int, str]:
        """A webhook request exactly as Twilio makes it."""
        hdrs = {
            "X-Twilio-Signature": signature if signature is not None else self.sign(url, params),
            "Content-Type": "application/x-www-form-urlencoded",
            "User-Agent": "TwilioProxy/1.1",
            "I-Twilio-Idempotency-Token": secrets.token_hex(16),
            **(headers or {}),
        }
        if signature == "":
            del hdrs["X-Twilio-Signature"]
        async with self.session.post(self.local(url), data=params, headers=hdrs) as resp:
            body = await resp.text()
            self.webhook_requests.append((time.monotonic(), url, resp.status))
            return resp.status, body

    def voice_url(self, query: str = "") -> str:
        return self.public_url + self.voice_path + (f"?{query}" if query else "")

    def new_call(
        self, from_: str = "+15550001111", to: str = "+15550002222", direction: str = "inbound"
    ) -> SimulatedCall:
        call = SimulatedCall(self, new_sid("CA"), from_, to, direction)
        self.calls[call.call_sid] = call
        self.rest.calls[call.call_sid] = "in-progress"
        return call

    async def place_call(
        self, from_: str = "+15550001111", to: str = "+15550002222", query: str = ""
    ) -> SimulatedCall:
        """An inbound call to vc: webhook, TwiML, stream."""
        call = self.new_call(from_, to)
        await call.answer(self.voice_url(query))
        return call

    async def wait_for_stream(self, call_sid: str, within: float = 30.0) -> SimulatedCall:
        """The call ``call_sid`` once its stream is connected (e.g. an outbound call answered)."""
        async with asyncio.timeout(within):
            await self._connected[call_sid].wait()
        return self.calls[call_sid]

    # -- REST side effects -------------------------------------------------------------------------

    async def _rest_update(self, sid: str, form: dict[str, str]) -> None:
        call = self.calls.get(sid)
        if call is None:
            return
        if form.get("Status") in ("completed", "canceled"):
            call.ended_by = "rest-hangup"
        elif "Twiml" in form:
            call.ended_by = "rest-redirect"
            call.redirect_twiml = form["Twiml"]
            call._follow(form["Twiml"])
        self._spawn(call._stop_and_close())

    async def _rest_create(self, sid: str, form: dict[str, str]) -> None:
        call = SimulatedCall(self, sid, form["From"], form["To"], "outbound-api")
        self.calls[sid] = call

        async def ring_and_answer() -> None:
            await asyncio.sleep(0.05)
            self.rest.calls[sid] = "in-progress"
            url = form["Url"]
            if form.get("Method", "POST").upper() != "POST":
                call.protocol_errors.append("outbound call webhook method is not POST")
            await call.answer(url)

        self._spawn(ring_and_answer())

    def _spawn(self, coro: Any) -> None:
        task = asyncio.ensure_future(coro)
        self._background.add(task)
        task.add_done_callback(self._background.discard)


def query_of(url: str) -> dict[str, str]:
    return dict(parse_qsl(urlsplit(url).query))
