"""B2B mode: OpenSIPS terminates SIP (b2b_entities); vc follows E_UA_SESSION events.

* Subscription: ``event_subscribe ["E_UA_SESSION", "udp:<ip>:<port>", <expire>]`` over MI,
  renewed every ``subscription_refresh`` seconds (well before expiry), retried every
  ``subscription_retry`` seconds while OpenSIPS is unreachable. Shutdown unsubscribes
  (expire 0).
* Liveness: MI ``uptime`` every ``probe_interval`` seconds. No answer (twice in a row) ->
  ``ready()`` false until a subscription succeeds again; a new "Up since" (OpenSIPS restarted
  and forgot every subscription and B2B entity) -> subscribed again at once, and the calls
  whose entities are gone (``ua_session_list``) are ended. A line is logged when the
  subscription is restored.
* Events (JSON-RPC notifications, one per datagram): NEW -> SDP answer with
  ``ua_session_reply`` (200, or 415/488/503; 180 first with ``answer_delay``); UPDATED ->
  re-INVITE (hold/resume) answered, ACK noted, NOTIFY (transfer progress) and INFO/OPTIONS
  answered 200; TERMINATED BYE -> the call stops at once; TERMINATED CANCEL -> the call stops
  and the INVITE gets ``487 Request Terminated`` (OpenSIPS 3.6 answers the CANCEL with 200 but
  leaves the INVITE to us); REJECTED/ANSWERED of our REFER -> transfer outcome; a NOTIFY with
  a 2xx sipfrag ends our leg (``ua_session_terminate``: OpenSIPS sends BYE). Requests for keys
  we do not know are answered 481.
* Call control: ``ua_session_terminate`` (hang up), ``ua_session_update`` REFER (transfer,
  see :func:`refer_params`).
* Entities OpenSIPS would keep forever are released with ``ua_session_terminate`` (it sends no
  BYE for them): after a final non-2xx reply to the INVITE (rejection, 487), OpenSIPS 3.6
  never deletes the entity itself.
* ``ua_session_reply``/``ua_session_update`` take ``content_type`` as a complete header line
  (``"Content-Type: ...\r\n"``, copied verbatim); with a body and no ``content_type``
  OpenSIPS adds ``Content-Type: application/sdp`` itself, so SDP goes without it.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from typing import Any

from vc import jsonsafe
from vc.call import CallControlError, CallInfo
from vc.providers import CallHost
from vc_transport_opensips.addresses import is_wildcard, route_to
from vc_transport_opensips.call import Signalling, SipCall
from vc_transport_opensips.mi import MIClient, MIError
from vc_transport_opensips.sdp import Negotiated, SdpError, SdpSession, negotiate, parse_offer
from vc_transport_opensips.session import (
    CallRefused,
    MediaManager,
    SetupRefused,
    open_media,
    start_call,
)
from vc_transport_opensips.settings import OpenSIPSSettings

log = logging.getLogger("vc.transport.opensips.b2b")

EVENT = "E_UA_SESSION"
DROP_LOG_EVERY = 5.0
PROBE_FAILURES = 2  # consecutive unanswered uptime probes before OpenSIPS counts as down
RETRY_LOG_EVERY = 30.0  # while OpenSIPS stays unreachable, one warning per this many seconds
NOT_FOUND = 404  # MI error code of ua_session_list for an unknown key
REFER_TIMEOUT = 10.0  # seconds to wait for OpenSIPS to report the reply to our REFER
#: The reply to OpenSIPS for each way call set-up can fail (vc_transport_opensips.session).
REFUSALS = {
    SetupRefused.CORE: (503, "Service Unavailable"),
    SetupRefused.NO_OFFER: (415, "Unsupported Media Type"),
    SetupRefused.NOT_SDP: (415, "Unsupported Media Type"),
    SetupRefused.BAD_OFFER: (488, "Not Acceptable Here"),
    SetupRefused.NO_CODEC: (488, "Not Acceptable Here"),
    SetupRefused.NO_PORT: (503, "Service Unavailable"),
    SetupRefused.NO_ADDRESS: (500, "Server Internal Error"),
}
REQUEST_METHODS = {
    "INVITE",
    "BYE",
    "CANCEL",
    "NOTIFY",
    "INFO",
    "OPTIONS",
    "UPDATE",
    "REFER",
    "MESSAGE",
    "SUBSCRIBE",
    "PRACK",
}


def content_type_line(value: str) -> str | None:
    """The ``content_type`` MI parameter for a body of type ``value``.

    OpenSIPS 3.6 (``ua_build_hdrs``) copies ``content_type`` verbatim as a complete header
    line and adds ``Content-Type: application/sdp\r\n`` itself when the parameter is absent.
    A bare ``application/sdp`` would run into the next header (``application/sdpContact:``),
    leaving the answer without Content-Type and Contact. None: leave the parameter out.
    """
    value = value.strip()
    if not value or value.lower() == "application/sdp":
        return None
    if ":" in value.split("/", 1)[0]:  # already "Content-Type: x/y"
        return value.rstrip("\r\n") + "\r\n"
    return f"Content-Type: {value}\r\n"


def refer_params(key: str, uri: str, referred_by: str) -> dict[str, Any]:
    """The ``ua_session_update`` parameters of a blind transfer to ``uri``.

    OpenSIPS 3.6.8 (``ua_build_hdrs``) copies ``extra_headers`` into the request only when
    there is a body; without one it sends an uninitialised buffer of their length instead (seen
    on the wire: ``Refer-To: <...>\r\nReContact: ...``, leftovers of an earlier request). So
    the REFER carries an empty body, which OpenSIPS labels ``Content-Type: application/sdp``
    (``Content-Length: 0``). An empty ``content_type`` does not avoid that: OpenSIPS then adds
    the same header after Contact (``b2breq_complete_ehdr``).
    """
    return {
        "key": key,
        "method": "REFER",
        "body": "",
        "extra_headers": f"Refer-To: <{uri}>\r\nReferred-By: {referred_by}\r\n",
    }


def parse_headers(text: str) -> list[tuple[str, str]]:
    out: list[tuple[str, str]] = []
    for line in text.replace("\r\n", "\n").split("\n"):
        if line[:1] in (" ", "\t") and out:
            out[-1] = (out[-1][0], f"{out[-1][1]} {line.strip()}")
            continue
        name, sep, value = line.partition(":")
        if sep and name.strip():
            out.append((name.strip(), value.strip()))
    return out


def _header(headers: list[tuple[str, str]], *names: str) -> str:
    wanted = {n.lower() for n in names}
    return next((v for k, v in headers if k.lower() in wanted), "")


def _user(value: str) -> str:
    from vc_transport_opensips.sipmsg import uri_of

    try:
        uri = uri_of(value)
    except ValueError:
        return ""
    return uri.user or uri.host


def call_params(extra: Any, headers: list[tuple[str, str]]) -> dict[str, str]:
    """``extra_params`` (JSON object) plus X- headers -> CallInfo.params."""
    params: dict[str, str] = {}
    for k, v in headers:
        if k.lower().startswith("x-") and len(k) > 2:
            params.setdefault(k[2:].lower(), v)
    if isinstance(extra, dict):
        data: Any = extra
    elif isinstance(extra, str) and extra.strip():
        try:
            data = jsonsafe.loads(extra)
        except ValueError:  # JsonError: malformed or nested too deeply
            log.warning("extra_params is not JSON, passed on as 'extra_params': %.80r", extra)
            data = {"extra_params": extra}
    else:
        data = {}
    if not isinstance(data, dict):
        data = {"extra_params": json.dumps(data)}
    for k, v in data.items():
        params[str(k)] = v if isinstance(v, str) else json.dumps(v)
    return params


class B2BSession(Signalling):
    def __init__(self, ctl: B2BController, key: str) -> None:
        self.ctl = ctl
        self.key = key
        self.log = logging.LoggerAdapter(log, {"call_id": key})
        self.conn: SipCall | None = None
        self.neg: Negotiated | None = None
        self.sdp: SdpSession | None = None
        self.task: asyncio.Task[str] | None = None
        self.answered = False
        self.answering = False  # the 200 is on its way to OpenSIPS
        self.confirmed = False
        self.terminated = False
        self.hung_up = False
        self.headers: list[tuple[str, str]] = []
        self.refer: asyncio.Future[tuple[int, str]] | None = None  # our REFER's final reply

    def end_remote(self, reason: str) -> None:
        self.terminated = True
        if self.conn is not None:
            self.conn.remote_hangup(reason)

    async def hangup(self) -> None:
        if self.hung_up or self.terminated:
            return
        await self.terminate()

    async def terminate(self) -> None:
        """``ua_session_terminate`` (once): OpenSIPS sends BYE and deletes the entity."""
        if self.hung_up:
            return
        self.hung_up = True
        self.terminated = True
        try:
            await self.ctl.mi.call("ua_session_terminate", {"key": self.key})
            self.log.info("terminated the session (OpenSIPS sends BYE)")
        except MIError as e:
            self.log.error("ua_session_terminate failed: %s", e)

    async def transfer(self, target: str) -> None:
        uri = target.strip()
        if not uri.startswith(("sip:", "sips:", "tel:")):
            to = _header(self.headers, "To", "t")
            host = ""
            with contextlib.suppress(ValueError):
                from vc_transport_opensips.sipmsg import uri_of

                host = uri_of(to).host
            uri = f"sip:{uri}@{host or self.ctl.settings.mi_ip}"
        referred_by = (
            _header(self.headers, "To", "t").split(";")[0] or f"<sip:vc@{self.ctl.settings.mi_ip}>"
        )
        self.refer = outcome = asyncio.get_running_loop().create_future()
        try:
            try:
                await self.ctl.mi.call("ua_session_update", refer_params(self.key, uri, referred_by))
            except MIError as e:
                raise CallControlError(f"REFER could not be sent: {e}") from e
            self.log.info("REFER to %s sent", uri)
            try:
                status, reason = await asyncio.wait_for(outcome, REFER_TIMEOUT)
            except TimeoutError:
                # OpenSIPS reports replies only with flag "r" of ua_session_server_init.
                self.log.warning("no reply to the REFER reported within %.0fs", REFER_TIMEOUT)
                return
        finally:
            if self.refer is outcome:
                self.refer = None
        if status >= 300:
            raise CallControlError(f"REFER refused: {status} {reason}")
        self.log.info("transfer to %s accepted (%d)", uri, status)

    def refer_replied(self, p: dict[str, Any]) -> None:
        """OpenSIPS reported the final reply to our REFER (ANSWERED or REJECTED)."""
        status = p.get("status")
        if self.refer is not None and not self.refer.done() and isinstance(status, int):
            self.refer.set_result((status, str(p.get("reason") or "")))


class _EventProtocol(asyncio.DatagramProtocol):
    def __init__(self, ctl: B2BController) -> None:
        self.ctl = ctl

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        self.ctl.received(data, addr)


class B2BController:
    def __init__(self, settings: OpenSIPSSettings, media: MediaManager, host: CallHost) -> None:
        self.settings = settings
        self.media = media
        self.host = host
        self.mi = MIClient(settings.mi_ip, settings.mi_port, settings.mi_timeout)
        self.transport: asyncio.DatagramTransport | None = None
        self.event_port = 0
        self.sessions: dict[str, B2BSession] = {}
        self.subscribed_until = 0.0
        self.subscriptions = 0
        self.reachable = False
        self.up_since: str | None = None  # OpenSIPS's start time ("Up since" of MI uptime)
        self._up_time = -1
        self._lost_at: float | None = None  # when the subscription was lost (restart, outage)
        self._lost_why = ""
        self.restarts = 0  # restarts of OpenSIPS noticed
        self.probes = 0
        self.drops: dict[str, int] = {}
        self._drop_logged: dict[str, float] = {}
        self._keeper: asyncio.Task[None] | None = None
        self._first = asyncio.Event()
        self._tasks: set[asyncio.Task[Any]] = set()

    # -- lifecycle -------------------------------------------------------------------------

    async def start(self) -> None:
        loop = asyncio.get_running_loop()
        self.transport, _ = await loop.create_datagram_endpoint(
            lambda: _EventProtocol(self),
            local_addr=(self.settings.event_ip, self.settings.event_port),
        )
        self.event_port = self.transport.get_extra_info("sockname")[1]
        await self.mi.start()
        log.info(
            "E_UA_SESSION events on %s:%d/udp; MI at %s:%d",
            self.settings.event_ip,
            self.event_port,
            self.settings.mi_ip,
            self.settings.mi_port,
        )
        self._keeper = asyncio.create_task(self._keep_subscribed(), name="opensips-subscription")
        with contextlib.suppress(TimeoutError):  # ready at once when OpenSIPS is already up
            await asyncio.wait_for(self._first.wait(), self.settings.mi_timeout + 0.5)

    def ready(self) -> bool:
        return self.reachable and time.monotonic() < self.subscribed_until

    def not_ready_reason(self) -> str:
        """For ``/readyz``: why calls cannot reach vc now ("" when they can)."""
        if self.ready():
            return ""
        where = f"{self.settings.mi_ip}:{self.settings.mi_port}"
        if self._lost_at is not None:
            ago = time.monotonic() - self._lost_at
            return f"{self._lost_why} {ago:.0f}s ago (MI at {where}); re-subscribing"
        if not self.subscriptions:
            return f"not subscribed to {EVENT} yet: OpenSIPS MI at {where} not answering"
        return f"subscription to {EVENT} lapsed: OpenSIPS MI at {where}"

    async def stop(self) -> None:
        if self._keeper is not None:
            self._keeper.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._keeper
        for s in list(self.sessions.values()):
            if not s.terminated:
                s.end_remote("transport stopping")
        if self.ready():
            try:
                await self.mi.call("event_subscribe", [EVENT, self.socket_uri(), 0], limit=1.0)
                log.info("unsubscribed from %s", EVENT)
            except MIError as e:
                log.warning("unsubscribe failed: %s", e)
        self.subscribed_until = 0.0
        for t in list(self._tasks):
            t.cancel()
        await self.mi.close()
        if self.transport is not None:
            self.transport.close()

    def socket_uri(self) -> str:
        s = self.settings
        ip = s.event_advertised_ip or s.event_ip
        if is_wildcard(ip):
            ip = route_to(s.mi_ip) or "127.0.0.1"
        return f"udp:{ip}:{self.event_port}"

    def refresh_interval(self) -> float:
        expire = max(1, self.settings.subscription_expire)
        margin = min(60.0, expire / 2)
        return max(0.5, min(self.settings.subscription_refresh, expire - margin))

    def probe_limit(self) -> float:
        return max(0.2, min(self.settings.mi_timeout, 1.0))

    async def _uptime(self, limit: float) -> tuple[str | None, int]:
        """OpenSIPS's start time and uptime in seconds (MI ``uptime``); raises MIError when
        OpenSIPS does not answer (an error reply still proves it is there)."""
        try:
            result = await self.mi.call("uptime", limit=limit)
        except MIError as e:
            if not e.replied:
                raise
            result = None
        self.probes += 1
        if not isinstance(result, dict):
            return None, -1
        since = result.get("Up since")
        up = str(result.get("Up time", "")).split(" ", 1)[0]
        return (str(since) if since else None), (int(up) if up.isdigit() else -1)

    def _restarted(self, since: str | None, up_time: int) -> bool:
        """Is this another OpenSIPS run than the one we subscribed to?"""
        if since is None or self.up_since is None:
            return False
        return since != self.up_since or (0 <= up_time < self._up_time - 1)

    def _lost(self, why: str) -> None:
        if self._lost_at is None:
            self._lost_at = time.monotonic()
            self._lost_why = why
        self.subscribed_until = 0.0

    async def _subscribe(self, expire: int) -> None:
        """One subscription (after learning which OpenSIPS run answers); raises MIError."""
        restarted = False
        if self.settings.probe_interval > 0:
            since, up_time = await self._uptime(self.probe_limit())
            if self._restarted(since, up_time):
                restarted = True
                self.restarts += 1
                self._lost("OpenSIPS restarted")
                self._lost_why = "OpenSIPS restarted"
                log.warning(
                    "OpenSIPS restarted (up since %s, before: %s): its subscriptions and "
                    "B2B sessions are gone",
                    since,
                    self.up_since,
                )
            if since is not None:
                self.up_since = since
            self._up_time = up_time
        sent = time.monotonic()
        result = await self.mi.call("event_subscribe", [EVENT, self.socket_uri(), expire])
        if result != "OK":
            raise MIError(f"event_subscribe answered {result!r}")
        first = self.subscriptions == 0
        self.subscribed_until = sent + expire
        self.subscriptions += 1
        self.reachable = True
        if first:
            log.info(
                "subscribed to %s at %s for %ds (OpenSIPS up since %s)",
                EVENT,
                self.socket_uri(),
                expire,
                self.up_since or "?",
            )
        elif self._lost_at is not None:
            log.info(
                "subscription to %s at %s restored %.1fs after it was lost (%s)",
                EVENT,
                self.socket_uri(),
                time.monotonic() - self._lost_at,
                self._lost_why,
            )
        self._lost_at = None
        if restarted and self.sessions:
            self.spawn(self._drop_lost_sessions())

    async def _watch(self, until: float) -> str:
        """Probe OpenSIPS until the next refresh is due; returns why it stopped."""
        interval = self.settings.probe_interval
        if interval <= 0:
            await asyncio.sleep(max(0.0, until - time.monotonic()))
            return "refresh"
        failures = 0
        while True:
            now = time.monotonic()
            if now >= until:
                return "refresh"
            if not failures:
                await asyncio.sleep(min(interval, until - now))
            try:
                since, up_time = await self._uptime(self.probe_limit())
            except MIError as e:
                failures += 1
                if failures < PROBE_FAILURES:
                    continue  # one lost datagram is not an outage: ask again at once
                log.warning(
                    "OpenSIPS MI at %s:%d stopped answering (%s): not ready until it is back",
                    self.settings.mi_ip,
                    self.settings.mi_port,
                    e,
                )
                self.reachable = False
                self._lost("OpenSIPS was unreachable")
                return "unreachable"
            failures = 0
            if self._restarted(since, up_time):
                return "restarted"  # _subscribe() logs it and subscribes again
            self._up_time = up_time

    async def _keep_subscribed(self) -> None:
        expire = max(1, self.settings.subscription_expire)
        failing_since: float | None = None
        logged = 0.0
        while True:
            try:
                await self._subscribe(expire)
            except MIError as e:
                self.reachable = False
                if self.subscriptions:
                    self._lost("OpenSIPS was unreachable")
                now = time.monotonic()
                if failing_since is None or now - logged >= RETRY_LOG_EVERY:
                    failing_since = failing_since or now
                    logged = now
                    log.warning(
                        "OpenSIPS not reachable for event_subscribe (%s) for %.0fs; "
                        "retrying every %.1fs",
                        e,
                        now - failing_since,
                        self.settings.subscription_retry,
                    )
                self._first.set()
                await asyncio.sleep(self.settings.subscription_retry)
                continue
            failing_since = None
            self._first.set()
            await self._watch(time.monotonic() + self.refresh_interval())

    async def _drop_lost_sessions(self) -> None:
        """After a restart: end the calls whose B2B entity the new OpenSIPS does not know."""
        for session in list(self.sessions.values()):
            if session.terminated:
                continue
            try:
                await self.mi.call("ua_session_list", {"key": session.key})
            except MIError as e:
                if e.code == NOT_FOUND:
                    session.hung_up = True  # nothing left in OpenSIPS to terminate
                    session.end_remote("OpenSIPS restarted: the session is gone")
                else:
                    session.log.warning("could not check the session after a restart: %s", e)

    def spawn(self, coro: Any) -> None:
        t = asyncio.ensure_future(coro)
        self._tasks.add(t)
        t.add_done_callback(self._task_done)

    def _task_done(self, t: asyncio.Task[Any]) -> None:
        self._tasks.discard(t)
        if not t.cancelled() and t.exception() is not None:
            log.error("B2B event handler failed", exc_info=t.exception())

    def _drop(self, reason: str, addr: tuple[str, int], detail: str) -> None:
        self.drops[reason] = self.drops.get(reason, 0) + 1
        now = time.monotonic()
        if now - self._drop_logged.get(reason, -DROP_LOG_EVERY) >= DROP_LOG_EVERY:
            self._drop_logged[reason] = now
            log.warning(
                "dropped event datagram from %s:%d (%s: %s); %d dropped so far",
                addr[0],
                addr[1],
                reason,
                detail[:120],
                self.drops[reason],
            )

    async def reply(
        self,
        key: str,
        method: str,
        code: int,
        reason: str,
        body: str = "",
        content_type: str = "application/sdp",
        quiet: bool = False,
    ) -> bool:
        params: dict[str, Any] = {"key": key, "method": method, "code": code, "reason": reason}
        if body:
            params["body"] = body
            line = content_type_line(content_type)
            if line is not None:
                params["content_type"] = line
        try:
            await self.mi.call("ua_session_reply", params)
            return True
        except MIError as e:
            (log.debug if quiet else log.error)(
                "ua_session_reply %d to %s %s failed: %s", code, method, key, e
            )
            return False

    async def release(self, key: str, quiet: bool = False) -> None:
        """Free an entity OpenSIPS keeps after a final non-2xx reply (no BYE goes out)."""
        try:
            await self.mi.call("ua_session_terminate", {"key": key})
        except MIError as e:
            (log.debug if quiet else log.warning)("releasing session %s failed: %s", key, e)

    async def _cancelled(self, key: str, quiet: bool = False) -> None:
        """CANCEL before the answer: 487 for the INVITE, then free the entity."""
        if await self.reply(key, "INVITE", 487, "Request Terminated", quiet=quiet):
            log.info("caller cancelled %s: 487 Request Terminated sent", key)
        await self.release(key, quiet=True)

    # -- events ----------------------------------------------------------------------------

    def received(self, data: bytes, addr: tuple[str, int]) -> None:
        try:
            msg = jsonsafe.loads(data)
        except ValueError as e:  # JsonError: malformed, not UTF-8, or nested too deeply
            self._drop("not JSON", addr, str(e))
            return
        if not isinstance(msg, dict) or msg.get("method") != EVENT:
            self._drop("not an E_UA_SESSION notification", addr, str(msg)[:80])
            return
        params = msg.get("params")
        if (
            not isinstance(params, dict)
            or not isinstance(params.get("key"), str)
            or not params["key"]
        ):
            self._drop("event without key", addr, str(params)[:80])
            return
        try:
            self._event(params)
        except Exception as e:
            log.exception("handling %s failed: %s", params.get("event_type"), e)

    def _event(self, p: dict[str, Any]) -> None:
        key = p["key"]
        etype = str(p.get("event_type", "")).upper()
        method = str(p.get("method", "")).upper()
        session = self.sessions.get(key)
        log.debug("event %s %s for %s", etype, method, key)
        if etype == "NEW":
            if session is not None:
                return  # duplicate
            if method and method != "INVITE":
                self.spawn(self.reply(key, method, 405, "Method Not Allowed"))
                return
            session = B2BSession(self, key)
            self.sessions[key] = session
            self.spawn(self._new(session, p))
            return
        if session is None:
            if etype == "UPDATED" and method in REQUEST_METHODS - {"BYE", "CANCEL"}:
                self.spawn(self.reply(key, method, 481, "Call/Transaction Does Not Exist"))
            elif etype == "TERMINATED" and method == "CANCEL":
                # A call we never saw (or already rejected): the INVITE may still wait.
                self.spawn(self._cancelled(key, quiet=True))
            else:
                log.debug("%s %s for unknown session %s ignored", etype, method, key)
            return
        if etype == "TERMINATED":
            if method == "CANCEL":
                session.end_remote("caller cancelled")
                if not session.hung_up:
                    session.hung_up = True
                    if session.answered or session.answering:
                        # The CANCEL crossed our 200: OpenSIPS has ended the entity anyway.
                        self.spawn(self.release(key, quiet=True))
                    else:
                        self.spawn(self._cancelled(key))
            else:
                session.end_remote("caller hung up")
        elif etype == "UPDATED":
            self._updated(session, method, p)
        elif etype == "REJECTED":
            if method == "REFER":
                session.log.warning("transfer refused: %s %s", p.get("status"), p.get("reason"))
                session.refer_replied(p)
            elif not session.answered:
                session.end_remote(f"rejected: {p.get('status')} {p.get('reason')}")
            else:
                session.log.info(
                    "request %s rejected: %s %s", method, p.get("status"), p.get("reason")
                )
        elif etype in ("ANSWERED", "EARLY"):
            session.log.info(
                "%s %s: %s %s", method, etype.lower(), p.get("status"), p.get("reason")
            )
            if etype == "ANSWERED" and method == "REFER":
                session.refer_replied(p)

    def _updated(self, session: B2BSession, method: str, p: dict[str, Any]) -> None:
        key = session.key
        if method == "ACK":
            session.confirmed = True
        elif method == "INVITE":
            self.spawn(self._reoffer(session, str(p.get("body") or "")))
        elif method == "NOTIFY":
            self.spawn(self.reply(key, "NOTIFY", 200, "OK"))
            frag = str(p.get("body") or "").strip().split("\r\n")[0]
            session.log.info("transfer progress: %s", frag or "(empty NOTIFY)")
            bits = frag.split(" ")
            if (
                len(bits) >= 2
                and bits[1].isdigit()
                and 200 <= int(bits[1]) < 300
                and not session.terminated
            ):
                session.log.info("transfer completed: ending our leg")
                session.end_remote("transferred")
                # Not hangup(): end_remote() marked the session terminated, which hangup()
                # takes for "the caller has ended it" and would send nothing.
                self.spawn(session.terminate())
        elif method == "BYE":
            session.end_remote("caller hung up")
        elif method in ("INFO", "OPTIONS"):
            self.spawn(self.reply(key, method, 200, "OK"))
        elif method == "UPDATE":
            self.spawn(self._reoffer(session, str(p.get("body") or ""), method="UPDATE"))
        elif method:
            self.spawn(self.reply(key, method, 501, "Not Implemented"))

    async def _new(self, session: B2BSession, p: dict[str, Any]) -> None:
        try:
            await self._setup(session, p)
        except Exception:
            session.log.exception("call setup failed")
            if not session.answered and not session.answering:
                await self._reject(session, 500, "Server Internal Error")
            await self._finish(session)

    async def _reject(self, session: B2BSession, code: int, reason: str) -> None:
        session.log.info("rejecting the call: %d %s", code, reason)
        session.terminated = True
        self.sessions.pop(session.key, None)
        if not session.hung_up:
            session.hung_up = True
            if await self.reply(session.key, "INVITE", code, reason):
                await self.release(session.key, quiet=True)

    async def _setup(self, session: B2BSession, p: dict[str, Any]) -> None:
        key = session.key
        session.headers = h = parse_headers(str(p.get("headers") or ""))
        # Everything parsed from the event is parsed before a port is taken: a failure here
        # (malformed extra_params...) then has nothing to leak.
        info = CallInfo(
            call_id=key,
            transport="opensips",
            from_=_user(_header(h, "From", "f")),
            to=_user(_header(h, "To", "t")),
            user=_user(_header(h, "To", "t")),
            params=call_params(p.get("extra_params"), h),
        )
        sip_call_id = _header(h, "Call-ID", "i")
        if sip_call_id:
            info.params.setdefault("sip_call_id", sip_call_id)
        offer = str(p.get("body") or "")
        try:
            neg, stream, sdp = await open_media(self.host, info, offer if offer.strip() else "",
                                                self.settings, self.media, session.log)
        except SetupRefused as e:
            if e.reason == SetupRefused.BAD_OFFER:
                session.log.info("bad SDP offer: %s", e.detail)
            await self._reject(session, *REFUSALS[e.reason])
            return
        try:
            session.neg, session.sdp = neg, sdp
            session.conn = conn = SipCall(info, stream, session, session.log)
        finally:
            # Until the call owns the stream (and _finish closes it), a failure here must
            # give the RTP port back itself, or every such failure leaks one for good.
            if session.conn is None:
                await self.media.close(stream)
        if self.settings.answer_delay > 0 and not session.terminated:
            await self.reply(key, "INVITE", 180, "Ringing")
            await asyncio.sleep(self.settings.answer_delay)
        if session.terminated:
            session.log.info("call cancelled before the answer: media released")
            await self._finish(session)
            return
        try:
            session.task = await start_call(self.host, conn)
        except CallRefused as e:
            session.log.info("core refused the call: %s", e)
            await self._reject(session, 503, "Service Unavailable")
            await self._finish(session)
            return
        session.task.add_done_callback(lambda _: self.spawn(self._finish(session)))
        session.log.info(
            "answering with %s/%d ptime %d (media %s:%d, ours %s:%d)",
            neg.codec,
            neg.clock_rate,
            neg.ptime,
            neg.remote_address,
            neg.remote_port,
            sdp.address,
            sdp.port,
        )
        if session.terminated:
            return
        session.answering = True
        if await self.reply(key, "INVITE", 200, "OK", sdp.answer(neg)):
            session.answered = True
        else:
            session.end_remote("OpenSIPS did not take the answer")

    async def _reoffer(self, session: B2BSession, body: str, method: str = "INVITE") -> None:
        if session.conn is None or session.neg is None or session.sdp is None:
            await self.reply(session.key, method, 491, "Request Pending")
            return
        neg = session.neg
        if body.strip():
            try:
                new = negotiate(parse_offer(body), self.settings.codecs, self.settings.ptime)
            except SdpError:
                new = None
            if new is None:
                await self.reply(session.key, method, 488, "Not Acceptable Here")
                return
            new.ptime = neg.ptime
            session.conn.stream.update(new)
            session.neg = neg = new
            session.log.info(
                "media renegotiated: %s, %s, remote %s:%d",
                neg.codec,
                neg.direction,
                neg.remote_address,
                neg.remote_port,
            )
        await self.reply(session.key, method, 200, "OK", session.sdp.answer(neg))

    async def _finish(self, session: B2BSession) -> None:
        conn = session.conn
        if conn is not None and not conn.ended:
            conn.ended = True
            if not session.terminated and session.answered:
                await session.hangup()
        if conn is not None:
            await self.media.close(conn.stream)
        session.terminated = True
        if self.sessions.get(session.key) is session:
            del self.sessions[session.key]
