"""`gcrsync copy` and the copy engine against real registries, with skopeo as the independent oracle."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from click.testing import CliRunner
from tools.imagefactory import make_layer, push_artifact, push_image, push_index, push_schema1

from gcrsync.cli import main
from gcrsync.engine.blobs import BlobMover
from gcrsync.engine.copy import CopyOptions, copy_image
from gcrsync.engine.result import ImageResult
from gcrsync.errors import AuthError, DigestMismatch
from gcrsync.oci import Platform
from gcrsync.registry.client import RegistryClient
from gcrsync.registry.credentials import Credential, CredentialStore
from gcrsync.registry.transport import Transport, TransportOptions
from harness import RegistryServer, skopeo_digest, skopeo_raw, unique_repo


def creds_for(*servers: RegistryServer, password: str | None = None) -> CredentialStore:
    overrides = {
        s.host: Credential(username=s.username, password=password or s.password) for s in servers if s.username
    }
    return CredentialStore(overrides, use_docker_config=False)


@pytest.fixture
async def client_factory() -> AsyncIterator[object]:
    transports: list[Transport] = []

    def make(creds: CredentialStore | None = None) -> RegistryClient:
        transport = Transport(TransportOptions(max_attempts=2, backoff_base=0.01))
        transports.append(transport)
        return RegistryClient(transport, creds or CredentialStore(use_docker_config=False))

    yield make
    for t in transports:
        await t.close()


def run_cli(*args: str) -> tuple[int, str]:
    import tempfile

    with tempfile.TemporaryDirectory() as cache:  # no mount hints carried between tests
        result = CliRunner().invoke(main, list(args), env={"DOCKER_CONFIG": "/nonexistent", "XDG_CACHE_HOME": cache})
    return result.exit_code, result.output


def blob_digests(raw: bytes) -> list[str]:
    doc = json.loads(raw)
    out = [doc["config"]["digest"]] if "config" in doc else []
    return out + [layer["digest"] for layer in doc.get("layers", [])]


def assert_same_image(src: RegistryServer, src_repo: str, dst: RegistryServer, dst_repo: str, tag: str) -> str:
    """Digests equal per skopeo, and every child manifest and blob is really at the target."""
    digest = skopeo_digest(src.ref(src_repo, tag), src.creds)
    assert skopeo_digest(dst.ref(dst_repo, tag), dst.creds) == digest
    raw = skopeo_raw(dst.ref(dst_repo, tag), dst.creds)
    doc = json.loads(raw)
    children = [m["digest"] for m in doc.get("manifests", [])]
    pusher = dst.pusher()
    for child in children:
        child_raw = skopeo_raw(dst.ref(dst_repo, child), dst.creds)
        assert child_raw == skopeo_raw(src.ref(src_repo, child), src.creds)
        for blob in blob_digests(child_raw):
            assert pusher.request("HEAD", f"/v2/{dst_repo}/blobs/{blob}", repo=dst_repo).status == 200
    if not children and "config" in doc:
        for blob in blob_digests(raw):
            assert pusher.request("HEAD", f"/v2/{dst_repo}/blobs/{blob}", repo=dst_repo).status == 200
    return digest


def test_copy_single_arch_docker(registry: RegistryServer, registry2: RegistryServer) -> None:
    repo = unique_repo("single")
    push_image(registry.pusher(), repo, "v1", layers=[make_layer(1, 50_000), make_layer(2, 70_000)])
    code, out = run_cli("copy", f"{registry.host}/{repo}:v1", f"{registry2.host}/mirror/{repo}:v1")
    assert code == 0, out
    digest = assert_same_image(registry, repo, registry2, f"mirror/{repo}", "v1")
    assert digest in out and "3 blobs copied" in out
    code, out = run_cli("copy", f"{registry.host}/{repo}:v1", f"{registry2.host}/mirror/{repo}:v1")
    assert code == 0 and out.startswith("unchanged")


@pytest.mark.parametrize("oci", [False, True])
def test_copy_multi_arch_index(registry: RegistryServer, registry2: RegistryServer, oci: bool) -> None:
    repo = unique_repo("multi")
    plats = [("linux", "amd64", None), ("linux", "arm64", "v8"), ("linux", "arm", "v7")]
    push_index(registry.pusher(), repo, "v2", plats, 20_000, seed=7, oci=oci)
    code, out = run_cli("copy", f"{registry.host}/{repo}:v2", f"{registry2.host}/{repo}")  # tag defaults to v2
    assert code == 0, out
    assert_same_image(registry, repo, registry2, repo, "v2")


def test_copy_artifact_with_artifact_type(registry: RegistryServer, registry2: RegistryServer) -> None:
    repo = unique_repo("artifact")
    push_artifact(registry.pusher(), repo, "sig", artifact_type="application/vnd.example.sbom")
    code, out = run_cli("copy", f"{registry.host}/{repo}:sig", f"{registry2.host}/{repo}:sig")
    assert code == 0, out
    assert_same_image(registry, repo, registry2, repo, "sig")
    doc = json.loads(skopeo_raw(registry2.ref(repo, "sig")))
    assert doc["artifactType"] == "application/vnd.example.sbom"


def test_copy_schema1(schema1_registry: RegistryServer, make_registry: object, registry2: RegistryServer) -> None:
    repo = unique_repo("schema1")
    digest = push_schema1(schema1_registry.pusher(), repo, "old", [make_layer(11, 10_000)])
    target = make_registry(schema1=True)  # type: ignore[operator]
    code, out = run_cli("copy", f"{schema1_registry.host}/{repo}:old", f"{target.host}/{repo}:old")
    assert code == 0, out
    assert skopeo_digest(target.ref(repo, "old")) == digest
    # A target that refuses schema1 is reported clearly, not as a crash.
    code, out = run_cli("copy", f"{schema1_registry.host}/{repo}:old", f"{registry2.host}/{repo}:old")
    assert code != 0
    assert "schema1" in out and "Traceback" not in out


async def test_shared_layers_are_mounted_not_uploaded(
    registry: RegistryServer, make_registry: object, client_factory: object
) -> None:
    target: RegistryServer = make_registry()  # type: ignore[operator]
    shared = [make_layer(21, 60_000), make_layer(22, 60_000)]
    a, b = unique_repo("share-a"), unique_repo("share-b")
    push_image(registry.pusher(), a, "v1", layers=shared)
    push_image(registry.pusher(), b, "v1", layers=[*shared, make_layer(23, 1_000)], labels={"x": "b"})
    client = client_factory()  # type: ignore[operator]
    mover = BlobMover(4)
    src_a, src_b = client.repository(registry.host, a), client.repository(registry.host, b)
    dst_a, dst_b = client.repository(target.host, a), client.repository(target.host, b)
    first = await copy_image(src_a, "v1", dst_a, "v1", mover)
    target.clear_requests()
    second = await copy_image(src_b, "v1", dst_b, "v1", mover)
    assert first.blobs_copied == 3
    assert second.blobs_mounted == 2 and second.blobs_copied == 2  # new layer + new config
    mounts = [r for r in target.requests() if r.method == "POST" and "mount=" in r.path]
    assert len(mounts) == 2 and all(r.status == 201 for r in mounts)
    uploads = [r for r in target.requests() if r.method == "PUT" and "/blobs/uploads/" in r.path]
    assert len(uploads) == 2
    for layer_digest in blob_digests(skopeo_raw(registry.ref(b, "v1"))):
        assert mover.pulls.get(layer_digest, 0) <= 1
    assert skopeo_digest(target.ref(b, "v1")) == skopeo_digest(registry.ref(b, "v1"))


def test_basic_auth_source_and_wrong_password(auth_registry: RegistryServer, registry2: RegistryServer,
                                              tmp_path: Path) -> None:
    repo = unique_repo("basic")
    push_image(auth_registry.pusher(), repo, "v1", layers=[make_layer(31, 5_000)])
    config = tmp_path / "config.json"
    import base64

    token = base64.b64encode(f"{auth_registry.username}:{auth_registry.password}".encode()).decode()
    config.write_text(json.dumps({"auths": {auth_registry.host: {"auth": token}}}))
    runner = CliRunner()
    ok = runner.invoke(main, ["copy", f"{auth_registry.host}/{repo}:v1", f"{registry2.host}/{repo}:v1"],
                       env={"DOCKER_CONFIG": str(tmp_path)})
    assert ok.exit_code == 0, ok.output
    assert skopeo_digest(registry2.ref(repo, "v1")) == skopeo_digest(auth_registry.ref(repo, "v1"),
                                                                     auth_registry.creds)
    bad = base64.b64encode(f"{auth_registry.username}:wrong".encode()).decode()
    config.write_text(json.dumps({"auths": {auth_registry.host: {"auth": bad}}}))
    fail = runner.invoke(main, ["copy", f"{auth_registry.host}/{repo}:v1", f"{registry2.host}/{repo}-x:v1"],
                         env={"DOCKER_CONFIG": str(tmp_path)})
    assert fail.exit_code != 0
    assert "error:" in fail.output and "UNAUTHORIZED" in fail.output
    assert auth_registry.password not in fail.output and "Traceback" not in fail.output


async def test_token_auth_both_sides_and_tokens_cached(
    token_registry: RegistryServer, registry: RegistryServer, client_factory: object
) -> None:
    repo = unique_repo("token")
    push_index(registry.pusher(), repo, "v1", [("linux", "amd64", None), ("linux", "arm64", None)], 10_000, seed=5)
    client = client_factory(creds_for(token_registry))  # type: ignore[operator]
    issuer = token_registry.issuer
    assert issuer is not None
    before = issuer.token_count
    result = await copy_image(client.repository(registry.host, repo), "v1",
                              client.repository(token_registry.host, repo), "v1", BlobMover(4))
    assert result.state == "copied"
    # One scope set (pull,push on the target repo): a token or two, never one per blob or manifest.
    assert issuer.token_count - before <= 2
    assert_same_image(registry, repo, token_registry, repo, "v1")
    # Back out through the token registry as a source, into a fresh repo.
    back = unique_repo("token-back")
    result = await copy_image(client.repository(token_registry.host, repo), "v1",
                              client.repository(registry.host, back), "v1", BlobMover(4))
    assert result.digest == skopeo_digest(registry.ref(back, "v1"))


async def test_token_auth_wrong_password(token_registry: RegistryServer, registry: RegistryServer,
                                         client_factory: object) -> None:
    client = client_factory(creds_for(token_registry, password="not-the-password"))  # type: ignore[operator]
    repo = unique_repo("token-bad")
    push_image(registry.pusher(), repo, "v1", layers=[make_layer(41, 1_000)])
    with pytest.raises(BaseException) as info:
        await copy_image(client.repository(registry.host, repo), "v1",
                         client.repository(token_registry.host, repo), "v1", BlobMover(2))
    from gcrsync.errors import first_error

    err = first_error(info.value)
    assert isinstance(err, AuthError)
    assert "rejected" in str(err) and "not-the-password" not in str(err)


def _corrupt_blob(server: RegistryServer, digest: str) -> None:
    hexd = digest.split(":", 1)[1]
    data = server.storage / "docker/registry/v2/blobs/sha256" / hexd[:2] / hexd / "data"
    assert data.exists(), data
    raw = bytearray(data.read_bytes())
    raw[len(raw) // 2] ^= 0xFF  # same size, different bytes
    os.chmod(data, 0o644)
    data.write_bytes(bytes(raw))


async def test_lying_source_blob_fails_image_and_pushes_no_manifest(
    make_registry: object, registry2: RegistryServer, client_factory: object
) -> None:
    source: RegistryServer = make_registry()  # type: ignore[operator]
    repo = unique_repo("liar")
    layers = [make_layer(51, 40_000), make_layer(52, 40_000)]
    _, raw = push_image(source.pusher(), repo, "v1", layers=layers)
    bad = json.loads(raw)["layers"][1]["digest"]
    _corrupt_blob(source, bad)
    client = client_factory()  # type: ignore[operator]
    with pytest.raises(BaseException) as info:
        await copy_image(client.repository(source.host, repo), "v1",
                         client.repository(registry2.host, repo), "v1", BlobMover(2))
    from gcrsync.errors import first_error

    assert isinstance(first_error(info.value), DigestMismatch)
    assert "hashes to" in str(first_error(info.value))
    assert registry2.pusher().request("HEAD", f"/v2/{repo}/manifests/v1", repo=repo).status == 404
    assert registry2.pusher().request("HEAD", f"/v2/{repo}/blobs/{bad}", repo=repo).status == 404
    code, out = await asyncio.to_thread(run_cli, "copy", f"{source.host}/{repo}:v1", f"{registry2.host}/{repo}:v1")
    assert code == 1 and "hashes to" in out and "Traceback" not in out


async def test_platform_subset_rewrites_index(registry: RegistryServer, registry2: RegistryServer,
                                              client_factory: object) -> None:
    repo = unique_repo("plat")
    plats = [("linux", "amd64", None), ("linux", "arm64", "v8"), ("windows", "amd64", None)]
    source_digest = push_index(registry.pusher(), repo, "v1", plats, 8_000, seed=9, oci=True)
    client = client_factory()  # type: ignore[operator]
    result: ImageResult = await copy_image(
        client.repository(registry.host, repo), "v1", client.repository(registry2.host, repo), "v1",
        BlobMover(2), CopyOptions(platforms=[Platform.parse("linux/arm64"), Platform.parse("linux/amd64")]),
    )
    assert result.source_digest == source_digest and result.digest != source_digest
    doc = json.loads(skopeo_raw(registry2.ref(repo, "v1")))
    assert sorted(m["platform"]["architecture"] for m in doc["manifests"]) == ["amd64", "arm64"]
    assert skopeo_digest(registry2.ref(repo, "v1")) == result.digest


def test_copy_to_and_from_oci_layout(registry: RegistryServer, registry2: RegistryServer, tmp_path: Path) -> None:
    repo = unique_repo("layout")
    digest = push_index(registry.pusher(), repo, "v1", [("linux", "amd64", None), ("linux", "arm64", None)],
                        10_000, seed=13, oci=True)
    layout = tmp_path / "out"
    code, out = run_cli("copy", f"{registry.host}/{repo}:v1", f"oci:{layout}:v1")
    assert code == 0, out
    assert skopeo_digest(f"oci:{layout}:v1") == digest  # the independent reader agrees
    code, out = run_cli("copy", f"oci:{layout}:v1", f"{registry2.host}/{repo}-back:v1")
    assert code == 0, out
    assert skopeo_digest(registry2.ref(f"{repo}-back", "v1")) == digest


def test_invalid_reference_is_one_line_error() -> None:
    code, out = run_cli("copy", "UPPER/Case:tag", "localhost:5000/x:y")
    assert code != 0 and "error:" in out and "Traceback" not in out and len(out.strip().splitlines()) == 1


def test_copy_reports_missing_tag(registry: RegistryServer, registry2: RegistryServer) -> None:
    code, out = run_cli("copy", f"{registry.host}/{unique_repo('none')}:nope", f"{registry2.host}/x:nope")
    assert code == 1 and ("MANIFEST_UNKNOWN" in out or "NAME_UNKNOWN" in out), out


def test_copy_by_digest_without_a_tag_pushes_by_digest(registry: RegistryServer, registry2: RegistryServer) -> None:
    repo = unique_repo("bydigest")
    digest, _ = push_image(registry.pusher(), repo, "v1", layers=[make_layer(401, 900)])
    code, out = run_cli("copy", f"{registry.host}/{repo}@{digest}", f"{registry2.host}/{repo}")
    assert code == 0, out
    assert skopeo_digest(registry2.ref(repo, digest)) == digest
    assert registry2.pusher().request("HEAD", f"/v2/{repo}/manifests/latest", repo=repo).status == 404
    code, out = run_cli("copy", f"{registry.host}/{repo}@{digest}", f"{registry2.host}/{repo}",
                        "--platform", "linux/amd64")
    assert code == 2 and out.startswith("error:") and "give DESTINATION a tag" in out


@pytest.mark.skipif(shutil.which("skopeo") is None, reason="skopeo missing")
def test_foreign_layers_are_not_copied(make_registry: object, tmp_path: Path) -> None:
    allow = {"validation": {"manifests": {"urls": {"allow": ["^https?://"]}}}}
    source: RegistryServer = make_registry(extra_config=allow)  # type: ignore[operator]
    repo = unique_repo("foreign")
    pusher = source.pusher()
    base = pusher.push_blob(repo, make_layer(61, 5_000), "application/vnd.docker.image.rootfs.diff.tar.gzip")
    config = pusher.push_blob(repo, b'{"architecture":"amd64","os":"windows","rootfs":{"type":"layers"}}',
                              "application/vnd.docker.container.image.v1+json")
    foreign = {"mediaType": "application/vnd.docker.image.rootfs.foreign.diff.tar.gzip",
               "digest": "sha256:" + "ab" * 32, "size": 123456,
               "urls": ["https://mcr.example.invalid/blob"]}
    manifest = {"schemaVersion": 2, "mediaType": "application/vnd.docker.distribution.manifest.v2+json",
                "config": config, "layers": [foreign, base]}
    raw = json.dumps(manifest).encode()
    digest = pusher.push_manifest(repo, "v1", raw, manifest["mediaType"])
    code, out = run_cli("copy", f"{source.host}/{repo}:v1", f"oci:{tmp_path / 'win'}:v1")
    assert code == 0, out
    assert "2 blobs copied" in out  # config + base; the foreign layer is referenced, not fetched
    assert not (tmp_path / "win/blobs/sha256" / ("ab" * 32)).exists()
    assert (tmp_path / "win/blobs/sha256" / digest.split(":")[1]).exists()


async def _agen(chunks: list[bytes]) -> AsyncIterator[bytes]:
    for c in chunks:
        yield c


def test_separate_copies_mount_shared_layers_remembered_from_earlier_runs(
    registry: RegistryServer, make_registry: object, tmp_path: Path
) -> None:
    target: RegistryServer = make_registry()  # type: ignore[operator]
    shared = [make_layer(71, 80_000), make_layer(72, 80_000)]
    a, b = unique_repo("cache-a"), unique_repo("cache-b")
    push_image(registry.pusher(), a, "v1", layers=shared)
    push_image(registry.pusher(), b, "v1", layers=[*shared, make_layer(73, 1_000)], labels={"b": "1"})
    env = {"DOCKER_CONFIG": str(tmp_path), "XDG_CACHE_HOME": str(tmp_path / "cache")}
    first = CliRunner().invoke(main, ["copy", f"{registry.host}/{a}:v1", f"{target.host}/{a}:v1"], env=env)
    assert first.exit_code == 0, first.output
    registry.clear_requests()
    second = CliRunner().invoke(main, ["copy", f"{registry.host}/{b}:v1", f"{target.host}/{b}:v1"], env=env)
    assert second.exit_code == 0, second.output
    assert "2 mounted" in second.output
    for layer in shared:
        digest = "sha256:" + __import__("hashlib").sha256(layer).hexdigest()
        assert not [r for r in registry.requests() if r.method == "GET" and r.path.endswith(digest)]
    assert skopeo_digest(target.ref(b, "v1")) == skopeo_digest(registry.ref(b, "v1"))
    # A stale hint (blob gone from the remembered repo's registry) just falls back to a copy.
    fresh: RegistryServer = make_registry()  # type: ignore[operator]
    third = CliRunner().invoke(main, ["copy", f"{registry.host}/{b}:v1", f"{fresh.host}/{b}:v1"], env=env)
    assert third.exit_code == 0 and "4 blobs copied" in third.output, third.output


def _nest(pusher: object, repo: str, depth: int) -> str:
    """An index of an index of ... (depth levels) of one image; returns the outer digest, tagged 'nested'."""
    from tools.imagefactory import OCI_INDEX, sha256_digest

    digest, raw = push_image(pusher, repo, None, layers=[make_layer(81, 500)], oci=True)  # type: ignore[arg-type]
    media = "application/vnd.oci.image.manifest.v1+json"
    for level in range(depth):
        doc = {"schemaVersion": 2, "mediaType": OCI_INDEX,
               "manifests": [{"mediaType": media, "digest": digest, "size": len(raw),
                              "platform": {"os": "linux", "architecture": "amd64"}}],
               "annotations": {"level": str(level)}}
        raw = json.dumps(doc).encode()
        ref = "nested" if level == depth - 1 else sha256_digest(raw)
        digest = pusher.push_manifest(repo, ref, raw, OCI_INDEX)  # type: ignore[attr-defined]
        media = OCI_INDEX
    return digest


async def test_nested_indexes_copy_but_abusive_depth_is_refused(
    registry: RegistryServer, registry2: RegistryServer, client_factory: object
) -> None:
    from gcrsync.engine.copy import MAX_INDEX_DEPTH
    from gcrsync.errors import ManifestError, first_error

    client = client_factory()  # type: ignore[operator]
    ok_repo, deep_repo = unique_repo("nest-ok"), unique_repo("nest-deep")
    digest = _nest(registry.pusher(), ok_repo, 2)
    result = await copy_image(client.repository(registry.host, ok_repo), "nested",
                              client.repository(registry2.host, ok_repo), "nested", BlobMover(2))
    assert result.digest == digest == skopeo_digest(registry2.ref(ok_repo, "nested"))
    _nest(registry.pusher(), deep_repo, MAX_INDEX_DEPTH + 2)
    with pytest.raises(BaseException) as info:
        await copy_image(client.repository(registry.host, deep_repo), "nested",
                         client.repository(registry2.host, deep_repo), "nested", BlobMover(2))
    err = first_error(info.value)
    assert isinstance(err, ManifestError) and "nesting deeper" in str(err)
    assert registry2.pusher().request("GET", f"/v2/{deep_repo}/tags/list", repo=deep_repo).status == 404


def test_copy_platform_mismatch_on_a_single_platform_image(registry: RegistryServer,
                                                           registry2: RegistryServer) -> None:
    repo = unique_repo("single-plat")
    push_image(registry.pusher(), repo, "v1", layers=[make_layer(171, 500)], platform=("linux", "amd64", None))
    code, out = run_cli("copy", f"{registry.host}/{repo}:v1", f"{registry2.host}/{repo}:v1", "--platform",
                        "linux/arm64")
    assert code == 1 and "single-platform linux/amd64 image" in out
    code, out = run_cli("copy", f"{registry.host}/{repo}:v1", f"{registry2.host}/{repo}:v1", "--platform",
                        "linux/amd64")
    assert code == 0, out


def test_copy_credentials_from_env_and_registry_policy_from_config(
    auth_registry: RegistryServer, registry2: RegistryServer, tmp_path: Path
) -> None:
    repo = unique_repo("copy-env")
    digest, _ = push_image(auth_registry.pusher(), repo, "v1", layers=[make_layer(181, 700)])
    env = {"DOCKER_CONFIG": str(tmp_path), "XDG_CACHE_HOME": str(tmp_path / "cache"),
           "GCRSYNC_SRC_CREDS": f"{auth_registry.username}:{auth_registry.password}"}
    args = ["copy", f"{auth_registry.host}/{repo}:v1", f"{registry2.host}/{repo}:v1"]
    result = CliRunner().invoke(main, args, env=env)
    assert result.exit_code == 0, result.output
    assert skopeo_digest(registry2.ref(repo, "v1")) == digest
    assert (auth_registry.password or "?") not in result.output
    # The config's registries section: credentials by env var name, and a per-host policy.
    config = tmp_path / "c.yaml"
    config.write_text(f"version: 1\nregistries:\n  '{auth_registry.host}':\n    username_env: U\n"
                      f"    password_env: P\n    max_concurrency: 2\n")
    result = CliRunner().invoke(main, [*args[:2], f"{registry2.host}/{repo}-cfg:v1", "-c", str(config)],
                                env={**env, "GCRSYNC_SRC_CREDS": "", "U": auth_registry.username or "",
                                     "P": auth_registry.password or ""})
    assert result.exit_code == 0, result.output
    assert skopeo_digest(registry2.ref(f"{repo}-cfg", "v1")) == digest


async def test_ping_checks_reachability_and_credentials(
    registry: RegistryServer, auth_registry: RegistryServer, token_registry: RegistryServer, client_factory: object
) -> None:
    good = client_factory(creds_for(auth_registry, token_registry))  # type: ignore[operator]
    for server in (registry, auth_registry, token_registry):
        await good.ping(server.host)
    bad = client_factory(creds_for(auth_registry, token_registry, password="wrong"))  # type: ignore[operator]
    for server in (auth_registry, token_registry):
        with pytest.raises(AuthError):
            await bad.ping(server.host)
