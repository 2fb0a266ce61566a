"""Error responses → RegistryError, with the service's own words in the one-line message.

Registries answer with the OCI `{"errors": [{"code", "message"}]}` shape; the web APIs of discovery do
not: Docker Hub sends `{"message"}` or `{"detail"}`, quay `{"error_message", "detail"}`, GitHub
`{"message"}`. Whichever it is, the message reaches the user (one line, bounded).
"""

from __future__ import annotations

import json

from gcrsync.errors import AuthError, NotFound, RegistryError

_SERVICE_FIELDS = ("error_message", "message", "detail", "error_description", "error")


def _one_line(value: object, limit: int) -> str:
    # split/join: the message must stay one line whatever whitespace the service put in it.
    return " ".join(str(value).split())[:limit]


def service_message(body: bytes) -> tuple[str | None, str | None]:
    """(OCI error code, message) from an error body of any of the shapes above; (None, None) if none."""
    try:
        doc = json.loads(body[:65536])
    except (ValueError, RecursionError):
        return None, None
    if not isinstance(doc, dict):
        return None, None
    errors = doc.get("errors")
    if isinstance(errors, list) and errors and isinstance(errors[0], dict):
        # Every entry, not just the first: a registry may say DIGEST_INVALID first and the useful
        # "manifest blob unknown" second. The code of the first one classifies the error.
        entries = [e for e in errors[:10] if isinstance(e, dict)]
        code = _one_line(entries[0].get("code", ""), 60) or None
        parts = [_one_line(entries[0].get("message", ""), 200)]
        for other in entries[1:]:
            other_code, other_message = (_one_line(other.get(k, ""), 200) for k in ("code", "message"))
            parts.append(": ".join(p for p in (other_code, other_message) if p))
        return code, "; ".join(p for p in parts if p)[:300] or None  # one bounded line
    for key in _SERVICE_FIELDS:
        value = doc.get(key)
        if isinstance(value, str) and value.strip():
            return None, _one_line(value, 200)
    return None, None


def registry_error(what: str, status: int, body: bytes) -> RegistryError:
    """Turn an error response into a RegistryError carrying the OCI error code and the message."""
    code, message = service_message(body)
    if code:
        detail = f"{code}: {message}" if message else code
    elif message:
        detail = f"HTTP {status}: {message}"
    else:
        detail = f"HTTP {status}"
    cls: type[RegistryError] = RegistryError
    if status == 404:
        cls = NotFound
    elif status in (401, 403):
        cls = AuthError
    return cls(f"{what}: {detail}", status=status, code=code)
