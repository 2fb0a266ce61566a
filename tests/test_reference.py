"""Tests for gcrsync.reference.

Most example cases are taken from distribution/reference's own tests (reference_test.go, normalize_test.go),
adapted to ParseNormalizedNamed's normalised output. The property tests generate references from the
grammar and compare the parser with an independent transliteration of Docker's regexps.
"""

from __future__ import annotations

import re

import pytest
from hypothesis import assume, example, given, settings
from hypothesis import strategies as st

from gcrsync.errors import InvalidReference
from gcrsync.reference import (
    LayoutReference,
    Reference,
    is_loopback,
    parse_location,
    parse_reference,
    split_namespace,
    validate_repository,
)

SHA256 = "sha256:" + "f" * 64
SHA512 = "sha512:" + "f" * 128
REDIS_DIGEST = "sha256:dbcc1c35ac38df41fd2f5e4130b32ffdb93ebae8b3dbe638c23575912276fc9c"
HEX64 = "1a3f5e7d9c1b3a5f7e9d1c3b5a7f9e1d3c5b7a9f1e3d5d7c9b1a3f5e7d9c1b3a"

# input -> (registry, repository, tag, digest)
VALID: dict[str, tuple[str, str, str | None, str | None]] = {
    # reference_test.go TestReferenceParse, normalised
    "test_com": ("docker.io", "library/test_com", None, None),
    "test.com:tag": ("docker.io", "library/test.com", "tag", None),
    "test.com:5000": ("docker.io", "library/test.com", "5000", None),
    "test.com/repo:tag": ("test.com", "repo", "tag", None),
    "test:5000/repo": ("test:5000", "repo", None, None),
    "test:5000/repo:tag": ("test:5000", "repo", "tag", None),
    f"test:5000/repo@{SHA256}": ("test:5000", "repo", None, SHA256),
    f"test:5000/repo:tag@{SHA256}": ("test:5000", "repo", "tag", SHA256),
    "lowercase:Uppercase": ("docker.io", "library/lowercase", "Uppercase", None),
    "a/" * 127 + "a:tag-puts-this-over-max": ("docker.io", "a/" * 127 + "a", "tag-puts-this-over-max", None),
    "sub-dom1.foo.com/bar/baz/quux": ("sub-dom1.foo.com", "bar/baz/quux", None, None),
    "sub-dom1.foo.com/bar/baz/quux:some-long-tag": ("sub-dom1.foo.com", "bar/baz/quux", "some-long-tag", None),
    "b.gcr.io/test.example.com/my-app:test.example.com": (
        "b.gcr.io",
        "test.example.com/my-app",
        "test.example.com",
        None,
    ),
    "xn--n3h.com/myimage:xn--n3h.com": ("xn--n3h.com", "myimage", "xn--n3h.com", None),
    f"xn--7o8h.com/myimage:xn--7o8h.com@{SHA512}": ("xn--7o8h.com", "myimage", "xn--7o8h.com", SHA512),
    "foo_bar.com:8080": ("docker.io", "library/foo_bar.com", "8080", None),
    "foo/foo_bar.com:8080": ("docker.io", "foo/foo_bar.com", "8080", None),
    "192.168.1.1": ("docker.io", "library/192.168.1.1", None, None),
    "192.168.1.1:tag": ("docker.io", "library/192.168.1.1", "tag", None),
    "192.168.1.1:5000": ("docker.io", "library/192.168.1.1", "5000", None),
    "192.168.1.1/repo": ("192.168.1.1", "repo", None, None),
    "192.168.1.1:5000/repo": ("192.168.1.1:5000", "repo", None, None),
    "192.168.1.1:5000/repo:5050": ("192.168.1.1:5000", "repo", "5050", None),
    "[2001:db8::1]/repo": ("[2001:db8::1]", "repo", None, None),
    "[2001:db8:1:2:3:4:5:6]/repo:tag": ("[2001:db8:1:2:3:4:5:6]", "repo", "tag", None),
    "[2001:db8::1]:5000/repo": ("[2001:db8::1]:5000", "repo", None, None),
    "[2001:db8::1]:5000/repo:tag": ("[2001:db8::1]:5000", "repo", "tag", None),
    f"[2001:db8::1]:5000/repo@{SHA256}": ("[2001:db8::1]:5000", "repo", None, SHA256),
    f"[2001:db8::1]:5000/repo:tag@{SHA256}": ("[2001:db8::1]:5000", "repo", "tag", SHA256),
    "[2001:db8::]:5000/repo": ("[2001:db8::]:5000", "repo", None, None),
    "[::1]:5000/repo": ("[::1]:5000", "repo", None, None),
    # normalize_test.go TestParseRepositoryInfo / TestNormalizedSplitHostname / TestParseAnyReference
    "fooo/bar": ("docker.io", "fooo/bar", None, None),
    "index.docker.io/fooo/bar": ("docker.io", "fooo/bar", None, None),
    "library/ubuntu": ("docker.io", "library/ubuntu", None, None),
    "ubuntu": ("docker.io", "library/ubuntu", None, None),
    "other/library": ("docker.io", "other/library", None, None),
    "127.0.0.1:8000/private/moonbase": ("127.0.0.1:8000", "private/moonbase", None, None),
    "127.0.0.1:8000/privatebase": ("127.0.0.1:8000", "privatebase", None, None),
    "example.com:8000/privatebasee": ("example.com:8000", "privatebasee", None, None),
    "ubuntu-12.04-base": ("docker.io", "library/ubuntu-12.04-base", None, None),
    "index.docker.io/library/ubuntu-12.04-base": ("docker.io", "library/ubuntu-12.04-base", None, None),
    "docker.io/foo": ("docker.io", "library/foo", None, None),
    "docker.io/library/foo/bar": ("docker.io", "library/foo/bar", None, None),
    "store/foo/bar": ("docker.io", "store/foo/bar", None, None),
    "Foo/bar": ("Foo", "bar", None, None),
    "FOO/bar": ("FOO", "bar", None, None),
    "test_com/foo": ("docker.io", "test_com/foo", None, None),
    "test-com:8080/foo": ("test-com:8080", "foo", None, None),
    "xn--n3h.com:18080/foo": ("xn--n3h.com:18080", "foo", None, None),
    "localhost/foo": ("localhost", "foo", None, None),
    "localhost:5000/foo/bar:v1": ("localhost:5000", "foo/bar", "v1", None),
    "redis:latest": ("docker.io", "library/redis", "latest", None),
    f"redis@{REDIS_DIGEST}": ("docker.io", "library/redis", None, REDIS_DIGEST),
    f"busybox:latest@{REDIS_DIGEST}": ("docker.io", "library/busybox", "latest", REDIS_DIGEST),
    "dbcc1c35ac38df41fd2f5e4130b32ffdb93ebae8b3dbe638c23575912276fc9": (
        "docker.io",
        "library/dbcc1c35ac38df41fd2f5e4130b32ffdb93ebae8b3dbe638c23575912276fc9",
        None,
        None,
    ),
    f"docker.io/{HEX64}": ("docker.io", f"library/{HEX64}", None, None),
    # TestValidateReferenceName / TestValidateRemoteName
    "192.168.0.1:80": ("docker.io", "library/192.168.0.1", "80", None),
    "192.168.0.1:8/debian": ("192.168.0.1:8", "debian", None, None),
    "[fc00:1:2:3:4:5:6:7]:5000/library/debian": ("[fc00:1:2:3:4:5:6:7]:5000", "library/debian", None, None),
    "thisisthesongthatneverendsitgoesonandonandonthisisthesongthatnev": (
        "docker.io",
        "library/thisisthesongthatneverendsitgoesonandonandonthisisthesongthatnev",
        None,
        None,
    ),
    "docker---rules/docker": ("docker.io", "docker---rules/docker", None, None),
    "d/docker": ("docker.io", "d/docker", None, None),
    "jess/t": ("docker.io", "jess/t", None, None),
    "dock__er/docker": ("docker.io", "dock__er/docker", None, None),
    "gcr.io/google-containers/pause:3.9": ("gcr.io", "google-containers/pause", "3.9", None),
}

