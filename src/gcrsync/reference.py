"""Image references: parse and normalise ``[registry[:port]/]path[:tag][@digest]``.

The grammar and normalisation follow distribution/reference (v0.6) ``ParseNormalizedNamed``, so that a name
means here exactly what it means to ``docker pull``:

* the first ``/``-separated component is a registry if it contains ``.`` or ``:``, is ``localhost``, or
  contains an uppercase letter (repository paths are lowercase, so ``Foo/bar`` can only mean host ``Foo``);
  otherwise the registry is ``docker.io``; ``index.docker.io`` is normalised to ``docker.io``;
* a one-component Docker Hub path gets the ``library/`` prefix (``ubuntu`` -> ``docker.io/library/ubuntu``);
* a bare 64-hex string is rejected (Docker reads it as an image ID, never as a name).

Deliberate deviations, all towards rejecting input Docker would accept only to misbehave later:

* a first component that looks like a host (has a ``.``) but is not a valid one (``foo_bar.com/x``) is an
  error; Docker silently returns a reference with an *empty* domain for it;
* only ``sha256`` and ``sha512`` digests are accepted, because those are the ones gcrsync can verify
  (Docker also knows ``sha384``); like go-digest, the hex must be lowercase and of the exact length.

This module is pure: no I/O, no network.
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass, replace

from gcrsync.errors import InvalidReference

DOCKER_HUB = "docker.io"
DOCKER_HUB_API = "registry-1.docker.io"
LEGACY_DOCKER_HUB = "index.docker.io"
OFFICIAL_PREFIX = "library/"
DEFAULT_TAG = "latest"
LOCALHOST = "localhost"
MAX_REPOSITORY_LENGTH = 255
LAYOUT_PREFIX = "oci:"

# Supported digest algorithms and the exact length of their lowercase hex encoding.
DIGEST_ALGORITHMS = {"sha256": 64, "sha512": 128}

# The regexps are transliterated from distribution/reference regexp.go. Python's \w and [0-9] would also
# match non-ASCII digits and letters, so every class is spelled out, and fullmatch() is used everywhere
# because "$" would accept a trailing newline.
_ALNUM = r"[a-z0-9]+"
_SEPARATOR = r"(?:[._]|__|-+)"
_PATH_COMPONENT_RE = re.compile(rf"{_ALNUM}(?:{_SEPARATOR}{_ALNUM})*")
_DOMAIN_COMPONENT = r"(?:[a-zA-Z0-9]|[a-zA-Z0-9][a-zA-Z0-9-]*[a-zA-Z0-9])"
_DOMAIN_NAME = rf"{_DOMAIN_COMPONENT}(?:\.{_DOMAIN_COMPONENT})*"
_IPV6 = r"\[[a-fA-F0-9:]+\]"
_HOST_PORT_RE = re.compile(rf"(?:{_DOMAIN_NAME}|{_IPV6})(?::[0-9]+)?")
_TAG_RE = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}")
_DIGEST_SYNTAX_RE = re.compile(r"[A-Za-z][A-Za-z0-9]*(?:[-_+.][A-Za-z][A-Za-z0-9]*)*:[0-9a-fA-F]{32,}")
_IDENTIFIER_RE = re.compile(r"[a-f0-9]{64}")
_HEX_RE = re.compile(r"[a-f0-9]+")


def _show(text: str, limit: int = 60) -> str:
    """Quote user input for an error message, shortened so that a message stays one short line."""
    return repr(text if len(text) <= limit else text[: limit - 3] + "...")


# The _*_problem functions return None for valid input, else a description of what is wrong that shows
# only the offending piece; callers prefix it with the whole input once, so nested messages stay short.


def _registry_problem(host: str) -> str | None:
    if _HOST_PORT_RE.fullmatch(host):
        return None
    return f"invalid registry host {_show(host, 40)} (expected host[:port] or [ipv6][:port])"


def _tag_problem(tag: str) -> str | None:
    if _TAG_RE.fullmatch(tag):
        return None
    return f"invalid tag {_show(tag, 40)} (up to 128 of A-Z a-z 0-9 _ . -, not starting with . or -)"


def _digest_problem(digest: str) -> str | None:
    algorithm, sep, encoded = digest.partition(":")
    shown = _show(digest, 40)
    if not sep or not _DIGEST_SYNTAX_RE.fullmatch(digest):
        return f"invalid digest {shown} (expected algorithm:hex)"
    if algorithm not in DIGEST_ALGORITHMS:
        return f"unsupported digest algorithm {_show(algorithm, 20)} (supported: sha256, sha512)"
    if len(encoded) != DIGEST_ALGORITHMS[algorithm]:
        return (
            f"invalid digest {shown}: {algorithm} needs {DIGEST_ALGORITHMS[algorithm]} hex digits, got {len(encoded)}"
        )
    if not _HEX_RE.fullmatch(encoded):
        return f"invalid digest {shown}: hex digits must be lowercase"
    return None


def _repository_problem(name: str) -> str | None:
    if not name:
        return "the repository name is empty"
    if len(name) > MAX_REPOSITORY_LENGTH:
        return f"the repository name is longer than {MAX_REPOSITORY_LENGTH} characters"
    if name != name.lower():
        return "the repository name must be lowercase"
    if name.startswith("/"):
        return "the repository name must not start with '/'"
    for component in name.split("/"):
        if not component:
            return "empty path component in the repository name"
        if component in (".", ".."):
            return f"{component!r} is not allowed in a repository name"
        if not _PATH_COMPONENT_RE.fullmatch(component):
            return (
                f"path component {_show(component, 40)} must be lowercase letters and digits, separated by"
                " one '.', one or two '_', or any number of '-'"
            )
    return None


def _check(problem: str | None, prefix: str = "") -> None:
    if problem is not None:
        raise InvalidReference(prefix + problem)


def validate_registry(host: str) -> str:
    """Return ``host`` (``name[:port]`` or ``[ipv6][:port]``) if it is a valid registry host."""
    _check(_registry_problem(host))
    return host


def validate_tag(tag: str) -> str:
    _check(_tag_problem(tag))
    return tag


def validate_digest(digest: str) -> str:
    """Return ``digest`` if it is ``sha256:<64 hex>`` or ``sha512:<128 hex>`` (lowercase hex)."""
    _check(_digest_problem(digest))
    return digest


def validate_repository(name: str) -> str:
    """Return ``name`` if it is a valid repository path (no registry), else raise InvalidReference.

    Used for names a registry hands us (``_catalog``, listings) as well as parsed ones. They later become
    file paths and URL paths, so beyond the grammar this spells out why ``..``, a leading ``/`` or an empty
    component are refused (the grammar already excludes them; the messages say which rule was hit).
    """
    _check(_repository_problem(name), f"invalid repository name {_show(name)}: ")
    return name


def _normalise(registry: str, repository: str) -> tuple[str, str]:
    """Apply Docker Hub's aliases: ``index.docker.io`` -> ``docker.io`` and ``x`` -> ``library/x``."""
    if registry == LEGACY_DOCKER_HUB:
        registry = DOCKER_HUB
    if registry == DOCKER_HUB and "/" not in repository:
        repository = OFFICIAL_PREFIX + repository
    return registry, repository


