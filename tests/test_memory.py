"""Peak memory of a 1 GiB layer copy: blobs stream through, they are never held in memory."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from tools.imagefactory import DOCKER_CONFIG, DOCKER_LAYER, DOCKER_MANIFEST, sha256_digest

from harness import RegistryServer, skopeo_digest, unique_repo

GIB = 1024 * 1024 * 1024
RSS_BOUND_MIB = 150


@pytest.mark.slow
@pytest.mark.skipif(shutil.which("time") is None and not Path("/usr/bin/time").exists(), reason="GNU time")
def test_one_gib_layer_copy_keeps_rss_flat(registry: RegistryServer, make_registry: Any, tmp_path: Path) -> None:
    repo = unique_repo("big")
    pusher = registry.pusher()
    layer = os.urandom(GIB)  # incompressible; only this test process holds it, not the one measured
    layer_desc = pusher.push_blob(repo, layer, DOCKER_LAYER)
    del layer
    config = json.dumps({"architecture": "amd64", "os": "linux", "rootfs": {"type": "layers", "diff_ids": []}})
    config_desc = pusher.push_blob(repo, config.encode(), DOCKER_CONFIG)
    manifest = json.dumps({"schemaVersion": 2, "mediaType": DOCKER_MANIFEST, "config": config_desc,
                           "layers": [layer_desc]}).encode()
    digest = pusher.push_manifest(repo, "v1", manifest, DOCKER_MANIFEST)
    assert digest == sha256_digest(manifest)
    target: RegistryServer = make_registry()
    gcrsync = str(Path(sys.executable).parent / "gcrsync")
    # GNU time forks gcrsync from its own small process: a child forked straight from this test process
    # would count the pages it shares with us (the 1 GiB we just generated) in its own peak RSS.
    proc = subprocess.run(["/usr/bin/time", "-f", "maxrss=%M", gcrsync, "copy", f"{registry.host}/{repo}:v1",
                           f"{target.host}/{repo}:v1"], capture_output=True, text=True,
                          env=dict(os.environ, DOCKER_CONFIG=str(tmp_path)))
    assert proc.returncode == 0, proc.stderr
    peak_mib = int(proc.stderr.rsplit("maxrss=", 1)[1].split()[0]) / 1024  # GNU time reports KiB
    print(f"\npeak RSS copying a 1 GiB layer: {peak_mib:.1f} MiB")
    assert "2 blobs copied (1073741" in proc.stdout
    assert skopeo_digest(target.ref(repo, "v1")) == digest
    assert peak_mib < RSS_BOUND_MIB, f"peak RSS {peak_mib:.0f} MiB"
