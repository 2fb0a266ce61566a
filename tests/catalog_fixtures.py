"""Ledgers with awkward names for the catalog tests (shared by test_catalog.py and test_catalog_page.py)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

from gcrsync.ledger import Entry, Ledger, LedgerFiles

T0 = datetime(2026, 11, 29, 3, 0, 0, tzinfo=UTC)
OWNER_HEAD = "# Miroir d'images — équipe plateforme ✓\n\nÉcrit à la main: ne pas toucher. 日本語も.\n"
OWNER_TAIL = "\n## Contact\n\nÉquipe « plateforme » — #mirror 🐳\n"


def dg(n: int) -> str:
    return "sha256:" + f"{n:064x}"


def tricky_ledgers() -> list[Ledger]:
    """Nested repositories, tags with '_', '.', '-', upper case, a target ref with '+', a legacy entry,
    platform subsets and an OCI-layout target."""
    k8s = Ledger("registry.k8s.io", "docker.io/mirror")  # a whole registry as the namespace
    for i, tag in enumerate(["v1.31.2", "v1.31.20", "v1.9.0", "v1.31.2-rc.0"]):
        k8s.record("kube-proxy", tag, digest=dg(i + 1), target_ref=f"docker.io/mirror/kube-proxy:{tag}",
                   media_type=None, now=T0 + timedelta(minutes=i),
                   platforms=["linux/arm64", "linux/amd64"] if tag == "v1.31.2" else None)
    k8s.record("sig-storage/csi/provisioner", "V2_beta.1", digest=dg(10),
               target_ref="docker.io/mirror/sig-storage_csi_provisioner:V2_beta.1", media_type=None, now=T0)
    k8s.record("sig-storage/csi/provisioner", "build_7", digest=dg(11),
               target_ref="docker.io/mirror/custom:build+7", media_type=None, now=T0 - timedelta(days=1))
    k8s.images["pause"] = {"3.1": Entry(digest=None, target="docker.io/mirror/pause:3.1", legacy=True)}
    oci = Ledger("localhost:5000/team", "oci:/srv/mirror/team")
    oci.record("tools/cli", "v2", digest=dg(20), target_ref="oci:/srv/mirror/team/tools_cli:v2", media_type=None,
               now=T0 - timedelta(hours=2))
    empty = Ledger("quay.io/nothing-yet", "docker.io/mirror")
    return [k8s, oci, empty]


def write_ledgers(root: Path, ledgers: list[Ledger]) -> None:
    store = LedgerFiles(root)
    for ledger in ledgers:
        store.save(ledger)
