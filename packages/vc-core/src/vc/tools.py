"""Running a tool call of the LLM: arguments checked against the tool's schema first, every
call logged (secrets redacted) and counted in ``vc_tool_calls_total{tool,outcome}``.

The model's arguments are untrusted input (a caller can talk the model into anything), so a
handler only ever sees arguments that fit the schema it declared, and a call that does not fit
gets an error result back to the model instead of an exception in the pipeline.

Outcomes: ``ok``; ``refused`` (the handler answered with an ``error``, e.g. a transfer target
the profile does not allow); ``invalid`` (the arguments do not fit the schema); ``error``
(the handler raised).
"""

from __future__ import annotations

import logging
import re
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from vc.metrics import Metrics
    from vc.providers import Tool, ToolCall

log = logging.getLogger("vc.tools")

_SECRET = re.compile(r"pass|secret|token|key|auth|pin|card|cvv|cvc|ssn|iban|account", re.I)
_TYPES: dict[str, tuple[type, ...]] = {
    "string": (str,),
    "integer": (int,),
    "number": (int, float),
    "boolean": (bool,),
    "array": (list,),
    "object": (dict,),
    "null": (type(None),),
}


def redact(arguments: Any) -> Any:
    """A copy of ``arguments`` with values of secret-looking keys replaced by ``***``."""
    if isinstance(arguments, dict):
        return {
            k: "***" if _SECRET.search(str(k)) else redact(v) for k, v in arguments.items()
        }
    if isinstance(arguments, list):
        return [redact(v) for v in arguments]
    return arguments


def _check(value: Any, schema: Any, where: str) -> str | None:
    """The first way ``value`` breaks ``schema`` (the common JSON-schema keywords), or None."""
    if not isinstance(schema, dict):
        return None
    types = schema.get("type")
    if types is not None:
        names = [types] if isinstance(types, str) else list(types)
        ok = False
        for name in names:
            py = _TYPES.get(str(name))
            if py is None:
                ok = True  # a type this checker does not know: accept
                break
            if isinstance(value, bool) and name in ("integer", "number"):
                continue
            if name == "integer" and isinstance(value, float) and value.is_integer():
                ok = True
                break
            if isinstance(value, py):
                ok = True
                break
        if not ok:
            return f"{where} must be of type {' or '.join(map(str, names))}"
    if "enum" in schema and value not in schema["enum"]:
        return f"{where} must be one of {schema['enum']}"
    if isinstance(value, str):
        if "maxLength" in schema and len(value) > schema["maxLength"]:
            return f"{where} is longer than {schema['maxLength']} characters"
        if "minLength" in schema and len(value) < schema["minLength"]:
            return f"{where} is shorter than {schema['minLength']} characters"
        if "pattern" in schema and not re.search(schema["pattern"], value):
            return f"{where} does not match {schema['pattern']!r}"
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        if "minimum" in schema and value < schema["minimum"]:
            return f"{where} is below {schema['minimum']}"
        if "maximum" in schema and value > schema["maximum"]:
            return f"{where} is above {schema['maximum']}"
    if isinstance(value, list) and "items" in schema:
        for i, item in enumerate(value):
            why = _check(item, schema["items"], f"{where}[{i}]")
            if why:
                return why
    if isinstance(value, dict) and isinstance(schema.get("properties"), dict):
        return _check_object(value, schema["properties"], schema.get("required", ()), where)
    return None


def _check_object(
    value: dict[str, Any], properties: dict[str, Any], required: Any, where: str
) -> str | None:
    for name in required or ():
        if name not in value:
            return f"{where}{name} is required"
    for name, v in value.items():
        if name in properties:
            why = _check(v, properties[name], f"{where}{name}")
            if why:
                return why
    return None


def check_arguments(tool: Tool, arguments: Any) -> str | None:
    """Why ``arguments`` do not fit ``tool``'s schema, or None when they do."""
    if not isinstance(arguments, dict):
        return "the arguments must be a JSON object"
    return _check_object(arguments, tool.parameters, tool.required, "argument ")


async def run_tool(
    tool: Tool, call: ToolCall, *, call_id: str, metrics: Metrics | None = None
) -> Any:
    """Validate, run, log and count one tool call; returns the result for the model."""
    arguments = call.arguments
    why = check_arguments(tool, arguments)
    if why is not None:
        outcome = "invalid"
        result: Any = {"error": f"invalid arguments for {tool.name}: {why}"}
    else:
        try:
            result = await tool.handler(call)
        except Exception as e:
            outcome = "error"
            result = {"error": str(e) or type(e).__name__}
        else:
            refused = isinstance(result, dict) and "error" in result
            outcome = "refused" if refused else "ok"
    level = logging.INFO if outcome == "ok" else logging.WARNING
    detail = result.get("error") if isinstance(result, dict) else None
    log.log(
        level,
        "tool call %s: %s%s",
        tool.name,
        outcome,
        f" ({detail})" if detail and outcome != "ok" else "",
        extra={
            "call_id": call_id,
            "data": {
                "tool": tool.name,
                "arguments": redact(arguments),
                "outcome": outcome,
                **({"error": detail} if detail and outcome != "ok" else {}),
            },
        },
    )
    if metrics is not None:
        metrics.tool_calls.labels(tool.name, outcome).inc()
    return result
