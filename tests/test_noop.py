"""What each no-op mode notices at the target, and the full-verification schedule (README "What a no-op checks").

Default: presence from one `tags/list` per target repository plus the ledger's digest, with a full
verification (a HEAD per tag) every `verify_target_every` runs or on `--verify-target`. Each statement of the
README's table is one assertion here, including what a mode misses.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

from tools.imagefactory import make_layer, manifest_digest, push_image

from faultproxy import FaultProxy
from harness import RegistryServer, unique_repo
from test_sync import run_sync


def target_heads(server: RegistryServer) -> int:
    return sum(r.method == "HEAD" and "/manifests/" in r.path for r in server.requests())


def setup(registry: RegistryServer, make_registry: Any, tmp_path: Path,
          *extra: str) -> tuple[RegistryServer, tuple[str, ...], dict[str, str]]:
    """Two tags mirrored by a first (fully verified) run; returns the target, the sync args and tag → digest."""
    ns = unique_repo("noop")
    pusher = registry.pusher()
    digests = {tag: push_image(pusher, f"{ns}/app", tag, layers=[make_layer(hash((ns, tag)) % 9973, 500)])[0]
               for tag in ("v1", "v2")}
    target: RegistryServer = make_registry()
    args = (f"{registry.host}/{ns}", "--dest", f"{target.host}/m", *extra)
    code, out, report = run_sync(tmp_path, *args)
    assert code == 0, out
    assert report["totals"]["states"] == {"copied": 2}
    return target, args, digests


def target_digest(target: RegistryServer, tag: str) -> str | None:
    pusher = target.pusher()
    if tag not in pusher.list_tags("m/app"):
        return None
    return manifest_digest(pusher.get_manifest("m/app", tag)[0])


def test_default_notices_a_tag_moved_at_the_source_and_a_tag_gone_at_the_target(
        registry: RegistryServer, make_registry: Any, tmp_path: Path) -> None:
    target, args, digests = setup(registry, make_registry, tmp_path)
    source_repo = args[0].split("/", 1)[1] + "/app"
    moved, _ = push_image(registry.pusher(), source_repo, "v1", layers=[make_layer(4242, 600)])
    target.pusher().delete_manifest("m/app", digests["v2"])
    target.clear_requests()
    code, out, report = run_sync(tmp_path, *args)
    assert code == 0, out
    planned = {i["source"].rsplit(":", 1)[1]: i["planned"] for i in report["images"]}
    assert planned == {"v1": "changed", "v2": "new"}
    assert target_digest(target, "v1") == moved
    assert target_digest(target, "v2") == digests["v2"]


def test_default_misses_a_tag_re_pointed_at_the_target_until_a_full_verification(
        registry: RegistryServer, make_registry: Any, tmp_path: Path) -> None:
    target, args, digests = setup(registry, make_registry, tmp_path)
    foreign, _ = push_image(target.pusher(), "m/app", "v1", layers=[make_layer(777, 300)])
    # Presence only: v1 is still listed, so the ledger's digest is taken for it (the documented miss).
    code, out, report = run_sync(tmp_path, *args)
    assert code == 0, out
    assert report["totals"]["states"] == {"unchanged": 2}
    assert target_digest(target, "v1") == foreign
    # On demand: a HEAD per tag finds it and copies the source's image again.
    code, out, report = run_sync(tmp_path, *args, "--verify-target")
    assert code == 0, out
    assert report["totals"]["states"] == {"copied": 1, "unchanged": 1}
    assert target_digest(target, "v1") == digests["v1"]


def test_trust_ledger_misses_a_tag_gone_at_the_target_and_verify_target_overrides_it(
        registry: RegistryServer, make_registry: Any, tmp_path: Path) -> None:
    target, args, digests = setup(registry, make_registry, tmp_path)
    target.pusher().delete_manifest("m/app", digests["v2"])
    code, out, report = run_sync(tmp_path, *args, "--trust-ledger")
    assert code == 0, out
    assert report["totals"]["states"] == {"unchanged": 2}
    assert target_digest(target, "v2") is None
    code, out, report = run_sync(tmp_path, *args, "--trust-ledger", "--verify-target")
    assert code == 0, out
    assert report["totals"]["states"] == {"copied": 1, "unchanged": 1}
    assert target_digest(target, "v2") == digests["v2"]


def test_full_verification_every_nth_run(registry: RegistryServer, make_registry: Any, tmp_path: Path) -> None:
    target, args, _ = setup(registry, make_registry, tmp_path, "--verify-target-every", "3")
    heads = []
    for _ in range(6):
        target.clear_requests()
        code, out, _report = run_sync(tmp_path, *args)
        assert code == 0, out
        heads.append(target_heads(target))
    # The first run verified; then two runs by presence, the third verifies again, and so on.
    assert heads == [0, 0, 2, 0, 0, 2]
    state = json.loads((tmp_path / "state/gcrsync/target-verification.json").read_text())
    assert [entry["runs_since"] for entry in state.values()] == [0]


def test_full_verification_after_a_duration_and_without_state(registry: RegistryServer, make_registry: Any,
                                                               tmp_path: Path) -> None:
    target, args, _ = setup(registry, make_registry, tmp_path, "--verify-target-every", "7d")
    state_file = tmp_path / "state/gcrsync/target-verification.json"

    def run() -> int:
        target.clear_requests()
        code, out, _report = run_sync(tmp_path, *args)
        assert code == 0, out
        return target_heads(target)

    assert run() == 0  # verified by the first run, moments ago
    state = json.loads(state_file.read_text())
    for entry in state.values():
        entry["verified"] = "2020-01-01T00:00:00Z"
    state_file.write_text(json.dumps(state))
    assert run() == 2  # last verified long ago
    assert run() == 0
    state_file.unlink()
    assert run() == 2  # no state (a fresh machine or container): verified, never skipped


def test_verify_target_every_one_is_the_old_behaviour_and_bad_values_are_usage_errors(
        registry: RegistryServer, make_registry: Any, tmp_path: Path) -> None:
    target, args, _ = setup(registry, make_registry, tmp_path)
    config = tmp_path / "c.yaml"
    config.write_text("defaults:\n  verify_target_every: 1\n")
    target.clear_requests()
    code, out, _report = run_sync(tmp_path, *args, "-c", str(config))
    assert code == 0, out
    assert target_heads(target) == 2
    for bad in ("0", "7x", "-1", "1.5d"):
        code, out, _report = run_sync(tmp_path, *args, "--verify-target-every", bad)
        assert code == 2, out
        assert out.count("\n") == 1 and out.startswith("error: --verify-target-every:"), out
    config.write_text("defaults:\n  verify_target_every: 0\n")
    code, out, _report = run_sync(tmp_path, *args, "-c", str(config))
    assert code == 2 and "verify_target_every" in out and out.count("\n") == 1, out


def test_a_listed_target_tag_the_ledger_does_not_know_is_headed_not_copied(
        registry: RegistryServer, make_registry: Any, tmp_path: Path) -> None:
    target, args, _ = setup(registry, make_registry, tmp_path)
    source_repo = args[0].split("/", 1)[1] + "/app"
    layer = make_layer(4343, 500)
    push_image(registry.pusher(), source_repo, "v3", layers=[layer])
    push_image(target.pusher(), "m/app", "v3", layers=[layer])  # already there, same image, unknown to the ledger
    target.clear_requests()
    code, out, report = run_sync(tmp_path, *args)
    assert code == 0, out
    assert target_heads(target) == 1
    assert report["totals"]["states"] == {"unchanged": 3}


def test_dry_runs_and_trusted_runs_leave_the_schedule_alone(registry: RegistryServer, make_registry: Any,
                                                             tmp_path: Path) -> None:
    _target, args, _ = setup(registry, make_registry, tmp_path)
    state_file = tmp_path / "state/gcrsync/target-verification.json"
    before = state_file.read_text()
    for extra in (("--dry-run",), ("--trust-ledger",)):
        code, out, _report = run_sync(tmp_path, *args, *extra)
        assert code == 0, out
        assert state_file.read_text() == before, extra


def test_a_run_that_failed_an_image_does_not_count_as_a_verification(
        registry: RegistryServer, make_registry: Any, tmp_path: Path) -> None:
    target, args, _ = setup(registry, make_registry, tmp_path, "--verify-target-every", "2")
    source_repo = args[0].split("/", 1)[1] + "/app"
    layer = make_layer(5151, 500)
    push_image(registry.pusher(), source_repo, "v3", layers=[layer])
    blob = f"/v2/{source_repo}/blobs/sha256:{hashlib.sha256(layer).hexdigest()}"
    assert registry.pusher().request("DELETE", blob, repo=source_repo).status == 202  # v3 cannot be copied
    heads = []
    for _ in range(3):
        target.clear_requests()
        code, out, _report = run_sync(tmp_path, *args)
        assert code == 1, out
        heads.append(target_heads(target))
    # by presence (v3 is not listed: nothing to HEAD), then due: verified, but v3 failed, so the next run
    # verifies again instead of counting that one as done
    assert heads == [0, 3, 3]


def test_a_target_tag_list_that_fails_falls_back_to_heads(registry: RegistryServer, make_registry: Any,
                                                          tmp_path: Path) -> None:
    target, args, _ = setup(registry, make_registry, tmp_path)
    with FaultProxy(target.url) as proxy:
        proxy.add_fault("413", path=r"/tags/list$")  # refused, and not a status worth retrying
        via_proxy = (args[0], "--dest", f"{proxy.host}/m")
        # A first run through the proxy verifies fully (the ledger names the target without it) and starts the
        # schedule for the proxy's prefix, so the next one goes by tag lists.
        code, out, report = run_sync(tmp_path, *via_proxy, "--verify-target")
        assert code == 0, out
        target.clear_requests()
        refused = proxy.stats.faults["413"]
        code, out, report = run_sync(tmp_path, *via_proxy)
        assert proxy.stats.faults["413"] == refused + 1  # a run by tag lists: it asked for one, and was refused
    assert code == 0, out
    assert report["totals"]["states"] == {"unchanged": 2}
    assert target_heads(target) == 2  # the listing failed: each tag checked with a HEAD instead
    assert not any("/tags/list" in r.path for r in target.requests())
