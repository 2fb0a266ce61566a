"""The test harness itself works: images pushed by tools.imagefactory are what skopeo reads back."""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import subprocess
import tarfile
import urllib.error
import urllib.parse
import urllib.request

import pytest
from tools.imagefactory import (
    DOCKER_LIST,
    DOCKER_MANIFEST,
    OCI_EMPTY,
    OCI_INDEX,
    OCI_MANIFEST,
    PushError,
    RegistryPusher,
    make_layer,
    manifest_digest,
    push_artifact,
    push_image,
    push_index,
    push_schema1,
    sha256_digest,
)

from harness import (
    HarnessError,
    MakeRegistry,
    RegistryServer,
    skopeo_copy_all,
    skopeo_digest,
    skopeo_raw,
    unique_repo,
)
from tokenissuer import TokenIssuer, TokenRequest

PLATFORMS = [("linux", "amd64", None), ("linux", "arm64", "v8"), ("linux", "arm", "v7")]


def _http_status(url: str) -> tuple[int, str]:
    """Status and WWW-Authenticate of an unauthenticated GET, bypassing every helper under test."""
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    try:
        with opener.open(url, timeout=10) as r:
            return r.status, ""
    except urllib.error.HTTPError as e:
        return e.code, e.headers.get("WWW-Authenticate", "")


def test_make_layer_is_deterministic_gzip_tar_of_incompressible_bytes() -> None:
    layer = make_layer(42, 10_000)
    assert layer == make_layer(42, 10_000)
    assert layer != make_layer(43, 10_000)
    with tarfile.open(fileobj=io.BytesIO(gzip.decompress(layer))) as tar:
        members = tar.getmembers()
        assert len(members) == 1 and members[0].size == 10_000
        extracted = tar.extractfile(members[0])
        assert extracted is not None
        content = extracted.read()
    # Pseudo-random bytes do not compress: the layer is not meaningfully smaller than its content.
    assert len(layer) > 9_900
    assert len(set(content)) > 200


def test_unique_repo_names_differ_and_keep_prefix() -> None:
    names = {unique_repo("ns/app") for _ in range(50)}
    assert len(names) == 50
    assert all(n.startswith("ns/app-") and n == n.lower() for n in names)


@pytest.mark.parametrize("oci", [False, True], ids=["docker", "oci"])
def test_single_arch_image_roundtrips_through_skopeo(registry: RegistryServer, oci: bool) -> None:
    repo = unique_repo("harness/single")
    digest, raw = push_image(
        registry.pusher(), repo, "v1", layers=[make_layer(1, 4096), make_layer(2, 100)], oci=oci
    )
    fetched = skopeo_raw(registry.ref(repo, "v1"))
    assert fetched == raw
    assert sha256_digest(fetched) == digest
    assert skopeo_digest(f"{registry.host}/{repo}@{digest}") == digest
    doc = json.loads(fetched)
    assert doc["mediaType"] == (OCI_MANIFEST if oci else DOCKER_MANIFEST)
    assert len(doc["layers"]) == 2


@pytest.mark.parametrize("oci", [False, True], ids=["docker", "oci"])
def test_multiarch_index_children_are_pushed_by_digest(registry: RegistryServer, oci: bool) -> None:
    repo = unique_repo("harness/multi")
    digest = push_index(registry.pusher(), repo, "multi", PLATFORMS, layer_size=2048, seed=7, oci=oci)
    raw = skopeo_raw(registry.ref(repo, "multi"))
    assert sha256_digest(raw) == digest
    doc = json.loads(raw)
    assert doc["mediaType"] == (OCI_INDEX if oci else DOCKER_LIST)
    plats = [
        (m["platform"]["os"], m["platform"]["architecture"], m["platform"].get("variant"))
        for m in doc["manifests"]
    ]
    assert plats == PLATFORMS
    for entry in doc["manifests"]:
        child = skopeo_raw(registry.ref(repo, entry["digest"]))
        assert sha256_digest(child) == entry["digest"] and len(child) == entry["size"]
    # Same seed, same bytes: pushing again elsewhere yields the same digest.
    again = push_index(registry.pusher(), unique_repo("harness/multi"), None, PLATFORMS, 2048, 7, oci=oci)
    assert again == digest


