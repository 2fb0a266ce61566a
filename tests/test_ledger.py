"""The JSON ledger (files.py), the CHANGELOG (changelog.py) and the git wrapper's credential handling."""

from __future__ import annotations

import json
import os
import stat
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from gcrsync.errors import GcrsyncError, LedgerError
from gcrsync.ledger.changelog import (
    HEADER,
    Added,
    Failed,
    Removed,
    RunChanges,
    Updated,
    prepend,
    render_block,
    short_digest,
    split_blocks,
)
from gcrsync.ledger.files import MAX_PREVIOUS_DIGESTS, Ledger, LedgerFiles
from gcrsync.ledger.git import Git, strip_userinfo

SRC = "gcr.io/google-containers"
TGT = "docker.io/gcrxio"
T0 = datetime(2026, 11, 29, 3, 0, 0, tzinfo=UTC)


def dg(n: int) -> str:
    return "sha256:" + f"{n:012x}" + "a" * 52


def test_path_for_layout(tmp_path: Path) -> None:
    files = LedgerFiles(tmp_path)
    assert files.path_for(SRC) == tmp_path / "gcr.io" / "google-containers.json"
    assert files.path_for("localhost:5000/team") == tmp_path / "localhost:5000" / "team.json"
    assert files.path_for("quay.io/a/b") == tmp_path / "quay.io" / "a" / "b.json"


@pytest.mark.parametrize("bad", ["", "/abs/ns", "gcr.io/../x", "gcr.io//x", "gcr.io/a\x00b", "gcr.io/UPPER",
                                 "notahost/ns", "gcr.io/x/", "../gcr.io/x", "gcr.io/./x", "gcr.io/a b"])
def test_path_for_refuses_bad_namespaces(tmp_path: Path, bad: str) -> None:
    with pytest.raises(LedgerError, match="invalid namespace"):
        LedgerFiles(tmp_path).path_for(bad)


def test_missing_file_is_empty_ledger(tmp_path: Path) -> None:
    ledger = LedgerFiles(tmp_path).load(SRC, TGT)
    assert (ledger.source, ledger.target, len(ledger)) == (SRC, TGT, 0)
    assert not any(tmp_path.iterdir())


def test_record_save_load_roundtrip_and_stable_format(tmp_path: Path) -> None:
    files = LedgerFiles(tmp_path)
    ledger = files.load(SRC, TGT)
    assert ledger.record("pause", "3.1", digest=dg(1), target_ref=f"{TGT}/pause:3.1",
                         media_type="application/vnd.oci.image.index.v1+json", now=T0) == "added"
    assert ledger.record("team/app", "v1", digest=dg(2), target_ref=f"{TGT}/team_app:v1", media_type=None,
                         now=T0, source_digest=dg(3), platforms=["linux/arm64", "linux/amd64"]) == "added"
    path = files.save(ledger)
    text = path.read_text()
    doc = json.loads(text)
    assert text == json.dumps(doc, indent=2, sort_keys=True) + "\n"
    assert doc["format"] == "gcrsync-ledger/1" and doc["source"] == SRC and doc["target"] == TGT
    assert doc["images"]["pause"]["3.1"] == {
        "digest": dg(1), "target": f"{TGT}/pause:3.1", "media_type": "application/vnd.oci.image.index.v1+json",
        "first_synced": "2026-11-29T03:00:00Z", "last_synced": "2026-11-29T03:00:00Z", "previous_digests": []}
    nested = doc["images"]["team/app"]["v1"]
    assert nested["source_digest"] == dg(3) and nested["platforms"] == ["linux/amd64", "linux/arm64"]
    again = files.load(SRC, TGT)
    assert list(again.entries()) == list(ledger.entries())
    assert again.get("team/app", "v1").effective_source_digest == dg(3)  # type: ignore[union-attr]
    assert again.get("pause", "3.1").effective_source_digest == dg(1)  # type: ignore[union-attr]
    assert files.namespaces() == [SRC]
    files.save(again)
    assert path.read_text() == text  # saving an unchanged ledger changes no byte (no git noise)


def test_source_digest_equal_to_digest_is_not_written(tmp_path: Path) -> None:
    ledger = Ledger(SRC, TGT)
    ledger.record("pause", "3.1", digest=dg(1), target_ref="t/p:1", media_type=None, now=T0, source_digest=dg(1))
    assert "source_digest" not in json.loads(ledger.to_json())["images"]["pause"]["3.1"]


