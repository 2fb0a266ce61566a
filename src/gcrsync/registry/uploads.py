"""Blob uploads and cross-repository mounts for a Repository (split out to keep repository.py small).

An upload is POST (opens a session) then one streamed PUT with the digest: two requests per blob, the
body never buffered. Registries configured `chunked_upload` (or that refused one big PUT with 413) get
PATCH chunks instead.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping

from yarl import URL

from gcrsync.errors import RegistryError
from gcrsync.oci import Descriptor
from gcrsync.registry.auth import pull_scope, push_scope
from gcrsync.registry.connection import Connection
from gcrsync.registry.errors import registry_error
from gcrsync.registry.request import Request
from gcrsync.store import ImageStore

MAX_ERROR_BODY = 65536


class BlobUploads:
    """Mixed into Repository, which provides these attributes."""

    client: Connection
    host: str
    repository: str
    url: URL

    @property
    def name(self) -> str:
        return f"{self.host}/{self.repository}"

    async def _start_upload(self, query: Mapping[str, str], scopes: frozenset[str]) -> tuple[int, URL | None, bytes]:
        url = (self.url / "blobs" / "uploads" / "").with_query(query)
        request = Request("POST", url, headers={"Content-Length": "0"}, body=b"", scopes=scopes)
        async with self.client.send(request) as r:
            body = await r.read(MAX_ERROR_BODY)
            loc = r.headers.get("Location")
            return r.status, (url.join(URL(loc, encoded=True)) if loc else None), body

    async def put_blob(self, desc: Descriptor, chunks: AsyncIterator[bytes]) -> None:
        scopes = frozenset({push_scope(self.repository)})
        status, location, body = await self._start_upload({}, scopes)
        if status != 202 or location is None:
            raise registry_error(f"start upload to {self.name}", status, body)
        if self.host in self.client.chunked_hosts:
            location = await self._patch_chunks(location, chunks, scopes)
            chunks = _empty()
            size = 0
        else:
            size = desc.size
        headers = {"Content-Type": "application/octet-stream"}
        if size >= 0:
            headers["Content-Length"] = str(size)
        final = location.update_query({"digest": desc.digest})
        async with self.client.send(Request("PUT", final, headers=headers, body=chunks, scopes=scopes)) as resp:
            body = await resp.read(MAX_ERROR_BODY)
            if resp.status == 413 and self.host not in self.client.chunked_hosts:
                # The registry refuses one big PUT: switch this host to PATCH chunks; status None tells the
                # BlobMover to start the copy over (the streamed body cannot be replayed here).
                self.client.chunked_hosts.add(self.host)
                raise RegistryError(f"{self.host} refused a {size}-byte upload (413): switching to chunked uploads")
            if resp.status not in (201, 204):
                raise registry_error(f"upload blob {desc.digest[:19]} to {self.name}", resp.status, body)

    async def _patch_chunks(self, location: URL, chunks: AsyncIterator[bytes], scopes: frozenset[str]) -> URL:
        """PATCH the stream in chunk_size pieces (for registries that refuse one big PUT)."""
        offset = 0
        buf = bytearray()
        limit = self.client.chunk_size

        async def flush() -> None:
            nonlocal offset, location, buf
            data = bytes(buf)
            headers = {
                "Content-Type": "application/octet-stream",
                "Content-Range": f"{offset}-{offset + len(data) - 1}",
                "Content-Length": str(len(data)),
            }
            async with self.client.send(Request("PATCH", location, headers=headers, body=data, scopes=scopes)) as r:
                body = await r.read(MAX_ERROR_BODY)
                if r.status != 202:
                    raise registry_error(f"upload chunk to {self.name}", r.status, body)
                loc = r.headers.get("Location")
                location = location.join(URL(loc, encoded=True)) if loc else location
            offset += len(data)
            buf = bytearray()

        async for chunk in chunks:
            buf += chunk
            if len(buf) >= limit:
                await flush()
        if buf:
            await flush()
        return location

    async def mount_blob(self, desc: Descriptor, source: ImageStore) -> bool:
        # Only a repository on this same registry can be mounted from (the sibling is one of ours).
        if not isinstance(source, BlobUploads) or source.host != self.host or source is self:
            return False
        scopes = frozenset({push_scope(self.repository), pull_scope(source.repository)})
        status, _, _ = await self._start_upload({"mount": desc.digest, "from": source.repository}, scopes)
        # 201: mounted. 202: the registry declined and opened an upload session instead (left to expire).
        return status == 201


async def _empty() -> AsyncIterator[bytes]:
    return
    yield b""  # pragma: no cover
