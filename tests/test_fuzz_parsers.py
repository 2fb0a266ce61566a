"""Fuzz (hypothesis) tests for every parser of data gcrsync does not control.

The product rule: a parser of outside data (registry responses and headers, config and ledger files, image
references) rejects malformed input with a `GcrsyncError` subclass carrying one clear line, and never lets any
other exception (KeyError, TypeError, ValueError, RecursionError, OverflowError...) escape. Each parser gets
random bytes or text, random JSON values, and *near-miss* documents: a valid document with one field deleted
or replaced by a nasty value (wrong type, negative, huge, deeply nested, a digest with a trailing newline).
Explicit tables then pin the near misses that must be rejected, not merely survived.
"""

from __future__ import annotations

import base64
import copy
import json
import math
import operator
import os
import re
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import pytest
import yaml
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from yarl import URL

from gcrsync.config import parse_config
from gcrsync.errors import (
    AuthError,
    ConfigError,
    GcrsyncError,
    InvalidReference,
    LedgerError,
    ManifestError,
    NotFound,
    RegistryError,
)
from gcrsync.ledger.files import FORMAT, Ledger, LedgerFiles
from gcrsync.oci import (
    DOCKER_MANIFEST_LIST,
    MANIFEST_TYPES,
    MAX_MANIFEST_BYTES,
    OCI_INDEX,
    OCI_MANIFEST,
    Descriptor,
    Platform,
    filter_index,
    parse_manifest,
    schema1_payload,
    sha256_digest,
)
from gcrsync.reference import parse_location, parse_reference, split_namespace, validate_repository
from gcrsync.registry import listing_parsers as lp
from gcrsync.registry.auth import _parse_token, parse_challenges
from gcrsync.registry.errors import registry_error
from gcrsync.registry.hostlimits import parse_rate_limit
from gcrsync.registry.listing_parsers import next_link
from gcrsync.registry.retry import parse_retry_after