def test_record_updated_and_unchanged() -> None:
    ledger = Ledger(SRC, TGT)
    ref = f"{TGT}/pause:3.1"
    ledger.record("pause", "3.1", digest=dg(1), target_ref=ref, media_type=None, now=T0)
    later = T0 + timedelta(days=1)
    assert ledger.record("pause", "3.1", digest=dg(1), target_ref=ref, media_type=None, now=later) == "unchanged"
    assert ledger.get("pause", "3.1").last_synced == T0  # type: ignore[union-attr]
    assert ledger.record("pause", "3.1", digest=dg(2), target_ref=ref, media_type=None, now=later) == "updated"
    entry = ledger.get("pause", "3.1")
    assert entry is not None
    assert (entry.digest, entry.previous_digests, entry.first_synced, entry.last_synced) == (
        dg(2), [dg(1)], T0, later)
    for n in range(3, 20):
        ledger.record("pause", "3.1", digest=dg(n), target_ref=ref, media_type=None, now=later)
    entry = ledger.get("pause", "3.1")
    assert entry is not None
    assert entry.previous_digests == [dg(n) for n in range(18, 8, -1)]
    assert len(entry.previous_digests) == MAX_PREVIOUS_DIGESTS


def test_record_rejects_bad_names_and_digests() -> None:
    ledger = Ledger(SRC, TGT)
    with pytest.raises(LedgerError, match="invalid image name"):
        ledger.record("../etc", "x", digest=dg(1), target_ref="t", media_type=None, now=T0)
    with pytest.raises(LedgerError, match="not a digest"):
        ledger.record("ok", "x", digest="md5:zz", target_ref="t", media_type=None, now=T0)
    assert len(ledger) == 0


def test_remove_and_entries() -> None:
    ledger = Ledger(SRC, TGT)
    for repo, tag in [("b", "1"), ("a", "2"), ("a", "1")]:
        ledger.record(repo, tag, digest=dg(1), target_ref="t/x:1", media_type=None, now=T0)
    assert [(r, t) for r, t, _ in ledger.entries()] == [("a", "1"), ("a", "2"), ("b", "1")]
    assert ledger.remove("b", "1") is True and ledger.remove("b", "1") is False
    assert "b" not in ledger.images and len(ledger) == 2


def test_merge_newest_wins_and_histories_combine() -> None:
    ours, theirs = Ledger(SRC, TGT), Ledger(SRC, TGT)
    ours.record("only-ours", "1", digest=dg(1), target_ref="t/a:1", media_type=None, now=T0)
    theirs.record("only-theirs", "1", digest=dg(2), target_ref="t/b:1", media_type=None, now=T0)
    ours.record("both", "1", digest=dg(3), target_ref="t/c:1", media_type=None, now=T0)
    theirs.record("both", "1", digest=dg(3), target_ref="t/c:1", media_type=None, now=T0 - timedelta(hours=1))
    theirs.record("both", "1", digest=dg(4), target_ref="t/c:1", media_type=None, now=T0 + timedelta(hours=1))
    merged = ours.merge(theirs)
    assert {(r, t) for r, t, _ in merged.entries()} == {("only-ours", "1"), ("only-theirs", "1"), ("both", "1")}
    both = merged.get("both", "1")
    assert both is not None
    assert both.digest == dg(4) and both.previous_digests == [dg(3)]
    assert both.first_synced == T0 - timedelta(hours=1)
    assert theirs.merge(ours).get("both", "1") == both  # symmetric when times differ
    with pytest.raises(LedgerError):
        ours.merge(Ledger("quay.io/x", TGT))


def write(path: Path, content: str) -> bytes:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(content)
    return path.read_bytes()


@pytest.mark.parametrize(("content", "match"), [
    ("{not json", "invalid JSON"),
    ("[]", "expected a JSON object"),
    ('{"format": "other/9", "source": "gcr.io/google-containers", "target": "t", "images": {}}', "unsupported"),
    ('{"format": "gcrsync-ledger/1", "source": "gcr.io/google-containers", "target": "t", "images": []}',
     "'images' must be an object"),
    ('{"format": "gcrsync-ledger/1", "source": "gcr.io/google-containers", "target": "t", '
     '"images": {"../escape": {}}}', "invalid image name '../escape'"),
    ('{"format": "gcrsync-ledger/1", "source": "gcr.io/google-containers", "target": "t", '
     '"images": {"ok": {"-bad": {}}}}', "invalid tag"),
    ('{"format": "gcrsync-ledger/1", "source": "gcr.io/google-containers", "target": "t", '
     '"images": {"ok": {"1": {"digest": 5, "target": "t"}}}}', "ok:1: digest"),
    ('{"format": "gcrsync-ledger/1", "source": "gcr.io/google-containers", "target": "t", '
     '"images": {"ok": {"1": {"digest": null, "target": "t"}}}}', "not marked legacy"),
    ('{"format": "gcrsync-ledger/1", "source": "gcr.io/google-containers", "target": "t", '
     '"images": {"ok": {"1": {"digest": "sha256:' + "a" * 64 + '", "target": "t", "first_synced": "yesterday"}}}}',
     "not an ISO 8601 time"),
    ('{"format": "gcrsync-ledger/1", "source": "quay.io/other", "target": "t", "images": {}}', "holds namespace"),
])
def test_invalid_ledger_refused_and_untouched(tmp_path: Path, content: str, match: str) -> None:
    files = LedgerFiles(tmp_path)
    path = files.path_for(SRC)
    before = write(path, content)
    with pytest.raises(LedgerError, match=match) as info:
        files.load(SRC, TGT)
    assert "gcr.io/google-containers.json" in str(info.value)
    assert "\n" not in str(info.value) and isinstance(info.value, GcrsyncError)
    assert path.read_bytes() == before


