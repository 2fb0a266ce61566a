"""index.html in a real headless Chromium (Debian's `chromium`), opened from a file: URL with no network.

The page's own timings and state are read from attributes it sets on <html> (data-state, data-matches),
the results from the DOM Chromium dumps after the load event; requests from the net log.
A screenshot of a search is kept in $GCRSYNC_TEST_ARTIFACTS (default: .test-artifacts/ at the repo root).
"""

from __future__ import annotations

import html
import os
import re
import shutil
from pathlib import Path
from urllib.parse import quote

import pytest
from tools.headless import chromium_path, dump_dom, page_requests, screenshot

from catalog_fixtures import dg, tricky_ledgers, write_ledgers
from gcrsync.ledger.catalog import RunInfo
from gcrsync.ledger.catalogfiles import write_catalog

ROOT = Path(__file__).resolve().parent.parent
ARTIFACTS = Path(os.environ.get("GCRSYNC_TEST_ARTIFACTS") or ROOT / ".test-artifacts")

# Chromium is heavy for a 2-core machine: these tests run one after another on one worker.
pytestmark = pytest.mark.xdist_group("chromium")


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Path:
    assert chromium_path(), "Debian's chromium is needed (make test installs it)"
    root = tmp_path_factory.mktemp("site")
    write_ledgers(root, tricky_ledgers())
    write_catalog(root, RunInfo(None, 0))
    return root


def html_attrs(dom: str) -> dict[str, str]:
    tag = re.search(r"<html[^>]*>", dom)
    assert tag, dom[:500]
    return dict(re.findall(r'([\w-]+)="([^"]*)"', tag.group(0)))


def text(dom: str) -> str:
    return html.unescape(re.sub(r"<[^>]+>", " ", dom))


def hits(dom: str) -> list[str]:
    return [" ".join(text(li).split()) for li in re.findall(r'<li class="hit">.*?</li>', dom, re.S)]


def test_search_finds_a_tag_offline_and_shows_its_pull_command(site: Path, tmp_path: Path) -> None:
    netlog = tmp_path / "netlog.json"
    dom = dump_dom((site / "index.html").as_uri() + "#q=" + quote("kube-proxy v1.31.2"), netlog=netlog)
    attrs = html_attrs(dom)
    assert attrs["data-state"] == "ready" and attrs["data-matches"] == "3"  # v1.31.2, v1.31.20, v1.31.2-rc.0
    first = hits(dom)[0]  # the exact tag ranks first
    assert first.startswith("registry.k8s.io/kube-proxy:v1.31.2 → docker.io/mirror/kube-proxy:v1.31.2 ")
    assert f"digest {dg(1)}" in first and "platforms: linux/amd64, linux/arm64" in first
    assert "last sync 2026-11-29 03:00:00 UTC" in first
    assert 'class="pull">docker pull docker.io/mirror/kube-proxy:v1.31.2</code><button' in dom
    assert page_requests(netlog) == []  # catalog.js and the page are files; nothing else was requested
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    shot = ARTIFACTS / "catalog-page-search.png"
    screenshot((site / "index.html").as_uri() + "#q=kube-proxy%20v1.31.2", shot)
    assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and shot.stat().st_size > 5000


def test_net_log_oracle_sees_a_page_request(tmp_path: Path) -> None:
    """The 'no request' check above would notice one: a page that loads an image from elsewhere shows up."""
    page = tmp_path / "leaky.html"
    page.write_text('<img src="http://example.invalid/x.png">', encoding="utf-8")
    netlog = tmp_path / "netlog.json"
    dump_dom(page.as_uri(), netlog=netlog)
    assert page_requests(netlog) == ["http://example.invalid/x.png"]


def test_browse_oci_target_legacy_entry_and_plus_in_query(site: Path) -> None:
    base = (site / "index.html").as_uri()
    dom = dump_dom(base)  # nothing typed: namespaces and repositories to browse
    page = " ".join(text(dom).split())
    assert "3 namespaces · 4 repositories · 8 tags · last recorded run unknown · failures in that run: 0" in page
    assert "registry.k8s.io → docker.io/mirror" in page and "localhost:5000/team → oci:/srv/mirror/team" in page
    assert "sig-storage/csi/provisioner 2 V2_beta.1" in page and "ledger registry.k8s.io.json" in page
    assert "1 repository · 1 tag · ledger localhost:5000/team.json" in page
    dom = dump_dom(base + "#q=tools/cli")
    assert 'class="pull">skopeo copy oci:/srv/mirror/team/tools_cli:v2 docker-daemon:tools_cli:v2<' in dom
    dom = dump_dom(base + "#q=pause")
    assert "digest unknown (migrated from the original gcrsync)" in hits(dom)[0]
    dom = dump_dom(base + "#q=" + quote("build+7"))  # '+' is a plus, not a space
    assert html_attrs(dom)["data-matches"] == "1"
    assert hits(dom)[0].startswith(
        "registry.k8s.io/sig-storage/csi/provisioner:build_7 → docker.io/mirror/custom:build+7")
    dom = dump_dom(base + "#q=no-such-image")
    assert html_attrs(dom)["data-matches"] == "0" and "No mirrored tag matches “no-such-image”." in text(dom)


def test_empty_catalog_says_so(tmp_path: Path) -> None:
    write_catalog(tmp_path)
    dom = dump_dom((tmp_path / "index.html").as_uri())
    assert html_attrs(dom)["data-state"] == "empty"
    assert "The catalog is empty: no image has been mirrored yet." in text(dom)


def test_missing_catalog_script_says_so(site: Path, tmp_path: Path) -> None:
    shutil.copy(site / "index.html", tmp_path / "index.html")
    dom = dump_dom((tmp_path / "index.html").as_uri())
    assert html_attrs(dom)["data-state"] == "error" and "catalog.js could not be loaded" in text(dom)
