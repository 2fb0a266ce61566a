"""Every error gcrsync raises on purpose derives from GcrsyncError.

The CLI turns a GcrsyncError into one line on stderr and a non-zero exit; anything else is a bug.
"""

from __future__ import annotations


class GcrsyncError(Exception):
    """Base class: a clear, one-line, user-facing failure."""

    exit_code = 1


class InvalidReference(GcrsyncError):
    """An image reference or repository name does not match the grammar."""


class ManifestError(GcrsyncError):
    """A manifest or index is malformed, too large, cyclic or of an unknown type."""


class RegistryError(GcrsyncError):
    """A registry answered with an error (carries the HTTP status and OCI error code when known)."""

    def __init__(self, message: str, *, status: int | None = None, code: str | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.code = code


class AuthError(RegistryError):
    """Authentication or authorization failed (wrong credentials, denied scope)."""


class NotFound(RegistryError):
    """A manifest, blob or repository does not exist."""


class DigestMismatch(GcrsyncError):
    """Bytes received do not hash to the digest (or size) they were asked for."""


class ConfigError(GcrsyncError):
    """The configuration file or command-line options are invalid."""

    exit_code = 2


class LedgerError(GcrsyncError):
    """A ledger file or the metadata repository is unusable."""


def first_error(exc: BaseException) -> BaseException:
    """The first real error inside (possibly nested) ExceptionGroups from TaskGroup."""
    while isinstance(exc, BaseExceptionGroup):
        exc = exc.exceptions[0]
    return exc


def error_text(exc: BaseException) -> str:
    """One line for a report or a log: our own errors as they are, anything else with its type name."""
    exc = first_error(exc)
    if isinstance(exc, GcrsyncError):
        return str(exc)
    return f"{type(exc).__name__}: {exc}"
