"""Registry error responses → RegistryError (kept apart so client.py and uploads.py can share it)."""

from __future__ import annotations

import json

from gcrsync.errors import AuthError, NotFound, RegistryError


def registry_error(what: str, status: int, body: bytes) -> RegistryError:
    """Turn an error response into a RegistryError carrying the OCI error code and message."""
    code = message = None
    try:
        doc = json.loads(body[:65536])
        first = doc["errors"][0]
        # split/join: the message must stay one line whatever whitespace the registry put in it.
        code, message = (" ".join(str(first.get(k, "")).split())[:n] for k, n in (("code", 60), ("message", 200)))
    except (ValueError, KeyError, IndexError, TypeError, AttributeError, RecursionError):
        pass
    detail = f"{code}: {message}" if code else f"HTTP {status}"
    cls: type[RegistryError] = RegistryError
    if status == 404:
        cls = NotFound
    elif status in (401, 403):
        cls = AuthError
    return cls(f"{what}: {detail}", status=status, code=code)