# input -> fragment the error message must contain
INVALID: dict[str, str] = {
    "": "empty",
    ":justtag": "no repository name",
    f"@{SHA256}": "no repository name",
    "repo@sha256:ffffffffffffffffffffffffffffffffff": "needs 64 hex digits, got 34",
    f"validname@invaliddigest:{'f' * 64}": "unsupported digest algorithm 'invaliddigest'",
    "Uppercase:tag": "must be lowercase",
    "test:5000/Uppercase/lowercase:tag": "must be lowercase",
    "a/" * 128 + "a:tag": "longer than 255",
    "aa/asdf$$^/aa": "component",
    "[2001:db8::1]": "followed by /repository",
    "[2001:db8::1]:5000": "followed by /repository",
    "[2001:db8::1]:tag": "followed by /repository",
    "[fe80::1%eth0]:5000/repo": "invalid registry host",
    "[fe80::1%@invalidzone]:5000/repo": "invalid registry host",
    "https://github.com/docker/docker": "URL scheme",
    "docker/Docker": "must be lowercase",
    "-docker": "component",
    "-docker/docker": "component",
    "-docker.io/docker/docker": "invalid registry host",
    "docker///docker": "empty path component",
    "docker.io/docker/Docker": "must be lowercase",
    "docker.io/docker///docker": "empty path component",
    "[fc00::1]": "followed by /repository",
    "fc00::1:5000/debian": "invalid registry host",
    "[2001:db8:3:4::192.0.2.33]:5000/debian": "invalid registry host",
    HEX64: "image ID",
    "docker-/docker": "component",
    "____/____": "component",
    "_docker/_docker": "component",
    "dock..er/docker": "invalid registry host",  # a '.' makes it a host, as in Docker
    "dock_.er/docker": "invalid registry host",
    "dock-.er/docker": "invalid registry host",
    "dock..er": "component",
    "docker/": "empty path component",
    "this_is_not_a_valid_namespace_because_its_lenth_is_greater_than_255_" * 4 + "/docker": "longer than 255",
    "foo_bar.com/x": "invalid registry host",  # Docker would return an empty domain here (deviation)
    "ubuntu:tag:other": "too many ':'",
    "ubuntu:": "invalid tag",
    "ubuntu:-tag": "invalid tag",
    "ubuntu:" + "a" * 129: "invalid tag",
    "ubuntu@": "invalid digest",
    f"ubuntu@{SHA256.upper()}": "unsupported digest algorithm 'SHA256'",
    f"ubuntu@sha256:{'F' * 64}": "lowercase",
    f"ubuntu@sha384:{'f' * 96}": "unsupported digest algorithm 'sha384'",
    f"ubuntu@sha512:{'f' * 64}": "needs 128",
    "ubuntu\n": "component",
    "ubuntu:v1\n": "invalid tag",
    "ubuntu:t\u00e4g": "invalid tag",
    "\u00fcbuntu": "component",
    "example.com:port/repo": "invalid registry host",
    "docker.io/": "no repository name",
    "library/ubuntu/": "empty path component",
    "/ubuntu": "must not start with '/'",
    "a/../b": "'..' is not allowed",
}


