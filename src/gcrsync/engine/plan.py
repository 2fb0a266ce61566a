"""Plan a namespace sync: what exists at the source, what the target holds, and what to do per tag.

Digests come from the listing when the registry gives them (gcr.io, Docker Hub, quay), else from a
manifest HEAD — never a GET, since GETs count against Docker Hub's pull quota. The target side is one of:

- a full verification: a HEAD per tag (the target's real digest);
- presence: one `tags/list` per target repository; a listed tag holds what the ledger recorded for it
  (a tag the ledger does not know is HEADed, an absent one is new) — so a tag gone at the target is
  noticed, a tag re-pointed to another digest at the target is not until the next full verification;
- the ledger's record alone when `trust_ledger` is on (no target request at all).

Where the target's listing carries digests (Artifact Registry, the Docker Hub API: ListsTagDigests), that
one listing per repository gives each tag's real digest, in both modes: exact at the presence check's cost.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Literal

from gcrsync.engine.artifacts import ArtifactPolicy
from gcrsync.engine.naming import detect_collisions, map_name
from gcrsync.engine.select import TagPolicy, is_digest_tag, select_tags
from gcrsync.errors import error_text
from gcrsync.oci import Platform
from gcrsync.store import ImageStore, ListsTagDigests, ListsTags

if TYPE_CHECKING:
    from gcrsync.registry.discovery import DiscoveredRepo, Method

log = logging.getLogger("gcrsync.plan")

# "held": removed upstream, but the sync's removal guard kept it (nothing recorded or pruned for it).
State = Literal["new", "changed", "unchanged", "removed", "held", "error"]


@dataclass
class SourceSpec:
    """One `sync:` entry after defaults are applied."""

    registry: str
    namespace: str
    target_prefix: str  # "localhost:5001/mirror" or "oci:/path/dir"
    naming: str = "flatten"
    policy: TagPolicy = field(default_factory=TagPolicy)
    platforms: list[Platform] = field(default_factory=list)
    discovery: Method = "auto"
    repositories: list[str] = field(default_factory=list)
    artifacts: ArtifactPolicy = field(default_factory=ArtifactPolicy)

    @property
    def label(self) -> str:
        return f"{self.registry}/{self.namespace}" if self.namespace else self.registry


@dataclass(slots=True)  # one per tag: 50,000 of them in a large namespace
class PlanItem:
    spec: SourceSpec
    source_repo: str  # full path at the source registry
    rel: str  # path relative to the namespace (the ledger's image key)
    tag: str
    target_repo: str  # full target location: "host/path" or "oci:/dir/name"
    source_digest: str | None = None
    target_digest: str | None = None  # what the target (or the ledger) holds now
    state: State = "new"
    error: str | None = None
    sparse: bool = False  # the listing says this tag's index is sparse (quay): absent children are expected
    # The repository's digest-named tags (cosign's `sha256-<hex>.sig`, the referrers fallback tag), from
    # the listing the run already has: finding what is attached to this tag then costs no request.
    attached_tags: tuple[str, ...] = ()

    @property
    def source(self) -> str:
        return f"{self.spec.registry}/{self.source_repo}:{self.tag}"

    @property
    def target(self) -> str:
        return f"{self.target_repo}:{self.tag}"


@dataclass
class Plan:
    items: list[PlanItem] = field(default_factory=list)

    def by_state(self, state: State) -> list[PlanItem]:
        return [i for i in self.items if i.state == state]

    @property
    def work(self) -> list[PlanItem]:
        return [i for i in self.items if i.state in ("new", "changed")]

    def counts(self) -> dict[str, int]:
        out = {s: 0 for s in ("new", "changed", "unchanged", "removed", "held", "error")}
        for item in self.items:
            out[item.state] += 1
        return out


def relative_path(namespace: str, repository: str) -> str:
    if not namespace:
        return repository
    if repository == namespace:
        return namespace.rsplit("/", 1)[-1]
    return repository[len(namespace) + 1 :] if repository.startswith(namespace + "/") else repository


def target_location(spec: SourceSpec, repository: str) -> str:
    """Full target repository ("host/path" or "oci:/dir/path") for a source repository."""
    if spec.target_prefix.startswith("oci:"):
        rel = map_name(spec.naming, target_prefix="oci.local/x", registry=spec.registry,
                       namespace=spec.namespace, repository=repository)
        return spec.target_prefix.rstrip("/") + "/" + rel.split("/", 2)[2]
    return map_name(spec.naming, target_prefix=spec.target_prefix, registry=spec.registry,
                    namespace=spec.namespace, repository=repository)


def build_items(spec: SourceSpec, repos: Iterable[DiscoveredRepo]) -> list[PlanItem]:
    items: list[PlanItem] = []
    for repo in repos:
        target = target_location(spec, repo.repository)
        attached = tuple(t for t in repo.tags if is_digest_tag(t)) if spec.artifacts.enabled else ()
        for tag in select_tags(repo.tags, spec.policy):
            info = repo.tags[tag]
            items.append(
                PlanItem(spec, repo.repository, relative_path(spec.namespace, repo.repository), tag, target,
                         source_digest=info.digest, sparse=info.sparse, attached_tags=attached)
            )
    return items


def check_collisions(items: Iterable[PlanItem]) -> None:
    """Two source repositories onto one target repository: refused for the whole plan, before any push."""
    pairs = {(f"{i.spec.registry}/{i.source_repo}", i.target_repo) for i in items}
    detect_collisions(sorted(pairs))


LedgerLookup = Callable[[PlanItem], "tuple[str, str | None] | None"]  # → (target digest, source digest)


TagDigests = dict[str, str | None]  # tag → digest, when the listing says (else None)


class TargetTags:
    """The tags of each target repository, listed once per run and shared by its items (presence checks),
    with their digests where the registry's listing carries them (ListsTagDigests: Artifact Registry, the
    Docker Hub API), which makes the check exact at the same cost.

    None for a store that cannot list its tags, or whose listing failed: its items are HEADed instead.
    """

    def __init__(self) -> None:
        self._listed: dict[str, asyncio.Task[TagDigests | None] | None] = {}
        self._digests: dict[str, bool] = {}

    def has_digests(self, store: ImageStore) -> bool:
        """Whether the store's listing carries digests (then even a full verification lists, not HEADs)."""
        if store.name not in self._digests:
            self._digests[store.name] = isinstance(store, ListsTagDigests) and store.lists_digests
        return self._digests[store.name]

    async def of(self, store: ImageStore) -> TagDigests | None:
        name = store.name
        if name not in self._listed:  # isinstance on a runtime protocol is slow: once per repository
            task = None
            if self.has_digests(store):
                task = asyncio.ensure_future(self._list_digests(store, name))  # type: ignore[arg-type]
            elif isinstance(store, ListsTags):
                task = asyncio.ensure_future(self._list(store, name))
            self._listed[name] = task
        task = self._listed[name]
        return None if task is None else await asyncio.shield(task)

    def close(self) -> None:
        """Cancel listings still running (the plan was cancelled): no task outlives it."""
        for task in self._listed.values():
            if task is not None and not task.done():
                task.cancel()

    @staticmethod
    async def _list(store: ListsTags, name: str) -> TagDigests | None:
        try:
            return dict.fromkeys(await store.list_tags())
        except Exception as exc:  # the HEADs decide instead, tag by tag, as a full verification would
            log.warning("tags of %s could not be listed (%s): checking its tags one by one", name, error_text(exc))
            return None

    @staticmethod
    async def _list_digests(store: ListsTagDigests, name: str) -> TagDigests | None:
        try:
            return await store.tag_digests()
        except Exception as exc:
            log.warning("tags of %s could not be listed (%s): checking its tags one by one", name, error_text(exc))
            return None


