"""Command-line options as a new user meets them: what the help promises, and one-line refusals (exit 2)."""

from __future__ import annotations

from pathlib import Path

import pytest
from click.testing import CliRunner
from tools.imagefactory import make_layer, push_image, sha256_digest

from faultproxy import FaultProxy
from gcrsync.cli import main
from harness import RegistryServer, skopeo_digest, unique_repo


def run(tmp_path: Path, *args: str) -> tuple[int, str]:
    env = {"DOCKER_CONFIG": str(tmp_path / "nodocker"), "XDG_DATA_HOME": str(tmp_path / "data"),
           "XDG_CACHE_HOME": str(tmp_path / "cache"), "XDG_STATE_HOME": str(tmp_path / "state")}
    result = CliRunner().invoke(main, list(args), env=env)
    return result.exit_code, result.output


def test_timeout_bounds_a_stalled_read_at_six_times(registry: RegistryServer, registry2: RegistryServer,
                                                    tmp_path: Path) -> None:
    repo = unique_repo("stall")
    layer = make_layer(501, 2_000)
    digest, _ = push_image(registry.pusher(), repo, "v1", layers=[layer])
    path = f"/v2/{repo}/blobs/{sha256_digest(layer)}"
    with FaultProxy(registry.url) as proxy:
        # Longer than 6 x 1 s, shorter than the 60 s floor the idle timeout used to have: only a timeout of
        # what the help says gives up on the stalled GET and retries it.
        proxy.fail_next(1, "stall", f"{path}$", stall_seconds=20)
        code, out = run(tmp_path, "copy", "--timeout", "1", f"{proxy.host}/{repo}:v1", f"{registry2.host}/{repo}:v1")
        gets = [d for d in proxy.stats.decisions if d.method == "GET" and d.path == path]
    assert code == 0, out
    assert [d.fault for d in gets] == ["stall", None]
    assert skopeo_digest(registry2.ref(repo, "v1")) == digest


@pytest.mark.parametrize(("args", "says"), [
    (["--jobs", "0"], "--jobs '0': Input should be greater than or equal to 1"),
    (["--jobs", "-3"], "--jobs '-3'"),
    (["--query-jobs", "0"], "--query-jobs '0'"),
    (["--timeout", "0"], "--timeout '0.0': Input should be greater than 0"),
    (["--timeout", "-1"], "--timeout '-1.0'"),
    (["--latest", "0"], "--latest '0'"),
    (["--latest", "-2"], "--latest '-2'"),
    (["--include", "("], "--include"),
    (["--exclude", "a{2,1}"], "--exclude"),
    (["--every", "0"], "--every: invalid duration '0'"),
    (["--image-deadline", "0s"], "--image-deadline: invalid duration"),
    (["--max-removed", "lots"], "--max-removed"),
    (["--platform", "linux"], "invalid platform 'linux'"),
    (["--immutable", "("], "--immutable: Value error, invalid regex '('"),
    (["--dest", "oci:"], "target 'oci:': give the layout directory"),
])
def test_bad_sync_options_are_one_line_with_exit_2(tmp_path: Path, args: list[str], says: str) -> None:
    code, out = run(tmp_path, "sync", "127.0.0.1:1/ns", "--dest", "127.0.0.1:1/m", *args)
    assert code == 2, out
    assert out.startswith(f"error: {says}") and len(out.strip().splitlines()) == 1, out


@pytest.mark.parametrize(("args", "says"), [
    (["sync", "gcr.io/", "--dest", "127.0.0.1:1/m"], "nothing after the registry host"),
    (["list", "127.0.0.1:1/x", "--query-jobs", "0"], "--query-jobs '0'"),
    (["copy", "127.0.0.1:1/a:v1", "127.0.0.1:1/b:v1", "--jobs", "0"], "--jobs '0'"),
    (["copy", "127.0.0.1:1/a:v1", "127.0.0.1:1/b:v1", "--timeout", "-1"], "--timeout '-1.0'"),
    (["monitor", "127.0.0.1:1/x", "--dest", "127.0.0.1:1/m", "--interval", "0"], "--interval: invalid duration"),
])
def test_bad_input_to_other_commands_is_one_line_with_exit_2(tmp_path: Path, args: list[str], says: str) -> None:
    code, out = run(tmp_path, *args)
    assert code == 2, out
    assert says in out and out.startswith("error:") and len(out.strip().splitlines()) == 1, out


def test_a_metadata_location_under_a_file_is_one_line(registry: RegistryServer, tmp_path: Path) -> None:
    blocker = tmp_path / "afile"
    blocker.write_text("not a directory\n")
    code, out = run(tmp_path, "sync", f"{registry.host}/{unique_repo('meta')}", "--dest", f"{registry.host}/m",
                    "--metadata", str(blocker / "sub"))
    assert code == 2, out
    assert out.startswith("error: metadata location") and "Traceback" not in out
    assert len(out.strip().splitlines()) == 1, out


