"""Pure models of the OCI / Docker image formats: media types, digests, descriptors, manifests.

Parsing here is strict on purpose: everything comes from a registry we do not control, so malformed
input becomes a ManifestError with a clear message instead of a KeyError deep inside the engine.
"""

from __future__ import annotations

import base64
import hashlib
import json
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from gcrsync.errors import ManifestError

MAX_MANIFEST_BYTES = 4 * 1024 * 1024  # the distribution spec's recommended limit
UNKNOWN_SIZE = -1  # schema1 layers carry no size; never produced by parsing a descriptor

DOCKER_MANIFEST_V2 = "application/vnd.docker.distribution.manifest.v2+json"
DOCKER_MANIFEST_LIST = "application/vnd.docker.distribution.manifest.list.v2+json"
DOCKER_SCHEMA1 = "application/vnd.docker.distribution.manifest.v1+json"
DOCKER_SCHEMA1_SIGNED = "application/vnd.docker.distribution.manifest.v1+prettyjws"
OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_INDEX = "application/vnd.oci.image.index.v1+json"

INDEX_TYPES = frozenset({DOCKER_MANIFEST_LIST, OCI_INDEX})
IMAGE_TYPES = frozenset({DOCKER_MANIFEST_V2, OCI_MANIFEST})
SCHEMA1_TYPES = frozenset({DOCKER_SCHEMA1, DOCKER_SCHEMA1_SIGNED})
MANIFEST_TYPES = INDEX_TYPES | IMAGE_TYPES | SCHEMA1_TYPES

# Order matters for registries that pick the first acceptable type.
ACCEPT_MANIFESTS = ", ".join(
    [OCI_INDEX, DOCKER_MANIFEST_LIST, OCI_MANIFEST, DOCKER_MANIFEST_V2, DOCKER_SCHEMA1_SIGNED, DOCKER_SCHEMA1]
)

_DIGEST_RE = re.compile(r"^sha256:[a-f0-9]{64}$|^sha512:[a-f0-9]{128}$")
_ANY_DIGEST_RE = re.compile(r"^[a-z0-9]+(?:[.+_-][a-z0-9]+)*:[a-zA-Z0-9=_-]+$")