@pytest.mark.parametrize("text", list(VALID))
def test_valid_references(text: str) -> None:
    registry, repository, tag, digest = VALID[text]
    ref = parse_reference(text)
    assert (ref.registry, ref.repository, ref.tag, ref.digest) == (registry, repository, tag, digest)
    assert parse_reference(str(ref)) == ref


@pytest.mark.parametrize("text", list(INVALID))
def test_invalid_references(text: str) -> None:
    with pytest.raises(InvalidReference) as info:
        parse_reference(text)
    message = str(info.value)
    assert INVALID[text] in message
    assert "\n" not in message


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("ubuntu", "docker.io/library/ubuntu"),
        ("index.docker.io/ubuntu:22.04", "docker.io/library/ubuntu:22.04"),
        (f"busybox:latest@{REDIS_DIGEST}", f"docker.io/library/busybox:latest@{REDIS_DIGEST}"),
        ("gcr.io/distroless/static@" + SHA256, "gcr.io/distroless/static@" + SHA256),
        ("LocalHost:5000/x", "LocalHost:5000/x"),  # hosts keep their case, as in Docker
    ],
)
def test_str_is_fully_normalised(text: str, expected: str) -> None:
    assert str(parse_reference(text)) == expected


def test_properties() -> None:
    hub = parse_reference("nginx")
    assert hub.name == "docker.io/library/nginx"
    assert hub.ref == "latest"
    assert hub.api_host == "registry-1.docker.io"
    tagged = parse_reference("localhost:5000/team/app:v2")
    assert tagged.name == "localhost:5000/team/app"
    assert tagged.ref == "v2"
    assert tagged.api_host == "localhost:5000"
    pinned = parse_reference(f"gcr.io/x/y:v1@{SHA256}")
    assert pinned.ref == SHA256


