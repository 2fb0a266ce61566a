"""OCI 1.1 referrers for a Repository: the referrers API, and the fallback tag for registries without it.

Spec (opencontainers/distribution-spec v1.1 `spec.md`, "Listing Referrers" and "Referrers Tag Schema"):
`GET /v2/<name>/referrers/<digest>[?artifactType=…]` answers an OCI image index of the manifests whose
`subject` is that digest, paged with `Link`; `OCI-Filters-Applied: artifactType` says the filter was applied
(else the client filters). A registry without the API answers 404; clients then read, and pushers maintain,
the index tagged `<alg>-<hex>` (hex cut to 64 characters). A registry that indexes a pushed manifest's
subject itself says so with an `OCI-Subject` header on the PUT.
"""

from __future__ import annotations

import asyncio
import json
import logging
from typing import Any

from yarl import URL

from gcrsync.errors import ManifestError, RegistryError
from gcrsync.oci import MAX_MANIFEST_BYTES, OCI_INDEX, fallback_tag, parse_manifest
from gcrsync.registry.auth import pull_scope, push_scope
from gcrsync.registry.connection import Connection
from gcrsync.registry.errors import registry_error
from gcrsync.registry.listing_parsers import next_link
from gcrsync.registry.request import Request

log = logging.getLogger("gcrsync.referrers")

MAX_PAGES = 1000
FALLBACK_ATTEMPTS = 5  # read-modify-write rounds of the fallback tag when another writer races us

Referrer = dict[str, Any]  # one index entry: mediaType, digest, size, artifactType, annotations


def _entries(where: str, body: bytes) -> list[Referrer]:
    try:
        doc = json.loads(body)
    except ValueError:
        raise RegistryError(f"{where}: not JSON") from None
    manifests = doc.get("manifests") if isinstance(doc, dict) else None
    if not isinstance(manifests, list):
        raise RegistryError(f"{where}: not an image index")
    out = []
    for item in manifests:
        if not isinstance(item, dict) or not isinstance(item.get("digest"), str):
            raise RegistryError(f"{where}: malformed referrer entry")
        out.append(item)
    return out


class Referrers:
    """Mixed into Repository, which provides these attributes."""

    client: Connection
    host: str
    repository: str
    url: URL

    async def referrers(self, digest: str, artifact_type: str | None = None) -> list[Referrer] | None:
        """The referrers of `digest` through the API, or None when the registry has no referrers API.

        A registry's answer to "do you have the API" is remembered for the run (per host, on the client), so
        a source without it costs one request per run, not one per image."""
        if self.host not in self.client.referrers_api:
            # The first ask of a host goes alone: concurrent images would each pay the 404 otherwise.
            async with self.client.referrers_probe.setdefault(self.host, asyncio.Lock()):
                if self.host not in self.client.referrers_api:
                    return await self._referrers(digest, artifact_type)
        if self.client.referrers_api[self.host] is False:
            return None
        return await self._referrers(digest, artifact_type)

    async def _referrers(self, digest: str, artifact_type: str | None) -> list[Referrer] | None:
        where = f"referrers of {self.host}/{self.repository}@{digest[:19]}"
        first = self.url / "referrers" / digest
        url: str | None = str(first.with_query({"artifactType": artifact_type}) if artifact_type else first)
        found: list[Referrer] = []
        filtered = False
        pages = 0
        while url is not None:
            pages += 1
            if pages > MAX_PAGES:
                raise RegistryError(f"{where}: pagination never ends")
            request = Request("GET", URL(url, encoded=True), headers={"Accept": OCI_INDEX},
                              scopes=frozenset({pull_scope(self.repository)}))
            async with self.client.send(request) as resp:
                body = await resp.read(MAX_MANIFEST_BYTES)
                if resp.status == 404 and pages == 1:
                    # distribution 2.8 and most registries before 2024 (its routes answer 404, some with an
                    # OCI NAME_UNKNOWN body): no API. Subjects asked about are of images just listed there.
                    self.client.referrers_api[self.host] = False
                    return None
                if resp.status != 200:
                    raise registry_error(where, resp.status, body)
                self.client.referrers_api[self.host] = True
                filtered = filtered or "artifacttype" in resp.headers.get("OCI-Filters-Applied", "").lower()
                answered, headers = str(resp.url), resp.headers
            found += _entries(where, body)
            url = next_link(answered, headers)
        if artifact_type and not filtered:
            found = [r for r in found if r.get("artifactType") == artifact_type]
        return found

    async def fallback_referrers(self, digest: str) -> tuple[list[Referrer], str | None]:
        """The entries of the referrers tag of `digest` and that index's digest ([], None when absent)."""
        tag = fallback_tag(digest)
        request = Request("GET", self.url / "manifests" / tag, headers={"Accept": OCI_INDEX},
                          scopes=frozenset({pull_scope(self.repository)}))
        async with self.client.send(request) as resp:
            body = await resp.read(MAX_MANIFEST_BYTES)
            if resp.status == 404:
                return [], None
            if resp.status != 200:
                raise registry_error(f"referrers tag {tag} of {self.host}/{self.repository}", resp.status, body)
        try:
            index = parse_manifest(body, resp.headers.get("Content-Type"))
        except ManifestError as exc:
            raise RegistryError(f"referrers tag {tag} of {self.host}/{self.repository}: {exc}") from None
        return _entries(f"referrers tag {tag}", body), index.digest

    async def add_fallback_referrers(self, digest: str, entries: list[Referrer]) -> bool:
        """Make the referrers tag of `digest` list `entries` too (read-modify-write, idempotent).

        Registries offer no conditional PUT, so a concurrent writer can overwrite our update: after each
        write the tag is read again and the merge repeated until every entry is there (or attempts run out).
        A writer that read before our write and writes after our check can still drop our entry; since every
        run adds the entries of the artifacts it mirrors again (a no-op when they are there), the next run
        restores it. Returns True when the tag was changed.
        """
        changed = False
        for _attempt in range(FALLBACK_ATTEMPTS):
            current, _ = await self.fallback_referrers(digest)
            have = {e["digest"] for e in current}
            missing = [e for e in entries if e["digest"] not in have]
            if not missing:
                return changed
            doc = {"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": current + missing}
            raw = json.dumps(doc, separators=(",", ":"), sort_keys=True).encode()
            tag = fallback_tag(digest)
            request = Request("PUT", self.url / "manifests" / tag, headers={"Content-Type": OCI_INDEX}, body=raw,
                              scopes=frozenset({push_scope(self.repository)}))
            async with self.client.send(request) as resp:
                answer = await resp.read(MAX_MANIFEST_BYTES)
                if resp.status not in (200, 201, 202):
                    raise registry_error(f"push referrers tag {tag} to {self.host}/{self.repository}",
                                         resp.status, answer)
            changed = True
        current, _ = await self.fallback_referrers(digest)
        if {e["digest"] for e in entries} - {e["digest"] for e in current}:
            raise RegistryError(f"referrers tag {fallback_tag(digest)} of {self.host}/{self.repository}: another "
                                f"writer kept replacing it ({FALLBACK_ATTEMPTS} attempts)")
        return changed

    async def has_referrers_api(self) -> bool:
        """Whether this registry serves the referrers API (asked once per host and run)."""
        known = self.client.referrers_api.get(self.host)
        if known is None:
            known = await self.referrers("sha256:" + "0" * 64) is not None
        return known
