"""Shared-token authentication for the WebSocket services vc ships (llama-ws, Piper).

A service started with a token accepts a connection only when the handshake carries it, as
``Authorization: Bearer <token>`` or as a ``token`` query parameter; the comparison is constant
time. vc's clients send the header (the providers' ``token`` setting).
"""

from __future__ import annotations

import hmac
from typing import Any
from urllib.parse import parse_qs, urlsplit


def presented_token(path: str, headers: Any) -> str | None:
    """The token a handshake request carries (the header wins over the query), or None."""
    auth = headers.get("Authorization") if headers is not None else None
    if auth:
        scheme, _, value = str(auth).strip().partition(" ")
        if scheme.lower() == "bearer" and value.strip():
            return value.strip()
    values = parse_qs(urlsplit(path).query).get("token")
    return values[0] if values else None


def token_ok(expected: str, path: str, headers: Any) -> bool:
    """Whether the handshake may proceed: no token configured, or the right one presented."""
    if not expected:
        return True
    got = presented_token(path, headers)
    if got is None:
        return False
    return hmac.compare_digest(got.encode("utf-8"), expected.encode("utf-8"))


def auth_headers(token: str) -> dict[str, str]:
    """Headers a client sends to a service that wants ``token`` (none when it is empty)."""
    return {"Authorization": f"Bearer {token}"} if token else {}
