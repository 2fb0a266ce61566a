"""Drive Debian's headless Chromium through its plain command-line flags (tests and bench/catalog_bench.py).

Why flags and not the DevTools protocol or playwright: `--dump-dom` (the DOM after the load event),
`--screenshot` and `--log-net-log` answer everything the catalog page tests ask, with no extra dependency.
Every run gets a fresh profile, and DNS plus a dead proxy keep Chromium's own background requests (update
checks) off the network: nothing here may leave the machine.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import tempfile
from pathlib import Path

FLAGS = (
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
    "--host-resolver-rules=MAP * ~NOTFOUND", "--proxy-server=127.0.0.1:9",
)


def chromium_path() -> str | None:
    return os.environ.get("CHROMIUM") or shutil.which("chromium") or shutil.which("chromium-browser")


def run_chromium(url: str, *args: str, timeout: float = 120) -> str:
    """Run one headless Chromium on url with extra flags; returns stdout."""
    binary = chromium_path()
    if binary is None:
        raise FileNotFoundError("chromium is not installed (Debian: apt-get install chromium)")
    with tempfile.TemporaryDirectory(prefix="gcrsync-chromium-") as profile:
        result = subprocess.run([binary, *FLAGS, f"--user-data-dir={profile}", *args, url], capture_output=True,
                                text=True, timeout=timeout, check=False, stdin=subprocess.DEVNULL)
    if result.returncode != 0:
        raise RuntimeError(f"chromium exited {result.returncode}: {result.stderr[-2000:]}")
    return result.stdout


def dump_dom(url: str, *, netlog: Path | None = None) -> str:
    """The serialized DOM once the page has loaded (scripts that run before the load event included)."""
    extra = [f"--log-net-log={netlog}", "--net-log-capture-mode=Everything"] if netlog else []
    return run_chromium(url, *extra, "--dump-dom")


def screenshot(url: str, path: Path, *, width: int = 1200, height: int = 900) -> None:
    run_chromium(url, f"--screenshot={path}", f"--window-size={width},{height}", "--hide-scrollbars")
    if not path.is_file():
        raise RuntimeError(f"chromium wrote no screenshot at {path}")


def page_requests(netlog: Path) -> list[str]:
    """URLs of network requests a page made (its isolation key names the page's site: file:// for a file page).

    Chromium's own background requests carry no page site and are left out.
    """
    doc = json.loads(netlog.read_text(encoding="utf-8"))
    start_job = doc["constants"]["logEventTypes"]["URL_REQUEST_START_JOB"]
    urls = []
    for event in doc["events"]:
        params = event.get("params") or {}
        if event.get("type") == start_job and "url" in params \
                and str(params.get("network_isolation_key", "")).startswith("file://"):
            urls.append(str(params["url"]))
    return urls