async def resolve_digests(
    items: list[PlanItem],
    *,
    open_source: Callable[[PlanItem], ImageStore],
    open_target: Callable[[PlanItem], ImageStore],
    ledger_lookup: LedgerLookup,
    trust_ledger: bool,
    query_jobs: int,
    verify_target: Callable[[PlanItem], bool] = lambda item: True,
) -> None:
    """Fill in source and target digests (HEADs and tag lists only) and decide each item's state.

    `verify_target(item)` true: the target tag is HEADed (a full verification). False: the target
    repository's tag list says whether the tag is there, and the ledger's record what it holds.
    """
    listed = TargetTags()

    async def target_digest(item: PlanItem, record: tuple[str, str | None] | None) -> str | None:
        target = open_target(item)
        full = verify_target(item)
        if not full or listed.has_digests(target):
            tags = await listed.of(target)
            if tags is not None and item.tag not in tags:
                return None  # gone at the target (or never there): copied again
            if tags is not None and tags[item.tag] is not None:
                return tags[item.tag]  # the listing says what the tag holds: exact, no HEAD
            if tags is not None and record is not None and not full:
                return record[0]  # present: holds what the ledger recorded (see the module docstring)
        desc = await target.head_manifest(item.tag)
        return desc.digest if desc else None

    async def one(item: PlanItem) -> None:
        try:
            record = ledger_lookup(item)
            if record is not None and item.spec.policy.is_immutable(item.tag):
                # Declared immutable and already mirrored: no request at either end.
                item.target_digest = record[0]
                item.source_digest = item.source_digest or record[1] or record[0]
                item.state = "unchanged"
                return
            if item.source_digest is None:
                desc = await open_source(item).head_manifest(item.tag)
                if desc is None:
                    item.state, item.error = "error", "tag vanished at the source during planning"
                    return
                item.source_digest = desc.digest
            filtered = bool(item.spec.platforms)
            if trust_ledger and record is not None:
                item.target_digest = record[0]
            else:
                digest = await target_digest(item, record)
                # A HEAD's digest is a new string per tag: the source's when equal, so a full verification
                # keeps one string per unchanged tag, not two (~6 MB at 50,000 tags).
                item.target_digest = item.source_digest if digest == item.source_digest else digest
            if item.target_digest is None:
                item.state = "new"
                return
            # With a platform subset the target digest differs from the source's by design; compare the
            # source digest the ledger recorded for that target digest instead (zot#4042's re-sync loop).
            # A sparse index the target refused is mirrored without its absent children: a digest of its own
            # too, matched the same way.
            recorded = record is not None and record[0] == item.target_digest and record[1] == item.source_digest
            same = recorded if filtered else item.target_digest == item.source_digest or (item.sparse and recorded)
            item.state = "unchanged" if same else "changed"
        except Exception as exc:  # one bad tag must not sink the plan; reported per item
            item.state, item.error = "error", error_text(exc)

    # `query_jobs` workers take the items in turn: one coroutine per worker, not one task per tag (50,000 tasks
    # would cost ~100 MB and scheduling time; bench/largens.py).
    todo = iter(items)

    async def worker() -> None:
        for item in todo:
            await one(item)

    try:
        await asyncio.gather(*(worker() for _ in range(max(1, min(query_jobs, len(items))))))
    finally:
        listed.close()