def sha256_digest(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def validate_digest(value: object, what: str = "digest") -> str:
    """Return value if it is a digest we can verify (sha256 or sha512), else raise ManifestError."""
    if not isinstance(value, str) or not _DIGEST_RE.fullmatch(value):  # fullmatch: "$" allows a trailing \n
        raise ManifestError(f"invalid {what}: {str(value)[:80]!r}")
    return value


def fallback_tag(digest: str) -> str:
    """The tag a digest is known by without a referrers API (distribution-spec v1.1 "Referrers Tag Schema"):
    `sha256:ab…` → `sha256-ab…`, hex cut to 64 characters. cosign's `.sig`/`.att`/`.sbom` tags extend it."""
    alg, _, hex_part = digest.partition(":")
    return f"{alg}-{hex_part[:64]}"


def new_hasher(digest: str) -> Any:
    algo = digest.split(":", 1)[0]
    if algo not in ("sha256", "sha512"):
        raise ManifestError(f"unsupported digest algorithm: {algo}")
    return hashlib.new(algo)


def digest_of(data: bytes, algorithm: str = "sha256") -> str:
    return f"{algorithm}:{hashlib.new(algorithm, data).hexdigest()}"


@dataclass(frozen=True)
class Platform:
    os: str
    architecture: str
    variant: str | None = None

    @classmethod
    def parse(cls, text: str) -> Platform:
        parts = text.strip().split("/")
        if len(parts) not in (2, 3) or not all(parts):
            raise ManifestError(f"invalid platform {text[:80]!r}: expected os/arch[/variant]")
        return cls(parts[0], parts[1], parts[2] if len(parts) == 3 else None)

    def matches(self, other: Platform) -> bool:
        """True if `other` (from an index) satisfies this requested platform."""
        if (self.os, self.architecture) != (other.os, other.architecture):
            return False
        return self.variant is None or self.variant == other.variant

    def __str__(self) -> str:
        return f"{self.os}/{self.architecture}" + (f"/{self.variant}" if self.variant else "")


@dataclass(frozen=True)
class Descriptor:
    media_type: str
    digest: str
    size: int
    urls: tuple[str, ...] = ()
    platform: Platform | None = None
    artifact_type: str | None = None

    @property
    def foreign(self) -> bool:
        """Non-distributable layers (with `urls`) are fetched by clients from elsewhere: never copied."""
        return bool(self.urls)

    @classmethod
    def from_json(cls, obj: object, where: str) -> Descriptor:
        if not isinstance(obj, dict):
            raise ManifestError(f"{where}: descriptor is not an object")
        media_type = obj.get("mediaType", "")
        if not isinstance(media_type, str):
            raise ManifestError(f"{where}: mediaType is not a string")
        digest = validate_digest(obj.get("digest"), f"{where} digest")
        size = obj.get("size")
        if not isinstance(size, int) or isinstance(size, bool) or size < 0:
            raise ManifestError(f"{where}: size must be a non-negative integer, got {repr(size)[:40]}")
        urls = obj.get("urls") or []
        if not isinstance(urls, list) or not all(isinstance(u, str) for u in urls):
            raise ManifestError(f"{where}: urls must be a list of strings")
        platform = None
        plat = obj.get("platform")
        if plat is not None:
            if not isinstance(plat, dict) or not isinstance(plat.get("os"), str) or not isinstance(
                plat.get("architecture"), str
            ):
                raise ManifestError(f"{where}: platform needs string os and architecture")
            variant = plat.get("variant")
            platform = Platform(plat["os"], plat["architecture"], variant if isinstance(variant, str) else None)
        artifact_type = obj.get("artifactType")
        return cls(
            media_type=media_type,
            digest=digest,
            size=size,
            urls=tuple(urls),
            platform=platform,
            artifact_type=artifact_type if isinstance(artifact_type, str) else None,
        )


@dataclass(frozen=True)
class Manifest:
    """A manifest or index exactly as served: raw bytes are kept so pushes preserve the digest."""

    raw: bytes
    media_type: str
    digest: str
    children: tuple[Descriptor, ...] = ()  # index entries (manifests)
    blobs: tuple[Descriptor, ...] = ()  # config + layers (+ schema1 fsLayers), including foreign ones
    subject: Descriptor | None = None
    extra: dict[str, Any] = field(default_factory=dict, compare=False, repr=False)

    @property
    def is_index(self) -> bool:
        return self.media_type in INDEX_TYPES

    @property
    def is_schema1(self) -> bool:
        return self.media_type in SCHEMA1_TYPES


def _detect_media_type(doc: dict[str, Any], header_type: str | None) -> str:
    declared = doc.get("mediaType")
    if isinstance(declared, str) and declared:
        return declared
    if header_type and header_type.split(";")[0].strip() in MANIFEST_TYPES:
        return header_type.split(";")[0].strip()
    if doc.get("schemaVersion") == 1:
        return DOCKER_SCHEMA1_SIGNED if "signatures" in doc else DOCKER_SCHEMA1
    # OCI allows omitting mediaType: infer from the shape.
    if "manifests" in doc:
        return OCI_INDEX
    if "config" in doc and "layers" in doc:
        return OCI_MANIFEST
    raise ManifestError("cannot tell the manifest's media type")


def parse_manifest(raw: bytes, header_type: str | None = None, expected_digest: str | None = None) -> Manifest:
    """Parse and validate manifest bytes; verify them against expected_digest when given."""
    if len(raw) > MAX_MANIFEST_BYTES:
        raise ManifestError(f"manifest is {len(raw)} bytes, over the 4 MiB limit")
    try:
        doc = json.loads(raw)
    except (UnicodeDecodeError, ValueError, RecursionError) as exc:  # RecursionError: absurdly deep nesting
        raise ManifestError(f"manifest is not valid JSON: {exc}") from None
    if not isinstance(doc, dict):
        raise ManifestError("manifest is not a JSON object")
    media_type = _detect_media_type(doc, header_type)
    # A signed schema1 manifest's digest covers the payload without its signatures.
    hashed = schema1_payload(raw, doc) if media_type in SCHEMA1_TYPES and "signatures" in doc else raw
    if expected_digest is not None:
        algo = validate_digest(expected_digest, "requested digest").split(":", 1)[0]
        actual = digest_of(hashed, algo)
        if actual != expected_digest:
            raise ManifestError(f"manifest bytes hash to {actual[:19]}…, not the requested {expected_digest[:19]}…")
        digest = expected_digest
    else:
        digest = sha256_digest(hashed)
    if media_type not in MANIFEST_TYPES:
        raise ManifestError(f"unknown manifest media type {media_type[:100]!r}")
    children: list[Descriptor] = []
    blobs: list[Descriptor] = []
    subject = None
    if media_type in INDEX_TYPES:
        entries = doc.get("manifests")
        if not isinstance(entries, list):
            raise ManifestError("index has no 'manifests' list")
        children = [Descriptor.from_json(e, f"manifests[{i}]") for i, e in enumerate(entries)]
    elif media_type in IMAGE_TYPES:
        config = doc.get("config")
        layers = doc.get("layers")
        if not isinstance(layers, list):
            raise ManifestError("manifest has no 'layers' list")
        blobs.append(Descriptor.from_json(config, "config"))
        blobs.extend(Descriptor.from_json(layer, f"layers[{i}]") for i, layer in enumerate(layers))
    else:  # schema1: fsLayers carry only blobSum; sizes are unknown
        fs_layers = doc.get("fsLayers")
        if not isinstance(fs_layers, list):
            raise ManifestError("schema1 manifest has no 'fsLayers' list")
        seen: set[str] = set()
        for i, layer in enumerate(fs_layers):
            if not isinstance(layer, dict):
                raise ManifestError(f"fsLayers[{i}] is not an object")
            blob_sum = validate_digest(layer.get("blobSum"), f"fsLayers[{i}] blobSum")
            if blob_sum not in seen:
                seen.add(blob_sum)
                blobs.append(Descriptor("application/octet-stream", blob_sum, UNKNOWN_SIZE))
    if "subject" in doc and doc["subject"] is not None:
        subject = Descriptor.from_json(doc["subject"], "subject")
    return Manifest(
        raw=raw,
        media_type=media_type,
        digest=digest,
        children=tuple(children),
        blobs=tuple(blobs),
        subject=subject,
        extra=doc,
    )


def referrer_entry(manifest: Manifest) -> dict[str, Any]:
    """The index entry describing `manifest` as a referrer, as the referrers API lists it: artifactType falls
    back to the config's media type, and the manifest's annotations are copied (distribution-spec v1.1)."""
    doc = manifest.extra
    artifact_type = doc.get("artifactType")
    if not isinstance(artifact_type, str):
        config = doc.get("config")
        artifact_type = config.get("mediaType") if isinstance(config, dict) else None
    entry: dict[str, Any] = {"mediaType": manifest.media_type, "digest": manifest.digest, "size": len(manifest.raw)}
    if isinstance(artifact_type, str):
        entry["artifactType"] = artifact_type
    annotations = doc.get("annotations")
    if isinstance(annotations, dict) and annotations:
        entry["annotations"] = annotations
    return entry


def reachable(roots: list[tuple[str, str | None]], read: Callable[[str], bytes | None]) -> set[str] | None:
    """Every digest the manifests `roots` ((digest, media type) pairs) reach, themselves included: index
    children, config and layers (foreign ones excepted) and a referrer's subject.

    `read(digest)` gives a manifest's bytes, or None when the blob is absent (it then reaches nothing: a
    subject kept elsewhere, a child another tool left out). Returns None when a manifest that is present
    cannot be parsed, because what it references is then unknown: a caller deleting content keeps it all.
    """
    seen: set[str] = set()
    stack = list(roots)
    while stack:
        digest, media_type = stack.pop()
        if digest in seen:
            continue
        seen.add(digest)
        raw = read(digest)
        if raw is None:
            continue
        try:
            manifest = parse_manifest(raw, media_type, expected_digest=digest)
        except ManifestError:
            return None
        seen.update(b.digest for b in manifest.blobs if not b.foreign)
        stack.extend((c.digest, c.media_type or None) for c in manifest.children)
        if manifest.subject is not None:
            stack.append((manifest.subject.digest, manifest.subject.media_type or None))
    return seen


def schema1_payload(raw: bytes, doc: dict[str, Any]) -> bytes:
    """The signed part of a libtrust JWS ("pretty signature"): raw[:formatLength] + formatTail."""
    try:
        protected = doc["signatures"][0]["protected"]
        header = json.loads(base64.urlsafe_b64decode(protected + "=" * (-len(protected) % 4)))
        length = int(header["formatLength"])
        tail_text = header["formatTail"]
        tail = base64.urlsafe_b64decode(tail_text + "=" * (-len(tail_text) % 4))
    except (KeyError, IndexError, TypeError, ValueError, OverflowError, RecursionError) as exc:
        raise ManifestError(f"schema1 manifest has a malformed signature: {type(exc).__name__}") from None
    if not 0 < length <= len(raw):
        raise ManifestError("schema1 manifest signature has an impossible formatLength")
    return raw[:length] + tail


def filter_index(index: Manifest, platforms: list[Platform]) -> Manifest:
    """Rewrite an index keeping only the entries matching one of `platforms` (new bytes, new digest).

    Entries without a platform (attestations, artifacts) are dropped with the filtered platforms only
    when they point at a dropped manifest; others are kept as they are.
    """
    if not index.is_index:
        raise ManifestError("only an index or manifest list can be filtered by platform")
    doc = dict(index.extra)
    kept = []
    for raw_entry, desc in zip(doc["manifests"], index.children, strict=True):
        if desc.platform is None or any(p.matches(desc.platform) for p in platforms):
            kept.append(raw_entry)
    if not any(d.platform is not None and any(p.matches(d.platform) for p in platforms) for d in index.children):
        wanted = ", ".join(str(p) for p in platforms)
        raise ManifestError(f"no manifest in the index matches platform {wanted}")
    doc["manifests"] = kept
    raw = json.dumps(doc, indent=3).encode()
    return parse_manifest(raw, index.media_type)
