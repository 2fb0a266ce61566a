"""OCI Distribution API client: one RegistryClient per run, one Repository (an ImageStore) per repo."""

from __future__ import annotations

import json
import logging
from collections.abc import AsyncIterator, Iterable, Mapping
from contextlib import asynccontextmanager

import aiohttp
from multidict import CIMultiDictProxy
from yarl import URL

from gcrsync.errors import AuthError, DigestMismatch, GcrsyncError, ManifestError, NotFound, RegistryError
from gcrsync.oci import (
    ACCEPT_MANIFESTS,
    MAX_MANIFEST_BYTES,
    Descriptor,
    Manifest,
    parse_manifest,
    validate_digest,
)
from gcrsync.reference import validate_repository
from gcrsync.registry.auth import Authenticator, pull_scope, push_scope
from gcrsync.registry.credentials import CredentialStore
from gcrsync.registry.errors import registry_error
from gcrsync.registry.transport import Transport, redact_url
from gcrsync.registry.uploads import BlobUploads

log = logging.getLogger("gcrsync.registry")

MAX_JSON_BYTES = 32 * 1024 * 1024  # listings of big namespaces are large, but not unbounded
MAX_REDIRECTS = 5
REDIRECT_STATUSES = frozenset({301, 302, 303, 307, 308})
CHUNK = 1024 * 1024
MAX_RESUMES = 5


