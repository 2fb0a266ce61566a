"""Sharding: N workers (a Kubernetes Indexed Job, a CI matrix) each mirror a deterministic share of a plan.

No scheduler and no communication between shards: every shard lists the same namespaces and computes the
same split from the listing alone, then plans (HEADs), copies, records and prunes only its own share.

The split assigns whole repositories (a repository's tags and their shared layers stay in one shard, so
in-run dedupe and mounts still work) by *bounded-load rendezvous hashing*:

- each repository ranks the shards by `sha256(key, shard)` (rendezvous / highest-random-weight hashing),
  so its preference order depends on its own name only;
- repositories are placed in an order given by a hash of their names (not by weight, so a tag more or less
  reorders nothing), each on its most preferred shard whose load stays within the cap `(1 + SLACK) × mean`
  (or the heaviest repository's weight, if larger: it has to go somewhere); if none has room, on the least
  loaded shard.

Weight is the number of tags the run would mirror, or their bytes when the listing gives every selected
tag a size. The cap keeps the shards balanced; the rendezvous ranking keeps the split stable: a repository
that appears, disappears or changes weight moves only itself and the few repositories whose preferred shard
it fills or frees (measured in bench/shard_bench.py, bounded in tests/test_shard.py), where
`sorted(repos)[i::N]` or `hash % N` would move most of them. (Placing the heaviest first balances a little
better but moves more: every change of weight reorders the placement.)

A repository the listing does not have (only the ledger does: vanished upstream) belongs to its most
preferred shard, so exactly one shard decides about it.
"""

from __future__ import annotations

import hashlib
import math
import os
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from gcrsync.engine.plan import Plan, PlanItem, SourceSpec, relative_path
from gcrsync.engine.select import select_tags
from gcrsync.errors import ConfigError
from gcrsync.registry.discovery import DiscoveredRepo

SLACK = 0.10  # a shard may carry up to 10% more than the mean before a repository goes to its next choice
HEAVY = 0.25  # see assign()
MAX_SHARDS = 1000

# (index variable, count variable, index base): Kubernetes Indexed Jobs (JOB_COMPLETIONS is not set by
# Kubernetes itself: the manifest sets it to `completions`), GitLab `parallel:`, and our own pair (GitHub
# Actions matrices have no built-in index variable; the workflow sets these).
AUTO_SOURCES = (
    ("JOB_COMPLETION_INDEX", "JOB_COMPLETIONS", 0),
    ("CI_NODE_INDEX", "CI_NODE_TOTAL", 1),
    ("GCRSYNC_SHARD_INDEX", "GCRSYNC_SHARD_COUNT", 0),
)
_SPEC_RE = re.compile(r"^(\d+)/(\d+)$")


@dataclass(frozen=True)
class Shard:
    """Shard `index` (0-based) of `count`."""

    index: int
    count: int

    def __str__(self) -> str:
        return f"{self.index}/{self.count}"

    @classmethod
    def parse(cls, text: str, env: Mapping[str, str] | None = None) -> Shard:
        """`I/N` (0 ≤ I < N) or `auto` (from the environment, see AUTO_SOURCES); ConfigError otherwise."""
        text = text.strip()
        if text == "auto":
            return cls.from_env(os.environ if env is None else env)
        match = _SPEC_RE.match(text)
        if not match:
            raise ConfigError(f"--shard {text!r}: expected I/N (e.g. 0/4, shard I of N counting from 0) or auto")
        return cls._checked(int(match.group(1)), int(match.group(2)), f"--shard {text}")

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> Shard:
        for index_var, count_var, base in AUTO_SOURCES:
            if index_var in env or count_var in env:
                index, count = env.get(index_var, ""), env.get(count_var, "")
                if not (index.isdigit() and count.isdigit()):
                    raise ConfigError(f"--shard auto: {index_var}={index!r} and {count_var}={count!r} must both "
                                      "be set to whole numbers")
                return cls._checked(int(index) - base, int(count), f"--shard auto ({index_var}={index}, "
                                    f"{count_var}={count})")
        names = ", ".join(f"{i} and {c}" for i, c, _ in AUTO_SOURCES)
        raise ConfigError(f"--shard auto: none of {names} is set")

    @classmethod
    def _checked(cls, index: int, count: int, what: str) -> Shard:
        if not 1 <= count <= MAX_SHARDS:
            raise ConfigError(f"{what}: the shard count must be between 1 and {MAX_SHARDS}")
        if not 0 <= index < count:
            raise ConfigError(f"{what}: the shard index must be between 0 and {count - 1}")
        return cls(index, count)


def _rank(key: str, count: int) -> list[int]:
    """The shards in this key's order of preference (rendezvous hashing)."""
    def score(shard: int) -> bytes:
        return hashlib.sha256(f"{key}\0{shard}".encode()).digest()
    return sorted(range(count), key=score, reverse=True)


def preferred(key: str, count: int) -> int:
    return _rank(key, count)[0]


