"""Signatures, attestations and SBOMs travel with their images: the engine's copy of attached artifacts in
every direction (referrers API → API, API → fallback tag, fallback tag → API, cosign tag schema → tag
schema), with cosign-shaped artifacts on a multi-arch index and on one of its children."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from tools.imagefactory import DOCKER_MANIFEST, SPDX_JSON, cosign_tag, make_layer, push_attached, push_image, push_index

from gcrsync.cli import main
from gcrsync.engine.artifacts import ArtifactPolicy, copy_attached
from gcrsync.engine.blobs import BlobMover
from gcrsync.engine.copy import copy_image
from gcrsync.oci import referrer_entry
from gcrsync.registry.client import RegistryClient
from gcrsync.registry.credentials import CredentialStore
from gcrsync.registry.repository import Repository
from gcrsync.registry.transport import Transport, TransportOptions
from harness import RegistryServer, skopeo_digest, unique_repo
from personalities.referrers import ReferrersRegistry

INDEX_TYPE = "application/vnd.docker.distribution.manifest.list.v2+json"


@pytest.fixture
def fronts(registry: RegistryServer, registry2: RegistryServer) -> Iterator[dict[str, Any]]:
    """Source and target, each as a referrers-capable front and as the bare distribution 2.8 behind it."""
    with ReferrersRegistry(registry.url) as src, ReferrersRegistry(registry2.url) as dst:
        yield {"native-src": src, "plain-src": registry, "native-dst": dst, "plain-dst": registry2}


def attach_all(server: Any, repo: str, seed: int, *, referrers: bool = True) -> tuple[str, dict[str, str]]:
    """A two-platform index; a signature and an attestation on the index, an SBOM and a signature on the
    amd64 child, a signature on the attestation. Returns the index digest and name → artifact digest."""
    pusher = server.pusher()
    index = push_index(pusher, repo, "v1", [("linux", "amd64", None), ("linux", "arm64", "v8")], 2_000, seed=seed)
    index_raw, _ = pusher.get_manifest(repo, index)
    child = json.loads(index_raw)["manifests"][0]
    on_index = {"mediaType": INDEX_TYPE, "digest": index, "size": len(index_raw)}
    on_child = {k: child[k] for k in ("mediaType", "digest", "size")}
    out: dict[str, str] = {}
    for name, kind, subject in (("index-sig", "sig", on_index), ("index-att", "att", on_index),
                                ("child-sbom", "sbom", on_child), ("child-sig", "sig", on_child)):
        tag = None if referrers else cosign_tag(subject["digest"], kind)
        out[name] = push_attached(pusher, repo, kind, subject, tag=tag, with_subject=referrers, seed=seed)[0]
    if referrers:
        att_raw, _ = pusher.get_manifest(repo, out["index-att"])
        on_att = {"mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": out["index-att"],
                  "size": len(att_raw)}
        out["att-sig"] = push_attached(pusher, repo, "sig", on_att, seed=seed + 1)[0]
    return index, out


async def referrer_digests(store: Repository, subject: str) -> set[str]:
    listed = await store.referrers(subject)
    if listed is None:
        listed = (await store.fallback_referrers(subject))[0]
    return {e["digest"] for e in listed}


async def mirror(client: RegistryClient, src: Any, dst: Any, repo: str,
                 policy: ArtifactPolicy | None = None) -> tuple[Repository, Repository, list[Any]]:
    source, target = client.repository(src.host, repo), client.repository(dst.host, repo)
    mover = BlobMover()
    result = await copy_image(source, "v1", target, "v1", mover)
    attached = await copy_attached(source, target, result.subjects, mover, policy or ArtifactPolicy())
    return source, target, attached


@pytest.mark.parametrize(("src_kind", "dst_kind"), [("native-src", "native-dst"), ("native-src", "plain-dst")])
async def test_referrers_are_mirrored_to_the_api_or_the_fallback_tag(
    fronts: dict[str, Any], client: RegistryClient, src_kind: str, dst_kind: str,
) -> None:
    repo = unique_repo("att")
    index, artifacts = attach_all(fronts["native-src"], repo, seed=1801)
    source, target, attached = await mirror(client, fronts[src_kind], fronts[dst_kind], repo)
    assert {a.digest for a in attached} == set(artifacts.values())
    child = next(iter((await source.get_manifest(index)).children)).digest
    for subject in (index, child, artifacts["index-att"]):
        assert await referrer_digests(target, subject) == await referrer_digests(source, subject) != set()
    if dst_kind == "plain-dst":
        assert await target.referrers(index) is None  # no API there: the fallback tag carries them
    for digest in artifacts.values():  # byte-identical artifacts, by skopeo's reading
        assert skopeo_digest(fronts[dst_kind].ref(repo, digest)) == digest
    # A second pass finds everything in place and copies nothing.
    _, _, again = await mirror(client, fronts[src_kind], fronts[dst_kind], repo)
    assert {a.digest for a in again} == set(artifacts.values()) and not any(a.copied for a in again)


async def test_fallback_tag_at_the_source_reaches_the_targets_api(
    fronts: dict[str, Any], client: RegistryClient,
) -> None:
    repo = unique_repo("fb")
    plain = client.repository(fronts["plain-src"].host, repo)
    index, artifacts = attach_all(fronts["plain-src"], repo, seed=1802)
    for name in ("index-sig", "index-att"):  # what a pusher to a registry without the API maintains
        await plain.add_fallback_referrers(index, [referrer_entry(await plain.get_manifest(artifacts[name]))])
    tags = await plain.list_tags()
    source, target = plain, client.repository(fronts["native-dst"].host, repo)
    mover = BlobMover()
    result = await copy_image(source, "v1", target, "v1", mover)
    attached = await copy_attached(source, target, result.subjects, mover, ArtifactPolicy(), source_tags=tags)
    assert {artifacts["index-sig"], artifacts["index-att"]} <= {a.digest for a in attached}
    assert await target.referrers(index) is not None
    assert await referrer_digests(target, index) == {artifacts["index-sig"], artifacts["index-att"]}


async def test_cosign_tag_schema_is_mirrored_as_tags(fronts: dict[str, Any], client: RegistryClient) -> None:
    repo = unique_repo("tagschema")
    index, artifacts = attach_all(fronts["plain-src"], repo, seed=1803, referrers=False)
    source, target, attached = await mirror(client, fronts["plain-src"], fronts["plain-dst"], repo)
    tags = set(await target.list_tags())
    assert {a.tag for a in attached} == {t for t in await source.list_tags() if t != "v1"} == tags - {"v1"}
    assert {a.kind for a in attached} == {"sig", "att", "sbom"}
    for tag in tags - {"v1"}:
        assert skopeo_digest(fronts["plain-dst"].ref(repo, tag)) == skopeo_digest(fronts["plain-src"].ref(repo, tag))
    assert cosign_tag(index, "sig") in tags and set(artifacts.values()) == {a.digest for a in attached}


async def test_artifact_type_filter_and_switch(fronts: dict[str, Any], client: RegistryClient) -> None:
    repo = unique_repo("filter")
    _, artifacts = attach_all(fronts["native-src"], repo, seed=1804)
    _, _, attached = await mirror(client, fronts["native-src"], fronts["native-dst"], repo,
                                  ArtifactPolicy(include=[SPDX_JSON]))
    assert [a.digest for a in attached] == [artifacts["child-sbom"]]
    _, _, sigs = await mirror(client, fronts["native-src"], fronts["native-dst"], repo,
                              ArtifactPolicy(include=["application/vnd.dev.*"], exclude=["*sigstore.bundle*"]))
    assert {a.digest for a in sigs} == {artifacts["index-sig"], artifacts["child-sig"]}
    _, _, none = await mirror(client, fronts["native-src"], fronts["native-dst"], repo,
                              ArtifactPolicy(enabled=False))
    assert none == []


# --- end to end: `gcrsync sync` and `gcrsync copy` ------------------------------------------------------------


def cli(tmp_path: Path, *args: str) -> tuple[int, str, dict[str, Any]]:
    report = tmp_path / f"report-{len(list(tmp_path.glob('report-*')))}.json"
    env = {"DOCKER_CONFIG": str(tmp_path / "nodocker"), "XDG_DATA_HOME": str(tmp_path / "data"),
           "XDG_CACHE_HOME": str(tmp_path / "cache"), "XDG_STATE_HOME": str(tmp_path / "state")}
    extra = ["--report", str(report)] if args[0] == "sync" else []
    result = CliRunner().invoke(main, [*args, *extra], env=env)
    data = json.loads(report.read_text()) if report.exists() else {}
    return result.exit_code, result.output, data


def test_sync_mirrors_artifacts_records_them_and_picks_up_a_new_signature(
    fronts: dict[str, Any], tmp_path: Path,
) -> None:
    ns = unique_repo("signed")
    src, dst = fronts["native-src"], fronts["plain-dst"]
    index, artifacts = attach_all(src, f"{ns}/app", seed=1805)
    v2, v2_raw = push_image(src.pusher(), f"{ns}/app", "v2", layers=[make_layer(1806, 1_000)])
    v2_desc = {"mediaType": DOCKER_MANIFEST, "digest": v2, "size": len(v2_raw)}
    v2_sig = push_attached(src.pusher(), f"{ns}/app", "sig", v2_desc, tag=cosign_tag(v2, "sig"),
                           with_subject=False, seed=1806)[0]
    other = push_image(src.pusher(), f"{ns}/app", "v3", layers=[make_layer(1807, 1_000)])[0]
    push_attached(src.pusher(), f"{ns}/app", "sig", {"mediaType": DOCKER_MANIFEST, "digest": other, "size": 1},
                  tag=cosign_tag(other, "sig"), with_subject=False, seed=1807)
    meta = tmp_path / "meta"
    dest = f"{dst.host}/{ns}"
    code, out, report = cli(tmp_path, "sync", f"{src.host}/{ns}", "--dest", dest, "--exclude", "v3",
                            "--metadata", str(meta))
    assert code == 0, out
    assert report["totals"]["artifacts"] == len(artifacts) + 1 == report["totals"]["artifacts_copied"]
    target = set(dst.pusher().list_tags(f"{ns}/app"))
    assert cosign_tag(v2, "sig") in target and cosign_tag(other, "sig") not in target  # v3 was filtered out
    assert skopeo_digest(dst.ref(f"{ns}/app", cosign_tag(v2, "sig"))) == v2_sig
    ledger = json.loads(next(meta.rglob(f"{ns}.json")).read_text())
    recorded = {a["digest"] for a in ledger["images"]["app"]["v1"]["artifacts"]}
    assert recorded == set(artifacts.values())
    changelog = (meta / "CHANGELOG.md").read_text()
    assert "signature (" in changelog and "SBOM (" in changelog and "attestation (" in changelog
    # A signature added at the source after the image was mirrored is picked up by the next run.
    index_raw, _ = src.pusher().get_manifest(f"{ns}/app", index)
    late = push_attached(src.pusher(), f"{ns}/app", "sbom",
                         {"mediaType": INDEX_TYPE, "digest": index, "size": len(index_raw)}, seed=1808)[0]
    code, out, report = cli(tmp_path, "sync", f"{src.host}/{ns}", "--dest", dest, "--exclude", "v3",
                            "--metadata", str(meta))
    assert code == 0, out
    assert report["totals"]["states"] == {"unchanged": 2} and report["totals"]["artifacts_copied"] == 1
    listed = {e["digest"] for e in asyncio.run(_fallback(client_host=dst.host, repo=f"{ns}/app", digest=index))}
    assert late in listed
    assert (meta / "CHANGELOG.md").read_text().count("SBOM (") == 2
    # --no-referrers: nothing attached is looked at.
    code, out, report = cli(tmp_path, "sync", f"{src.host}/{ns}", "--dest", f"{dst.host}/{ns}-bare",
                            "--exclude", "v3", "--no-referrers", "--dry-run")
    assert code == 0 and report["totals"]["artifacts"] == 0


def test_a_recursive_signature_added_later_reaches_the_index_children(
    fronts: dict[str, Any], tmp_path: Path,
) -> None:
    ns = unique_repo("recursive")
    src, dst, pusher = fronts["native-src"], fronts["plain-dst"], fronts["native-src"].pusher()
    index = push_index(pusher, f"{ns}/app", "v1", [("linux", "amd64", None), ("linux", "arm64", "v8")], 2_000,
                       seed=1810)
    meta = tmp_path / "meta"
    args = ("sync", f"{src.host}/{ns}", "--dest", f"{dst.host}/{ns}", "--metadata", str(meta))
    code, out, report = cli(tmp_path, *args)
    assert code == 0 and report["totals"]["artifacts"] == 0, out
    # `cosign sign --recursive` later: the index and each of its children get a signature at once.
    index_raw, _ = pusher.get_manifest(f"{ns}/app", index)
    subjects = [{"mediaType": INDEX_TYPE, "digest": index, "size": len(index_raw)},
                *({k: c[k] for k in ("mediaType", "digest", "size")} for c in json.loads(index_raw)["manifests"])]
    sigs = {s["digest"]: push_attached(pusher, f"{ns}/app", "sig", s, seed=1811 + i)[0]
            for i, s in enumerate(subjects)}
    fronts["plain-src"].clear_requests()
    code, out, report = cli(tmp_path, *args)
    assert code == 0 and report["totals"]["states"] == {"unchanged": 1}, out
    assert report["totals"]["artifacts_copied"] == 3
    index_gets = [r for r in fronts["plain-src"].requests() if r.method == "GET" and r.path.endswith(index)]
    assert len(index_gets) == 1  # the children were learnt from one manifest GET
    for subject, sig in sigs.items():
        assert [e["digest"] for e in asyncio.run(_fallback(client_host=dst.host, repo=f"{ns}/app",
                                                           digest=subject))] == [sig]
    ledger = json.loads(next(meta.rglob(f"{ns}.json")).read_text())
    assert {a["subject"] for a in ledger["images"]["app"]["v1"]["artifacts"]} == set(sigs)
    code, out, report = cli(tmp_path, *args)  # and the run after copies nothing
    assert code == 0 and report["totals"]["artifacts_copied"] == 0 and report["totals"]["artifacts"] == 3, out


async def _fallback(*, client_host: str, repo: str, digest: str) -> list[dict[str, Any]]:
    async with Transport(TransportOptions(max_attempts=1)) as transport:
        store = RegistryClient(transport, CredentialStore(use_docker_config=False)).repository(client_host, repo)
        return (await store.fallback_referrers(digest))[0]


def test_copy_takes_the_artifacts_along(fronts: dict[str, Any], tmp_path: Path) -> None:
    repo = unique_repo("copyart")
    src, dst = fronts["native-src"], fronts["native-dst"]
    index, artifacts = attach_all(src, repo, seed=1809)
    code, out, _ = cli(tmp_path, "copy", f"{src.host}/{repo}:v1", f"{dst.host}/{repo}:v1")
    assert code == 0, out
    assert f"{len(artifacts)} attached artifacts ({len(artifacts)} copied)" in out
    assert dst.referrers_of(repo, index) == {artifacts["index-sig"], artifacts["index-att"]}
    code, out, _ = cli(tmp_path, "copy", f"{src.host}/{repo}:v1", f"{dst.host}/{repo}-plain:v1", "--no-referrers")
    assert code == 0 and "attached" not in out


def test_what_artifacts_cost_per_run_and_a_failure_keeps_the_image(fronts: dict[str, Any], tmp_path: Path) -> None:
    ns = unique_repo("cost")
    src, dst = fronts["native-src"], fronts["plain-dst"]
    attach_all(src, f"{ns}/a", seed=1810)  # an index: 2 children, 5 artifacts
    for name in ("b", "c"):
        push_image(src.pusher(), f"{ns}/{name}", "v1", layers=[make_layer(1811 + len(name), 1_000)])
    meta, dest = tmp_path / "meta", f"{dst.host}/{ns}"
    before = src.stats["referrers"]
    code, out, report = cli(tmp_path, "sync", f"{src.host}/{ns}", "--dest", dest, "--metadata", str(meta))
    assert code == 0, out
    # Copied: one request per mirrored manifest (a: index + 2 children, b, c) plus one per artifact found
    # (artifacts of artifacts are looked for too).
    assert src.stats["referrers"] - before == 5 + report["totals"]["artifacts"]
    # Already mirrored: one request per tagged digest, plus one per artifact the check finds and follows.
    before = src.stats["referrers"]
    code, out, report = cli(tmp_path, "sync", f"{src.host}/{ns}", "--dest", dest, "--metadata", str(meta))
    assert code == 0 and report["totals"]["artifacts_copied"] == 0, out
    # a, b, c's tagged digests; a's child the ledger knows artifacts on; the 4 artifacts on a and its child.
    assert src.stats["referrers"] - before == 3 + 1 + 4
    # A source without the API: one request per run in all (the answer is remembered), none with the tag schema.
    plain_ns = unique_repo("plaincost")
    for name in ("x", "y", "z"):
        push_image(fronts["plain-src"].pusher(), f"{plain_ns}/{name}", "v1", layers=[make_layer(1820, 500)])
    fronts["plain-src"].clear_requests()
    code, out, report = cli(tmp_path, "sync", f"{fronts['plain-src'].host}/{plain_ns}", "--dest",
                            f"{dst.host}/{plain_ns}")
    assert code == 0, out
    assert len([r for r in fronts["plain-src"].requests() if "/referrers/" in r.path]) == 1
    # The source's referrers failing: the run fails (exit 1) but the image is mirrored and recorded.
    src.broken = True
    try:
        push_image(src.pusher(), f"{ns}/d", "v1", layers=[make_layer(1821, 700)])
        code, out, report = cli(tmp_path, "sync", f"{src.host}/{ns}", "--dest", dest, "--metadata", str(meta))
    finally:
        src.broken = False
    assert code == 1
    assert "attached artifacts:" in out
    assert skopeo_digest(dst.ref(f"{ns}/d", "v1")) == skopeo_digest(src.ref(f"{ns}/d", "v1"))
    ledger = json.loads(next(meta.rglob(f"{ns}.json")).read_text())
    assert "v1" in ledger["images"]["d"]


async def test_artifacts_of_artifacts_follow_to_a_bounded_depth(fronts: dict[str, Any], client: RegistryClient) -> None:
    """image ← sig1 ← sig2 ← … ← sig6: the first MAX_DEPTH + 1 levels travel, deeper ones do not (a loop or
    an abuse would otherwise never end)."""
    from gcrsync.engine.artifacts import MAX_DEPTH

    repo = unique_repo("chain")
    src = fronts["native-src"]
    digest, raw = push_image(src.pusher(), repo, "v1", layers=[make_layer(1830, 500)])
    subject = {"mediaType": DOCKER_MANIFEST, "digest": digest, "size": len(raw)}
    chain = []
    for level in range(MAX_DEPTH + 3):
        pushed, body = push_attached(src.pusher(), repo, "sig", subject, seed=1831 + level)
        chain.append(pushed)
        subject = {"mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": pushed, "size": len(body)}
    _, _, attached = await mirror(client, src, fronts["native-dst"], repo)
    assert [a.digest for a in attached] == chain[: MAX_DEPTH + 1]
