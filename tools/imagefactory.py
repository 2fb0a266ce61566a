"""Deterministic test images pushed over plain urllib: how tests, demo and bench seed registries.

Standard library only on purpose: this must not share a single line with gcrsync's own HTTP client, or a
bug in that client could hide itself by corrupting both the seed data and the copy identically. (The one
exception, signing schema1 manifests, lazily imports ``tools.jose`` which needs ``cryptography``.)
"""

from __future__ import annotations

import base64
import gzip
import hashlib
import io
import json
import random
import re
import tarfile
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass
from email.message import Message
from typing import Any

DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"
DOCKER_LIST = "application/vnd.docker.distribution.manifest.list.v2+json"
DOCKER_CONFIG = "application/vnd.docker.container.image.v1+json"
DOCKER_LAYER = "application/vnd.docker.image.rootfs.diff.tar.gzip"
DOCKER_SCHEMA1_SIGNED = "application/vnd.docker.distribution.manifest.v1+prettyjws"
DOCKER_SCHEMA1 = "application/vnd.docker.distribution.manifest.v1+json"
OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_INDEX = "application/vnd.oci.image.index.v1+json"
OCI_CONFIG = "application/vnd.oci.image.config.v1+json"
OCI_LAYER = "application/vnd.oci.image.layer.v1.tar+gzip"
OCI_EMPTY = "application/vnd.oci.empty.v1+json"

# Every manifest type we push, so reads never trigger distribution's schema conversion or OCI refusal.
ACCEPT_ALL = ", ".join(
    [OCI_MANIFEST, OCI_INDEX, DOCKER_MANIFEST, DOCKER_LIST, DOCKER_SCHEMA1_SIGNED, DOCKER_SCHEMA1]
)
FIXED_TIME = "2024-01-01T00:00:00Z"

Platform = tuple[str, str, str | None]


