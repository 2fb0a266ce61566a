from __future__ import annotations

import re

import pytest

from gcrsync.engine.naming import detect_collisions, map_name, validate_mode
from gcrsync.errors import ConfigError


def m(mode: str, repository: str, *, prefix: str = "docker.io/gcrxio", registry: str = "gcr.io", ns: str) -> str:
    return map_name(mode, target_prefix=prefix, registry=registry, namespace=ns, repository=repository)


def test_flatten_is_the_original_behaviour() -> None:
    assert m("flatten", "google-containers/pause", ns="google-containers") == "docker.io/gcrxio/pause"
    assert m("flatten", "google-containers/etcd/tools", ns="google-containers") == "docker.io/gcrxio/etcd_tools"


def test_preserve_keeps_the_relative_path() -> None:
    got = m("preserve", "google-containers/etcd/tools", prefix="localhost:5001/mirror", ns="google-containers")
    assert got == "localhost:5001/mirror/etcd/tools"


def test_prefix_encodes_registry_and_namespace() -> None:
    assert m("prefix", "istio-release/proxy", ns="istio-release") == "docker.io/gcrxio/gcr.io_istio-release_proxy"
    got = m("prefix", "k8s-artifacts-prod/images/a/b", registry="localhost:5000", ns="k8s-artifacts-prod/images")
    assert got == "docker.io/gcrxio/localhost_5000_k8s-artifacts-prod_images_a_b"
    # Uppercase in a host name is not significant; the result stays a valid (lowercase) name.
    assert m("prefix", "ns/x", registry="GCR.io", ns="ns") == "docker.io/gcrxio/gcr.io_ns_x"


def test_template_fields() -> None:
    template = "{registry}/{namespace}/{path}/{name}"
    got = m(template, "k8s/images/sub/pause", registry="localhost:5000", ns="k8s/images", prefix="reg.example")
    assert got == "reg.example/localhost_5000/k8s/images/sub/pause/pause"
    assert m("mirror-{name}", "ns/deep/thing", ns="ns") == "docker.io/gcrxio/mirror-thing"


def test_repository_equal_to_namespace_maps_to_its_last_component() -> None:
    assert m("flatten", "distroless/base", ns="distroless/base") == "docker.io/gcrxio/base"
    assert m("preserve", "distroless", ns="distroless") == "docker.io/gcrxio/distroless"
    assert m("prefix", "a/b", ns="a/b") == "docker.io/gcrxio/gcr.io_a_b_b"
    assert m("{namespace}/{path}", "a/b", ns="a/b") == "docker.io/gcrxio/a/b/b"


def test_empty_namespace_uses_the_whole_path() -> None:
    assert m("flatten", "library/alpine", ns="") == "docker.io/gcrxio/library_alpine"
    assert m("prefix", "library/alpine", registry="localhost:5000", ns="") == (
        "docker.io/gcrxio/localhost_5000_library_alpine"
    )


def test_target_prefix_forms() -> None:
    assert m("flatten", "ns/pause", prefix="localhost:5001", ns="ns") == "localhost:5001/pause"
    assert m("flatten", "ns/pause", prefix="docker.io/gcrxio/", ns="ns") == "docker.io/gcrxio/pause"
    # The mapped name is never taken for a host even though it contains a dot.
    assert m("prefix", "ns/pause", prefix="", ns="ns") == "gcr.io_ns_pause"


@pytest.mark.parametrize(
    ("mode", "repository", "prefix"),
    [
        ("{registry}:{name}", "ns/pause", "docker.io/x"),  # ':' is not allowed in a path
        ("{name}-", "ns/pause", "docker.io/x"),  # trailing separator
        ("Mirror_{name}", "ns/pause", "docker.io/x"),  # uppercase
        ("{name}", "ns/pause", "docker.io/Upper"),  # the prefix path must be valid too
        ("{name}//x", "ns/pause", "docker.io/x"),
        ("flatten", "ns/" + "a" * 250, "docker.io/gcrxio"),  # too long
    ],
)
def test_invalid_results_are_config_errors_naming_the_source(mode: str, repository: str, prefix: str) -> None:
    with pytest.raises(ConfigError, match=re.escape("gcr.io/ns/")) as info:
        m(mode, repository, prefix=prefix, ns="ns")
    assert "not a valid name: invalid repository name" in str(info.value)


def test_repository_outside_the_namespace_is_refused() -> None:
    with pytest.raises(ConfigError, match="not under namespace"):
        m("flatten", "other/pause", ns="ns")
    with pytest.raises(ConfigError, match="not under namespace"):
        m("flatten", "nsx/pause", ns="ns")


@pytest.mark.parametrize(
    ("mode", "message"),
    [
        ("flat", "unknown naming mode"),
        ("{nam}", "unsupported field"),
        ("{}", "unsupported field"),
        ("{name.__class__}", "unsupported field"),
        ("{name!r}", "conversions"),
        ("{name:>10}", "format specs"),
        ("{name", "invalid naming template"),
    ],
)
def test_bad_modes(mode: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        validate_mode(mode)
    with pytest.raises(ConfigError, match=message):
        m(mode, "ns/pause", ns="ns")


def test_collisions_list_every_target_with_all_sources() -> None:
    namespaces = {"istio-release": ["proxy", "base", "pilot"], "linkerd-io": ["proxy", "base"], "distroless": ["base"]}
    pairs = [
        (f"gcr.io/{ns}/{name}", m("flatten", f"{ns}/{name}", ns=ns))
        for ns, names in namespaces.items()
        for name in names
    ]
    with pytest.raises(ConfigError) as info:
        detect_collisions(pairs)
    message = str(info.value)
    assert "2 target(s)" in message
    assert (
        "docker.io/gcrxio/base ← gcr.io/distroless/base, gcr.io/istio-release/base, gcr.io/linkerd-io/base" in message
    )
    assert "docker.io/gcrxio/proxy ← gcr.io/istio-release/proxy, gcr.io/linkerd-io/proxy" in message
    assert "pilot" not in message
    assert "\n" not in message


def test_prefix_mode_removes_those_collisions() -> None:
    pairs = [
        (f"gcr.io/{ns}/{name}", m("prefix", f"{ns}/{name}", ns=ns))
        for ns in ("istio-release", "linkerd-io", "distroless")
        for name in ("proxy", "base")
    ]
    detect_collisions(pairs)  # no error
    assert len({target for _, target in pairs}) == len(pairs)


def test_flatten_can_collide_within_one_namespace() -> None:
    pairs = [(f"gcr.io/ns/{r}", m("flatten", f"ns/{r}", ns="ns")) for r in ("a/b", "a_b")]
    with pytest.raises(ConfigError, match=re.escape("docker.io/gcrxio/a_b ← gcr.io/ns/a/b, gcr.io/ns/a_b")):
        detect_collisions(pairs)


def test_repeated_identical_pair_is_not_a_collision() -> None:
    detect_collisions([("gcr.io/ns/a", "t/a"), ("gcr.io/ns/a", "t/a"), ("gcr.io/ns/b", "t/b")])
    with pytest.raises(ConfigError):
        detect_collisions([("gcr.io/ns/a", "t/a"), ("gcr.io/other/a", "t/a")])