def test_with_methods() -> None:
    base = parse_reference(f"gcr.io/ns/app:v1@{SHA256}")
    retagged = base.with_tag("v2")
    assert (retagged.tag, retagged.digest, retagged.ref) == ("v2", None, "v2")
    pinned = parse_reference("gcr.io/ns/app:v1").with_digest(SHA512)
    assert (pinned.tag, pinned.digest, pinned.ref) == ("v1", SHA512, SHA512)
    moved = base.with_repository("other/app")
    assert (moved.registry, moved.repository, moved.tag, moved.digest) == ("gcr.io", "other/app", "v1", SHA256)
    hub = parse_reference("docker.io/foo/bar:1").with_repository("nginx")
    assert str(hub) == "docker.io/library/nginx:1"
    assert parse_reference(str(hub)) == hub
    with pytest.raises(InvalidReference, match="invalid tag"):
        base.with_tag("-bad")
    with pytest.raises(InvalidReference, match="invalid digest"):
        base.with_digest("sha256:abc")
    with pytest.raises(InvalidReference, match="must be lowercase"):
        base.with_repository("Other/app")


def test_direct_construction_is_normalised_and_validated() -> None:
    assert Reference("index.docker.io", "nginx") == parse_reference("nginx")
    assert Reference("ghcr.io", "a/b", "v1") == parse_reference("ghcr.io/a/b:v1")
    with pytest.raises(InvalidReference, match="invalid registry host"):
        Reference("bad host", "x")
    with pytest.raises(InvalidReference, match="repository"):
        Reference("gcr.io", "")
    with pytest.raises(InvalidReference, match="invalid tag"):
        Reference("gcr.io", "x", tag="")
    with pytest.raises(InvalidReference, match=re.escape("needs a '.', a ':port' or to be 'localhost'")):
        Reference("myregistry", "x")  # "myregistry/x" would mean docker.io/myregistry/x
    assert str(Reference("myregistry:5000", "x")) == "myregistry:5000/x"


def test_reference_is_hashable_and_frozen() -> None:
    ref = parse_reference("alpine:3")
    assert {ref: 1}[parse_reference("docker.io/library/alpine:3")] == 1
    with pytest.raises(AttributeError):
        ref.tag = "4"  # type: ignore[misc]


# --- OCI layouts --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "path", "tag"),
    [
        ("oci:/tmp/layout", "/tmp/layout", None),
        ("oci:/tmp/layout:v1.2", "/tmp/layout", "v1.2"),
        ("oci:relative/dir:latest", "relative/dir", "latest"),
        ("oci:/mnt/a:b/layout", "/mnt/a:b/layout", None),  # after the last ':' there is a '/'
        ("oci:/mnt/a:b/layout:tag", "/mnt/a:b/layout", "tag"),
        ("oci:/x:-notatag", "/x:-notatag", None),  # not a valid tag, so part of the path
        ("oci:layout", "layout", None),
    ],
)
def test_parse_location_layout(text: str, path: str, tag: str | None) -> None:
    loc = parse_location(text)
    assert loc == LayoutReference(path, tag)
    assert parse_location(str(loc)) == loc


def test_parse_location_registry_and_errors() -> None:
    assert parse_location("quay.io/a/b:1") == parse_reference("quay.io/a/b:1")
    for bad in ("oci:", "oci::tag"):
        with pytest.raises(InvalidReference, match="path is empty"):
            parse_location(bad)
    with pytest.raises(InvalidReference):
        parse_location("Not A Reference")


# --- repository names and namespaces -----------------------------------------------------------------


@pytest.mark.parametrize("name", ["library/ubuntu", "a", "google-containers/pause", "a/b/c/d", "x__y.z--w"])
def test_validate_repository_accepts(name: str) -> None:
    assert validate_repository(name) == name


