"""``vc gcp secret-check``: are the secrets the configuration references really there?

On Cloud Run and GKE, secrets from Secret Manager reach vc as environment variables or as
files (Cloud Run secret volumes, the Secret Manager CSI driver, Kubernetes Secret volumes),
and the INI refers to them as ``$env:NAME`` / ``$file:/path`` (resolved by vc-core when the
configuration is loaded). This check lists every reference - in the file and in
``VC_<SECTION>__<KEY>`` variables - and says for each whether it resolves to a non-empty value,
without ever printing a value. It also finds secrets written into the file in plain text
(keys that are secret by their schema or by name), which belong in Secret Manager instead.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Mapping
from pathlib import Path

import attrs

from vc.config import CORE_SECTIONS, KINDS, RawConfig
from vc.plugins import Registry
from vc.settings import describe, looks_secret

PROBLEMS = ("missing", "empty", "unreadable")
_ENV_KEY = re.compile(r"VC_[A-Z0-9_]+__[A-Z0-9_]+")


@attrs.frozen
class Finding:
    where: str
    reference: str
    status: str  # ok | missing | empty | unreadable | plaintext
    detail: str

    def as_dict(self) -> dict[str, str]:
        return attrs.asdict(self)


def check_reference(raw: str, env: Mapping[str, str]) -> tuple[str, str]:
    """(status, detail) of one ``$env:``/``$file:`` reference; never reveals the value."""
    if raw.startswith("$env:"):
        name = raw[5:]
        if name not in env:
            return "missing", f"environment variable {name} is not set"
        if not env[name].strip():
            return "empty", f"environment variable {name} is empty"
        return "ok", f"environment variable {name} is set"
    path = Path(raw[6:])
    if not path.exists():
        return "missing", f"{path} does not exist (secret volume not mounted?)"
    if not path.is_file():
        return "unreadable", f"{path} is not a file"
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as e:
        return "unreadable", f"cannot read {path}: {e.strerror}"
    except UnicodeDecodeError:
        return "unreadable", f"{path} is not UTF-8 text"
    if not text.strip():
        return "empty", f"{path} is empty"
    return "ok", f"{path} is readable"


def is_reference(value: str) -> bool:
    return value.startswith(("$env:", "$file:")) and len(value) > 6


def secret_keys(registry: Registry | None) -> Callable[[str, str], bool]:
    """Whether ``[section] key`` holds a secret: by the schema that owns it, else by its name."""
    schemas: dict[str, type] = dict(CORE_SECTIONS)
    if registry is not None:
        for kind in KINDS:
            for name, reg in registry.providers[kind].items():
                if reg.cls.Settings is not None:
                    schemas[f"{kind}.{name}"] = reg.cls.Settings
        for name, reg in registry.providers["transport"].items():
            if reg.cls.Settings is not None:
                schemas[f"transport.{name}"] = reg.cls.Settings
        for name, (cls, _) in registry.observers.items():
            if cls.Settings is not None:
                schemas[f"observer.{name}"] = cls.Settings
    flags = {
        (section, f.name): f.secret for section, cls in schemas.items() for f in describe(cls)
    }

    def secret(section: str, key: str) -> bool:
        return flags.get((section, key), False) or looks_secret(key)

    return secret


def scan(raw: RawConfig, env: Mapping[str, str] | None = None,
         registry: Registry | None = None) -> list[Finding]:
    """Every reference in the file and the environment, and every plain-text secret in the file."""
    env = os.environ if env is None else env
    secret = secret_keys(registry)
    out: list[Finding] = []
    for section, values in raw.sections.items():
        for key, (value, _source) in values.items():
            where = f"[{section}] {key}"
            value = value.strip()
            if is_reference(value):
                status, detail = check_reference(value, env)
                out.append(Finding(where, value, status, detail))
            elif value and (secret(section, key) or _kind_secret(section, key, raw, secret)):
                out.append(Finding(
                    where, "", "plaintext",
                    "a secret written into the configuration file: keep it in Secret Manager "
                    "and reference it as $env:NAME or $file:/path",
                ))
    for name in sorted(env):
        value = env[name].strip()
        if _ENV_KEY.fullmatch(name) and is_reference(value):
            status, detail = check_reference(value, env)
            out.append(Finding(f"env {name}", value, status, detail))
    return out


def _kind_secret(section: str, key: str, raw: RawConfig, secret: Callable[[str, str], bool]) -> bool:
    """``[stt] api_key`` is shorthand for the selected provider's ``[stt.<provider>] api_key``."""
    if section not in KINDS:
        return False
    provider = raw.get(section).get("provider", ("", ""))[0].strip()
    return bool(provider) and secret(f"{section}.{provider}", key)


def failed(findings: list[Finding], strict: bool) -> bool:
    bad = PROBLEMS + (("plaintext",) if strict else ())
    return any(f.status in bad for f in findings)
