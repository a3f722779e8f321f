"""Typed settings schemas (attrs classes) and their conversion from INI/env strings.

A plugin declares its settings as an attrs class whose fields are made with :func:`setting`::

    @attrs.define
    class Settings:
        model: str = setting("tiny.en", help="Whisper model name or directory")
        beam_size: int = setting(1, help="beam width; 1 is fastest")
        api_key: str = setting("", help="API key", secret=True)

Values arrive as strings (INI file or environment) and are converted by the field's type:
``str``, ``int``, ``float``, ``bool``, ``pathlib.Path``, ``list[str]`` (comma separated),
``Literal[...]`` (one of the choices) and ``X | None`` (empty string means None).
A value ``$env:NAME`` or ``$file:/path`` is read from that variable or file (for secrets).

Ranges and choices are declared on the field (``setting(8080, min=1, max=65535, help=..)``,
``choices=(..)``) and checked when the settings are built; a float must be finite (no ``nan``
or ``inf``) unless declared ``finite=False``. A settings class may check fields against each
other in a method ``check_settings(self)`` returning ``(key, problem)`` pairs.
"""

from __future__ import annotations

import math
import os
import re
import types
import typing
from pathlib import Path
from typing import Any, Literal, get_args, get_origin

import attrs

_META = "vc"


@attrs.frozen
class ConfigError:
    """One problem found in the configuration, in terms a user can act on."""

    section: str
    key: str
    value: str | None
    expected: str
    source: str = ""

    def __str__(self) -> str:
        where = f"[{self.section}]" + (f" {self.key}" if self.key else "")
        got = "" if self.value is None else f" = {self.value!r}"
        src = f" (from {self.source})" if self.source else ""
        return f"{where}{got}{src}: {self.expected}"


def setting(
    default: Any = attrs.NOTHING,
    *,
    help: str,
    secret: bool = False,
    factory: Any = None,
    validator: Any = None,
    aliases: tuple[str, ...] = (),
    remote: bool = False,
    min: float | None = None,
    max: float | None = None,
    choices: tuple[Any, ...] | None = None,
    finite: bool = True,
) -> Any:
    """An attrs field carrying the documentation vc shows in `vc config show` and the docs.

    ``remote=True`` marks an address or port of another program's service that vc connects to
    (not one vc listens on): ``vc doctor`` then does not try to bind it. ``min``/``max`` bound a
    number (inclusive), ``choices`` lists the values allowed, ``finite=False`` lets a float be
    ``inf``/``nan``; :func:`build` refuses values outside them, naming section and key.
    """
    metadata = {
        _META: {
            "help": help,
            "secret": secret,
            "aliases": aliases,
            "remote": remote,
            "min": min,
            "max": max,
            "choices": tuple(choices) if choices is not None else None,
            "finite": finite,
        }
    }
    if factory is not None:
        return attrs.field(factory=factory, metadata=metadata, validator=validator)
    return attrs.field(default=default, metadata=metadata, validator=validator)


@attrs.frozen
class FieldInfo:
    """What the schema says about one key."""

    name: str
    type_name: str
    default: Any
    required: bool
    help: str
    secret: bool
    aliases: tuple[str, ...]
    #: the values allowed, in words ("1..65535", "one of 'a', 'b'"); empty: any of the type
    allowed: str = ""


def allowed_text(meta: dict[str, Any]) -> str:
    """The declared range or choices of a field, for people."""
    low, high, choices = meta.get("min"), meta.get("max"), meta.get("choices")
    if choices:
        return "one of " + ", ".join(repr(c) for c in choices)
    if low is not None and high is not None:
        return f"{low}..{high}"
    if low is not None:
        return f">= {low}"
    if high is not None:
        return f"<= {high}"
    return ""


def check_value(value: Any, meta: dict[str, Any]) -> str | None:
    """What is wrong with a converted value given the field's declared limits (None: fine)."""
    values = value if isinstance(value, (list, tuple)) else [value]
    for v in values:
        if v is None or isinstance(v, bool):
            continue
        if isinstance(v, float) and not math.isfinite(v) and meta.get("finite", True):
            return "a finite number" + (f" ({allowed_text(meta)})" if allowed_text(meta) else "")
        choices = meta.get("choices")
        if choices and v not in choices:
            return allowed_text(meta)
        if isinstance(v, (int, float)):
            low, high = meta.get("min"), meta.get("max")
            if (low is not None and v < low) or (high is not None and v > high):
                return "a number in " + allowed_text(meta) if low is not None and high is not None \
                    else "a number " + allowed_text(meta)
    return None


def check_settings(obj: Any, section: str) -> list[ConfigError]:
    """Every field of a built settings object against its limits, then the class's own check."""
    errors = []
    for f in attrs.fields(type(obj)):
        meta = f.metadata.get(_META, {})
        value = getattr(obj, f.name)
        problem = check_value(value, meta)
        if problem:
            shown = "<redacted>" if looks_secret(f.name) else show_value(f.name, value, False)
            errors.append(ConfigError(section, f.name, shown, f"expected {problem}"))
    hook = getattr(obj, "check_settings", None)
    if callable(hook) and not errors:
        for key, problem in hook() or ():
            errors.append(ConfigError(section, key, None, problem))
    return errors


def describe(cls: type) -> list[FieldInfo]:
    """List the keys of a settings class, in declaration order."""
    hints = typing.get_type_hints(cls)
    out = []
    for f in attrs.fields(cls):
        meta = f.metadata.get(_META, {})
        default = f.default
        if isinstance(default, attrs.Factory):  # type: ignore[arg-type]
            default = default.factory()
        out.append(
            FieldInfo(
                name=f.name,
                type_name=type_name(hints[f.name]),
                default=None if default is attrs.NOTHING else default,
                required=default is attrs.NOTHING,
                help=meta.get("help", ""),
                secret=bool(meta.get("secret", False)) or looks_secret(f.name),
                aliases=tuple(meta.get("aliases", ())),
                allowed=allowed_text(meta),
            )
        )
    return out