@pytest.mark.parametrize(
    ("name", "fragment"),
    [
        ("", "empty"),
        ("/abs/path", "must not start with '/'"),
        ("a//b", "empty path component"),
        ("a/", "empty path component"),
        ("a/../b", "'..' is not allowed"),
        ("..", "'..' is not allowed"),
        ("./a", "'.' is not allowed"),
        ("Library/ubuntu", "lowercase"),
        ("gcr.io:443/x", "component"),
        ("a/b:tag", "component"),
        ("a\\b", "component"),
        ("a/" * 128 + "a", "longer than 255"),
    ],
)
def test_validate_repository_rejects(name: str, fragment: str) -> None:
    with pytest.raises(InvalidReference, match=re.escape(fragment)):
        validate_repository(name)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("gcr.io/google-containers", ("gcr.io", "google-containers")),
        ("docker.io/library", ("docker.io", "library")),
        ("index.docker.io/bitnami", ("docker.io", "bitnami")),
        ("bitnami", ("docker.io", "bitnami")),
        ("localhost:5000/team/sub", ("localhost:5000", "team/sub")),
        ("localhost:5000", ("localhost:5000", "")),
        ("localhost", ("localhost", "")),
        ("gcr.io", ("gcr.io", "")),
        ("[::1]:5000/ns", ("[::1]:5000", "ns")),
        ("quay.io/org/team/", ("quay.io", "org/team")),
    ],
)
def test_split_namespace(text: str, expected: tuple[str, str]) -> None:
    assert split_namespace(text) == expected


@pytest.mark.parametrize(
    ("text", "fragment"),
    [
        ("", "empty"),
        ("gcr.io/ns:tag", "cannot have a tag"),
        (f"gcr.io/ns@{SHA256}", "cannot have a digest"),
        ("https://gcr.io/ns", "URL scheme"),
        ("gcr.io/Google", "lowercase"),
        ("gcr.io//x", "must not start with '/'"),
        ("gcr.io/x//y", "empty path component"),
        ("bad_host.io/x", "invalid registry host"),
        ("gcr.io/", "the whole registry"),  # a namespace left out by accident, not a request for everything
        ("registry.k8s.io/", "the whole registry"),
    ],
)
def test_split_namespace_rejects(text: str, fragment: str) -> None:
    with pytest.raises(InvalidReference, match=re.escape(fragment)):
        split_namespace(text)


@pytest.mark.parametrize(
    ("host", "expected"),
    [
        ("localhost", True),
        ("localhost:5000", True),
        ("LOCALHOST:5000", True),
        ("127.0.0.1", True),
        ("127.0.0.1:5000", True),
        ("127.3.2.1:80", True),
        ("::1", True),
        ("[::1]", True),
        ("[::1]:5000", True),
        ("[::ffff:127.0.0.1]:5000", True),
        ("128.0.0.1", False),
        ("10.0.0.1:5000", False),
        ("[::2]:5000", False),
        ("localhost.example.com", False),
        ("mylocalhost:5000", False),
        ("gcr.io", False),
        ("[::1", False),
        ("", False),
    ],
)
def test_is_loopback(host: str, expected: bool) -> None:
    assert is_loopback(host) is expected


# --- property tests ---------------------------------------------------------------------------------

LOWER_ALNUM = "abcdefghijklmnopqrstuvwxyz0123456789"
alnum = st.text(LOWER_ALNUM, min_size=1, max_size=6)
separator = st.sampled_from([".", "_", "__", "-", "--", "---"])
path_component = st.builds(
    lambda first, rest: first + "".join(s + a for s, a in rest),
    alnum,
    st.lists(st.tuples(separator, alnum), max_size=3),
)
domain_component = st.from_regex(r"[a-zA-Z0-9]([a-zA-Z0-9-]{0,6}[a-zA-Z0-9])?", fullmatch=True)
port = st.integers(0, 99999).map(lambda p: f":{p}")
# Only hosts that splitDockerDomain recognises as such: a '.', a port, localhost, IPv6, or uppercase.
dotted_host = st.lists(domain_component, min_size=2, max_size=4).map(".".join)
ipv6_host = st.text("0123456789abcdefABCDEF:", max_size=12).map(lambda h: f"[{h}:]")
registry = st.one_of(
    dotted_host,
    st.tuples(st.one_of(dotted_host, domain_component, ipv6_host, st.just("localhost")), port).map("".join),
    ipv6_host,
    st.just("localhost"),
    st.just("index.docker.io"),
    domain_component.filter(lambda c: c.lower() != c),
)
tag = st.from_regex(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,20}", fullmatch=True) | st.from_regex(
    r"[A-Za-z0-9_][A-Za-z0-9_.-]{127}", fullmatch=True
)
digest = st.one_of(
    st.text("0123456789abcdef", min_size=64, max_size=64).map(lambda h: "sha256:" + h),
    st.text("0123456789abcdef", min_size=128, max_size=128).map(lambda h: "sha512:" + h),
)


