"""Reading a ledger file image by image (ledger.jsonscan, ledger.model.read_ledger): the same ledger, and the
same first problem, as `json.loads` of the whole text followed by the checks; the catalog reads rows."""

from __future__ import annotations

import io
import json
from pathlib import Path
from typing import Any

import pytest

from gcrsync.errors import LedgerError
from gcrsync.ledger import jsonscan, model
from gcrsync.ledger.catalog import Namespace, RunInfo, build_catalog, catalog_json
from gcrsync.ledger.catalogfiles import read_namespaces
from gcrsync.ledger.files import LedgerFiles
from gcrsync.ledger.jsonscan import STREAMED, Unreadable, scan_document
from gcrsync.ledger.model import Entry, Ledger, read_ledger

D1, D2 = "sha256:" + "a" * 64, "sha256:" + "b" * 64
ENTRY = {"digest": D1, "target": "m.io/x/app:v1", "media_type": None, "first_synced": "2026-11-29T03:00:00Z",
         "last_synced": "2026-11-29T03:00:00Z", "previous_digests": []}  # fmt: skip
HEAD = '"format": "gcrsync-ledger/1", "source": "gcr.io/ns", "target": "m.io/x"'


def doc(images: str) -> str:
    return "{" + HEAD + ', "images": ' + images + "}"


def entry(**changes: Any) -> str:
    return json.dumps({**ENTRY, **changes})


VALID = [
    json.dumps({"format": "gcrsync-ledger/1", "source": "gcr.io/ns", "target": "m.io/x",
                "images": {"app": {"v1": ENTRY, "v01": {**ENTRY, "digest": D2}, "v2": ENTRY}, "b/c": {"x": ENTRY},
                           "empty": {}}}, indent=2, sort_keys=True),
    # repeated keys: the last value counts, at the first one's place (as json.loads builds a dict)
    doc('{"app": {"v1": ' + entry() + '}, "b": {"t": ' + entry() + '}, "app": {"v2": ' + entry(digest=D2) + "}}"),
    '{"images": {"gone": {"t": ' + entry() + "}}, " + HEAD + ', "images": {"kept": {"t": ' + entry() + "}}}",
    '{"images": [], ' + HEAD + ', "images": {"kept": {"t": ' + entry() + "}}}",
    " \n\t" + doc('{"app": {"v1": ' + entry() + "}}") + "\n\n",
    doc('{"ok": {"v1": ' + entry(digest=None) + '}, "ok": {"v2": ' + entry() + "}}"),  # the bad one is replaced
]
INVALID = [
    "", "{not json", "[]", "null", "\ufeff" + VALID[0], VALID[0] + "x", VALID[0][:-1], doc("{}") + "}",
    doc('{"app": {"v1": ' + entry() + ",}}"), doc('{"app" {}}'), doc("{,}"), doc("[]"), doc("null"),
    '{"images": {}, ' + HEAD + ', "images": 5}',
    '{"format": "other/1", "images": {"../x": {}}}',
    doc('{"a": {"v1": ' + entry(digest=5) + '}, "b": {"-bad": {}}, "c": {"v1": ' + entry() + "}}"),
    doc('{"Bad": {}, "ok": {"v1": 3, "v2": ' + entry(first_synced="yesterday") + '}, "good": {}}'),
    doc('{"ok": {"v1": ' + entry(digest=None) + ', "v2": ' + entry(extra=1) + "}}"),
    doc('{"a": 1.5e3, "b": [1, 2], "c": {"t": ' + entry(previous_digests=[D2]) + "}}"),
]


def outcome(read: Any) -> Any:
    try:
        source, target, images = read()
    except LedgerError as exc:
        return "error", str(exc)
    return source, target, [(repo, [(tag, repr(e)) for tag, e in tags.items()]) for repo, tags in images.items()]


def unreadable(*args: Any) -> Any:
    raise Unreadable


def whole(text: str, monkeypatch: pytest.MonkeyPatch) -> Any:
    """json.loads of the whole text, then the checks: what Ledger.from_json always did (now its fallback)."""
    with monkeypatch.context() as patched:
        patched.setattr(model, "scan_document", unreadable)
        return outcome(lambda: read_ledger(text, "w.json", lambda repo, entries: entries))


