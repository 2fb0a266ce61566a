from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given
from hypothesis import strategies as st

from gcrsync.engine.select import TagPolicy, is_digest_tag, parse_tag_version, select_tags
from gcrsync.errors import ConfigError
from gcrsync.types import TagInfo

HEX = "0123456789abcdef" * 4
T0 = datetime(2024, 1, 1, tzinfo=UTC)


def plain(*tags: str) -> dict[str, TagInfo]:
    return {tag: TagInfo() for tag in tags}


def pushed(**offsets: int) -> dict[str, TagInfo]:
    """Tags (keyword names, '_' for '.') pushed `offset` days after T0."""
    return {name.replace("_", "."): TagInfo(pushed_at=T0 + timedelta(days=d)) for name, d in offsets.items()}


def test_default_policy_keeps_everything_but_digest_tags() -> None:
    tags = plain("latest", "v1.0.0", f"sha256-{HEX}", f"sha256-{HEX}.sig", f"sha256-{HEX}.att", "sha256-notdigest")
    assert select_tags(tags, TagPolicy()) == ["latest", "sha256-notdigest", "v1.0.0"]
    everything = select_tags(tags, TagPolicy(include_digest_tags=True))
    assert everything == sorted(tags)


@pytest.mark.parametrize(
    ("tag", "expected"),
    [
        (f"sha256-{HEX}", True),
        (f"sha256-{HEX}.sig", True),
        (f"sha256-{HEX}.sbom", True),
        (f"sha512-{HEX}{HEX}.att", True),
        (f"sha256-{HEX[:-1]}", False),
        ("sha256-latest", False),
        ("v1", False),
    ],
)
def test_is_digest_tag(tag: str, expected: bool) -> None:
    assert is_digest_tag(tag) is expected


def test_include_is_full_match_and_exclude_wins() -> None:
    tags = plain("v1.2.3", "v1.2.3-amd64", "v1.2.3-arm64", "latest", "xv1.2.3")
    policy = TagPolicy(include=[r"v1\.2\.3.*"], exclude=[r".*-arm64"])
    assert select_tags(tags, policy) == ["v1.2.3", "v1.2.3-amd64"]
    # A partial match is not enough: "v1" does not select "v1.2.3".
    assert select_tags(tags, TagPolicy(include=["v1"])) == []
    assert select_tags(tags, TagPolicy(include=["latest", r"xv.*"])) == ["latest", "xv1.2.3"]


@pytest.mark.parametrize("field", ["include", "exclude"])
def test_bad_regex_is_a_config_error(field: str) -> None:
    with pytest.raises(ConfigError, match=r"invalid tag .* regex '\(unclosed'"):
        TagPolicy(**{field: ["ok", "(unclosed"]})  # type: ignore[arg-type]


@pytest.mark.parametrize("bad", ["garbage!!", ">=1.2.3.4", "^", ">1 <", "  "])
def test_bad_semver_range_is_a_config_error(bad: str) -> None:
    with pytest.raises(ConfigError, match="semver range"):
        TagPolicy(semver=bad)


@pytest.mark.parametrize("bad", [0, -3])
def test_bad_latest_is_a_config_error(bad: int) -> None:
    with pytest.raises(ConfigError, match="latest"):
        TagPolicy(latest=bad)


@pytest.mark.parametrize(
    ("tag", "version"),
    [
        ("v1.2.3", "1.2.3"),
        ("1.2.3", "1.2.3"),
        ("1.2", "1.2.0"),
        ("v1.2", "1.2.0"),
        ("1.2.3-rc.1", "1.2.3-rc.1"),
        ("v3.4.13-0", "3.4.13-0"),
        ("1", None),
        ("latest", None),
        ("1.2.3.4", None),
        ("01.2.3", None),
        ("1.2.3-rc.01", None),
        ("1.2.3-", None),
        ("V1.2.3", None),
    ],
)
def test_parse_tag_version(tag: str, version: str | None) -> None:
    parsed = parse_tag_version(tag)
    assert (None if parsed is None else parsed.version) == version


TAGS = plain("v0.9.0", "v1.0.0", "1.2", "v1.4.0", "v1.4.7", "1.5.0-rc.1", "v1.9.9", "v2.0.0", "latest", "1.3.0-amd64")