def test_oci_artifact_has_artifact_type_and_empty_config(registry: RegistryServer) -> None:
    repo = unique_repo("harness/artifact")
    digest = push_artifact(registry.pusher(), repo, "sig", artifact_type="application/vnd.example.thing")
    raw = skopeo_raw(registry.ref(repo, "sig"))
    assert sha256_digest(raw) == digest
    doc = json.loads(raw)
    assert doc["artifactType"] == "application/vnd.example.thing"
    assert doc["config"]["mediaType"] == OCI_EMPTY and doc["config"]["size"] == 2
    assert doc["layers"][0]["mediaType"].startswith("application/vnd.example.thing")


def test_signed_schema1_is_accepted_and_digest_is_the_canonical_payload(
    schema1_registry: RegistryServer,
) -> None:
    repo = unique_repo("harness/schema1")
    digest = push_schema1(schema1_registry.pusher(), repo, "old", [make_layer(11, 300), make_layer(12, 500)])
    raw = skopeo_raw(schema1_registry.ref(repo, "old"))
    doc = json.loads(raw)
    assert doc["schemaVersion"] == 1 and doc["signatures"]
    # distribution re-signs on every GET, so only the signature-free payload hashes to the digest...
    assert manifest_digest(raw) == digest
    assert sha256_digest(raw) != digest
    # ...and skopeo's own schema1 digest logic agrees with ours.
    ref = schema1_registry.ref(repo, "old")
    proc = subprocess.run(
        ["skopeo", "inspect", "--tls-verify=false", "--format", "{{.Digest}}", ref],
        capture_output=True, text=True, check=True, timeout=120,
    )  # fmt: skip
    assert proc.stdout.strip() == digest


def test_schema1_is_refused_by_a_default_registry(registry: RegistryServer) -> None:
    repo = unique_repo("harness/noschema1")
    with pytest.raises(PushError) as err:
        push_schema1(registry.pusher(), repo, "old", [make_layer(13, 100)])
    # distribution 2.8 answers 500 UNKNOWN (not 400) when schema1 compatibility is off.
    assert err.value.status == 500
    with pytest.raises(PushError) as missing:
        registry.pusher().get_manifest(repo, "old")
    assert missing.value.status == 404


def test_basic_auth_rejects_wrong_password_and_accepts_right_one(auth_registry: RegistryServer) -> None:
    status, challenge = _http_status(f"{auth_registry.url}/v2/")
    assert status == 401 and challenge.lower().startswith("basic")
    repo = unique_repo("harness/basic")
    wrong = RegistryPusher(auth_registry.url, auth_registry.username, "not-the-password")
    with pytest.raises(PushError) as err:
        push_image(wrong, repo, "v1", layers=[make_layer(3, 100)])
    assert err.value.status == 401
    assert "not-the-password" not in repr(wrong)
    digest, _ = push_image(auth_registry.pusher(), repo, "v1", layers=[make_layer(3, 100)])
    assert skopeo_digest(auth_registry.ref(repo, "v1"), auth_registry.creds) == digest
    with pytest.raises(HarnessError):
        skopeo_raw(auth_registry.ref(repo, "v1"))  # no credentials
    logged = auth_registry.requests()
    assert ("PUT", f"/v2/{repo}/manifests/v1", 201) in logged
    assert any(r.status == 401 and r.path.startswith(f"/v2/{repo}/") for r in logged)


def test_token_registry_issues_cached_tokens_and_push_works(
    token_registry: RegistryServer, token_issuer: TokenIssuer
) -> None:
    assert token_registry.issuer is token_issuer
    status, challenge = _http_status(f"{token_registry.url}/v2/")
    assert status == 401 and f'realm="{token_issuer.realm}"' in challenge
    repo = unique_repo("harness/token")
    token_issuer.clear()
    pusher = token_registry.pusher()
    digest, _ = push_image(pusher, repo, "v1", layers=[make_layer(4, 100), make_layer(5, 100)])
    # Seven registry calls, one token: the pusher caches it per scope.
    assert token_issuer.token_count == 1
    assert token_issuer.requests[0].username == token_registry.username
    assert token_issuer.requests[0].scopes == (f"repository:{repo}:pull,push",)
    assert pusher.get_manifest(repo, "v1")[0] == skopeo_raw(
        token_registry.ref(repo, "v1"), token_registry.creds
    )
    assert skopeo_digest(token_registry.ref(repo, "v1"), token_registry.creds) == digest


