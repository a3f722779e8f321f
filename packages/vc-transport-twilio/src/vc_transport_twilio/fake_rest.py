"""A local stand-in for the part of Twilio's REST API (2010-04-01 Calls) vc uses.

It answers what the real API answers for the requests the ``twilio`` library sends (basic
auth, form-encoded bodies, JSON replies, error bodies with Twilio error codes) and records
every request with its arrival time, so tests can check exactly what the client sent and when.
Point the transport at it with ``[transport.twilio] api_base_url``.
"""

from __future__ import annotations

import base64
import secrets
import time
from collections.abc import Awaitable, Callable
from typing import Any

import attrs
from aiohttp import web

API_VERSION = "2010-04-01"


@attrs.define
class RESTRequest:
    at: float
    method: str
    path: str
    form: dict[str, str]
    headers: dict[str, str]
    call_sid: str = ""


def new_sid(prefix: str) -> str:
    return prefix + secrets.token_hex(16)


def _error(status: int, code: int, message: str) -> web.Response:
    return web.json_response(
        {
            "code": code,
            "message": message,
            "more_info": f"https://www.twilio.com/docs/errors/{code}",
            "status": status,
        },
        status=status,
    )


class FakeTwilioREST:
    """Calls resource of Twilio's REST API on 127.0.0.1 (an ephemeral port)."""

    def __init__(self, account_sid: str, credentials: tuple[str, str]) -> None:
        self.account_sid = account_sid
        self.credentials = credentials
        self.requests: list[RESTRequest] = []
        #: CallSid -> status ("in-progress", "completed"...), for calls this fake knows.
        self.calls: dict[str, str] = {}
        #: Called with (call_sid, form) for an update of a live call; may be async.
        self.on_update: Callable[[str, dict[str, str]], Awaitable[None]] | None = None
        #: Called with (call_sid, form) after a call was created.
        self.on_create: Callable[[str, dict[str, str]], Awaitable[None]] | None = None
        #: Status to answer every request with instead (e.g. 500 to simulate an outage).
        self.fail_with: int | None = None
        self._runner: web.AppRunner | None = None
        self.url = ""

    async def start(self) -> str:
        app = web.Application()
        base = f"/{API_VERSION}/Accounts/{{account}}/Calls"
        app.router.add_post(base + ".json", self._create)
        app.router.add_post(base + "/{sid}.json", self._update)
        app.router.add_get(base + "/{sid}.json", self._fetch)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        self.url = f"http://127.0.0.1:{port}"
        return self.url

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()

    # -- request checks shared by every endpoint ------------------------------------------------

    async def _record(self, request: web.Request) -> tuple[RESTRequest, web.Response | None]:
        form = dict(await request.post()) if request.method == "POST" else {}
        rec = RESTRequest(
            time.monotonic(),
            request.method,
            request.path,
            {k: str(v) for k, v in form.items()},
            dict(request.headers),
            request.match_info.get("sid", ""),
        )
        self.requests.append(rec)
        if self.fail_with:
            return rec, _error(self.fail_with, 20500, "Internal Server Error")
        if not self._authorised(request.headers.get("Authorization", "")):
            return rec, _error(401, 20003, "Authenticate")
        if request.match_info["account"] != self.account_sid:
            return rec, _error(404, 20404, f"The requested resource {request.path} was not found")
        if request.method == "POST" and not request.headers.get("Content-Type", "").startswith(
            "application/x-www-form-urlencoded"
        ):
            return rec, _error(400, 20001, "Content-Type must be application/x-www-form-urlencoded")
        return rec, None

    def _authorised(self, header: str) -> bool:
        if not header.startswith("Basic "):
            return False
        try:
            user, _, password = base64.b64decode(header[6:]).decode().partition(":")
        except ValueError:
            return False
        return (user, password) == self.credentials

    def _call_json(
        self, sid: str, status: str, extra: dict[str, Any] | None = None
    ) -> dict[str, Any]:
        return {
            "sid": sid,
            "account_sid": self.account_sid,
            "status": status,
            "api_version": API_VERSION,
            "direction": "outbound-api",
            "uri": f"/{API_VERSION}/Accounts/{self.account_sid}/Calls/{sid}.json",
            **(extra or {}),
        }

    # -- endpoints ---------------------------------------------------------------------

    async def _fetch(self, request: web.Request) -> web.Response:
        _, error = await self._record(request)
        if error is not None:
            return error
        sid = request.match_info["sid"]
        if sid not in self.calls:
            return _error(404, 20404, f"The requested resource {request.path} was not found")
        return web.json_response(self._call_json(sid, self.calls[sid]))

    async def _update(self, request: web.Request) -> web.Response:
        rec, error = await self._record(request)
        if error is not None:
            return error
        sid = request.match_info["sid"]
        status = self.calls.get(sid)
        if status is None:
            return _error(404, 20404, f"The requested resource {request.path} was not found")
        form = rec.form
        if "Twiml" in form and "Url" in form:
            return _error(400, 21205, "Twiml and Url are mutually exclusive")
        if status != "in-progress":
            return _error(400, 21220, "Call is not in-progress. Cannot redirect.")
        if form.get("Status") not in (None, "completed", "canceled"):
            return _error(400, 21218, f"Invalid Status {form.get('Status')!r}")
        if form.get("Status") is None and "Twiml" not in form and "Url" not in form:
            return _error(400, 21201, "No Url, Twiml or Status given")
        if form.get("Status"):
            self.calls[sid] = "completed"
        if self.on_update is not None:
            await self.on_update(sid, form)
        return web.json_response(self._call_json(sid, self.calls[sid]))

    async def _create(self, request: web.Request) -> web.Response:
        rec, error = await self._record(request)
        if error is not None:
            return error
        form = rec.form
        for key in ("To", "From"):
            if not form.get(key):
                return _error(
                    400, 21201 if key == "To" else 21603, f"A '{key}' phone number is required."
                )
        if not (form.get("Url") or form.get("Twiml") or form.get("ApplicationSid")):
            return _error(400, 21205, "Url, Twiml or ApplicationSid is required")
        sid = new_sid("CA")
        self.calls[sid] = "queued"
        rec.call_sid = sid
        if self.on_create is not None:
            await self.on_create(sid, form)
        return web.json_response(
            self._call_json(sid, "queued", {"to": form["To"], "from": form["From"]}), status=201
        )