def _split_registry(text: str) -> tuple[str, str]:
    """Split off the registry exactly like distribution/reference's splitDockerDomain (before normalising)."""
    first, sep, rest = text.partition("/")
    if not sep:
        return DOCKER_HUB, text
    if first == LOCALHOST or any(c in first for c in ".:") or first.lower() != first:
        return first, rest
    return DOCKER_HUB, text


def _reference_problem(registry: str, repository: str, tag: str | None, digest: str | None) -> str | None:
    problem = _registry_problem(registry)
    if problem is None and _split_registry(f"{registry}/x")[0] != registry:
        # Docker would read "registry/x" as a Hub namespace, so the reference could not round-trip.
        problem = f"registry host {_show(registry, 40)} needs a '.', a ':port' or to be 'localhost'"
    problem = problem or _repository_problem(_normalise(registry, repository)[1])
    problem = problem or (None if tag is None else _tag_problem(tag))
    return problem or (None if digest is None else _digest_problem(digest))


@dataclass(frozen=True)
class Reference:
    """A fully normalised image reference. Construct it with parse_reference() or the with_* methods.

    Direct construction is validated and normalised too (``Reference("docker.io", "nginx", None, None)``
    becomes ``docker.io/library/nginx``), so every instance satisfies ``parse_reference(str(r)) == r``.
    """

    registry: str
    repository: str
    tag: str | None = None
    digest: str | None = None

    def __post_init__(self) -> None:
        _check(_reference_problem(self.registry, self.repository, self.tag, self.digest))
        registry, repository = _normalise(self.registry, self.repository)
        object.__setattr__(self, "registry", registry)
        object.__setattr__(self, "repository", repository)

    @property
    def name(self) -> str:
        """``registry/repository``, without tag or digest: what humans call "the image"."""
        return f"{self.registry}/{self.repository}"

    @property
    def ref(self) -> str:
        """What to put after ``/manifests/`` in the API: the digest if pinned, else the tag, else latest."""
        return self.digest or self.tag or DEFAULT_TAG

    @property
    def api_host(self) -> str:
        """The host that actually serves the Distribution API (Docker Hub's differs from its name)."""
        return DOCKER_HUB_API if self.registry == DOCKER_HUB else self.registry

    def __str__(self) -> str:
        text = self.name
        if self.tag is not None:
            text += f":{self.tag}"
        if self.digest is not None:
            text += f"@{self.digest}"
        return text

    def with_tag(self, tag: str) -> Reference:
        """The same repository at ``tag``. Drops any digest: a pin would otherwise silently win in ``ref``."""
        return replace(self, tag=tag, digest=None)

    def with_digest(self, digest: str) -> Reference:
        """The same repository pinned to ``digest``; the tag (if any) is kept for display."""
        return replace(self, digest=digest)

    def with_repository(self, repository: str) -> Reference:
        """The same registry, tag and digest in another repository (Docker Hub gets ``library/`` if needed)."""
        return replace(self, repository=repository)