def test_target_change_keeps_entries(tmp_path: Path) -> None:
    files = LedgerFiles(tmp_path)
    ledger = files.load(SRC, TGT)
    ledger.record("pause", "3.1", digest=dg(1), target_ref=f"{TGT}/pause:3.1", media_type=None, now=T0)
    files.save(ledger)
    moved = files.load(SRC, "quay.io/mirror")
    assert moved.target == "quay.io/mirror"
    assert moved.get("pause", "3.1").target == f"{TGT}/pause:3.1"  # type: ignore[union-attr]


def test_legacy_file_migrated_then_removed(tmp_path: Path) -> None:
    legacy = tmp_path / "google-containers"
    write(legacy, json.dumps(["kube-proxy-amd64:v1.11.3", "pause:3.1"], indent=4))
    files = LedgerFiles(tmp_path)
    ledger = files.load(SRC, TGT)
    entry = ledger.get("pause", "3.1")
    assert entry is not None
    assert (entry.digest, entry.legacy, entry.target, entry.last_synced) == (None, True, f"{TGT}/pause:3.1", None)
    assert legacy.exists()  # nothing is deleted before the new file is safely written
    assert ledger.record("pause", "3.1", digest=dg(1), target_ref=f"{TGT}/pause:3.1", media_type=None,
                         now=T0) == "updated"
    migrated = ledger.get("pause", "3.1")
    assert migrated is not None and not migrated.legacy and migrated.previous_digests == []
    files.save(ledger)
    assert not legacy.exists()
    doc = json.loads(files.path_for(SRC).read_text())
    assert doc["images"]["kube-proxy-amd64"]["v1.11.3"]["legacy"] is True
    assert doc["images"]["kube-proxy-amd64"]["v1.11.3"]["digest"] is None
    assert "legacy" not in doc["images"]["pause"]["3.1"]
    assert legacy in files.written and files.path_for(SRC) in files.written
    assert files.load(SRC, TGT).get("kube-proxy-amd64", "v1.11.3") is not None  # reloads from the new file


def test_legacy_only_for_gcr_io_and_invalid_legacy_refused(tmp_path: Path) -> None:
    write(tmp_path / "team", '["a:1"]')
    assert len(LedgerFiles(tmp_path).load("quay.io/team", TGT)) == 0
    before = write(tmp_path / "google-containers", '["../x:1"]')
    with pytest.raises(LedgerError, match="legacy ledger has an invalid entry"):
        LedgerFiles(tmp_path).load(SRC, TGT)
    assert (tmp_path / "google-containers").read_bytes() == before


def test_namespaces_ignores_other_files(tmp_path: Path) -> None:
    files = LedgerFiles(tmp_path)
    for source in (SRC, "localhost:5000/team", "quay.io/a/b"):
        files.save(Ledger(source, TGT))
    write(tmp_path / "renovate.json", "{}")
    write(tmp_path / ".git" / "x.io" / "y.json", "{}")
    assert files.namespaces() == [SRC, "localhost:5000/team", "quay.io/a/b"]


def test_atomic_save_leaves_no_temp_files(tmp_path: Path) -> None:
    files = LedgerFiles(tmp_path)
    files.save(Ledger(SRC, TGT))
    assert [p.name for p in (tmp_path / "gcr.io").iterdir()] == ["google-containers.json"]


# -- changelog --------------------------------------------------------------------------------------------


def sample_changes() -> RunChanges:
    return RunChanges(
        added=[Added(f"{SRC}/pause:3.1", f"{TGT}/pause:3.1", dg(1))],
        updated=[Updated(f"{SRC}/etcd:3", f"{TGT}/etcd:3", dg(2), dg(3)),
                 Updated(f"{SRC}/old:1", f"{TGT}/old:1", None, dg(4))],
        removed=[Removed(f"{SRC}/gone:1", f"{TGT}/gone:1")],
        failed=[Failed(f"{SRC}/bad:1", f"{TGT}/bad:1", "denied:\nrequested access\n" + "x" * 500)],
    )


