"""gcr.io and Artifact Registry: the extended `tags/list` (tags, `child` repositories, a `manifest` map with
digests and times), walked recursively from the namespace.

Artifact Registry does not paginate this listing and silently cuts any list at 10,000 entries
(cloud.google.com/artifact-registry/quotas; go-containerregistry#1643 saw `n=1000` cut a child list). So we
ask for `n=10000` and treat a list that reaches 10,000 entries as possibly incomplete: that fails, it is
never mirrored as if it were everything.
"""

from __future__ import annotations

from gcrsync.registry.listing_parsers import DiscoveryError, check_repository, parse_tags_list
from gcrsync.registry.pages import Lister, gather
from gcrsync.types import DiscoveredRepo, TagInfo

GOOGLE_LIST_CAP = 10_000


async def list_gcr(lister: Lister) -> list[DiscoveredRepo]:
    # An empty namespace lists the registry root (/v2/tags/list): registry.k8s.io serves its images
    # at top level and forwards the listing to Artifact Registry.
    return await _node(lister, lister.namespace, root=True)


async def _node(lister: Lister, path: str, *, root: bool = False) -> list[DiscoveredRepo]:
    tags: dict[str, TagInfo] = {}
    children: dict[str, None] = {}
    node = f"{path}/" if path else ""
    for page in await lister.link_pages(f"{lister.base}/v2/{node}tags/list?n={GOOGLE_LIST_CAP}"):
        parsed = parse_tags_list(page.url, page.body)
        for what, count in (("tags", parsed.listed_tags), ("child", len(parsed.children)),
                            ("manifest", parsed.listed_manifests)):
            if count >= GOOGLE_LIST_CAP:
                raise DiscoveryError(
                    f"listing {path or '/'}: its {what} list has {count} entries, where Artifact Registry "
                    f"silently cuts lists, so it may be incomplete; mirror its repositories or tags "
                    f"separately (discovery: list) instead of mirroring a possibly partial list")
        merge(tags, parsed.tags)
        for child in parsed.children:
            children[check_repository(page.url, f"{node}{child}")] = None
    found: list[DiscoveredRepo] = []
    # A node is a repository when it holds tags; a childless non-root node is an (empty) repository
    # too. The namespace root with nothing in it is just an empty namespace.
    if tags or (not children and not root):
        found.append(DiscoveredRepo(path, sorted_tags(tags)))
    for below in await gather(_node(lister, child) for child in children):
        found.extend(below)
    return found


def merge(into: dict[str, TagInfo], page: dict[str, TagInfo]) -> None:
    """Add a page's tags, never letting a digest-less mention overwrite what an earlier page knew."""
    for tag, info in page.items():
        if tag not in into or info.digest is not None:
            into[tag] = info


def sorted_tags(tags: dict[str, TagInfo]) -> dict[str, TagInfo]:
    return {tag: tags[tag] for tag in sorted(tags)}