class RegistryClient:
    """Talks to any number of registries through one Transport and one Authenticator."""

    def __init__(
        self,
        transport: Transport,
        credentials: CredentialStore,
        *,
        chunked_hosts: Iterable[str] = (),
        chunk_size: int = 16 * 1024 * 1024,
    ) -> None:
        self.transport = transport
        self.auth = Authenticator(transport, credentials)
        self.chunked_hosts = set(chunked_hosts)
        self.chunk_size = chunk_size

    def repository(self, host: str, repository: str) -> Repository:
        return Repository(self, host, validate_repository(repository))

    def base(self, host: str) -> URL:
        api = "registry-1.docker.io" if host == "docker.io" else host
        return URL.build(scheme=self.transport.scheme_for(api), authority=api)

    @asynccontextmanager
    async def send(
        self,
        method: str,
        url: URL,
        *,
        scopes: Iterable[str] = (),
        headers: Mapping[str, str] | None = None,
        data: bytes | AsyncIterator[bytes] | None = None,
    ) -> AsyncIterator[aiohttp.ClientResponse]:
        """A request with registry auth: learns the challenge on a 401 and retries once with a token."""
        host = url.authority
        wanted = set(scopes)
        replayable = data is None or isinstance(data, bytes)
        for attempt in range(2):
            auth_headers = await self.auth.headers(host, wanted, fresh=attempt > 0)
            async with self.transport.request(method, url, headers={**(headers or {}), **auth_headers}, data=data) as r:
                if r.status == 401 and attempt == 0 and replayable:
                    challenge = self.auth.learn(host, r.headers.get("WWW-Authenticate"))
                    if challenge is not None:
                        if "scope" in challenge.params:
                            wanted.update(challenge.params["scope"].split(" "))
                        continue
                yield r
                return
        raise AssertionError("unreachable")  # pragma: no cover

    @asynccontextmanager
    async def open(
        self, method: str, url: URL, *, scopes: Iterable[str], headers: Mapping[str, str] | None = None
    ) -> AsyncIterator[aiohttp.ClientResponse]:
        """A GET/HEAD that follows redirects (registry.k8s.io → Artifact Registry, blobs → CDNs).

        Every hop authenticates on its own host's terms: the first host's token is never sent elsewhere; a
        host that challenges (Artifact Registry) gets its own token for the scope its challenge names.
        """
        origin = url.origin()
        wanted = list(scopes)
        for _hop in range(MAX_REDIRECTS + 1):
            hop_scopes = wanted if url.origin() == origin else []
            async with self.send(method, url, scopes=hop_scopes, headers=headers) as resp:
                location = resp.headers.get("Location") if resp.status in REDIRECT_STATUSES else None
                if location is None:
                    yield resp
                    return
            url = url.join(URL(location, encoded=True))
        raise RegistryError(f"{method} {redact_url(url)}: too many redirects")

    async def ping(self, host: str) -> None:
        """`GET /v2/` with whatever authentication the host asks for: a clear error if the registry is
        unreachable, not an OCI registry, or refuses the configured credentials.

        Runs do not need it: they learn each host's challenge from its first 401, which saves a request.
        """
        async with self.send("GET", self.base(host) / "v2" / "") as resp:
            if resp.status in (401, 403):
                raise AuthError(f"{host}: authentication failed (HTTP {resp.status})", status=resp.status)
            if resp.status != 200:
                raise RegistryError(f"{host} does not answer as an OCI registry (GET /v2/: HTTP {resp.status})",
                                    status=resp.status)
        if not self.auth.known_challenge(host):
            self.auth.learn(host, None)  # answered without a challenge: anonymous

    async def fetch(
        self, url: URL, *, scopes: Iterable[str], headers: Mapping[str, str], limit: int, what: str
    ) -> tuple[int, CIMultiDictProxy[str], bytes]:
        """GET a small document (JSON, manifest) whole: (status, headers, body).

        The transport retries failures before the response headers; a body cut off after them (connection
        reset, truncated, stalled) is retried here, since aiohttp would raise it out of the caller's read.
        """
        stats = self.transport.stats
        attempts = max(1, self.transport.options.max_attempts)
        for attempt in range(attempts):
            try:
                async with self.open("GET", url, scopes=scopes, headers=headers) as resp:
                    body = await _read_limited(resp, limit, what)
                    return resp.status, resp.headers, body
            except (aiohttp.ClientPayloadError, aiohttp.ClientConnectionError, TimeoutError) as exc:
                if attempt == attempts - 1:
                    raise RegistryError(f"{what}: response body kept breaking off ({type(exc).__name__})") from None
                stats.retries += 1
                stats.retry_reasons["body-cut"] += 1
                log.info("retrying %s after its body broke off (%s)", what, type(exc).__name__)
        raise AssertionError("unreachable")  # pragma: no cover

    async def get_json(self, url: str) -> tuple[object, Mapping[str, str]]:
        """GET a JSON document (listing APIs). Scopes are derived from registry API paths."""
        target = URL(url)
        scopes: list[str] = []
        parts = target.path.split("/")
        if len(parts) > 2 and parts[1] == "v2":
            if parts[2] == "_catalog":
                scopes.append("registry:catalog:*")
            elif target.path.endswith("/tags/list"):
                scopes.append(pull_scope("/".join(parts[2:-2])))
        status, headers, body = await self.fetch(
            target, scopes=scopes, headers={"Accept": "application/json"}, limit=MAX_JSON_BYTES,
            what=f"GET {redact_url(target)}",
        )
        if status != 200:
            raise registry_error(f"GET {redact_url(target)}", status, body)
        try:
            return json.loads(body), headers
        except ValueError:
            raise RegistryError(f"GET {redact_url(target)}: response is not JSON") from None


async def _read_limited(resp: aiohttp.ClientResponse, limit: int, what: str) -> bytes:
    length = resp.content_length
    if length is not None and length > limit:
        raise ManifestError(f"{what}: response of {length} bytes is over the {limit} byte limit")
    buf = bytearray()
    async for chunk in resp.content.iter_chunked(65536):
        buf += chunk
        if len(buf) > limit:
            raise ManifestError(f"{what}: response is over the {limit} byte limit")
    return bytes(buf)


