"""What travels through the transport stack: one `Request` in, one `Response` out, and the `Sender` shape
every layer has (go-containerregistry's RoundTripper, as an async context manager because an aiohttp
response must be released when its reader is done with it).

A layer wraps another `Sender` and adds one concern (see gcrsync.registry.transport for the order). The
response body is read through `Response.read` / `Response.chunks`, which turn aiohttp's exceptions into
`BodyBroken`, so layers above can resume a body without knowing aiohttp.
"""

from __future__ import annotations

import re
from collections.abc import AsyncIterable, AsyncIterator, Mapping
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass, field, replace
from typing import Protocol

import aiohttp
from multidict import CIMultiDictProxy
from yarl import URL

from gcrsync.errors import ManifestError, RegistryError

Body = bytes | AsyncIterable[bytes] | None
CHUNK = 1024 * 1024

# Credentials and the signing parameters of the CDNs registries redirect blob GETs to: S3 and CloudFront
# (X-Amz-*, Signature, Policy, Key-Pair-Id), GCS (X-Goog-*, GoogleAccessId), Azure SAS (sig), Akamai
# (hdnts, __token__), and generic token/secret names.
_REDACT_QUERY = re.compile(
    r"(?i)([?&](?:access_token|token|__token__|hdnts|password|secret|sig|signature|policy|key-pair-id"
    r"|googleaccessid|_state|x-amz-[a-z-]+|x-goog-[a-z-]+)=)[^&]*"
)


def redact_url(url: str | URL) -> str:
    """A URL safe to log: no userinfo, no token-like query parameters (CDN redirects carry signatures)."""
    text = str(URL(str(url)).with_user(None)) if isinstance(url, str | URL) else str(url)
    return _REDACT_QUERY.sub(r"\1REDACTED", text)


class Unreachable(RegistryError):
    """No response at all (connection refused, reset, timed out before the headers): worth retrying."""

    def __init__(self, message: str, *, reason: str) -> None:
        super().__init__(message)
        self.reason = reason


class BodyBroken(RegistryError):
    """The response body broke off after the headers (reset, truncated, stalled)."""

    def __init__(self, message: str, *, reason: str) -> None:
        super().__init__(message)
        self.reason = reason


@dataclass(frozen=True)
class Request:
    """One HTTP request as the verbs describe it; layers derive new ones with `replace`."""

    method: str
    url: URL
    headers: Mapping[str, str] = field(default_factory=dict)
    body: Body = None
    scopes: frozenset[str] = frozenset()  # registry token scopes this request needs on its own host
    follow_redirects: bool = True  # GET/HEAD only; a blob HEAD takes a redirect itself as "present"

    @property
    def replayable(self) -> bool:
        """A streamed body can be sent once only: such a request is never retried by the stack."""
        return self.body is None or isinstance(self.body, bytes)

    @property
    def host(self) -> str:
        return self.url.authority

    def with_headers(self, extra: Mapping[str, str]) -> Request:
        return replace(self, headers={**self.headers, **extra}) if extra else self

    def __str__(self) -> str:
        return f"{self.method} {redact_url(self.url)}"


class Response:
    """A response whose headers have arrived; the body is read at most once, through `read` or `chunks`."""

    def __init__(self, raw: aiohttp.ClientResponse, request: Request) -> None:
        self._raw = raw
        self.request = request

    @property
    def raw(self) -> aiohttp.ClientResponse:
        """The aiohttp response, for layers of the stack that wrap this one; verbs use the methods below."""
        return self._raw

    @property
    def status(self) -> int:
        return self._raw.status

    @property
    def headers(self) -> CIMultiDictProxy[str]:
        return self._raw.headers

    @property
    def url(self) -> URL:
        """The URL that answered (after redirects: the last hop), to resolve relative links against."""
        return self.request.url

    @property
    def content_length(self) -> int | None:
        return self._raw.content_length

    @property
    def media_type(self) -> str:
        return (self.headers.get("Content-Type") or "").split(";")[0].strip()

    async def read(self, limit: int) -> bytes:
        """The whole body, refused over `limit` bytes (checked before and while reading)."""
        length = self.content_length
        if length is not None and length > limit:
            raise ManifestError(f"{self.request}: response of {length} bytes is over the {limit} byte limit")
        buf = bytearray()
        async for chunk in self.chunks():
            buf += chunk
            if len(buf) > limit:
                raise ManifestError(f"{self.request}: response is over the {limit} byte limit")
        return bytes(buf)

    async def chunks(self, *, expected: int | None = None) -> AsyncIterator[bytes]:
        """The body in pieces of up to 1 MiB. `expected` (bytes still to come) makes an early clean end an
        error too, so a resuming layer can pick up where it stopped."""
        received = 0
        try:
            async for chunk in self._raw.content.iter_chunked(CHUNK):
                received += len(chunk)
                yield chunk
        except (aiohttp.ClientPayloadError, aiohttp.ClientConnectionError, TimeoutError, OSError) as exc:
            raise BodyBroken(f"{self.request}: body broke off ({type(exc).__name__})",
                             reason=type(exc).__name__) from None
        if expected is not None and 0 <= received < expected:
            raise BodyBroken(f"{self.request}: connection closed before the end of the body", reason="short")


class Sender(Protocol):
    """One layer of the stack: send a request, hold the response open while the caller reads it."""

    def send(self, request: Request) -> AbstractAsyncContextManager[Response]: ...
