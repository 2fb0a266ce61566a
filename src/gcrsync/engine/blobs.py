"""Run-wide blob work: verify while streaming, fetch each blob from the source once, mount it elsewhere.

A layer shared by ten target repositories is pulled once; the other nine get a cross-repository mount
(or see it already present). Concurrent requests for the same blob wait for the one already in flight.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import random
from collections.abc import AsyncIterator, Callable

from gcrsync.engine.blobcache import BlobLocations
from gcrsync.engine.result import ImageResult
from gcrsync.errors import DigestMismatch, GcrsyncError, RegistryError
from gcrsync.oci import Descriptor, new_hasher
from gcrsync.registry.transport import RETRY_STATUSES
from gcrsync.store import CountsRequests, ImageStore, OpensSiblings

log = logging.getLogger("gcrsync.blobs")

UPLOAD_ATTEMPTS = 4  # tries at one blob copy when the target fails the (unreplayable) upload
UPLOAD_BACKOFF = 0.2  # seconds before the first restart; doubles each time, with jitter
# A mount attempt at a peer costs one request whether or not the peer holds the blob: worth it only where a
# pull would cost more than a few requests.
PEER_MIN_SIZE = 1024 * 1024
PEER_TRIES = 3


async def verified(
    chunks: AsyncIterator[bytes],
    desc: Descriptor,
    on_bytes: Callable[[int], None] | None = None,
    failures: list[GcrsyncError] | None = None,
) -> AsyncIterator[bytes]:
    """Pass chunks through, checking size and digest; the last chunk is held back until both verify.

    Holding it back means a bad blob never reaches the target as a complete upload: the request is cut
    short instead of being committed (the registry would refuse it too, but a layout or a lax registry
    should not have to). The HTTP stack may wrap an exception raised inside a request body, so the
    mismatch (or the source stream's own GcrsyncError) is also appended to `failures` for the caller to
    re-raise as it is.
    """

    def fail(message: str) -> DigestMismatch:
        err = DigestMismatch(message)
        if failures is not None:
            failures.append(err)
        return err

    hasher = new_hasher(desc.digest)
    total = 0
    pending: bytes | None = None
    source = aiter(chunks)
    while True:
        try:
            chunk = await anext(source)
        except StopAsyncIteration:
            break
        except GcrsyncError as exc:  # the source's own clear error (size lie, transfer kept failing)
            if failures is not None:
                failures.append(exc)
            raise
        if not chunk:
            continue
        total += len(chunk)
        if 0 <= desc.size < total:
            raise fail(f"blob {desc.digest[:19]}… is larger than its descriptor's {desc.size} bytes")
        hasher.update(chunk)
        if pending is not None:
            yield pending
            if on_bytes:
                on_bytes(len(pending))
        pending = chunk
    if desc.size >= 0 and total != desc.size:
        raise fail(f"blob {desc.digest[:19]}… has {total} bytes, its descriptor says {desc.size}")
    actual = f"{desc.digest.split(':', 1)[0]}:{hasher.hexdigest()}"
    if actual != desc.digest:
        raise fail(f"blob {desc.digest[:19]}… from the source hashes to {actual[:19]}…: refused")
    if pending is not None:
        yield pending
        if on_bytes:
            on_bytes(len(pending))


class BlobMover:
    """Shared by every image copy of a run."""

    def __init__(self, jobs: int = 4, on_bytes: Callable[[int], None] | None = None,
                 locations: BlobLocations | None = None, on_start: Callable[[int], None] | None = None,
                 peers: dict[str, list[str]] | None = None, peer_min_size: int = PEER_MIN_SIZE) -> None:
        # Other workers' target repositories (domain → repository paths), e.g. the repository each other shard
        # of a sharded sync copies first: a blob of at least peer_min_size bytes is mounted from one of them
        # when it holds it, instead of being pulled from the source again (the target is the rendezvous).
        self.peers = peers or {}
        self.peer_min_size = peer_min_size
        self.peer_mounts = 0  # blobs mounted from a peer's repository (report)
        self.on_start = on_start  # told each transfer's size as it begins (progress totals)
        self.locations = locations  # remembered across runs; None in library use unless given
        self._transfers = asyncio.Semaphore(max(1, jobs))
        self.on_bytes = on_bytes
        self._present: set[tuple[str, str]] = set()  # (store name, digest) known present at the target
        self._holders: dict[tuple[str, str], list[ImageStore]] = {}  # (domain, digest) → stores holding it
        self._inflight: dict[tuple[str, str], asyncio.Future[ImageStore]] = {}  # (store name, digest)
        self._domain_inflight: dict[tuple[str, str], asyncio.Future[ImageStore]] = {}  # (domain, digest)
        self.bytes_pulled = 0
        self.pulls: dict[str, int] = {}  # digest → times fetched from a source (tests, bench, reports)
        self.pulled_bytes: dict[str, int] = {}  # digest → bytes fetched from a source, all attempts

    def _remember(self, store: ImageStore, digest: str) -> None:
        if (store.name, digest) in self._present:
            return
        # Only a place that can reopen a sibling by name can use the hint in a later run.
        if self.locations is not None and isinstance(store, OpensSiblings):
            self.locations.add(store.domain, digest, store.repository)
        self._present.add((store.name, digest))
        holders = self._holders.setdefault((store.domain, digest), [])
        if all(h.name != store.name for h in holders):
            holders.append(store)

    async def ensure(self, desc: Descriptor, src: ImageStore, dst: ImageStore, result: ImageResult) -> None:
        """Make sure dst holds desc's blob: skip if present, mount if a sibling holds it, else copy.

        One placement per (target repository, blob) at a time: concurrent images of one repository wait for
        the first instead of mounting the same blob side by side (registries fail such duplicate mounts
        under load). While no repository of the domain holds the blob yet, the first placement in the
        domain is waited for too, so the blob is pulled once and mounted everywhere else.
        """
        key = (dst.name, desc.digest)
        domain_key = (dst.domain, desc.digest)
        while True:
            if key in self._present:
                result.blobs_skipped += 1
                return
            waiting = self._inflight.get(key)
            if waiting is None and not self._holders.get(domain_key):
                waiting = self._domain_inflight.get(domain_key)
            if waiting is None:
                break
            with contextlib.suppress(GcrsyncError):  # if that one failed, we try on our own
                await asyncio.shield(waiting)
        future: asyncio.Future[ImageStore] = asyncio.get_running_loop().create_future()
        self._inflight[key] = future
        leads_domain = domain_key not in self._domain_inflight and not self._holders.get(domain_key)
        if leads_domain:
            self._domain_inflight[domain_key] = future
        try:
            await self._place(desc, src, dst, result)
            future.set_result(dst)
        except BaseException as exc:
            future.set_exception(exc if isinstance(exc, GcrsyncError) else GcrsyncError(str(exc)))
            future.exception()  # mark retrieved: followers may not exist
            raise
        finally:
            del self._inflight[key]
            if leads_domain:
                del self._domain_inflight[domain_key]

    async def _place(self, desc: Descriptor, src: ImageStore, dst: ImageStore, result: ImageResult) -> None:
        # A sibling repository filled earlier in this run: mount straight away. A mount of a blob the
        # repository already holds succeeds too, so the existence HEAD would only cost a request.
        for holder in list(self._holders.get((dst.domain, desc.digest), [])):
            if holder.name != dst.name and await dst.mount_blob(desc, holder):
                self._remember(dst, desc.digest)
                result.blobs_mounted += 1
                return
        if await dst.blob_size(desc.digest) is not None:
            self._remember(dst, desc.digest)
            result.blobs_skipped += 1
            return
        if await self._mount_remembered(desc, dst):
            result.blobs_mounted += 1
            return
        if await self._mount_from_peers(desc, dst):
            result.blobs_mounted += 1
            return
        # Cross-repo mount from the source itself, when source and target share a registry.
        if src.domain == dst.domain and src.name != dst.name and await dst.mount_blob(desc, src):
            self._remember(dst, desc.digest)
            result.blobs_mounted += 1
            return
        async with self._transfers:
            refetched = False
            for attempt in range(UPLOAD_ATTEMPTS):
                from_source: list[GcrsyncError] = []
                try:
                    counted = await self._transfer(desc, src, dst, from_source)
                    break
                except DigestMismatch as exc:
                    # Proxies and CDNs do corrupt bytes in transit: fetch once more before failing the image.
                    # The bad bytes were never committed (the last chunk waits for the digest check).
                    if refetched or attempt == UPLOAD_ATTEMPTS - 1:
                        raise
                    refetched = True
                    if isinstance(dst, CountsRequests):
                        dst.note_retry("blob-corrupt")
                    log.warning("fetching %s once more: %s", desc.digest[:19], exc)
                except RegistryError as exc:
                    # A streamed upload cannot be replayed by the transport: a 5xx/429 or a dropped connection
                    # on it starts the copy over (fresh source stream, fresh upload session). Not so for the
                    # source's own failure: the transport already retried and resumed that download, and
                    # starting over would multiply those attempts (a source that never answers would hold
                    # the image for UPLOAD_ATTEMPTS times the transport's whole retry budget).
                    if (attempt == UPLOAD_ATTEMPTS - 1 or exc in from_source
                            or not (exc.status is None or exc.status in RETRY_STATUSES)):
                        raise
                    if isinstance(dst, CountsRequests):  # counted with the run's other retries, for the report
                        dst.note_retry("upload-restart")
                    log.info("restarting upload of %s to %s: %s", desc.digest[:19], dst.name, exc)
                    await asyncio.sleep(UPLOAD_BACKOFF * 2**attempt * random.uniform(0.5, 1.0))
        self._remember(dst, desc.digest)
        result.blobs_copied += 1
        result.bytes_copied += counted

    async def _mount_remembered(self, desc: Descriptor, dst: ImageStore) -> bool:
        """Mount from a repository an earlier run saw holding the blob (a hint: stale ones are dropped)."""
        if self.locations is None or not isinstance(dst, OpensSiblings):
            return False
        for name in self.locations.holders(dst.domain, desc.digest):
            if name == dst.repository:
                continue
            if await dst.mount_blob(desc, dst.sibling(name)):
                self._remember(dst, desc.digest)
                return True
            self.locations.forget(dst.domain, desc.digest, name)
        return False

    async def _mount_from_peers(self, desc: Descriptor, dst: ImageStore) -> bool:
        if desc.size < self.peer_min_size or not isinstance(dst, OpensSiblings):
            return False
        # At most PEER_TRIES attempts per blob whatever the number of shards; which peers, a hash of the digest
        # decides (a widely shared layer is soon in most of them, so any few will do).
        names = [n for n in self.peers.get(dst.domain, ()) if n != dst.repository]
        names.sort(key=lambda n: hashlib.sha256(f"{desc.digest}\0{n}".encode()).digest())
        for name in names[:PEER_TRIES]:
            if await dst.mount_blob(desc, dst.sibling(name)):
                self._remember(dst, desc.digest)
                self.peer_mounts += 1
                return True
        return False

    async def _transfer(self, desc: Descriptor, src: ImageStore, dst: ImageStore,
                        failures: list[GcrsyncError]) -> int:
        """One attempt at streaming a blob from src into dst, verified on the way; returns its size.

        `failures` receives the source's own errors and digest mismatches (see `verified`)."""
        self.pulls[desc.digest] = self.pulls.get(desc.digest, 0) + 1
        if self.on_start is not None and desc.size > 0:
            self.on_start(desc.size)
        counted = 0

        def count(n: int) -> None:
            nonlocal counted
            counted += n
            if self.on_bytes:
                self.on_bytes(n)

        opened = False
        try:
            async with src.open_blob(desc) as chunks:
                opened = True
                try:
                    await dst.put_blob(desc, verified(chunks, desc, count, failures))
                except Exception:
                    if failures:
                        raise failures[0] from None
                    raise
        except GcrsyncError as exc:
            if not opened:
                failures.append(exc)  # the source GET itself failed (after the transport's own retries)
            raise
        finally:
            self.bytes_pulled += counted
            self.pulled_bytes[desc.digest] = self.pulled_bytes.get(desc.digest, 0) + counted
        return counted