@dataclass(frozen=True)
class LayoutReference:
    """An OCI image layout directory on disk, written ``oci:PATH[:TAG]``."""

    path: str
    tag: str | None = None

    def __str__(self) -> str:
        return LAYOUT_PREFIX + self.path + (f":{self.tag}" if self.tag is not None else "")


def parse_reference(text: str) -> Reference:
    """Parse ``[registry[:port]/]path[:tag][@digest]`` the way ``docker pull`` does, or raise InvalidReference."""
    if not text:
        raise InvalidReference("invalid image reference '': it is empty")
    if _IDENTIFIER_RE.fullmatch(text):
        raise InvalidReference(
            f"invalid image reference {_show(text)}: a 64-character hex string is an image ID, not a name"
        )
    if "://" in text:
        raise InvalidReference(f"invalid image reference {_show(text)}: leave out the URL scheme")
    registry, remainder = _split_registry(text)
    name, at, digest = remainder.partition("@")
    path, colon, tag = name.partition(":")
    problem = None
    if at and "@" in digest:
        problem = "more than one '@'"
    elif colon and ":" in tag:
        problem = "too many ':' (one may follow the registry host, one may precede the tag)"
        if text.startswith("[") and "/" not in text:
            problem = "a registry host must be followed by /repository"
    elif "/" in tag:
        problem = f"invalid tag {_show(tag, 40)}"
    elif not path:
        problem = "no repository name"
    if problem is None:
        problem = _reference_problem(registry, path, tag if colon else None, digest if at else None)
    _check(problem, f"invalid image reference {_show(text)}: ")
    return Reference(registry, path, tag if colon else None, digest if at else None)


def parse_location(text: str) -> Reference | LayoutReference:
    """Parse a registry reference, or an OCI layout written ``oci:PATH[:TAG]``.

    The tag of a layout is whatever follows the last ``:``, but only if that is a valid tag and contains no
    ``/``; otherwise the colon belongs to the path (``oci:/mnt/a:b/layout``).
    """
    if not text.startswith(LAYOUT_PREFIX):
        return parse_reference(text)
    body = text[len(LAYOUT_PREFIX) :]
    path, colon, tag = body.rpartition(":")
    if not colon or "/" in tag or not _TAG_RE.fullmatch(tag):
        path, tag_or_none = body, None
    else:
        tag_or_none = tag
    if not path:
        raise InvalidReference(f"invalid OCI layout location {_show(text)}: the path is empty")
    if "\0" in path:
        raise InvalidReference(f"invalid OCI layout location {_show(text)}: the path contains a NUL byte")
    return LayoutReference(path, tag_or_none)


def split_namespace(text: str) -> tuple[str, str]:
    """Split a namespace such as ``gcr.io/google-containers`` into (registry, path prefix).

    A namespace names a set of repositories, so it has no tag or digest and no ``library/`` normalisation
    (``docker.io/library`` is the official-images namespace). A bare registry host (``localhost:5000``,
    ``gcr.io``) returns an empty path, meaning the whole registry; ``gcr.io/`` is refused (a namespace left
    out by accident). A single component that is not a host (``bitnami``) is a Docker Hub namespace. One
    trailing ``/`` after a path is tolerated.
    """
    if "://" in text:
        raise InvalidReference(f"invalid namespace {_show(text)}: leave out the URL scheme")
    stripped = text[:-1] if text.endswith("/") else text
    if not stripped:
        raise InvalidReference("invalid namespace '': it is empty")
    if "@" in stripped:
        raise InvalidReference(f"invalid namespace {_show(text)}: a namespace cannot have a digest")
    first, sep, _ = stripped.partition("/")
    if not sep and (first == LOCALHOST or any(c in first for c in ".:")):
        if stripped != text:
            # "gcr.io/" reads as a namespace left out (an unset variable in a script): refused rather than
            # taken to mean every repository of the registry.
            raise InvalidReference(f"invalid namespace {_show(text)}: nothing after the registry host; write "
                                   f"{_show(first)} without the '/' to mean the whole registry")
        registry, path = first, ""
    else:
        registry, path = _split_registry(stripped)
    problem = "a namespace cannot have a tag" if ":" in path else _registry_problem(registry)
    if problem is None and path:
        problem = _repository_problem(path)
    _check(problem, f"invalid namespace {_show(text)}: ")
    return (DOCKER_HUB if registry == LEGACY_DOCKER_HUB else registry), path


def is_loopback(host: str) -> bool:
    """True for ``localhost``, ``127.0.0.0/8`` and ``::1``, with or without port or brackets.

    Only these may be spoken to over plain HTTP without an explicit opt-in: traffic to them never leaves
    the machine.
    """
    host = host.strip()
    if host.startswith("["):
        end = host.find("]")
        if end == -1:
            return False
        address = host[1:end]
    elif host.count(":") > 1:
        address = host  # bare IPv6 without brackets cannot carry a port
    else:
        address = host.partition(":")[0]
    if address.lower() == LOCALHOST:
        return True
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return False
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        return ip.ipv4_mapped.is_loopback
    return ip.is_loopback
