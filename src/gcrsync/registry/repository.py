"""One repository on one registry: the OCI Distribution API verbs, each a `Request` through the one stack.

`Repository` implements gcrsync.store.ImageStore and the optional capabilities ListsTags, OpensSiblings,
RemovesTags and CountsRequests. Blob uploads and mounts live in uploads.py, referrers in referrers.py.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from yarl import URL

from gcrsync.errors import DigestMismatch, ManifestError, RegistryError
from gcrsync.oci import ACCEPT_MANIFESTS, MAX_MANIFEST_BYTES, Descriptor, Manifest, parse_manifest, validate_digest
from gcrsync.reference import validate_repository
from gcrsync.registry.auth import pull_scope, push_scope
from gcrsync.registry.connection import Connection
from gcrsync.registry.errors import registry_error
from gcrsync.registry.listing_parsers import next_link, parse_hub_tags, parse_tags_list
from gcrsync.registry.pages import api_pages
from gcrsync.registry.redirects import REDIRECT_STATUSES
from gcrsync.registry.referrers import Referrers
from gcrsync.registry.request import Request
from gcrsync.registry.resume import RangeRefused
from gcrsync.registry.uploads import BlobUploads
from gcrsync.types import TagInfo

MAX_TAGS_PAGE_BYTES = 32 * 1024 * 1024


class Repository(BlobUploads, Referrers):
    def __init__(self, client: Connection, host: str, repository: str) -> None:
        self.client = client
        self.host = host
        self.repository = repository
        self.url = client.base(host) / "v2" / repository
        self._pull = frozenset({pull_scope(repository)})
        self._push = frozenset({push_scope(repository)})

    @property
    def name(self) -> str:
        return f"{self.host}/{self.repository}"

    @property
    def domain(self) -> str:
        return self.host

    def __repr__(self) -> str:
        return f"Repository({self.name!r})"

    # -- optional capabilities (gcrsync.store) ----------------------------------------------------
    def sibling(self, repository: str) -> Repository:
        """OpensSiblings: another repository on the same registry."""
        return Repository(self.client, self.host, validate_repository(repository))

    async def remove_tag(self, tag: str, digest: str) -> bool:
        """RemovesTags: a registry deletes manifests, not tags; every tag on `digest` goes with it."""
        return await self.delete_manifest(digest)

    def note_retry(self, reason: str) -> None:
        """CountsRequests: a retry made above the transport, counted with the run's others."""
        self.client.stats.retried(reason)

    # -- manifests -------------------------------------------------------------------------------
    def _manifest_url(self, ref: str) -> URL:
        return self.url / "manifests" / ref

    def _what(self, ref: str) -> str:
        return f"manifest {self.name}@{ref}" if ref.startswith("sha") else f"manifest {self.name}:{ref}"

    async def get_manifest(self, ref: str) -> Manifest:
        what = self._what(ref)
        request = Request("GET", self._manifest_url(ref), headers={"Accept": ACCEPT_MANIFESTS}, scopes=self._pull)
        async with self.client.send(request) as resp:
            body = await resp.read(MAX_MANIFEST_BYTES)
            if resp.status != 200:
                raise registry_error(what, resp.status, body)
            header_digest = resp.headers.get("Docker-Content-Digest")
            content_type = resp.headers.get("Content-Type")
        expected = ref if ":" in ref else None
        manifest = parse_manifest(body, content_type, expected)
        if expected is None and header_digest and header_digest != manifest.digest:
            raise ManifestError(f"{what}: bytes hash to {manifest.digest}, registry says {header_digest}")
        return manifest

    async def head_manifest(self, ref: str) -> Descriptor | None:
        request = Request("HEAD", self._manifest_url(ref), headers={"Accept": ACCEPT_MANIFESTS}, scopes=self._pull)
        async with self.client.send(request) as resp:
            if resp.status == 404:
                return None
            if resp.status != 200:
                raise registry_error(f"HEAD {self._what(ref)}", resp.status, b"")
            digest = resp.headers.get("Docker-Content-Digest")
            media_type = resp.media_type
            size = resp.content_length or 0
        if not digest:  # a registry that omits the header: only a GET can tell (rare)
            manifest = await self.get_manifest(ref)
            return Descriptor(manifest.media_type, manifest.digest, len(manifest.raw))
        return Descriptor(media_type, validate_digest(digest, "Docker-Content-Digest"), size)

    async def put_manifest(self, ref: str, manifest: Manifest) -> None:
        request = Request("PUT", self._manifest_url(ref), headers={"Content-Type": manifest.media_type},
                          body=manifest.raw, scopes=self._push)
        async with self.client.send(request) as resp:
            body = await resp.read(MAX_MANIFEST_BYTES)
            if resp.status not in (200, 201, 202):
                err = registry_error(f"push manifest {self.name}:{ref}", resp.status, body)
                if manifest.is_schema1:
                    err = RegistryError(f"{err} (target refuses Docker schema1 manifests)", status=resp.status)
                raise err

    async def delete_manifest(self, digest: str) -> bool:
        """Delete a manifest by digest (every tag pointing at it goes too). False if it was not there."""
        scopes = frozenset({f"repository:{self.repository}:delete", push_scope(self.repository)})
        async with self.client.send(Request("DELETE", self._manifest_url(digest), scopes=scopes)) as resp:
            body = await resp.read(MAX_MANIFEST_BYTES)
            if resp.status == 404:
                return False
            if resp.status not in (200, 202):
                raise registry_error(f"delete manifest {self.name}@{digest[:19]}", resp.status, body)
        return True

    # -- blobs ------------------------------------------------------------------------------------
    async def blob_size(self, digest: str) -> int | None:
        # A redirect answers "present, served from elsewhere": following it would only cost a CDN request.
        request = Request("HEAD", self.url / "blobs" / digest, scopes=self._pull, follow_redirects=False)
        async with self.client.send(request) as resp:
            if resp.status == 404:
                return None
            if resp.status in REDIRECT_STATUSES:
                return -1
            if resp.status != 200:
                raise registry_error(f"HEAD blob {self.name}@{digest[:19]}", resp.status, b"")
            return resp.content_length if resp.content_length is not None else -1

    @asynccontextmanager
    async def open_blob(self, desc: Descriptor) -> AsyncIterator[AsyncIterator[bytes]]:
        yield self._stream_blob(desc)

    async def _stream_blob(self, desc: Descriptor) -> AsyncIterator[bytes]:
        """Stream a blob (redirects followed, a dropped connection resumed with Range by the stack)."""
        what = f"blob {self.name}@{desc.digest[:19]}"
        received = 0
        async with self.client.send(Request("GET", self.url / "blobs" / desc.digest, scopes=self._pull)) as resp:
            if resp.status != 200:
                raise registry_error(what, resp.status, await resp.read(65536))
            length = resp.content_length
            if length is not None and 0 <= desc.size != length:
                # A source whose blob size differs from the descriptor is lying: fail before the download.
                raise DigestMismatch(
                    f"blob {desc.digest[:19]}… is {length} bytes at the source, its descriptor says {desc.size}"
                )
            try:
                async for chunk in resp.chunks(expected=desc.size if desc.size >= 0 else None):
                    received += len(chunk)
                    yield chunk
            except RangeRefused as exc:
                if exc.status == 416:  # nothing at the offset where the descriptor promised more bytes
                    raise DigestMismatch(
                        f"blob {desc.digest[:19]}… has {received} bytes at the source, its descriptor says {desc.size}"
                    ) from None
                raise

    # -- tags -------------------------------------------------------------------------------------
    @property
    def lists_digests(self) -> bool:
        """ListsTagDigests: this registry's listing carries digests (gcr-style, or the Docker Hub API)."""
        return self.client.method_for(self.host) in ("gcr", "dockerhub")

    async def tag_digests(self) -> dict[str, str | None]:
        """ListsTagDigests: every tag and its digest from one listing (no HEAD per tag)."""
        if self.client.method_for(self.host) == "dockerhub" and self.repository.count("/") == 1:
            api, _ = await self.client.web_api(self.host, "dockerhub")
            if api is not None:
                return await self._hub_tag_digests(api)
        return {tag: info.digest for tag, info in (await self._tags_pages()).items()}

    async def _hub_tag_digests(self, api: str) -> dict[str, str | None]:
        ns, name = self.repository.split("/")
        first = f"{api.rstrip('/')}/v2/namespaces/{ns}/repositories/{name}/tags?page_size=100"
        out: dict[str, str | None] = {}
        async for found in api_pages(self.client.get_json, first, parse_hub_tags):
            out.update({tag: info.digest for tag, info in found.items()})
        return out

    async def list_tags(self) -> list[str]:
        """ListsTags: every tag, following Link pages on this registry only ([] for a missing repository)."""
        return list(await self._tags_pages())

    async def _tags_pages(self) -> dict[str, TagInfo]:
        tags: dict[str, TagInfo] = {}
        url: str | None = str((self.url / "tags" / "list").with_query({"n": "1000"}))
        while url is not None:
            request = Request("GET", URL(url, encoded=True), headers={"Accept": "application/json"},
                              scopes=self._pull)
            async with self.client.send(request) as resp:
                body = await resp.read(MAX_TAGS_PAGE_BYTES)
                if resp.status == 404:
                    return {}
                if resp.status != 200:
                    raise registry_error(f"tags of {self.name}", resp.status, body)
                page_url, headers = str(resp.url), resp.headers
            tags.update(parse_tags_list(page_url, _json(page_url, body)).tags)
            url = next_link(page_url, headers)
        return tags


def _json(url: str, body: bytes) -> object:
    try:
        return json.loads(body)
    except ValueError:
        raise RegistryError(f"tags list at {url}: response is not JSON") from None