def looks_secret(key: str) -> bool:
    """Keys whose values are redacted when shown, whatever the schema says."""
    parts = re.split(r"[^a-z0-9]+", key.lower())
    if parts and parts[-1] in ("secret", "password", "passwd", "token", "key", "credentials"):
        return key.lower() not in ("key",)
    return "secret" in parts or "password" in parts or key.lower() in ("auth_token", "api_key")


def type_name(tp: Any) -> str:
    origin = get_origin(tp)
    if origin is Literal:
        return " | ".join(repr(a) for a in get_args(tp))
    if origin in (types.UnionType, typing.Union):
        return " | ".join(type_name(a) for a in get_args(tp))
    if origin in (list, tuple):
        return f"list of {type_name(get_args(tp)[0])}"
    if tp is type(None):
        return "empty"
    return getattr(tp, "__name__", str(tp))


_TRUE = {"1", "true", "yes", "on", "y", "t"}
_FALSE = {"0", "false", "no", "off", "n", "f", ""}


def resolve_reference(raw: str) -> str:
    """Resolve ``$env:NAME`` and ``$file:/path`` references (used for secrets)."""
    if raw.startswith("$env:"):
        name = raw[5:]
        if name not in os.environ:
            raise ValueError(f"environment variable {name} is not set")
        return os.environ[name]
    if raw.startswith("$file:"):
        path = Path(raw[6:])
        try:
            return path.read_text().strip()
        except OSError as e:
            raise ValueError(f"cannot read {path}: {e.strerror}") from None
    return raw


def convert(raw: str, tp: Any) -> Any:
    """Convert one string to ``tp``; raises ValueError with what was expected."""
    origin = get_origin(tp)
    if origin in (types.UnionType, typing.Union):
        args = get_args(tp)
        if type(None) in args and raw.strip() in ("", "none", "None"):
            return None
        errors = []
        for a in args:
            if a is type(None):
                continue
            try:
                return convert(raw, a)
            except ValueError as e:
                errors.append(str(e))
        if type(None) in args:
            errors.append("empty")
        raise ValueError(" or ".join(errors))
    if origin is Literal:
        choices = get_args(tp)
        value = raw.strip()
        for c in choices:
            if str(c) == value or (isinstance(c, str) and c.lower() == value.lower()):
                return c
        raise ValueError("one of " + ", ".join(repr(c) for c in choices))
    if origin in (list, tuple):
        (item,) = get_args(tp)[:1]
        items = [convert(p.strip(), item) for p in raw.split(",") if p.strip()]
        return items if origin is list else tuple(items)
    if tp is bool:
        v = raw.strip().lower()
        if v in _TRUE:
            return True
        if v in _FALSE:
            return False
        raise ValueError("a boolean (true/false, yes/no, on/off, 1/0)")
    if tp is int:
        try:
            return int(raw.strip())
        except ValueError:
            raise ValueError("an integer") from None
    if tp is float:
        try:
            return float(raw.strip())
        except ValueError:
            raise ValueError("a number") from None
    if tp is Path:
        if not raw.strip():
            raise ValueError("a path")
        return Path(raw.strip()).expanduser()
    if tp is str:
        return raw.strip()
    raise ValueError(f"a value of type {type_name(tp)} (unsupported in INI)")


def build(
    cls: type,
    values: dict[str, tuple[str, str]],
    section: str,
    *,
    allow_unknown: bool = False,
) -> tuple[Any, list[ConfigError]]:
    """Build ``cls`` from ``{key: (raw, source)}``; returns (instance or None, all errors)."""
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in attrs.fields(cls)}
    alias_of = {}
    for f in fields.values():
        for a in f.metadata.get(_META, {}).get("aliases", ()):
            alias_of[a] = f.name
    kwargs: dict[str, Any] = {}
    errors: list[ConfigError] = []
    for key, (raw, source) in values.items():
        name = key if key in fields else alias_of.get(key)
        if name is None:
            if not allow_unknown:
                known = ", ".join(fields) or "(none)"
                errors.append(ConfigError(section, key, raw, f"unknown key; known keys: {known}", source))
            continue
        if name in kwargs and key != name:
            continue  # the canonical key wins over an alias
        try:
            value = convert(resolve_reference(raw), hints[name])
            problem = check_value(value, fields[name].metadata.get(_META, {}))
            if problem:
                raise ValueError(problem)
            kwargs[name] = value
        except ValueError as e:
            shown = "<redacted>" if looks_secret(name) else raw
            errors.append(ConfigError(section, key, shown, f"expected {e}", source))
    for f in fields.values():
        if f.default is attrs.NOTHING and f.name not in kwargs:
            errors.append(ConfigError(section, f.name, None, "required key is missing"))
    try:
        # With errors, the object is built from the valid keys (the rest default), so that one
        # bad key does not cascade into misleading errors elsewhere; callers still fail.
        obj = cls(**kwargs)
    except (ValueError, TypeError) as e:
        return None, errors or [ConfigError(section, "", None, f"invalid settings: {e}")]
    if not errors:  # defaults and the class's cross-field check (values were checked above)
        errors = check_settings(obj, section)
    return obj, errors


def show_value(name: str, value: Any, secret: bool) -> str:
    """Render a value for display, redacting secrets."""
    if value is None:
        return ""
    if secret or looks_secret(name):
        return "<redacted>" if value not in ("", None) else ""
    if isinstance(value, (list, tuple)):
        return ", ".join(str(v) for v in value)
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)