class PushError(RuntimeError):
    """The registry refused or garbled a push. Carries the HTTP status; never any credential."""

    def __init__(self, message: str, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status


def sha256_digest(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def derive_seed(seed: int, *parts: object) -> int:
    """A child seed that depends on every part, so sibling layers/images never collide by accident."""
    text = ":".join([str(seed), *map(str, parts)])
    return int.from_bytes(hashlib.sha256(text.encode()).digest()[:8], "big")


def make_layer(seed: int, size: int) -> bytes:
    """A gzip'd tar holding one file of ``size`` incompressible pseudo-random bytes; same seed, same bytes."""
    content = random.Random(seed).randbytes(size)
    info = tarfile.TarInfo(name=f"data/blob-{seed}.bin")
    info.size = size
    info.mtime = 0
    info.mode = 0o644
    tar_buf = io.BytesIO()
    with tarfile.open(fileobj=tar_buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        tar.addfile(info, io.BytesIO(content))
    # mtime=0 keeps the gzip header (and so the digest) independent of the wall clock. Level 0 (stored
    # deflate blocks) is still a valid gzip stream, and ten times faster: random bytes do not shrink anyway.
    return gzip.compress(tar_buf.getvalue(), compresslevel=0, mtime=0)


def layer_diff_id(layer: bytes) -> str:
    """The digest of the uncompressed tar, as image configs list it in rootfs.diff_ids."""
    return sha256_digest(gzip.decompress(layer))


def _b64url_decode(text: str) -> bytes:
    """JOSE writes base64url without padding; Python's decoder insists on it."""
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def schema1_canonical(raw: bytes) -> bytes:
    """The signature-free payload of a pretty-signed schema1 manifest: the bytes its digest is taken over."""
    doc = json.loads(raw)
    if not doc.get("signatures"):
        return raw
    protected = json.loads(_b64url_decode(doc["signatures"][0]["protected"]))
    length = int(protected["formatLength"])
    return raw[:length] + _b64url_decode(protected["formatTail"])


def manifest_digest(raw: bytes) -> str:
    """Digest of a manifest as a registry names it (schema1: over the canonical, unsigned payload)."""
    try:
        doc = json.loads(raw)
    except ValueError:
        return sha256_digest(raw)
    if isinstance(doc, dict) and doc.get("schemaVersion") == 1 and "signatures" in doc:
        return sha256_digest(schema1_canonical(raw))
    return sha256_digest(raw)


def _dumps(obj: Any) -> bytes:
    return json.dumps(obj, indent=3).encode()


@dataclass
class Response:
    status: int
    headers: Message
    body: bytes


_PARAM_RE = re.compile(r'(\w+)="([^"]*)"')
_OK = (200, 201, 202, 204, 307)


class RegistryPusher:
    """A tiny OCI Distribution client for seeding: plain, Basic, or Bearer-token auth via the challenge."""

    def __init__(self, base_url: str, username: str | None = None, password: str | None = None) -> None:
        self.base_url = base_url.rstrip("/")
        self._username = username
        self._password = password
        self._scheme: str | None = None  # "basic" / "bearer" once a challenge told us
        self._challenge: dict[str, str] = {}
        self._tokens: dict[str, str] = {}  # scope -> bearer token
        # An empty ProxyHandler: a proxy from the environment must never see loopback test traffic.
        self._opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))

    def __repr__(self) -> str:  # never show the password
        return f"RegistryPusher({self.base_url!r}, username={self._username!r})"

    # -- transport -----------------------------------------------------------------------------------------
    def _auth_header(self, scope: str) -> str | None:
        if self._scheme == "basic" and self._username is not None:
            pair = f"{self._username}:{self._password or ''}".encode()
            return "Basic " + base64.b64encode(pair).decode()
        if self._scheme == "bearer":
            token = self._tokens.get(scope)
            if token is None:
                token = self._fetch_token(scope)
            return "Bearer " + token
        return None

    def _fetch_token(self, scope: str) -> str:
        realm = self._challenge.get("realm")
        if not realm:
            raise PushError("bearer challenge without a realm")
        query = {k: v for k, v in (("service", self._challenge.get("service")), ("scope", scope)) if v}
        url = realm + ("&" if "?" in realm else "?") + urllib.parse.urlencode(query)
        headers = {}
        if self._username is not None:
            pair = f"{self._username}:{self._password or ''}".encode()
            headers["Authorization"] = "Basic " + base64.b64encode(pair).decode()
        resp = self._send("GET", url, None, headers)
        if resp.status != 200:
            raise PushError(f"token endpoint answered {resp.status}", resp.status)
        doc = json.loads(resp.body)
        token = doc.get("token") or doc.get("access_token")
        if not isinstance(token, str):
            raise PushError("token endpoint returned no token")
        self._tokens[scope] = token
        return token

    def _send(self, method: str, url: str, data: bytes | None, headers: dict[str, str]) -> Response:
        req = urllib.request.Request(url, data=data, method=method, headers=headers)
        try:
            with self._opener.open(req, timeout=60) as r:
                return Response(r.status, r.headers, r.read())
        except urllib.error.HTTPError as e:
            return Response(e.code, e.headers, e.read())

    def request(
        self,
        method: str,
        path_or_url: str,
        *,
        repo: str | None = None,
        data: bytes | None = None,
        headers: dict[str, str] | None = None,
    ) -> Response:
        """Send one request, answering a 401 challenge once. ``repo`` picks the pull,push token scope."""
        url = path_or_url if "://" in path_or_url else self.base_url + path_or_url
        scope = f"repository:{repo}:pull,push" if repo else ""
        for attempt in range(2):
            hdrs = dict(headers or {})
            auth = self._auth_header(scope)
            if auth:
                hdrs["Authorization"] = auth
            resp = self._send(method, url, data, hdrs)
            challenge = resp.headers.get("WWW-Authenticate", "") if resp.status == 401 else ""
            if not challenge or attempt == 1:
                return resp
            self._scheme = challenge.split(" ", 1)[0].lower()
            self._challenge = dict(_PARAM_RE.findall(challenge))
            if not repo:
                scope = self._challenge.get("scope", "")
            self._tokens.pop(scope, None)
        raise AssertionError("unreachable")

    # -- blobs and manifests -------------------------------------------------------------------------------
    def push_blob(
        self, repo: str, data: bytes, media_type: str = "application/octet-stream"
    ) -> dict[str, Any]:
        """Upload ``data`` monolithically (POST, then PUT ?digest=) unless present; return its descriptor."""
        digest = sha256_digest(data)
        desc: dict[str, Any] = {"mediaType": media_type, "digest": digest, "size": len(data)}
        if self.request("HEAD", f"/v2/{repo}/blobs/{digest}", repo=repo).status == 200:
            return desc
        start = self.request("POST", f"/v2/{repo}/blobs/uploads/", repo=repo, data=b"")
        if start.status != 202 or not start.headers.get("Location"):
            raise PushError(
                f"starting upload to {repo} failed: {start.status} {start.body[:200]!r}", start.status
            )
        location = urllib.parse.urljoin(self.base_url + "/", start.headers["Location"])
        location += ("&" if "?" in location else "?") + "digest=" + urllib.parse.quote(digest, safe="")
        done = self.request(
            "PUT", location, repo=repo, data=data, headers={"Content-Type": "application/octet-stream"}
        )
        if done.status != 201:
            raise PushError(f"blob upload to {repo} failed: {done.status} {done.body[:200]!r}", done.status)
        return desc

    def push_manifest(self, repo: str, ref: str, raw: bytes, media_type: str) -> str:
        """PUT a manifest by tag or digest; return (and check) the registry's Docker-Content-Digest."""
        resp = self.request(
            "PUT", f"/v2/{repo}/manifests/{ref}", repo=repo, data=raw, headers={"Content-Type": media_type}
        )
        if resp.status != 201:
            raise PushError(
                f"manifest put {repo}:{ref} failed: {resp.status} {resp.body[:300]!r}", resp.status
            )
        expected = manifest_digest(raw)
        got = resp.headers.get("Docker-Content-Digest", expected)
        if got != expected:
            raise PushError(f"registry named manifest {got}, expected {expected}")
        return expected

    def get_manifest(self, repo: str, ref: str) -> tuple[bytes, str]:
        """(raw bytes, Content-Type) of a manifest, accepting every type."""
        resp = self.request("GET", f"/v2/{repo}/manifests/{ref}", repo=repo, headers={"Accept": ACCEPT_ALL})
        if resp.status != 200:
            raise PushError(f"manifest get {repo}:{ref} failed: {resp.status}", resp.status)
        return resp.body, resp.headers.get("Content-Type", "")

    def delete_manifest(self, repo: str, digest: str) -> None:
        resp = self.request("DELETE", f"/v2/{repo}/manifests/{digest}", repo=repo)
        if resp.status != 202:
            raise PushError(f"manifest delete {repo}@{digest} failed: {resp.status}", resp.status)

    def list_tags(self, repo: str) -> list[str]:
        resp = self.request("GET", f"/v2/{repo}/tags/list", repo=repo)
        if resp.status != 200:
            raise PushError(f"tags list {repo} failed: {resp.status}", resp.status)
        return list(json.loads(resp.body).get("tags") or [])


# -- high level ----------------------------------------------------------------------------------------------
def push_image(
    pusher: RegistryPusher,
    repo: str,
    tag: str | None,
    *,
    layers: list[bytes],
    oci: bool = False,
    platform: Platform = ("linux", "amd64", None),
    labels: dict[str, str] | None = None,
) -> tuple[str, bytes]:
    """Push a single-platform image (Docker schema2, or OCI); ``tag=None`` pushes by digest only.

    ``labels`` land in the config, which is the cheap way to make two otherwise identical images differ.
    """
    os_name, arch, variant = platform
    config: dict[str, Any] = {"architecture": arch, "os": os_name}
    if variant:
        config["variant"] = variant
    config["created"] = FIXED_TIME
    config["config"] = {"Labels": labels} if labels else {}
    config["rootfs"] = {"type": "layers", "diff_ids": [layer_diff_id(layer) for layer in layers]}
    layer_type, config_type, manifest_type = (
        (OCI_LAYER, OCI_CONFIG, OCI_MANIFEST) if oci else (DOCKER_LAYER, DOCKER_CONFIG, DOCKER_MANIFEST)
    )
    config_desc = pusher.push_blob(repo, _dumps(config), config_type)
    layer_descs = [pusher.push_blob(repo, layer, layer_type) for layer in layers]
    manifest = {
        "schemaVersion": 2,
        "mediaType": manifest_type,
        "config": config_desc,
        "layers": layer_descs,
    }
    raw = _dumps(manifest)
    digest = pusher.push_manifest(repo, tag or sha256_digest(raw), raw, manifest_type)
    return digest, raw


def push_index(
    pusher: RegistryPusher,
    repo: str,
    tag: str | None,
    platforms: list[Platform],
    layer_size: int,
    seed: int,
    oci: bool = False,
) -> str:
    """Push a multi-arch manifest list (or OCI index) whose children are pushed by digest first."""
    entries = []
    for i, plat in enumerate(platforms):
        layer = make_layer(derive_seed(seed, "index-layer", i), layer_size)
        child_digest, child_raw = push_image(pusher, repo, None, layers=[layer], oci=oci, platform=plat)
        platform_doc = {"architecture": plat[1], "os": plat[0]}
        if plat[2]:
            platform_doc["variant"] = plat[2]
        entries.append(
            {
                "mediaType": OCI_MANIFEST if oci else DOCKER_MANIFEST,
                "digest": child_digest,
                "size": len(child_raw),
                "platform": platform_doc,
            }
        )
    index_type = OCI_INDEX if oci else DOCKER_LIST
    raw = _dumps({"schemaVersion": 2, "mediaType": index_type, "manifests": entries})
    return pusher.push_manifest(repo, tag or sha256_digest(raw), raw, index_type)


def push_artifact(
    pusher: RegistryPusher,
    repo: str,
    tag: str | None,
    artifact_type: str = "application/vnd.example.thing",
    *,
    payload: bytes = b"hello artifact\n",
) -> str:
    """Push an OCI artifact: ``artifactType``, the empty ``{}`` config, one custom-mediatype layer."""
    empty = pusher.push_blob(repo, b"{}", OCI_EMPTY)
    empty["data"] = base64.b64encode(b"{}").decode()
    layer = pusher.push_blob(repo, payload, artifact_type + ".layer.v1+text")
    layer["annotations"] = {"org.opencontainers.image.title": "thing.txt"}
    manifest = {
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "artifactType": artifact_type,
        "config": empty,
        "layers": [layer],
    }
    raw = _dumps(manifest)
    return pusher.push_manifest(repo, tag or sha256_digest(raw), raw, OCI_MANIFEST)


def push_schema1(
    pusher: RegistryPusher, repo: str, tag: str, layers: list[bytes], *, seed: int = 0, arch: str = "amd64"
) -> str:
    """Push a libtrust-signed schema1 manifest (needs a registry with schema1 compatibility enabled).

    Returns the digest of the canonical (unsigned) payload, which is what distribution reports; the bytes a
    registry later serves are re-signed by it, so their plain sha256 differs from this digest.
    """
    from tools import jose  # needs `cryptography`; only schema1 pays for it

    blob_sums = [pusher.push_blob(repo, layer, DOCKER_LAYER)["digest"] for layer in layers]
    history: list[str] = []
    parent = ""
    for i, blob_sum in enumerate(blob_sums):  # bottom layer first; schema1 lists them top first
        layer_id = hashlib.sha256(f"{seed}:{i}:{blob_sum}:{parent}".encode()).hexdigest()
        entry: dict[str, Any] = {"id": layer_id}
        if parent:
            entry["parent"] = parent
        entry["created"] = FIXED_TIME
        entry["container_config"] = {"Cmd": [f"/bin/sh -c #(nop) ADD file:{i} in /"]}
        if i == len(blob_sums) - 1:
            entry.update({"architecture": arch, "os": "linux", "config": {}})
        history.append(json.dumps(entry, separators=(",", ":")))
        parent = layer_id
    manifest = {
        "schemaVersion": 1,
        "name": repo,
        "tag": tag,
        "architecture": arch,
        "fsLayers": [{"blobSum": b} for b in reversed(blob_sums)],
        "history": [{"v1Compatibility": h} for h in reversed(history)],
    }
    signed = jose.pretty_sign(_dumps(manifest), jose.key_from_seed(seed))
    return pusher.push_manifest(repo, tag, signed, DOCKER_SCHEMA1_SIGNED)


# -- artifacts attached to images (cosign tag schema and OCI 1.1 referrers) ----------------------------------
COSIGN_SIMPLESIGNING = "application/vnd.dev.cosign.simplesigning.v1+json"
COSIGN_SIG_ARTIFACT = "application/vnd.dev.cosign.artifact.sig.v1+json"
DSSE_ENVELOPE = "application/vnd.dsse.envelope.v1+json"
SPDX_JSON = "application/spdx+json"


def cosign_tag(digest: str, suffix: str) -> str:
    """cosign's tag schema: `sha256:ab…` → `sha256-ab….sig` (`.att`, `.sbom`)."""
    alg, _, hex_part = digest.partition(":")
    return f"{alg}-{hex_part}.{suffix}"


def push_attached(
    pusher: RegistryPusher,
    repo: str,
    kind: str,
    subject: dict[str, Any],
    *,
    tag: str | None = None,
    with_subject: bool = True,
    seed: int = 0,
) -> tuple[str, bytes]:
    """Push a cosign-shaped artifact about ``subject`` (a descriptor: mediaType, digest, size).

    kind: ``sig`` (a simple-signing payload with the ``dev.cosignproject.cosign/signature`` annotation),
    ``att`` (an in-toto statement in a DSSE envelope), ``sbom`` (an SPDX document as an OCI artifact).
    ``with_subject`` makes it an OCI 1.1 referrer; ``tag`` pushes it under a tag (cosign's tag schema).
    """
    digest = subject["digest"]
    if kind == "sig":
        payload = _dumps({"critical": {"identity": {"docker-reference": repo}, "image": {
            "docker-manifest-digest": digest}, "type": "cosign container image signature"}, "optional": None})
        layer_type, artifact_type = COSIGN_SIMPLESIGNING, COSIGN_SIG_ARTIFACT
        annotations = {"dev.cosignproject.cosign/signature": base64.b64encode(
            hashlib.sha256(f"sig:{seed}:{digest}".encode()).digest()).decode()}
    elif kind == "att":
        statement = {"_type": "https://in-toto.io/Statement/v1", "predicateType": "https://slsa.dev/provenance/v1",
                     "subject": [{"name": repo, "digest": {"sha256": digest.split(":", 1)[1]}}],
                     "predicate": {"seed": seed}}
        payload = _dumps({"payloadType": "application/vnd.in-toto+json", "signatures": [{"sig": f"s{seed}"}],
                          "payload": base64.b64encode(_dumps(statement)).decode()})
        layer_type, artifact_type = DSSE_ENVELOPE, "application/vnd.dev.sigstore.bundle+json;version=0.3"
        annotations = {"predicateType": "https://slsa.dev/provenance/v1"}
    elif kind == "sbom":
        payload = _dumps({"spdxVersion": "SPDX-2.3", "SPDXID": "SPDXRef-DOCUMENT", "name": repo,
                          "dataLicense": "CC0-1.0", "documentNamespace": f"https://example.invalid/{seed}",
                          "packages": [{"name": "busybox", "SPDXID": "SPDXRef-1", "versionInfo": str(seed)}]})
        layer_type, artifact_type = SPDX_JSON, SPDX_JSON
        annotations = {"org.opencontainers.image.title": "sbom.spdx.json"}
    else:
        raise ValueError(f"unknown artifact kind {kind!r}")
    empty = pusher.push_blob(repo, b"{}", OCI_EMPTY)
    empty["data"] = base64.b64encode(b"{}").decode()
    layer = pusher.push_blob(repo, payload, layer_type)
    layer["annotations"] = annotations
    manifest: dict[str, Any] = {"schemaVersion": 2, "mediaType": OCI_MANIFEST, "artifactType": artifact_type,
                                "config": empty, "layers": [layer],
                                "annotations": {"org.opencontainers.image.created": FIXED_TIME}}
    if with_subject:
        manifest["subject"] = {k: subject[k] for k in ("mediaType", "digest", "size")}
    raw = _dumps(manifest)
    pushed = pusher.push_manifest(repo, tag or sha256_digest(raw), raw, OCI_MANIFEST)
    return pushed, raw
