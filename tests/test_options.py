"""Command-line options as a new user meets them: what the help promises, and one-line refusals (exit 2)."""

from __future__ import annotations

from pathlib import Path

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