@pytest.mark.parametrize("chunk", [1, 5, 64, jsonscan.CHUNK])
@pytest.mark.parametrize("text", VALID + INVALID)
def test_read_image_by_image_is_json_loads_then_the_checks(text: str, chunk: int,
                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    expected = whole(text, monkeypatch)
    monkeypatch.setattr(jsonscan, "CHUNK", chunk)  # every place a value can be cut by the end of a chunk
    keep = lambda repo, entries: entries  # noqa: E731
    assert outcome(lambda: read_ledger(io.StringIO(text), "w.json", keep)) == expected
    assert outcome(lambda: read_ledger(text, "w.json", keep)) == expected
    assert (expected[0] == "error") == (text in INVALID)


def test_scan_document_hands_over_the_large_member_value_by_value() -> None:
    seen: list[Any] = []
    top = scan_document('{"a": 1, "big": {"x": [1], "y": {"z": 2}, "x": 3}, "c": "d"}', "big",
                        lambda: seen.append("start"), lambda key, value: seen.append((key, value)))
    assert top == {"a": 1, "big": STREAMED, "c": "d"}
    assert seen == ["start", ("x", [1]), ("y", {"z": 2}), ("x", 3)]
    assert scan_document('{"big": [1]}', "big", lambda: None, lambda k, v: None) == {"big": [1]}
    for bad in ('{"big": {"x": 1,}}', '{"a": 1} 2', "[1]", '{"a" 1}', '{"big": {"x": 01}}'):
        with pytest.raises(Unreadable):
            scan_document(bad, "big", lambda: None, lambda k, v: None)


def test_one_string_per_tag_name(tmp_path: Path) -> None:
    text = doc('{"a": {"v1": ' + entry() + '}, "b": {"v1": ' + entry() + "}}")
    ledger = Ledger.from_json(text, "w.json")
    (a,), (b,) = ledger.images["a"], ledger.images["b"]
    assert a == b == "v1" and a is b  # as json.loads keeps one string per key


def test_catalog_reads_rows_not_entries(tmp_path: Path) -> None:
    ledger = Ledger.from_json(VALID[0], "gcr.io/ns.json")
    LedgerFiles(tmp_path).save(ledger)
    (rows,) = read_namespaces(tmp_path)
    assert not any(isinstance(v, Entry) for repo in rows.repositories.values() for v in repo.values())
    run = RunInfo()
    assert catalog_json(build_catalog([rows], run)) == catalog_json(build_catalog([Namespace(rows.path, ledger)], run))


@pytest.mark.parametrize(("text", "message"), [
    (INVALID[15], "w.json: image 'b': invalid tag '-bad'"),  # the last image with a problem, as always
    (INVALID[16], "w.json: ok:v2: first_synced"),  # in it, the last tag with one
    (INVALID[8], "w.json: invalid JSON: Expecting property name enclosed in double quotes"),  # json's words
    ('{"format": "other/1", "images": {"../x": {}}}', "w.json: unsupported format 'other/1'"),  # keys first
])
def test_which_problem_is_reported(text: str, message: str) -> None:
    with pytest.raises(LedgerError) as info:
        Ledger.from_json(text, "w.json")
    assert str(info.value).startswith(message)


def test_equal_times_and_media_types_are_shared_between_entries() -> None:
    # A run records its tags with the same few times and media types; a 50,000-tag ledger held each as its
    # own object (bench/README.md: ~9 MiB of a no-op's peak).
    media = "application/vnd.oci.image.index.v1+json"
    text = doc(json.dumps({"app": {"v1": {**ENTRY, "media_type": media}, "v2": {**ENTRY, "media_type": media}},
                           "web": {"v1": {**ENTRY, "media_type": media}}}))
    ledger = Ledger.from_json(text, "test")
    entries = [ledger.get("app", "v1"), ledger.get("app", "v2"), ledger.get("web", "v1")]
    assert all(e is not None for e in entries)
    first = entries[0]
    assert first is not None and first.last_synced is not None and first.media_type == media
    for other in entries[1:]:
        assert other is not None
        assert other.first_synced is first.first_synced and other.last_synced is first.last_synced
        assert other.media_type is first.media_type