@st.composite
def references(draw: st.DrawFn) -> tuple[str, tuple[str, str, str | None, str | None]]:
    """A valid reference string and what it must parse to."""
    components = draw(st.lists(path_component, min_size=1, max_size=4))
    host = draw(st.none() | registry)
    if host is None and len(components) > 1:
        # Without an explicit registry the first component must not look like one.
        assume("." not in components[0] and components[0] != "localhost")
    path = "/".join(components)
    the_tag = draw(st.none() | tag)
    the_digest = draw(st.none() | digest)
    text = (f"{host}/" if host else "") + path
    text += f":{the_tag}" if the_tag is not None else ""
    text += f"@{the_digest}" if the_digest is not None else ""
    expected_registry = "docker.io" if host in (None, "index.docker.io") else host
    assert expected_registry is not None
    if expected_registry == "docker.io" and "/" not in path:
        path = "library/" + path
    assume(len(path) <= 255)
    assume(not (host is None and re.fullmatch(r"[a-f0-9]{64}", text)))
    return text, (expected_registry, path, the_tag, the_digest)


@given(references())
@example(("localhost/a", ("localhost", "a", None, None)))
@example(("[::]:0/a:_", ("[::]:0", "a", "_", None)))
def test_generated_references_parse_and_round_trip(
    case: tuple[str, tuple[str, str, str | None, str | None]],
) -> None:
    text, expected = case
    ref = parse_reference(text)
    assert (ref.registry, ref.repository, ref.tag, ref.digest) == expected
    again = parse_reference(str(ref))
    assert again == ref
    assert str(again) == str(ref)


@given(st.one_of(registry, domain_component), st.lists(path_component, min_size=1, max_size=3), st.none() | tag)
def test_constructed_references_round_trip_or_are_rejected(host: str, components: list[str], t: str | None) -> None:
    try:
        ref = Reference(host, "/".join(components), t)
    except InvalidReference:
        return
    assert parse_reference(str(ref)) == ref


# An independent transliteration of distribution/reference (regexp.go, normalize.go, reference.go),
# used as an oracle. Python's re and Go's regexp both use leftmost-first submatch semantics.
_GO_ALNUM = r"[a-z0-9]+"
_GO_PATH_COMPONENT = _GO_ALNUM + r"(?:(?:[._]|__|[-]+)" + _GO_ALNUM + r")*"
_GO_REMOTE = _GO_PATH_COMPONENT + r"(?:/" + _GO_PATH_COMPONENT + r")*"
_GO_DOMAIN_COMPONENT = r"(?:[a-zA-Z0-9]|[a-zA-Z0-9][a-zA-Z0-9-]*[a-zA-Z0-9])"
_GO_HOST = r"(?:" + _GO_DOMAIN_COMPONENT + r"(?:\." + _GO_DOMAIN_COMPONENT + r")*|\[(?:[a-fA-F0-9:]+)\])"
_GO_DOMAIN = _GO_HOST + r"(?::[0-9]+)?"
_GO_NAME = r"(?:" + _GO_DOMAIN + r"/)?" + _GO_REMOTE
_GO_DIGEST = r"[A-Za-z][A-Za-z0-9]*(?:[-_+.][A-Za-z][A-Za-z0-9]*)*[:][0-9a-fA-F]{32,}"
_GO_REFERENCE = re.compile(r"(" + _GO_NAME + r")(?::([0-9A-Za-z_][0-9A-Za-z_.-]{0,127}))?(?:@(" + _GO_DIGEST + r"))?")
_GO_ANCHORED_NAME = re.compile(r"(?:(" + _GO_DOMAIN + r")/)?(" + _GO_REMOTE + r")")
_GO_DIGEST_LENGTHS = {"sha256": 64, "sha384": 96, "sha512": 128}