def test_token_issuer_refuses_bad_password_and_limits_anonymous(
    token_registry: RegistryServer, token_issuer: TokenIssuer
) -> None:
    repo = unique_repo("harness/token-anon")
    push_image(token_registry.pusher(), repo, "v1", layers=[make_layer(6, 100)])
    token_issuer.clear()
    with pytest.raises(PushError) as err:
        RegistryPusher(token_registry.url, "bob", "wrong").get_manifest(repo, "v1")
    assert err.value.status == 401
    assert token_issuer.requests[-1].status == 401
    # Anonymous gets a token with no access, so the registry still says 401...
    with pytest.raises(PushError) as err:
        RegistryPusher(token_registry.url).get_manifest(repo, "v1")
    assert err.value.status == 401
    assert token_issuer.requests[-1] == TokenRequest(None, (f"repository:{repo}:pull,push",), 200)
    # ...unless anonymous pull is granted; push stays denied.
    token_issuer.anonymous_actions = frozenset({"pull"})
    try:
        anon = RegistryPusher(token_registry.url)
        assert json.loads(anon.get_manifest(repo, "v1")[0])["schemaVersion"] == 2
        with pytest.raises(PushError):
            push_image(anon, repo, "v2", layers=[make_layer(7, 100)])
    finally:
        token_issuer.anonymous_actions = frozenset()


def test_token_issuer_supports_oauth2_password_grant(
    token_registry: RegistryServer, token_issuer: TokenIssuer
) -> None:
    repo = unique_repo("harness/oauth")
    digest, _ = push_image(token_registry.pusher(), repo, "v1", layers=[make_layer(10, 100)])
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))

    def post(password: str) -> urllib.request.Request:
        form = {
            "grant_type": "password",
            "username": "bob",
            "password": password,
            "service": token_issuer.service,
            "scope": f"repository:{repo}:pull",
            "client_id": "gcrsync-tests",
        }
        return urllib.request.Request(token_issuer.realm, data=urllib.parse.urlencode(form).encode())

    with pytest.raises(urllib.error.HTTPError) as err:
        opener.open(post("wrong"), timeout=10)
    assert err.value.code == 401
    with opener.open(post(token_issuer.users["bob"]), timeout=10) as r:
        token = json.loads(r.read())["access_token"]
    req = urllib.request.Request(
        f"{token_registry.url}/v2/{repo}/manifests/v1",
        headers={"Authorization": f"Bearer {token}", "Accept": DOCKER_MANIFEST},
    )
    with opener.open(req, timeout=10) as r:
        assert r.headers["Docker-Content-Digest"] == digest


def test_requests_lists_what_the_registry_served(registry: RegistryServer) -> None:
    registry.clear_requests()
    assert registry.requests() == []
    repo = unique_repo("harness/log")
    layer = make_layer(8, 100)
    push_image(registry.pusher(), repo, "v1", layers=[layer])
    logged = registry.requests()
    assert ("HEAD", f"/v2/{repo}/blobs/{sha256_digest(layer)}", 404) in logged
    assert ("PUT", f"/v2/{repo}/manifests/v1", 201) in logged
    assert sum(1 for r in logged if r.method == "POST" and r.status == 202) == 2  # config + layer
    assert all(r.path.startswith(f"/v2/{repo}/") for r in logged)
    registry.clear_requests()
    registry.pusher().get_manifest(repo, "v1")
    assert registry.requests() == [("GET", f"/v2/{repo}/manifests/v1", 200)]


def test_make_registry_gives_a_fresh_empty_registry(
    make_registry: MakeRegistry, registry: RegistryServer
) -> None:
    fresh = make_registry()
    assert isinstance(fresh, RegistryServer) and fresh.port != registry.port
    status, _ = _http_status(f"{fresh.url}/v2/_catalog")
    assert status == 200
    assert json.loads(fresh.pusher().request("GET", "/v2/_catalog").body)["repositories"] == []


def test_skopeo_copy_all_preserves_index_digest(registry: RegistryServer, registry2: RegistryServer) -> None:
    repo = unique_repo("harness/copy")
    digest = push_index(registry.pusher(), repo, "v1", PLATFORMS[:2], layer_size=1024, seed=9, oci=True)
    skopeo_copy_all(registry.ref(repo, "v1"), registry2.ref(repo, "v1"))
    assert skopeo_digest(registry2.ref(repo, "v1")) == digest
    assert hashlib.sha256(skopeo_raw(registry2.ref(repo, "v1"))).hexdigest() == digest.split(":", 1)[1]
