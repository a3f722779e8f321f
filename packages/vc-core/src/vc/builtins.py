"""Core's own plugin: the call-control tools and the event-log observer."""

from __future__ import annotations

import logging
from typing import Any

from vc import events
from vc.call import CallInfo
from vc.hookspecs import hookimpl
from vc.profiles import transfer_allowed
from vc.providers import Observer, Tool, ToolCall

log = logging.getLogger("vc.events")


async def end_call(call: ToolCall) -> dict[str, Any]:
    """Hang up once the goodbye has been heard."""
    if not call.spoke_this_turn and call.profile.goodbye:
        await call.say(call.profile.goodbye)
    call.after_speech(lambda: call.end("the bot ended the call"))
    return {"status": "ending the call", "_final": True}


async def transfer_call(call: ToolCall) -> dict[str, Any]:
    """Blind-transfer the caller once the bot has finished speaking."""
    asked = str(call.arguments.get("target") or "").strip()
    target = asked or str(call.profile.transfer_target or "").strip()
    if not target:
        return {"error": "no transfer destination is configured; tell the caller you cannot transfer"}
    if not transfer_allowed(call.profile, target):
        # The model named a destination the profile does not allow (a caller may have talked
        # it into one: toll fraud). Nothing is dialled; the model is told why.
        log.warning(
            "transfer to %r refused: not allowed by the profile", target,
            extra={"call_id": call.info.call_id},
        )
        return {
            "error": f"transferring to {target} is not allowed; only the configured "
            "destinations may be used (leave target empty for the default one)"
        }
    if not call.spoke_this_turn and call.profile.transfer_message:
        await call.say(call.profile.transfer_message)

    async def transfer() -> None:
        await call.connection.transfer(target)

    call.after_speech(transfer)
    return {"status": f"transferring to {target}", "_final": True}


END_CALL = Tool(
    name="end_call",
    description="End the phone call. Use it when the caller says goodbye or asks to hang up.",
    handler=end_call,
)
TRANSFER_CALL = Tool(
    name="transfer_call",
    description="Transfer the caller to a human agent or another number.",
    handler=transfer_call,
    parameters={
        "target": {
            "type": "string",
            "description": "phone number or SIP URI; leave empty for the default destination",
            "maxLength": 256,
        }
    },
)


#: Events the event log writes at INFO (the others at DEBUG).
_INFO_EVENTS = frozenset({events.TRANSCRIPT, events.TURN, events.BARGE_IN, events.TOOL_CALL,
                          events.MEDIA_QUALITY})


class EventLog(Observer):
    """Logs call events (transcripts, turns, barge-ins, tool calls, media quality) as structured
    lines."""

    name = "event-log"
    description = "call starts, ends and events as structured log lines (logger vc.events)"

    def call_started(self, info: CallInfo, profile: str) -> None:
        data = {**info.as_dict(), "profile": profile}
        log.info("call started", extra={"call_id": info.call_id, "data": data})

    def call_ended(self, info: CallInfo, outcome: str, duration: float) -> None:
        log.info("call ended", extra={"call_id": info.call_id,
                                      "data": {"outcome": outcome, "duration": round(duration, 3)}})

    def event(self, info: CallInfo, name: str, data: dict[str, Any]) -> None:
        level = logging.INFO if name in _INFO_EVENTS else logging.DEBUG
        log.log(level, name, extra={"call_id": info.call_id, "data": data})


@hookimpl
def register_tools(register):
    register(END_CALL)
    register(TRANSFER_CALL)


@hookimpl
def register_observers(register):
    register(EventLog)