def test_render_block() -> None:
    block = render_block(T0, sample_changes())
    assert block.startswith("## 2026-11-29 03:00:00 UTC\n\n### Added\n\n")
    assert f"- `{SRC}/pause:3.1` → `{TGT}/pause:3.1` (sha256:000000000001)" in block
    assert f"({short_digest(dg(2))} → {short_digest(dg(3))})" in block
    assert "(unknown → " in block
    assert "### Removed upstream\n\n- `gcr.io/google-containers/gone:1` → `docker.io/gcrxio/gone:1`" in block
    failed_line = next(ln for ln in block.splitlines() if ln.startswith("- `gcr.io/google-containers/bad:1`"))
    assert "denied: requested access" in failed_line and len(failed_line) < 320
    assert block.index("### Added") < block.index("### Updated") < block.index("### Removed") \
        < block.index("### Failed")
    assert "### Added" not in render_block(T0, RunChanges(removed=[Removed("a", "b")]))


def test_prepend_newest_first_and_empty_run(tmp_path: Path) -> None:
    path = tmp_path / "CHANGELOG.md"
    assert prepend(path, T0, RunChanges()) is False and not path.exists()
    assert RunChanges().empty and not sample_changes().empty
    assert prepend(path, T0, sample_changes()) is True
    later = T0 + timedelta(hours=6)
    assert prepend(path, later, RunChanges(added=[Added("s/x:1", "t/x:1", dg(9))])) is True
    text = path.read_text()
    assert text.startswith(HEADER)
    assert text.count(HEADER) == 1
    blocks = split_blocks(text)
    assert [b.splitlines()[0] for b in blocks] == ["## 2026-11-29 09:00:00 UTC", "## 2026-11-29 03:00:00 UTC"]
    assert "".join(blocks) == text[len(HEADER):]


def test_prepend_keeps_a_foreign_changelog(tmp_path: Path) -> None:
    path = tmp_path / "CHANGELOG.md"
    path.write_text("### 2018-09-11 16:17:54 Update:\n\n- gcr.io/google-containers/pause:3.1\n")
    prepend(path, T0, sample_changes())
    text = path.read_text()
    assert text.startswith(HEADER + "## 2026-11-29 03:00:00 UTC")
    assert text.endswith("### 2018-09-11 16:17:54 Update:\n\n- gcr.io/google-containers/pause:3.1\n")


# -- git wrapper credentials ------------------------------------------------------------------------------


def test_strip_userinfo() -> None:
    assert strip_userinfo("https://bob:s3cret@github.com/o/r.git") == ("https://github.com/o/r.git", "bob", "s3cret")
    assert strip_userinfo("https://tok@example.com:8443/r.git") == ("https://example.com:8443/r.git", "tok", None)
    assert strip_userinfo("ssh://git@host/r.git") == ("ssh://git@host/r.git", None, None)
    assert strip_userinfo("ssh://git:pw@host/r.git") == ("ssh://git@host/r.git", None, "pw")
    assert strip_userinfo("git@github.com:o/r.git") == ("git@github.com:o/r.git", None, None)
    assert strip_userinfo("/srv/r.git") == ("/srv/r.git", None, None)


def test_git_askpass_env_and_redaction(tmp_path: Path) -> None:
    token = "ghp_SECRETTOKEN123"
    git = Git(tmp_path, {"PATH": os.environ["PATH"]}, username="bob", password=token)
    askpass = Path(git._env["GIT_ASKPASS"])
    assert stat.S_IMODE(askpass.parent.stat().st_mode) == 0o700
    assert token not in askpass.read_text() and token not in repr(git)
    assert git._env["GIT_TERMINAL_PROMPT"] == "0"
    import subprocess
    out = subprocess.run([str(askpass), "Password for 'https://bob@host': "], env=git._env, capture_output=True,
                         text=True, check=True).stdout
    assert out == token + "\n"
    user = subprocess.run([str(askpass), "Username for 'https://host': "], env=git._env, capture_output=True,
                          text=True, check=True).stdout
    assert user == "bob\n"
    assert git.redact(f"fatal: https://bob:{token}@host/ refused {token}") == "fatal: https://***@host/ refused ***"
    with pytest.raises(LedgerError, match=r"^git rev-parse failed: fatal: ") as info:
        git.run("rev-parse", "HEAD", cwd=tmp_path)
    assert token not in str(info.value)
    git.close()
    assert not askpass.parent.exists()