def docker_parse_normalized_named(s: str) -> tuple[str, str, str | None, str | None] | None:
    """What ParseNormalizedNamed returns for s as (domain, path, tag, digest), or None on error."""
    if re.fullmatch(r"[a-f0-9]{64}", s):
        return None
    first, sep, rest = s.partition("/")
    if not sep:
        domain, remainder = "docker.io", "library/" + s
    else:
        if first == "localhost" or any(c in first for c in ".:") or first.lower() != first:
            domain, remainder = first, rest
        else:
            domain, remainder = "docker.io", s
        if domain == "index.docker.io":
            domain = "docker.io"
        if domain == "docker.io" and "/" not in remainder:
            remainder = "library/" + remainder
    remote = remainder.partition(":")[0]
    if remote.lower() != remote:
        return None
    match = _GO_REFERENCE.fullmatch(domain + "/" + remainder)
    if match is None:
        return None
    name, the_tag, the_digest = match.groups()
    name_match = _GO_ANCHORED_NAME.fullmatch(name)
    assert name_match is not None
    if len(name_match.group(2)) > 255:
        return None
    if the_digest is not None:
        algorithm, _, encoded = the_digest.partition(":")
        if _GO_DIGEST_LENGTHS.get(algorithm) != len(encoded) or encoded != encoded.lower():
            return None
    return name_match.group(1) or "", name_match.group(2), the_tag, the_digest


REFERENCE_ALPHABET = "abAB019._-/:@[]%$ \u00e9"
fuzz_text = st.one_of(
    st.text(REFERENCE_ALPHABET, max_size=40),
    st.text(max_size=40),
    # a valid reference with a few characters changed, to stay near the grammar's edges
    st.tuples(
        references(), st.lists(st.tuples(st.integers(0, 300), st.sampled_from(REFERENCE_ALPHABET)), max_size=3)
    ).map(lambda c: _mutate(c[0][0], c[1])),
)


def _mutate(text: str, edits: list[tuple[int, str]]) -> str:
    for position, char in edits:
        i = position % (len(text) + 1)
        text = text[:i] + char + text[i + 1 :] if position % 2 else text[:i] + char + text[i:]
    return text


_REPR_ESCAPE = re.compile(r"\\(?:x[0-9a-f]{2}|u[0-9a-f]{4}|U[0-9a-f]{8})")


def assert_clear_message(message: str) -> None:
    """One line that names the problem without echoing a huge input (an escape counts as one character)."""
    assert message.strip()
    assert len(message.splitlines()) == 1
    assert len(_REPR_ESCAPE.sub("?", message)) <= 300


@pytest.mark.parametrize(
    "text",
    [
        "gcr.io/" + "a" * 100 + "/" + "b" * 100 + "-",
        "gcr.io/" + "\u2028" * 1000,
        "x" * 5000 + "_.com/y",
        "ubuntu:" + "t" * 5000,
        "ubuntu@sha256:" + "a" * 5000,
        "ubuntu@" + "x" * 5000,
        "\U000e0000" * 500 + "/x",
    ],
    ids=lambda text: text[:20],
)
def test_pathological_inputs_give_short_messages(text: str) -> None:
    with pytest.raises(InvalidReference) as info:
        parse_reference(text)
    assert_clear_message(str(info.value))
    for function in (split_namespace, validate_repository):  # these may accept some of them
        try:
            function(text)
        except InvalidReference as exc:
            assert_clear_message(str(exc))


@settings(max_examples=600)
@given(fuzz_text)
@example("foo_bar.com/x")
@example(f"x@sha384:{'a' * 96}")
@example("a:b@sha256:" + "a" * 64)
def test_parser_agrees_with_docker_grammar(text: str) -> None:
    expected = docker_parse_normalized_named(text)
    try:
        ref = parse_reference(text)
    except InvalidReference as exc:
        assert_clear_message(str(exc))
        # Documented deviations: an empty domain, and sha384 digests, are rejected here.
        if expected is not None:
            assert expected[0] == "" or (expected[3] or "").startswith("sha384:")
        return
    assert expected is not None, f"Docker rejects {text!r} but we accepted it"
    assert (ref.registry, ref.repository, ref.tag, ref.digest) == expected
    assert parse_reference(str(ref)) == ref


@given(st.text(max_size=60))
def test_other_entry_points_raise_only_invalid_reference(text: str) -> None:
    # Anything other than InvalidReference escaping (ValueError, IndexError...) fails the test.
    for function in (parse_location, split_namespace, validate_repository):
        try:
            function(text)
        except InvalidReference as exc:
            assert_clear_message(str(exc))
    assert is_loopback(text) in (True, False)