@pytest.mark.parametrize(
    ("spec", "expected"),
    [
        (">=1.2 <2", ["1.2", "v1.4.0", "v1.4.7", "v1.9.9"]),
        ("^1.4", ["v1.4.0", "v1.4.7", "v1.9.9"]),
        ("~1.4", ["v1.4.0", "v1.4.7"]),
        ("1.x", ["1.2", "v1.0.0", "v1.4.0", "v1.4.7", "v1.9.9"]),
        ("<1 || >=2", ["v0.9.0", "v2.0.0"]),
        ("1.0.0 - 1.4.0", ["1.2", "v1.0.0", "v1.4.0"]),
        # npm pre-release rule: only a comparator naming 1.5.0-* admits 1.5.0-rc.1.
        (">=1.5.0-rc.0 <1.6", ["1.5.0-rc.1"]),
        ("=1.3.0-amd64", ["1.3.0-amd64"]),
        ("*", ["1.2", "v0.9.0", "v1.0.0", "v1.4.0", "v1.4.7", "v1.9.9", "v2.0.0"]),
    ],
)
def test_semver_ranges(spec: str, expected: list[str]) -> None:
    assert select_tags(TAGS, TagPolicy(semver=spec)) == sorted(expected)


def test_semver_combines_with_regexes() -> None:
    policy = TagPolicy(include=[r"v.*"], exclude=[r"v1\.4\..*"], semver="^1")
    assert select_tags(TAGS, policy) == ["v1.0.0", "v1.9.9"]


def test_latest_by_push_time_when_every_candidate_has_one() -> None:
    tags = pushed(v1_0_0=5, v2_0_0=1, nightly=9, v1_5_0=3)
    assert select_tags(tags, TagPolicy(latest=2)) == ["nightly", "v1.0.0"]
    # The range applies first, then latest among what is left.
    assert select_tags(tags, TagPolicy(semver=">=1.1", latest=1)) == ["v1.5.0"]


def test_latest_push_time_ties_fall_back_to_version_order() -> None:
    tags = pushed(v1_0_0=1, v1_2_0=1, v1_1_0=1)
    assert select_tags(tags, TagPolicy(latest=1)) == ["v1.2.0"]


def test_latest_by_version_when_a_push_time_is_missing() -> None:
    tags = {
        "v1.9.0": TagInfo(pushed_at=T0 + timedelta(days=9)),
        "v1.10.0": TagInfo(pushed_at=T0 + timedelta(days=1)),
        "1.10.1-rc.1": TagInfo(pushed_at=T0 + timedelta(days=2)),
        "nightly": TagInfo(pushed_at=T0 + timedelta(days=10)),
        "v0.1.0": TagInfo(),  # no push time: the whole ordering switches to versions
    }
    # 1.10.1-rc.1 > 1.10.0 > 1.9.0 numerically (not lexically); "nightly" (no version) comes last.
    assert select_tags(tags, TagPolicy(latest=3)) == sorted(["1.10.1-rc.1", "v1.10.0", "v1.9.0"])
    assert select_tags(tags, TagPolicy(latest=4)) == sorted(["1.10.1-rc.1", "v1.10.0", "v1.9.0", "v0.1.0"])
    assert select_tags(tags, TagPolicy(latest=5)) == sorted(tags)


def test_latest_lexical_for_non_version_tags() -> None:
    tags = plain("20240101", "20231231", "20240315", "build-a")
    assert select_tags(tags, TagPolicy(latest=2)) == ["20240315", "build-a"]
    assert select_tags(tags, TagPolicy(include=[r"\d+"], latest=2)) == ["20240101", "20240315"]


def test_latest_larger_than_candidates_keeps_all() -> None:
    assert select_tags(plain("a", "b"), TagPolicy(latest=10)) == ["a", "b"]


def test_policy_is_frozen_and_comparable() -> None:
    policy = TagPolicy(include=["a"], latest=3)
    assert policy == TagPolicy(include=["a"], latest=3)
    with pytest.raises(AttributeError):
        policy.latest = 4  # type: ignore[misc]


@given(
    st.lists(st.from_regex(r"v?[0-9]{1,2}\.[0-9]{1,2}(\.[0-9]{1,2})?|[a-z]{1,5}", fullmatch=True), unique=True),
    st.integers(min_value=1, max_value=6),
)
def test_latest_properties(tags: list[str], n: int) -> None:
    infos = plain(*tags)
    chosen = select_tags(infos, TagPolicy(latest=n))
    assert chosen == sorted(chosen)
    assert set(chosen) <= set(tags)
    assert len(chosen) == min(n, len(tags))
    # Monotone: asking for more never drops a tag chosen before.
    assert set(chosen) <= set(select_tags(infos, TagPolicy(latest=n + 1)))