T = TypeVar("T")
# GCRSYNC_FUZZ_EXAMPLES=2000 fuzzes much longer (when hunting bugs); the default keeps the file at ~15 s.
EXAMPLES = int(os.environ.get("GCRSYNC_FUZZ_EXAMPLES", "80"))
FUZZ = settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=[HealthCheck.too_slow])
FEW = settings(max_examples=max(EXAMPLES // 3, 10), deadline=None, suppress_health_check=[HealthCheck.too_slow])
# A clear message names the problem and never echoes a huge input: ~300 characters, plus the context we add
# ourselves (a listing URL, a file name) around the at most 80-character quotes of the input.
MAX_MESSAGE = 400
_ESCAPE = re.compile(r"\\(?:x[0-9a-f]{2}|u[0-9a-f]{4}|U[0-9a-f]{8})")
DATA = Path(__file__).parent / "data" / "listings"

# --- strategies and checks -------------------------------------------------------------------------------

JSON_SCALARS = (
    st.none() | st.booleans() | st.integers(min_value=-(2**70), max_value=2**70) | st.floats() | st.text(max_size=12)
)
JSON = st.recursive(
    JSON_SCALARS,
    lambda kids: st.lists(kids, max_size=4) | st.dictionaries(st.text(max_size=8), kids, max_size=4),
    max_leaves=16,
)
HUGE = "x" * 100_000
DEEP: list[Any] = []
for _ in range(200):
    DEEP = [DEEP]
DEEP_JSON = b"[" * 50_000 + b"]" * 50_000  # json.loads raises RecursionError on it
NASTY_VALUES: list[Any] = [
    None, True, False, 0, -1, -(2**63), 2**64, 10**30, 1.5, float("nan"), float("inf"), "", " ", "\n", "x\ny",
    "\u2028", "A" * 300, HUGE, [], {}, [HUGE], {HUGE: HUGE}, {"a\nb": 1}, DEEP, "sha256:" + "A" * 64,
    "sha256:" + "a" * 64 + "\n", "sha256:abc", "md5:" + "a" * 32,
]
VALUES = st.sampled_from(NASTY_VALUES) | JSON
DELETE = object()  # a near-miss that removes the field


def short_id(value: object) -> str:
    # Stable across processes (pytest-xdist workers must collect identical ids): no object addresses.
    if value is DELETE:
        return "DELETE"
    return re.sub(r" at 0x[0-9a-f]+", "", repr(value))[:24]


def dg(n: int) -> str:
    return "sha256:" + f"{n:x}" * (64 // len(f"{n:x}"))


def check_error(exc: BaseException, kind: type[GcrsyncError]) -> None:
    """exc is our own clear error: the right class, one non-empty line, bounded length."""
    assert isinstance(exc, kind), f"{type(exc).__name__} escaped instead of {kind.__name__}: {str(exc)[:200]}"
    msg = str(exc)
    assert msg.strip(), "empty error message"
    assert len(msg.splitlines()) == 1, f"multi-line message: {msg[:200]!r}"
    # Count an escape sequence of a repr (\x00, \u2028, \U000e0000) as the one character it shows.
    shown = _ESCAPE.sub("?", msg)
    assert len(shown) <= MAX_MESSAGE, f"message of {len(shown)} chars: {msg[:200]!r}..."


def outcome(kind: type[GcrsyncError], fn: Callable[..., T], *args: Any) -> T | None:
    """Call a parser on fuzz input: it may accept it, or reject it cleanly; anything else fails the test."""
    try:
        return fn(*args)
    except Exception as exc:
        check_error(exc, kind)
        return None


def rejects(kind: type[GcrsyncError], fn: Callable[..., object], *args: Any) -> str:
    """The parser must reject this input cleanly; returns the message."""
    with pytest.raises(kind) as info:
        fn(*args)
    check_error(info.value, kind)
    return str(info.value)


def paths(doc: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    """Every position in a JSON-like document (dict keys and list indices), depth first."""
    out: list[tuple[Any, ...]] = []
    items = doc.items() if isinstance(doc, dict) else enumerate(doc) if isinstance(doc, list) else []
    for key, value in items:
        out.append((*prefix, key))
        out.extend(paths(value, (*prefix, key)))
    return out


def mutate(doc: Any, path: tuple[Any, ...], value: Any) -> Any:
    """A deep copy of doc with the field at path replaced by value, or removed when value is DELETE."""
    out = copy.deepcopy(doc)
    parent = out
    for key in path[:-1]:
        parent = parent[key]
    if value is DELETE:
        del parent[path[-1]]
    else:
        parent[path[-1]] = value
    return out


@st.composite
def near_miss(draw: st.DrawFn, base: Any) -> Any:
    path = draw(st.sampled_from(paths(base)))
    return mutate(base, path, draw(st.just(DELETE) | VALUES))


def dumps(doc: Any) -> bytes:
    return json.dumps(doc).encode()


# --- OCI manifests ---------------------------------------------------------------------------------------

IMAGE = {
    "schemaVersion": 2,
    "mediaType": OCI_MANIFEST,
    "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": dg(1), "size": 10},
    "layers": [
        {"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip", "digest": dg(2), "size": 20},
        {"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip", "digest": dg(3), "size": 30, "urls": ["https://x/y"]},
    ],
    "subject": {"mediaType": OCI_MANIFEST, "digest": dg(4), "size": 40},
    "annotations": {"org.opencontainers.image.title": "t"},
}
INDEX = {
    "schemaVersion": 2,
    "mediaType": OCI_INDEX,
    "manifests": [
        {"mediaType": OCI_MANIFEST, "digest": dg(5), "size": 50, "platform": {"os": "linux", "architecture": "amd64"}},
        {
            "mediaType": OCI_MANIFEST,
            "digest": dg(6),
            "size": 60,
            "platform": {"os": "linux", "architecture": "arm64", "variant": "v8"},
        },
        {"mediaType": OCI_MANIFEST, "digest": dg(7), "size": 70, "artifactType": "application/spdx+json"},
    ],
}
SCHEMA1 = {
    "schemaVersion": 1,
    "name": "library/x",
    "tag": "1",
    "architecture": "amd64",
    "fsLayers": [{"blobSum": dg(8)}, {"blobSum": dg(9)}, {"blobSum": dg(8)}],
    "history": [{"v1Compatibility": "{}"}] * 3,
}


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).decode().rstrip("=")


def signed_schema1(doc: dict[str, Any], signatures: Any = None) -> tuple[bytes, bytes]:
    """(raw signed manifest, signed payload) in libtrust's "pretty JWS" shape; `signatures` overrides them."""
    payload = json.dumps(doc, indent=3).encode()
    length = len(payload) - 2  # the payload minus its closing "\n}"
    if signatures is None:
        header = {"formatLength": length, "formatTail": b64(payload[length:])}
        signatures = [{"header": {"alg": "ES256"}, "signature": "c2ln", "protected": b64(dumps(header))}]
    raw = payload[:length] + b',\n   "signatures": ' + dumps(signatures) + b"\n}"
    return raw, payload


def test_baseline_documents_are_valid() -> None:
    """The near-miss tables below mutate these: they must parse as they are."""
    image = parse_manifest(dumps(IMAGE))
    assert [d.digest for d in image.blobs] == [dg(1), dg(2), dg(3)] and image.blobs[2].foreign
    index = parse_manifest(dumps(INDEX))
    assert index.is_index and [str(c.platform) for c in index.children[:2]] == ["linux/amd64", "linux/arm64/v8"]
    raw, payload = signed_schema1(SCHEMA1)
    signed = parse_manifest(raw, None, sha256_digest(payload))
    assert signed.is_schema1 and [d.digest for d in signed.blobs] == [dg(8), dg(9)]


@FUZZ
@given(raw=st.binary(max_size=300), header=st.none() | st.sampled_from(sorted(MANIFEST_TYPES)) | st.text(max_size=20),
       expected=st.none() | st.sampled_from([dg(1), "sha512:" + "a" * 128, "sha256:x", "", "md5:00"]) | st.text())
@example(raw=b"\xff\xfe{}", header=None, expected=None)
def test_parse_manifest_random_bytes(raw: bytes, header: str | None, expected: str | None) -> None:
    outcome(ManifestError, parse_manifest, raw, header, expected)


@FUZZ
@given(doc=JSON | st.fixed_dictionaries({}, optional={
    "mediaType": st.sampled_from(sorted(MANIFEST_TYPES)) | VALUES, "schemaVersion": st.sampled_from([1, 2]) | VALUES,
    "config": VALUES, "layers": st.lists(VALUES, max_size=3) | VALUES, "manifests": st.lists(VALUES, max_size=3),
    "fsLayers": st.lists(st.fixed_dictionaries({"blobSum": VALUES}), max_size=3) | VALUES,
    "signatures": VALUES, "subject": VALUES}), header=st.none() | st.sampled_from(sorted(MANIFEST_TYPES)))
def test_parse_manifest_random_json(doc: Any, header: str | None) -> None:
    outcome(ManifestError, parse_manifest, json.dumps(doc).encode(), header, None)


@FUZZ
@given(doc=near_miss(IMAGE) | near_miss(INDEX) | near_miss(SCHEMA1))
def test_parse_manifest_near_misses(doc: Any) -> None:
    manifest = outcome(ManifestError, parse_manifest, json.dumps(doc).encode(), None, None)
    if manifest is not None:  # whatever was accepted is internally consistent
        assert manifest.media_type in MANIFEST_TYPES and manifest.digest == sha256_digest(manifest.raw)
        assert all(d.size >= 0 or manifest.is_schema1 for d in (*manifest.blobs, *manifest.children))


@FUZZ
@given(signatures=VALUES | st.lists(st.fixed_dictionaries({}, optional={"protected": VALUES}), max_size=2),
       header=VALUES | st.fixed_dictionaries({}, optional={"formatLength": VALUES, "formatTail": VALUES}))
def test_schema1_signature_fuzz(signatures: Any, header: Any) -> None:
    raw, _ = signed_schema1(SCHEMA1, signatures)
    outcome(ManifestError, schema1_payload, raw, json.loads(raw))
    raw, _ = signed_schema1(SCHEMA1, [{"protected": b64(json.dumps(header).encode())}])
    outcome(ManifestError, parse_manifest, raw, None, None)


BAD_DIGESTS = ["sha256:" + "A" * 64, "sha256:abc", "md5:" + "a" * 32, dg(1) + "\n", 5, None, HUGE]
IMAGE_REJECTS: list[tuple[tuple[Any, ...], Any]] = [
    *[(("config",), v) for v in (DELETE, [], "x", None, HUGE)],
    *[(("config", "digest"), v) for v in (DELETE, *BAD_DIGESTS)],
    *[(("config", "size"), v) for v in (DELETE, -1, "10", 1.5, True, None, [10], HUGE)],
    *[(("layers",), v) for v in (DELETE, {}, "x", None)],
    (("layers", 0), "x"), (("layers", 0, "size"), -5), (("layers", 0, "size"), -(2**70)),
    (("layers", 0, "digest"), HUGE), (("layers", 0, "mediaType"), 7),
    (("layers", 1, "urls"), "https://x"), (("layers", 1, "urls"), [1]),
    (("layers", 0, "platform"), "linux/amd64"), (("layers", 0, "platform"), {"os": 1, "architecture": "amd64"}),
    (("subject",), "x"), (("subject", "digest"), "bad"), (("subject", "size"), -1),
    (("mediaType",), "application/json"), (("mediaType",), "application/vnd.oci.image.layer.v1.tar"),
    (("mediaType",), HUGE),
]
INDEX_REJECTS: list[tuple[tuple[Any, ...], Any]] = [
    (("manifests",), DELETE), (("manifests",), {}), (("manifests",), None), (("manifests", 0), None),
    (("manifests", 0, "size"), -1), (("manifests", 0, "digest"), "sha256:"), (("manifests", 0, "digest"), dg(5) + "\n"),
    (("manifests", 0, "platform"), []), (("manifests", 0, "platform", "architecture"), None),
    (("manifests", 1, "platform", "os"), DELETE), (("mediaType",), OCI_INDEX + "x"),
]
SCHEMA1_REJECTS: list[tuple[tuple[Any, ...], Any]] = [
    (("fsLayers",), DELETE), (("fsLayers",), {}), (("fsLayers", 0), "x"), (("fsLayers", 1, "blobSum"), DELETE),
    *[(("fsLayers", 0, "blobSum"), v) for v in BAD_DIGESTS],
]


@pytest.mark.parametrize(("base", "path", "value"), [
    *[(IMAGE, p, v) for p, v in IMAGE_REJECTS], *[(INDEX, p, v) for p, v in INDEX_REJECTS],
    *[(SCHEMA1, p, v) for p, v in SCHEMA1_REJECTS]], ids=short_id)
def test_parse_manifest_rejects_near_misses(base: dict[str, Any], path: tuple[Any, ...], value: Any) -> None:
    rejects(ManifestError, parse_manifest, dumps(mutate(base, path, value)), None, None)


def _protected(header: Any) -> list[dict[str, Any]]:
    return [{"protected": b64(header if isinstance(header, bytes) else dumps(header))}]


@pytest.mark.parametrize("signatures", [
    [], {}, "x", [None], [{}], [{"protected": 5}], [{"protected": "!!!not base64"}], [{"protected": "é"}],
    _protected(b"not json"), _protected(b"\xff\xfe"), _protected(DEEP_JSON), _protected([1]), _protected("x"),
    _protected({}), _protected({"formatTail": "Cn0"}), *[_protected({"formatLength": v, "formatTail": "Cn0"}) for v in
    ("abc", 0, -1, 10**9, 10**400, 1e400, None, [1])], _protected({"formatLength": 10, "formatTail": 5}),
    _protected({"formatLength": 10, "formatTail": "a"}), _protected({"formatLength": 10}),
], ids=short_id)
def test_signed_schema1_with_malformed_signature_is_rejected(signatures: Any) -> None:
    raw, _ = signed_schema1(SCHEMA1, signatures)
    rejects(ManifestError, parse_manifest, raw, None, None)


def test_manifest_size_limit_and_digest_checks() -> None:
    raw = dumps(IMAGE)
    assert parse_manifest(raw + b" " * (MAX_MANIFEST_BYTES - len(raw))).blobs  # exactly at the limit
    assert "4 MiB" in rejects(ManifestError, parse_manifest, raw + b" " * (MAX_MANIFEST_BYTES + 1 - len(raw)))
    rejects(ManifestError, parse_manifest, raw, None, dg(1))  # bytes do not hash to the requested digest
    for bad in ("sha256:" + "A" * 64, "sha1:" + "a" * 40, dg(1) + "\n", HUGE):
        rejects(ManifestError, parse_manifest, raw, None, bad)
    rejects(ManifestError, parse_manifest, dumps({"schemaVersion": 2}), "application/octet-stream")
    rejects(ManifestError, parse_manifest, dumps({"schemaVersion": 2, "mediaType": "application/vnd.foo+json"}))
    rejects(ManifestError, parse_manifest, dumps([IMAGE]))


@FUZZ
@given(obj=VALUES | near_miss(INDEX["manifests"][1]) | near_miss(IMAGE["layers"][1]))
def test_descriptor_from_json(obj: Any) -> None:
    desc = outcome(ManifestError, Descriptor.from_json, obj, "layers[0]")
    if desc is not None:
        assert desc.size >= 0 and isinstance(desc.media_type, str) and all(isinstance(u, str) for u in desc.urls)


@FUZZ
@given(text=st.text(max_size=40) | st.from_regex(r"[a-z]{0,6}(/[a-z0-9 ]{0,6}){0,3}", fullmatch=True))
def test_platform_parse(text: str) -> None:
    platform = outcome(ManifestError, Platform.parse, text)
    if platform is not None:
        assert Platform.parse(str(platform)) == platform


PLATFORMS = st.builds(Platform, st.sampled_from(["linux", "windows"]), st.sampled_from(["amd64", "arm64", "arm"]),
                      st.none() | st.sampled_from(["v7", "v8"]))


@FUZZ
@given(entries=st.lists(st.none() | PLATFORMS, max_size=6), wanted=st.lists(PLATFORMS, max_size=3), extra=VALUES,
       media_type=st.sampled_from([OCI_INDEX, DOCKER_MANIFEST_LIST, None]))
def test_filter_index(
    entries: list[Platform | None], wanted: list[Platform], extra: Any, media_type: str | None
) -> None:
    manifests = []
    for i, plat in enumerate(entries):
        entry: dict[str, Any] = {"mediaType": OCI_MANIFEST, "digest": dg(i + 1), "size": i, "annotations": {"x": extra}}
        if plat is not None:
            entry["platform"] = {"os": plat.os, "architecture": plat.architecture, "variant": plat.variant}
        manifests.append(entry)
    doc: dict[str, Any] = {"schemaVersion": 2, "manifests": manifests, "annotations": {"y": extra}}
    if media_type:
        doc["mediaType"] = media_type
    index = parse_manifest(dumps(doc), OCI_INDEX)
    result = outcome(ManifestError, filter_index, index, wanted)
    matching = [c for c in index.children if c.platform is not None and any(w.matches(c.platform) for w in wanted)]
    if result is None:
        assert not matching
        return
    assert result.is_index and result.media_type == index.media_type and result.digest == sha256_digest(result.raw)
    assert list(result.children) == [c for c in index.children if c.platform is None or c in matching]


# --- auth: WWW-Authenticate and token responses -----------------------------------------------------------

TOKEN = st.builds(operator.add, st.sampled_from("aZq"), st.text(alphabet="bY9_-", max_size=6))


CHALLENGE_PIECES = st.sampled_from(
    ["Bearer", "Basic", " ", ", ", ",", "realm", "=", '"', "\\", "x", "é", "\t", "\n", "-"]
)


@FUZZ
@given(header=st.text(max_size=60) | st.lists(CHALLENGE_PIECES, max_size=20).map("".join))
def test_parse_challenges_random(header: str) -> None:
    challenges = outcome(AuthError, parse_challenges, header)
    for challenge in challenges or []:
        assert challenge.scheme == challenge.scheme.lower() and challenge.scheme


@FUZZ
@given(challenges=st.lists(st.tuples(TOKEN, st.dictionaries(TOKEN.map(str.lower), st.text(max_size=12), max_size=3)),
                           min_size=1, max_size=3))
def test_parse_challenges_round_trip(challenges: list[tuple[str, dict[str, str]]]) -> None:
    def quote(value: str) -> str:
        return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'

    header = ", ".join(f"{s} " + ", ".join(f"{k}={quote(v)}" for k, v in p.items()) for s, p in challenges)
    parsed = parse_challenges(header)
    assert [(c.scheme, c.params) for c in parsed] == [(s.lower(), p) for s, p in challenges]


@FUZZ
@given(body=st.binary(max_size=200) | JSON.map(dumps) | st.fixed_dictionaries({}, optional={
    "token": VALUES | st.text(min_size=1), "access_token": VALUES, "expires_in": VALUES}).map(dumps))
@example(body=b'{"token": "t", "expires_in": NaN}')
@example(body=b'{"token": "t", "expires_in": 1' + b"0" * 400 + b"}")
def test_parse_token(body: bytes) -> None:
    token = outcome(AuthError, _parse_token, "registry.example", body)
    if token is not None:
        assert isinstance(token.value, str) and token.value and math.isfinite(token.expires)


# --- transport headers: must never raise --------------------------------------------------------------------

DATES = st.builds(
    "{}, {:02d} {} {:04d} {:02d}:{:02d}:{:02d} {}".format,
    st.sampled_from(["Mon", "Fri", "Xyz"]), st.integers(0, 40), st.sampled_from(["Jan", "Dec", "Foo"]),
    st.integers(0, 99999), st.integers(0, 99), st.integers(0, 99), st.integers(0, 99),
    st.sampled_from(["GMT", "+2359", "-2359", "+9999", "-0000", "+" + "9" * 30, "UT", "XYZ"]))


@FUZZ
@given(value=st.none() | st.text(max_size=30) | DATES | st.from_regex(r"\s*[0-9]{1,400}\s*", fullmatch=True),
       cap=st.floats(0, 1e6))
@example(value="²", cap=60.0)
@example(value="Mon, 01 Jan 2001 00:00:00 +" + "9" * 30, cap=60.0)
@example(value="Fri, 31 Dec 9999 23:59:59 -2359", cap=60.0)
@example(value="Mon, 01 Jan 0001 00:00:00 +2359", cap=60.0)
def test_parse_retry_after_never_raises(value: str | None, cap: float) -> None:
    wait = parse_retry_after(value, cap)
    assert wait is None or 0.0 <= wait <= cap


HEADER_VALUES = st.text(max_size=20) | st.from_regex(r"[0-9]{1,6000}(;w=[0-9]{1,30})?", fullmatch=True)


@FUZZ
@given(headers=st.dictionaries(st.sampled_from(["ratelimit-remaining", "x-ratelimit-remaining",
                                                "x-ratelimit-reset", "ratelimit-reset"]), HEADER_VALUES))
@example(headers={"ratelimit-remaining": "1", "x-ratelimit-reset": "²"})
@example(headers={"ratelimit-remaining": "²;w=²"})
def test_parse_rate_limit_never_raises(headers: dict[str, str]) -> None:
    remaining, window = parse_rate_limit(headers)
    assert remaining is None or remaining >= 0
    assert window is None or window >= 0


# --- registry client: Link pagination and error bodies -------------------------------------------------------

CURRENT = URL("https://registry.example/v2/team/app/tags/list?n=100")
LINK_TARGETS = st.text(max_size=30) | st.sampled_from([
    "/v2/team/app/tags/list?last=x", "https://registry.example/v2/x", "http://registry.example/v2/x",
    "https://evil.example/v2/x", "//evil.example/x", "http://[::1", "mailto:x", "//h:99999/x", "https://[::1]:5000/",
    "https://" + "e" * 2000 + ".example/", "https://a\u2028b.example/", "https://user:pw@registry.example/v2/x"])


@FUZZ
@given(link=st.text(max_size=60) | st.builds('<{}>; rel="next"'.format, LINK_TARGETS)
       | st.builds("<{}>; rel=next, <{}>; rel=prev".format, LINK_TARGETS, LINK_TARGETS))
@example(link='<http://[::1>; rel="next"')
@example(link='<mailto:x>; rel="next"')
def test_client_next_link(link: str) -> None:
    nxt = outcome(RegistryError, next_link, str(CURRENT), {"Link": link})
    if nxt is not None:
        assert URL(nxt).origin() == CURRENT.origin()


@pytest.mark.parametrize("target", ["https://evil.example/v2/x", "//evil.example/v2/x", "http://registry.example/v2/x",
                                    "https://registry.example:444/v2/x", "http://[::1", "mailto:x", "//h:99999/x"])
def test_client_next_link_refuses_other_hosts_and_junk(target: str) -> None:
    rejects(RegistryError, next_link, str(CURRENT), {"Link": f'<{target}>; rel="next"'})


def test_client_next_link_follows_same_host() -> None:
    link = '</v2/team/app/tags/list?last=b&n=100>; rel="next"'
    assert next_link(str(CURRENT), {"Link": link}) == "https://registry.example/v2/team/app/tags/list?last=b&n=100"
    assert next_link(str(CURRENT), {"Link": '</x>; rel="prev"'}) is None and next_link(str(CURRENT), {}) is None


@FUZZ
@given(body=st.binary(max_size=200) | JSON.map(dumps)
       | st.fixed_dictionaries({"errors": st.lists(st.fixed_dictionaries({}, optional={
           "code": VALUES, "message": VALUES, "detail": VALUES}), max_size=2) | VALUES}).map(dumps),
       status=st.sampled_from([400, 401, 403, 404, 429, 500]) | st.integers(0, 999))
@example(body=b'{"errors": [{"code": "A\\nB", "message": "m\\u2028x\\r"}]}', status=400)
def test_registry_error_never_raises(body: bytes, status: int) -> None:
    err = registry_error("GET manifest team/app:1", status, body)
    expected = NotFound if status == 404 else AuthError if status in (401, 403) else RegistryError
    assert type(err) is expected and err.status == status
    check_error(err, RegistryError)


# --- image references ---------------------------------------------------------------------------------------

REF_TEXT = st.text(max_size=40) | st.from_regex(r"[a-zA-Z0-9.:/@_\-\[\]]{0,40}", fullmatch=True)


@FUZZ
@given(text=REF_TEXT)
@example(text="oci:" + "\x00")
def test_reference_parsers(text: str) -> None:
    outcome(InvalidReference, parse_reference, text)
    outcome(InvalidReference, parse_location, text)
    outcome(InvalidReference, parse_location, "oci:" + text)
    outcome(InvalidReference, validate_repository, text)
    outcome(InvalidReference, split_namespace, text)


# --- config -------------------------------------------------------------------------------------------------

CONFIG = {
    "version": 1,
    "defaults": {"jobs": 4, "platforms": ["linux/amd64"], "tags": {"include": ["v.*"], "exclude": [], "latest": 3}},
    "registries": {"gcr.io": {"username_env": "U", "password_env": "P", "requests_per_second": 5}},
    "target": "docker.io/mirror",
    "sync": [{"source": "gcr.io/google-containers", "discovery": "gcr", "repositories": ["pause"],
              "tags": {"semver": ">=1"}}],
    "metadata": {"location": "/tmp/meta", "branch": "main"},
}
YAML_PIECES = st.sampled_from([
    "version: ", "defaults:", "sync:", "registries:", "tags: ", "include: ", "source: ", "jobs: ", "x: ", "\n", "  ",
    "- ", "[", "]", "{", "}", ", ", "&a ", "*a", "!!int ", "!!str ", "!!binary ", "!!timestamp ", "!!set ", "!!bool ",
    "1", "-5", "2001-02-30", "x", "'", '"', "? ", "<<: ", "~", "\t", "#", "(", "\x00", "\ufeff",
])


@FUZZ
@given(text=st.text(max_size=80) | st.lists(YAML_PIECES, max_size=25).map("".join))
@example(text="a: 2001-02-30")
@example(text="a: !!bool maybe")
@example(text="a: !!int x\n")
@example(text="a: !!timestamp x")
@example(text="a: !!float x")
@example(text="defaults: {tags: {include: ['a{99999999999999999999}']}}")
@example(text="\x00")
def test_parse_config_random_text(text: str) -> None:
    try:
        parse_config(text, "c.yaml")
    except Exception as exc:
        check_error(exc, ConfigError)
        assert str(exc).startswith("c.yaml:")


@FUZZ
@given(data=JSON | st.fixed_dictionaries({}, optional={k: JSON for k in CONFIG}) | near_miss(CONFIG))
def test_parse_config_random_structures(data: Any) -> None:
    try:
        text = yaml.safe_dump(data)
    except (yaml.YAMLError, RecursionError):  # pragma: no cover - only unrepresentable values
        return
    try:
        parse_config(text, "c.yaml")
    except Exception as exc:
        check_error(exc, ConfigError)
        assert str(exc).startswith("c.yaml:")


CONFIG_REJECTS: list[tuple[tuple[Any, ...], Any]] = [
    (("version",), 2), (("version",), "one"), (("defaults", "jobs"), 0), (("defaults", "jobs"), 65),
    (("defaults", "jobs"), "many"), (("defaults", "jobs"), [1]), (("defaults", "tags", "include"), ["("]),
    (("defaults", "tags", "include"), ["(" * 2000]), (("defaults", "tags", "include"), 5),
    (("defaults", "tags", "latest"), 0), (("defaults", "platforms"), "linux/amd64"),
    (("registries", "gcr.io", "requests_per_second"), 0), (("registries", "gcr.io", "bogus"), 1),
    (("registries", "gcr.io"), [1]), (("sync", 0, "discovery"), "nope"), (("sync", 0, "source"), DELETE),
    (("sync", 0, "source"), [1]), (("sync",), "x"), (("sync",), {}), (("metadata",), []), (("bogus",), 1),
    (("defaults", "tags", "include"), ["x" * 5000 + "("]),
]


@pytest.mark.parametrize(("path", "value"), CONFIG_REJECTS, ids=short_id)
def test_parse_config_near_misses_name_their_line(path: tuple[Any, ...], value: Any) -> None:
    text = yaml.safe_dump(mutate(CONFIG, path, value), sort_keys=False)
    message = rejects(ConfigError, parse_config, text, "c.yaml")
    m = re.match(r"c\.yaml:(\d+): ", message)
    assert m, message
    line = text.splitlines()[int(m.group(1)) - 1]
    key = next((p for p in reversed(path) if isinstance(p, str)), None)
    assert key is None or key in line or line.lstrip().startswith("-"), (message, line)


@pytest.mark.parametrize("text", [
    "- a\n- b\n", "5", "'x'", "!!set {a, b}", "&a [*a]",
    "a: &a [x,x,x,x,x,x,x,x,x]\nb: &b [*a,*a,*a,*a,*a,*a,*a,*a,*a]\nc: &c [*b,*b,*b,*b,*b,*b,*b,*b,*b]\n"
    "d: &d [*c,*c,*c,*c,*c,*c,*c,*c,*c]\ne: &e [*d,*d,*d,*d,*d,*d,*d,*d,*d]\nf: &f [*e,*e,*e,*e,*e,*e,*e,*e,*e]\n",
    "x: &x [a,a,a,a,a,a,a,a,a]\ny: &y [*x,*x,*x,*x,*x,*x,*x,*x,*x]\nz: &z [*y,*y,*y,*y,*y,*y,*y,*y,*y]\n"
    "defaults: {platforms: [*z, *z, *z]}\nsync: [*z, *z]\n",
    "registries: &r {x: *r}", "defaults: &d {tags: *d}", "a: *undefined", "a: !!python/object:os.system {}",
    "a: 2001-02-30", "sync: [{source: !!binary 'x'}]", "<<: 5", "version: 1\nversion: 2\n",
])
def test_parse_config_bombs_and_wrong_shapes(text: str) -> None:
    assert rejects(ConfigError, parse_config, text, "c.yaml").startswith("c.yaml:")


# --- ledger files -------------------------------------------------------------------------------------------

SRC, TGT = "gcr.io/google-containers", "docker.io/gcrxio"
LEDGER = {
    "format": FORMAT,
    "source": SRC,
    "target": TGT,
    "images": {
        "pause": {
            "3.9": {"digest": dg(1), "target": f"{TGT}/pause:3.9", "media_type": OCI_INDEX,
                    "first_synced": "2026-01-01T00:00:00Z", "last_synced": "2026-01-02T00:00:00Z",
                    "previous_digests": [dg(2)], "source_digest": dg(3), "platforms": ["linux/amd64"]},
            "old": {"digest": None, "target": f"{TGT}/pause:old", "legacy": True},
        }
    },
}
E = ("images", "pause", "3.9")
LEDGER_REJECTS: list[tuple[tuple[Any, ...], Any]] = [
    (("format",), "gcrsync-ledger/2"), (("format",), DELETE), (("bogus",), 1), (("bogus" * 5000,), 1),
    (("source",), 5), (("target",), "a b"), (("target",), TGT + "\n"), (("target",), HUGE), (("images",), []),
    (("images", "pause"), []), (("images", "Pause"), {}), (("images", "pause\n"), {}),
    (("images", "a" * 500 + "_"), {}), (("images", "pause", "-x"), {}), (("images", "pause", "3.9\n"), {}),
    ((*E, "digest"), "sha256:x"), ((*E, "digest"), dg(1) + "\n"), ((*E, "digest"), DELETE), ((*E, "digest"), None),
    ((*E, "target"), "x y"), ((*E, "target"), f"{TGT}/pause:3.9\n"), ((*E, "bogus\nkey"), 1), ((*E, "x" * 5000), 1),
    ((*E, "first_synced"), "yesterday"), ((*E, "first_synced"), "2026-01-01T00:00:00"), ((*E, "first_synced"), 5),
    ((*E, "previous_digests"), ["x"]), ((*E, "previous_digests"), [dg(1) + "\n"]), ((*E, "platforms"), "linux"),
    ((*E, "legacy"), "yes"), ((*E, "source_digest"), HUGE), ((*E,), "x"),
]


def test_ledger_baseline_is_valid() -> None:
    ledger = Ledger.from_json(json.dumps(LEDGER), "gcr.io/google-containers.json")
    assert len(ledger) == 2 and ledger.get("pause", "3.9") is not None


@pytest.mark.parametrize(("path", "value"), LEDGER_REJECTS, ids=short_id)
def test_ledger_rejects_near_misses(path: tuple[Any, ...], value: Any) -> None:
    message = rejects(LedgerError, Ledger.from_json, json.dumps(mutate(LEDGER, path, value)), "ns.json")
    assert message.startswith("ns.json: ")


@FUZZ
@given(text=st.text(max_size=80) | JSON.map(json.dumps) | near_miss(LEDGER).map(json.dumps))
def test_ledger_from_json(text: str) -> None:
    outcome(LedgerError, Ledger.from_json, text, "ns.json")


def _load_unchanged(rel: str, content: bytes) -> Ledger:
    """LedgerFiles.load with `content` at rel; whatever it does, it leaves the file (and the tree) untouched."""
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(content)
        try:
            return LedgerFiles(root).load(SRC, TGT)
        finally:
            assert path.read_bytes() == content
            assert sorted(p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file()) == [rel]


@FEW
@given(content=st.binary(max_size=100) | JSON.map(dumps) | near_miss(LEDGER).map(dumps))
@example(content=json.dumps(LEDGER).encode("utf-16"))
def test_ledger_store_load_leaves_file_unchanged(content: bytes) -> None:
    outcome(LedgerError, _load_unchanged, "gcr.io/google-containers.json", content)


@FEW
@given(content=st.binary(max_size=60) | st.lists(st.text(max_size=20) | VALUES, max_size=3).map(dumps))
@example(content=dumps(["pause:3.9", "pause\n:1"]))
def test_legacy_ledger_load_leaves_file_unchanged(content: bytes) -> None:
    # The original tool's file, named like the namespace, read when the new one does not exist.
    outcome(LedgerError, _load_unchanged, "google-containers", content)


# --- listing parsers ----------------------------------------------------------------------------------------

Parser = Callable[[str, object], object]


def _parser_for(url: str) -> Parser:
    if "/_catalog" in url:
        return lp.parse_catalog
    if url.split("?")[0].endswith("/tags/list"):
        return lp.parse_tags_list
    if "api.github.com" in url:
        return lp.parse_github_versions if "/versions" in url else lp.parse_github_packages
    if "hub.docker.com" in url:
        return lp.parse_hub_tags if "/tags" in url else lp.parse_hub_repositories
    return lp.parse_quay_tags if "/tag/" in url else lp.parse_quay_repositories


RECORDED = [(url, rec["body"]) for f in sorted(DATA.glob("*.json")) for url, rec in json.loads(f.read_text()).items()]
PARSERS: list[Parser] = [lp.parse_catalog, lp.parse_tags_list, lp.parse_hub_repositories, lp.parse_hub_tags,
                         lp.parse_quay_repositories, lp.parse_quay_tags, lp.parse_github_packages,
                         lp.parse_github_versions]


def test_recorded_listings_parse() -> None:
    """The near misses below start from these recorded bodies: each must parse with its parser."""
    assert {_parser_for(url) for url, _ in RECORDED} == set(PARSERS)
    for url, body in RECORDED:
        _parser_for(url)(url, body)


@FUZZ
@given(parser=st.sampled_from(PARSERS), body=VALUES | st.fixed_dictionaries({}, optional={
    k: VALUES | st.lists(VALUES, max_size=3) for k in ("repositories", "tags", "child", "manifest", "name",
                                                       "results", "next", "next_page", "has_additional")}))
def test_listing_parsers_random_json(parser: Parser, body: Any) -> None:
    outcome(lp.DiscoveryError, parser, "https://registry.example/v2/x/tags/list", body)


@FUZZ
@given(data=st.data(), which=st.integers(0, len(RECORDED) - 1))
def test_listing_parsers_near_misses(data: st.DataObject, which: int) -> None:
    url, body = RECORDED[which]
    outcome(lp.DiscoveryError, _parser_for(url), url, data.draw(near_miss(body)))


def test_listing_parsers_explicit_near_misses() -> None:
    hub = "https://hub.docker.com/v2/namespaces/x/repositories/y/tags"
    quay = "https://quay.io/api/v1/repository/x/y/tag/"
    for ts in ("0001-01-01T00:00:00+05:00", "9999-12-31T23:59:59-05:00", "x" * 10_000):
        rejects(lp.DiscoveryError, lp.parse_hub_tags, hub, {"results": [{"name": "a", "last_updated": ts}]})
    for date in ("Mon, 01 Jan 0001 00:00:00 +2359", "Fri, 31 Dec 9999 23:59:59 -2359",
                 "Mon, 01 Jan 2001 00:00:00 +" + "9" * 30):
        outcome(lp.DiscoveryError, lp.parse_quay_tags, quay, {"tags": [{"name": "a", "last_modified": date}]})
    for nxt in ("http://[::1", "https://evil.example/x", "https://" + "e" * 2000 + ".example/", "//h:99999/"):
        rejects(lp.DiscoveryError, lp.parse_hub_tags, hub, {"results": [], "next": nxt})
    rejects(lp.DiscoveryError, lp.parse_hub_tags, hub, {"results": [{"name": "a", "digest": dg(1) + "\n"}]})
    rejects(lp.DiscoveryError, lp.parse_catalog, hub, {"repositories": ["a" * 300]})
    rejects(lp.DiscoveryError, lp.parse_tags_list, hub, {"manifest": {dg(1) + "\n": {}}})


@FUZZ
@given(link=st.text(max_size=60) | st.builds('<{}>; rel="next"'.format, LINK_TARGETS)
       | st.builds('<{}>;rel=prev, <{}>; title="a,b"; rel="next"'.format, LINK_TARGETS, LINK_TARGETS))
@example(link='<http://[::1>; rel="next"')
@example(link='<https://a\u2028b.example/>; rel="next"')
def test_listing_next_link(link: str) -> None:
    base = "https://registry.example/v2/_catalog?n=100"
    nxt = outcome(lp.DiscoveryError, lp.next_link, base, {"Link": link})
    if nxt is not None:
        assert nxt.startswith("https://registry.example/")


# --- pathological inputs, one by one (too big to show as hypothesis examples) ---------------------------------


def _legacy_load(content: bytes) -> Ledger:
    return _load_unchanged("google-containers", content)


def _ledger_load(content: bytes) -> Ledger:
    return _load_unchanged("gcr.io/google-containers.json", content)


PATHOLOGICAL = [
    pytest.param(ManifestError, parse_manifest, DEEP_JSON, id="manifest-deep"),
    pytest.param(ManifestError, parse_manifest, b'{"annotations":' + DEEP_JSON + b"}", id="manifest-deep-field"),
    pytest.param(ManifestError, Platform.parse, "linux/amd64/v8/" + HUGE, id="platform-huge"),
    pytest.param(AuthError, parse_challenges, "Bearer " + "realm=x " * 20_000, id="challenge-long"),
    pytest.param(AuthError, _parse_token, "registry.example", DEEP_JSON, id="token-deep"),
    pytest.param(RegistryError, next_link, str(CURRENT), {"Link": "<https://" + "e" * 2000 + '.example/>; rel="next"'},
                 id="link-huge-host"),
    pytest.param(InvalidReference, parse_reference, "docker.io/" + "a" * 100_000, id="reference-huge"),
    pytest.param(InvalidReference, split_namespace, "gcr.io/" + "\u2028" * 1000, id="namespace-wide"),
    pytest.param(ConfigError, parse_config, "[" * 3000, "c.yaml", id="config-deep"),
    pytest.param(ConfigError, parse_config, "defaults: {tags: {include: ['" + "(" * 5000 + "']}}", "c.yaml",
                 id="config-regex-deep"),
    pytest.param(ConfigError, parse_config, "defaults: {tags: {include: ['" + "x" * 5000 + "(']}}", "c.yaml",
                 id="config-regex-huge"),
    pytest.param(ConfigError, parse_config, "defaults: {tags: {include: ['a{99999999999999999999}']}}", "c.yaml",
                 id="config-regex-repeat"),
    pytest.param(ConfigError, parse_config, "a" * 100_000 + ": 1", "c.yaml", id="config-huge-key"),
    pytest.param(LedgerError, Ledger.from_json, DEEP_JSON.decode(), "ns.json", id="ledger-deep"),
    pytest.param(LedgerError, Ledger.from_json, json.dumps({**LEDGER, "images": {"a": DEEP}}), "ns.json",
                 id="ledger-deep-field"),
    pytest.param(LedgerError, _ledger_load, DEEP_JSON, id="ledger-load-deep"),
    pytest.param(LedgerError, _legacy_load, DEEP_JSON, id="legacy-deep"),
    pytest.param(LedgerError, _legacy_load, dumps(["a" * 600 + ":tag"]), id="legacy-long-name"),
]


@pytest.mark.parametrize(("kind", "fn", "args"), [pytest.param(p.values[0], p.values[1], p.values[2:], id=p.id)
                                                  for p in PATHOLOGICAL])
def test_pathological_inputs_are_rejected_cleanly(kind: type[GcrsyncError], fn: Callable[..., object],
                                                  args: tuple[Any, ...]) -> None:
    rejects(kind, fn, *args)


@pytest.mark.parametrize("body", [DEEP_JSON, b'{"errors": [{"code": "' + b"C" * 10_000 + b'", "message": "'
                                  + b"\\u0085" * 10_000 + b'"}]}', b'{"errors": [' + DEEP_JSON + b"]}"], ids=short_id)
def test_registry_error_pathological_bodies(body: bytes) -> None:
    check_error(registry_error("GET /v2/", 500, body), RegistryError)


@pytest.mark.parametrize("header", ['Bearer realm="' + "\\" * 5000, 'Bearer realm="' + "\U000e0000" * 200 + '", , \x00',
                                    "Basic " + "a=" * 50_000, 'Bearer realm="' + '\\"' * 20_000 + '"'], ids=short_id)
def test_challenge_pathological(header: str) -> None:
    outcome(AuthError, parse_challenges, header)


def test_transport_headers_pathological() -> None:
    assert parse_rate_limit({"ratelimit-remaining": "9" * 5000}) is not None
    assert parse_retry_after("9" * 5000, 60.0) == 60.0