def test_each_failed_image_says_why_in_the_summary(registry: RegistryServer, auth_registry: RegistryServer,
                                                   tmp_path: Path) -> None:
    ns = unique_repo("why")
    for name in ("a", "b"):
        push_image(registry.pusher(), f"{ns}/{name}", "v1", layers=[make_layer(hash(name) % 999, 500)])
    code, out = run(tmp_path, "sync", f"{registry.host}/{ns}", "--dest", f"{auth_registry.host}/{ns}",
                    "--dest-creds", "alice:wrong-password")
    assert code == 1, out
    for name in ("a", "b"):
        line = next((x for x in out.splitlines() if f"{ns}/{name}:v1" in x and "→" in x and "401" in x), None)
        assert line is not None, out
    assert "wrong-password" not in out


def test_an_oci_target_under_a_file_says_why(registry: RegistryServer, tmp_path: Path) -> None:
    ns = unique_repo("ociwhy")
    push_image(registry.pusher(), f"{ns}/app", "v1", layers=[make_layer(641, 500)])
    blocker = tmp_path / "afile"
    blocker.write_text("x\n")
    code, out = run(tmp_path, "sync", f"{registry.host}/{ns}", "--dest", f"oci:{blocker}/mirror")
    assert code == 1, out
    assert "Traceback" not in out
    line = next((x for x in out.splitlines() if f"{ns}/app:v1" in x and "→" in x), "")
    assert "Not a directory" in line or "not a directory" in line, out


def test_a_stalled_manifest_push_times_out_and_is_retried(registry: RegistryServer, registry2: RegistryServer,
                                                          tmp_path: Path) -> None:
    repo = unique_repo("stallput")
    digest, _ = push_image(registry.pusher(), repo, "v1", layers=[make_layer(651, 1_000)])
    with FaultProxy(registry2.url) as proxy:
        proxy.fail_next(1, "stall", r"/manifests/v1$", methods=("PUT",), stall_seconds=30)
        code, out = run(tmp_path, "copy", "--timeout", "1", f"{registry.host}/{repo}:v1", f"{proxy.host}/{repo}:v1")
        puts = [d.fault for d in proxy.stats.decisions if d.method == "PUT" and "/manifests/" in d.path]
    assert code == 0 and "Traceback" not in out, out
    assert puts == ["stall", None]
    assert skopeo_digest(registry2.ref(repo, "v1")) == digest


def test_a_slow_transfer_still_making_progress_never_times_out(registry: RegistryServer,
                                                               registry2: RegistryServer, tmp_path: Path) -> None:
    repo = unique_repo("trickle")
    layer = make_layer(661, 80_000)
    digest, _ = push_image(registry.pusher(), repo, "v1", layers=[layer])
    path = f"/v2/{repo}/blobs/{sha256_digest(layer)}"
    with FaultProxy(registry.url) as proxy:
        # 8 pieces, 1 s apart: longer in total than the 6 s idle-read timeout of --timeout 1, never idle that long.
        proxy.fail_next(1, "trickle", f"{path}$", methods=("GET",), stall_seconds=1)
        code, out = run(tmp_path, "copy", "--timeout", "1", f"{proxy.host}/{repo}:v1", f"{registry2.host}/{repo}:v1")
        gets = [d.fault for d in proxy.stats.decisions if d.method == "GET" and d.path == path]
    assert code == 0, out
    assert gets == ["trickle"]  # one download, never restarted
    assert skopeo_digest(registry2.ref(repo, "v1")) == digest


def test_a_report_path_in_a_missing_directory_is_refused_before_the_run(registry: RegistryServer,
                                                                        tmp_path: Path) -> None:
    code, out = run(tmp_path, "sync", f"{registry.host}/{unique_repo('rep')}", "--dest", f"{registry.host}/m",
                    "--report", str(tmp_path / "missing" / "run.json"))
    assert code == 2 and out.startswith("error: --report") and len(out.strip().splitlines()) == 1, out


def test_an_unwritable_metrics_file_is_one_line(registry: RegistryServer, registry2: RegistryServer,
                                                tmp_path: Path) -> None:
    blocker = tmp_path / "afile"
    blocker.write_text("x\n")
    code, out = run(tmp_path, "monitor", f"{registry.host}/{unique_repo('met')}", "--dest", f"{registry2.host}/m",
                    "--count", "1", "--metrics", str(blocker / "gcrsync.prom"))
    assert code == 1 and "Traceback" not in out, out
    errors = [line for line in out.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and str(blocker) in errors[0], out
