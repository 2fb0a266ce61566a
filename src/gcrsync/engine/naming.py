"""Map a source repository to its target repository, and refuse mappings that collide.

The original gcrsync flattened every namespace onto `gcrxio/<name>`, so istio-release/proxy and
linkerd-io/proxy silently overwrote each other. Here every mode is checked for a valid result, and
detect_collisions() turns any two sources landing on one target into a configuration error before a
single byte is copied.
"""

from __future__ import annotations

import string
from collections import defaultdict
from collections.abc import Iterable

from gcrsync.errors import ConfigError, InvalidReference
from gcrsync.reference import validate_repository

__all__ = ["MODES", "TEMPLATE_FIELDS", "detect_collisions", "map_name", "validate_mode"]

MODES = ("flatten", "preserve", "prefix")
TEMPLATE_FIELDS = frozenset({"registry", "namespace", "path", "name"})


def validate_mode(mode: str) -> None:
    """Raise ConfigError unless mode is a known mode or a template using only the known fields."""
    if mode in MODES:
        return
    if "{" not in mode:
        choices = ", ".join(MODES)
        raise ConfigError(f"unknown naming mode {mode!r} (use {choices} or a template such as '{{name}}')")
    try:
        parsed = list(string.Formatter().parse(mode))
    except ValueError as exc:
        raise ConfigError(f"invalid naming template {mode!r}: {exc}") from None
    for _, field_name, spec, conversion in parsed:
        if field_name is None:
            continue
        # Only bare fields: attribute/index access, conversions or format specs have no use here.
        if field_name not in TEMPLATE_FIELDS:
            known = ", ".join("{" + f + "}" for f in sorted(TEMPLATE_FIELDS))
            what = "{" + field_name + "}"
            raise ConfigError(f"naming template {mode!r}: unsupported field {what} (known: {known})")
        if spec or conversion:
            raise ConfigError(f"naming template {mode!r}: format specs and conversions are not supported")


def _split_host(prefix: str) -> tuple[str, str]:
    """("host", "path") of a target prefix; the first component is a host by the docker rule."""
    first, _, rest = prefix.partition("/")
    if "." in first or ":" in first or first == "localhost":
        return first, rest
    return "", prefix


def _relative(namespace: str, repository: str) -> str:
    if not namespace:
        return repository
    if repository == namespace:
        # The namespace is itself a repository: it maps to its own last component.
        return namespace.rsplit("/", 1)[-1]
    if repository.startswith(namespace + "/"):
        return repository[len(namespace) + 1 :]
    raise ConfigError(f"repository {repository!r} is not under namespace {namespace!r}")


def map_name(mode: str, *, target_prefix: str, registry: str, namespace: str, repository: str) -> str:
    """Target repository (target_prefix/…, host included when the prefix has one) for a source repository.

    flatten:  <prefix>/<relative path with '/' → '_'>     gcr.io/google-containers/pause → <prefix>/pause
    preserve: <prefix>/<relative path>
    prefix:   <prefix>/<registry>_<namespace>_<relative>  with '/' and ':' → '_'
    template: <prefix>/<template with {registry} {namespace} {path} {name}> ({registry} has ':' → '_')
    """
    validate_mode(mode)
    namespace = namespace.strip("/")
    repository = repository.strip("/")
    source = f"{registry}/{repository}"
    if not repository:
        raise ConfigError(f"empty repository name under {registry}/{namespace}")
    rel = _relative(namespace, repository)
    host_safe = registry.lower().replace(":", "_")
    if mode == "flatten":
        mapped = rel.replace("/", "_")
    elif mode == "preserve":
        mapped = rel
    elif mode == "prefix":
        parts = [host_safe, namespace.replace("/", "_"), rel.replace("/", "_")]
        mapped = "_".join(part for part in parts if part)
    else:
        fields = {"registry": host_safe, "namespace": namespace, "path": rel, "name": rel.rsplit("/", 1)[-1]}
        mapped = mode.format_map(fields)
    prefix = target_prefix.strip("/")
    target = f"{prefix}/{mapped}" if prefix else mapped
    # Only the prefix may carry the host: a mapped name like "gcr.io_ns_pause" is a path component.
    host, prefix_path = _split_host(prefix)
    path = f"{prefix_path}/{mapped}" if prefix_path else mapped
    try:
        validate_repository(path)
    except InvalidReference as exc:
        raise ConfigError(f"naming {mode!r} maps {source} to {target!r}, which is not a valid name: {exc}") from None
    if host and any(c in host for c in "@?#\\ "):
        raise ConfigError(f"invalid target registry {host!r} in target prefix {target_prefix!r}")
    return target


def detect_collisions(pairs: Iterable[tuple[str, str]]) -> None:
    """Raise ConfigError if two or more distinct sources map onto one target. Pairs are (source, target)."""
    sources: dict[str, set[str]] = defaultdict(set)
    for source, target in pairs:
        sources[target].add(source)
    clashes = {target: sorted(found) for target, found in sources.items() if len(found) > 1}
    if clashes:
        details = "; ".join(f"{target} ← {', '.join(found)}" for target, found in sorted(clashes.items()))
        count = len(clashes)
        raise ConfigError(f"name collision: {count} target(s) would receive several sources: {details}")