class Repository(BlobUploads):
    """One repository on one registry; implements gcrsync.store.ImageStore."""

    def __init__(self, client: RegistryClient, host: str, repository: str) -> None:
        self.client = client
        self.host = host
        self.repository = repository
        self.url = client.base(host) / "v2" / repository
        self._pull = [pull_scope(repository)]

    @property
    def name(self) -> str:
        return f"{self.host}/{self.repository}"

    @property
    def domain(self) -> str:
        return self.host

    # -- optional capabilities (gcrsync.store) ----------------------------------------------------
    def sibling(self, repository: str) -> Repository:
        """OpensSiblings: another repository on the same registry."""
        return self.client.repository(self.host, repository)

    async def remove_tag(self, tag: str, digest: str) -> bool:
        """RemovesTags: a registry deletes manifests, not tags; every tag on `digest` goes with it."""
        return await self.delete_manifest(digest)

    def note_retry(self, reason: str) -> None:
        """CountsRequests: a retry made above the transport, counted with the run's others."""
        self.client.transport.stats.retries += 1
        self.client.transport.stats.retry_reasons[reason] += 1

    def _manifest_url(self, ref: str) -> URL:
        return self.url / "manifests" / ref

    # -- manifests -------------------------------------------------------------------------------
    async def get_manifest(self, ref: str) -> Manifest:
        what = f"manifest {self.name}:{ref}" if not ref.startswith("sha") else f"manifest {self.name}@{ref}"
        status, headers, body = await self.client.fetch(
            self._manifest_url(ref), scopes=self._pull, headers={"Accept": ACCEPT_MANIFESTS},
            limit=MAX_MANIFEST_BYTES, what=what,
        )
        if status != 200:
            raise registry_error(what, status, body)
        header_digest = headers.get("Docker-Content-Digest")
        content_type = headers.get("Content-Type")
        expected = ref if ":" in ref else None
        manifest = parse_manifest(body, content_type, expected)
        if expected is None and header_digest and header_digest != manifest.digest:
            raise ManifestError(f"{what}: bytes hash to {manifest.digest}, registry says {header_digest}")
        return manifest

    async def head_manifest(self, ref: str) -> Descriptor | None:
        async with self.client.open(
            "HEAD", self._manifest_url(ref), scopes=self._pull, headers={"Accept": ACCEPT_MANIFESTS}
        ) as resp:
            if resp.status == 404:
                return None
            if resp.status != 200:
                raise registry_error(f"HEAD manifest {self.name}:{ref}", resp.status, b"")
            digest = resp.headers.get("Docker-Content-Digest")
            media_type = (resp.headers.get("Content-Type") or "").split(";")[0].strip()
            size = resp.content_length or 0
        if not digest:  # a registry that omits the header: only a GET can tell (rare)
            manifest = await self.get_manifest(ref)
            return Descriptor(manifest.media_type, manifest.digest, len(manifest.raw))
        return Descriptor(media_type, validate_digest(digest, "Docker-Content-Digest"), size)

    async def put_manifest(self, ref: str, manifest: Manifest) -> None:
        async with self.client.send(
            "PUT",
            self._manifest_url(ref),
            scopes=[push_scope(self.repository)],
            headers={"Content-Type": manifest.media_type},
            data=manifest.raw,
        ) as resp:
            body = await resp.read()
            if resp.status not in (200, 201, 202):
                err = registry_error(f"push manifest {self.name}:{ref}", resp.status, body)
                if manifest.is_schema1:
                    err = RegistryError(f"{err} (target refuses Docker schema1 manifests)", status=resp.status)
                raise err

    async def delete_manifest(self, digest: str) -> bool:
        """Delete a manifest by digest (every tag pointing at it goes too). False if it was not there."""
        scopes = [f"repository:{self.repository}:delete", push_scope(self.repository)]
        async with self.client.send("DELETE", self._manifest_url(digest), scopes=scopes) as resp:
            body = await resp.read()
            if resp.status == 404:
                return False
            if resp.status not in (200, 202):
                raise registry_error(f"delete manifest {self.name}@{digest[:19]}", resp.status, body)
        return True

    # -- blobs ------------------------------------------------------------------------------------
    async def blob_size(self, digest: str) -> int | None:
        async with self.client.send("HEAD", self.url / "blobs" / digest, scopes=self._pull) as resp:
            if resp.status == 404:
                return None
            if resp.status in REDIRECT_STATUSES:
                return -1  # present, served from elsewhere
            if resp.status != 200:
                raise registry_error(f"HEAD blob {self.name}@{digest[:19]}", resp.status, b"")
            return resp.content_length if resp.content_length is not None else -1

    @asynccontextmanager
    async def open_blob(self, desc: Descriptor) -> AsyncIterator[AsyncIterator[bytes]]:
        yield self._stream_blob(desc)

    async def _stream_blob(self, desc: Descriptor) -> AsyncIterator[bytes]:
        """Stream a blob, following redirects and resuming with Range after a dropped connection."""
        received = 0
        resumes = 0
        while True:
            headers = {"Range": f"bytes={received}-"} if received else {}
            try:
                async with self._blob_response(desc, headers) as resp:
                    length = resp.content_length
                    if resp.status == 200 and length is not None and 0 <= desc.size != length:
                        # A source whose blob size differs from the descriptor is lying: fail before the download.
                        raise DigestMismatch(
                            f"blob {desc.digest[:19]}… is {length} bytes at the source, its descriptor says {desc.size}"
                        )
                    skip = received if (received and resp.status == 200) else 0  # no Range support: restart
                    async for chunk in resp.content.iter_chunked(CHUNK):
                        if skip:
                            if len(chunk) <= skip:
                                skip -= len(chunk)
                                continue
                            chunk, skip = chunk[skip:], 0
                        received += len(chunk)
                        yield chunk
                    if desc.size < 0 or received >= desc.size:
                        return
                    raise aiohttp.ClientPayloadError("connection closed before the end of the blob")
            except RegistryError as exc:
                if exc.status == 416 and received:  # nothing at the offset the descriptor promised more bytes at
                    raise DigestMismatch(
                        f"blob {desc.digest[:19]}… has {received} bytes at the source, its descriptor says {desc.size}"
                    ) from None
                raise
            except (aiohttp.ClientPayloadError, aiohttp.ServerDisconnectedError, TimeoutError, OSError) as exc:
                resumes += 1
                self.client.transport.stats.retries += 1
                self.client.transport.stats.retry_reasons["blob-resume"] += 1
                if resumes > MAX_RESUMES:
                    raise RegistryError(f"blob {self.name}@{desc.digest[:19]}: transfer kept failing ({exc})") from None
                log.info("resuming blob %s at byte %d after %s", desc.digest[:19], received, type(exc).__name__)

    @asynccontextmanager
    async def _blob_response(
        self, desc: Descriptor, extra: Mapping[str, str]
    ) -> AsyncIterator[aiohttp.ClientResponse]:
        """GET a blob, following redirects (CDNs, S3) without ever sending this registry's token elsewhere."""
        what = f"blob {self.name}@{desc.digest[:19]}"
        async with self.client.open("GET", self.url / "blobs" / desc.digest, scopes=self._pull,
                                    headers=extra) as resp:
            if resp.status not in (200, 206):
                raise registry_error(what, resp.status, await resp.read())
            yield resp

    # -- tags -------------------------------------------------------------------------------------
    async def list_tags(self) -> list[str]:
        tags: list[str] = []
        url: URL | None = (self.url / "tags" / "list").with_query({"n": "1000"})
        while url is not None:
            try:
                doc, headers = await self.client.get_json(str(url))
            except NotFound:
                return []
            if not isinstance(doc, dict) or not isinstance(doc.get("tags") or [], list):
                raise RegistryError(f"tags list of {self.name} is malformed")
            tags.extend(t for t in doc.get("tags") or [] if isinstance(t, str))
            url = next_link(url, headers)
        return tags


def next_link(current: URL, headers: Mapping[str, str]) -> URL | None:
    """The rel="next" target of a Link header, refused if it leaves the current host (no SSRF via Link)."""
    link = headers.get("Link")
    if not link:
        return None
    for part in link.split(","):
        if 'rel="next"' in part or "rel=next" in part:
            start, end = part.find("<"), part.find(">")
            if start < 0 or end < start:
                raise RegistryError("malformed Link header")
            try:
                nxt = current.join(URL(part[start + 1 : end], encoded=True))
                same, host = nxt.origin() == current.origin(), nxt.host or ""
            except ValueError:  # yarl: bad IPv6, port out of range, or not absolute (mailto:)
                raise RegistryError("malformed Link header") from None
            if not same:
                raise RegistryError(f"pagination Link points to another host ({host[:80]!r}): refused")
            return nxt
    return None


__all__ = ["GcrsyncError", "RegistryClient", "Repository", "next_link", "registry_error"]