def assign(weights: Mapping[str, int], count: int, slack: float = SLACK) -> dict[str, int]:
    """key → shard, for keys with a weight (see the module docstring). Deterministic for equal input."""
    if count <= 1:
        return dict.fromkeys(weights, 0)
    total = sum(weights.values())
    cap = max(math.ceil(total / count * (1 + slack)), max(weights.values(), default=0))
    loads = [0] * count
    out: dict[str, int] = {}
    # Giants first (a repository of at least HEAVY of a shard's mean share, heaviest first): placed late they
    # would find no shard with room and land on whichever is least loaded, which any small change elsewhere
    # alters. The rest in a hash order, neither by weight (see the module docstring) nor by name (similar
    # names would cluster).
    giant = total / count * HEAVY
    order = sorted(weights, key=lambda k: (-weights[k] if weights[k] >= giant else 0,
                                           hashlib.sha256(k.encode()).digest()))
    for key in order:
        ranks = _rank(key, count)
        weight = weights[key]
        shard = next((s for s in ranks if loads[s] + weight <= cap), None)
        if shard is None:
            shard = min(ranks, key=lambda s: loads[s])  # ranks order breaks ties deterministically
        out[key] = shard
        loads[shard] += weight
    return out


def repo_key(spec: SourceSpec, rel: str) -> str:
    """A repository's identity in the split: its namespace and its path in it (like the ledger's key)."""
    return f"{spec.label}\0{rel}"


@dataclass
class RepoShare:
    spec: SourceSpec
    rel: str
    tags: int
    bytes: int | None  # None when the listing lacks a size for some selected tag
    shard: int


@dataclass
class Split:
    """The split of one run's listings into `count` shares."""

    count: int
    by_bytes: bool  # weights are bytes (every selected tag had a size), else tag counts
    repos: list[RepoShare] = field(default_factory=list)
    _owner: dict[str, int] = field(default_factory=dict)  # repo_key → shard, of the listed repositories

    def owner(self, spec: SourceSpec, rel: str) -> int:
        """The shard that mirrors, records and prunes this repository (listed or not)."""
        key = repo_key(spec, rel)
        found = self._owner.get(key)
        return preferred(key, self.count) if found is None else found

    def loads(self, unit: str = "tags") -> list[int]:
        out = [0] * self.count
        for repo in self.repos:
            out[repo.shard] += repo.tags if unit == "tags" else (repo.bytes or 0)
        return out


def balance(loads: Iterable[int]) -> float:
    """max/mean of the loads (1.0 is perfect); 1.0 for nothing to share."""
    values = list(loads)
    mean = sum(values) / len(values) if values else 0
    return max(values) / mean if mean else 1.0


def split_listings(listings: Iterable[tuple[SourceSpec, list[DiscoveredRepo]]], count: int) -> Split:
    """Weigh every listed repository by the tags this run would mirror, then assign() them.

    Each namespace is split on its own (balanced namespaces add up to balanced shards): a namespace whose
    listing failed in one shard but not in another must not move the repositories of the others."""
    split = Split(count, by_bytes=True)
    for spec, listing in listings:
        repos: list[RepoShare] = []
        for repo in listing:
            selected = select_tags(repo.tags, spec.policy)
            sizes = [repo.tags[t].size for t in selected]
            known = None if any(s is None for s in sizes) else sum(s or 0 for s in sizes)
            repos.append(RepoShare(spec, relative_path(spec.namespace, repo.repository), len(selected), known, 0))
        by_bytes = all(r.bytes is not None for r in repos) and any(r.bytes for r in repos)
        split.by_bytes = split.by_bytes and by_bytes
        weights = {repo_key(r.spec, r.rel): (r.bytes or 0) if by_bytes else r.tags for r in repos}
        owners = assign(weights, count)
        for r in repos:
            r.shard = owners[repo_key(r.spec, r.rel)]
        split.repos.extend(repos)
        split._owner.update(owners)
    split.by_bytes = split.by_bytes and bool(split.repos)
    return split


@dataclass
class ShardedPlan(Plan):
    """One shard's plan, plus where the other shards' copies can be found at the target first."""

    peers: dict[str, list[str]] = field(default_factory=dict)  # target domain → repository paths


def peer_repositories(everything: list[PlanItem], split: Split, me: int) -> dict[str, list[str]]:
    """For each other shard, the target repository of its first item in plan order: the one it copies (or
    already holds) first, so by the time this shard needs a widely shared layer it is most likely there.
    Registry targets only (a layout is local to the machine that writes it)."""
    firsts: dict[int, str] = {}
    for item in everything:
        shard = split.owner(item.spec, item.rel)
        if shard != me and shard not in firsts and not item.target_repo.startswith("oci:"):
            firsts[shard] = item.target_repo
    peers: dict[str, list[str]] = {}
    for _, target in sorted(firsts.items()):
        host, _, path = target.partition("/")
        peers.setdefault(host, []).append(path)
    return peers


def plan_peers(plan: Plan) -> dict[str, list[str]]:
    return plan.peers if isinstance(plan, ShardedPlan) else {}
