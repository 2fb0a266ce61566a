"""gcrsync vs skopeo, side by side, on throw-away local registries. Informational: nothing here is asserted.

Usage: ``python bench/bench.py [--repos 20 --tags 3 --layers 3 --layer-mib 4] [--quick] [--rss-sweep]``.
See bench/README.md for what each figure means; results are printed and written to ``.bench/results.json``.

Every phase gets a fresh target registry and is measured from the registries' own access logs, never from
the tools' self-reports, so both tools are counted the same way. After every phase the target's digests are
compared with the source's; a gcrsync mismatch or failure is reported loudly and makes the exit status 1.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.util
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import yaml

REPO_ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(REPO_ROOT), str(REPO_ROOT / "tests")]

from tools.imagefactory import RegistryPusher, derive_seed, make_layer, manifest_digest, push_image, push_index  # noqa: E402

from harness import RegistryServer, start_registry  # noqa: E402

MIB = 1024 * 1024
NAMESPACE = "bench"
TOOL_TIMEOUT_S = 900
PLATFORMS = [("linux", "amd64", None), ("linux", "arm64", None), ("linux", "arm", "v7")]
VERIFY = "B no-op re-sync, gcrsync --verify-target"
TRUST_LEDGER = "B no-op re-sync, gcrsync --trust-ledger"
IMMUTABLE = "B no-op re-sync, gcrsync --trust-ledger --immutable 'v\\d+'"
# gcrsync-only variants of the no-op re-sync (not in the side-by-side table). The plain re-sync is the default
# between full verifications (one tags/list per target repository); --verify-target is a full verification
# (a HEAD per target tag, what every 7th run does); the ledger replaces the target check; release tags
# declared immutable cost no request at all.
VARIANTS = [(VERIFY, ["--verify-target"]), (TRUST_LEDGER, ["--trust-ledger"]),
            (IMMUTABLE, ["--trust-ledger", "--immutable", r"v\d+"])]
SKOPEO = ["skopeo", "--insecure-policy"]
NO_TLS = ["--src-tls-verify=false", "--dest-tls-verify=false"]
# Gorilla's combined log, which distribution writes for every request; the 5th field is the bytes written.
_LOG_RE = re.compile(r'^\S+ \S+ \S+ \[[^\]]*\] "(\S+) (\S+) [^"]*" (\d{3}) (\d+|-)')
_BLOB_GET_RE = re.compile(r"^/v2/.+/blobs/sha256:[0-9a-f]{64}$")


class BenchError(RuntimeError):
    """The bench itself could not go on (e.g. the registry answered nonsense while seeding)."""


# -- registry access logs -----------------------------------------------------------------------------------
@dataclass(frozen=True)
class LogEntry:
    method: str
    path: str
    size: int


def read_log(server: RegistryServer) -> list[LogEntry]:
    """Every request ``server`` logged so far, with response sizes; the harness's marker requests left out."""
    server.requests()  # the harness's marker round trip: returns once everything before it is on disk
    out = []
    for line in server.access_log.read_text(errors="replace").splitlines():
        m = _LOG_RE.match(line)
        if m and "harness-sync=" not in m.group(2):
            out.append(LogEntry(m.group(1), m.group(2), 0 if m.group(4) == "-" else int(m.group(4))))
    return out


# -- seeding and reading back -------------------------------------------------------------------------------
@dataclass
class Namespace:
    """What a registry holds: ``{repo: {tag: digest}}``, and the bytes of every distinct blob in it."""

    tags: dict[str, dict[str, str]]
    unique_bytes: int
    blob_count: int

    @property
    def images(self) -> list[tuple[str, str]]:
        return [(repo, tag) for repo, tags in sorted(self.tags.items()) for tag in sorted(tags)]


def seed_source(server: RegistryServer, args: argparse.Namespace) -> None:
    """Fill ``bench/app-NN`` with tags × layers, about half of each image's layers shared across repos.

    The shared slots come from two "base image" families (repo parity picks one), so mounts and dedupe
    matter; the other slots are unique per (repo, tag). The first ``--indexes`` repos also get a multi-arch
    ``multi`` tag. All bytes derive from ``--seed``; repos are pushed from a few threads to overlap I/O.
    """
    size = int(args.layer_mib * MIB)
    shared = (args.layers + 1) // 2
    bases = {(slot, fam): make_layer(derive_seed(args.seed, "base", slot, fam), size)
             for slot in range(shared) for fam in range(2)}  # fmt: skip

    def one_repo(r: int) -> None:
        pusher, repo = server.pusher(), f"{NAMESPACE}/app-{r:02d}"
        for t in range(args.tags):
            layers = [bases[(slot, r % 2)] for slot in range(shared)]
            layers += [make_layer(derive_seed(args.seed, "app", r, t, k), size) for k in range(shared, args.layers)]
            push_image(pusher, repo, f"v{t + 1}", layers=layers, labels={"bench": f"{r}-{t}"})
        if r < args.indexes:
            push_index(pusher, repo, "multi", PLATFORMS[: args.platforms], size, derive_seed(args.seed, "index", r))

    with ThreadPoolExecutor(max_workers=4) as pool:
        list(pool.map(one_repo, range(args.repos)))  # list(): re-raise the first push error


def big_layer(seed: int, size: int) -> bytes:
    """``make_layer`` for any size: random.randbytes stops at 256 MiB, so join gzip members of ≤128 MiB.

    A multi-member gzip is still one valid gzip stream, and neither tool looks inside a layer anyway.
    """
    chunk = 128 * MIB
    return b"".join(make_layer(derive_seed(seed, i), min(chunk, size - i * chunk)) for i in range(-(-size // chunk)))


def _json(body: bytes) -> dict[str, Any]:
    doc = json.loads(body)
    if not isinstance(doc, dict):
        raise BenchError("registry returned a non-object JSON document")
    return doc


def list_repos(pusher: RegistryPusher) -> list[str]:
    """Every repository in the catalog, following distribution's ``Link`` pagination."""
    repos: list[str] = []
    path: str | None = "/v2/_catalog?n=1000"
    while path:
        resp = pusher.request("GET", path)
        if resp.status != 200:
            raise BenchError(f"catalog of {pusher.base_url} failed: HTTP {resp.status}")
        repos += _json(resp.body).get("repositories") or []
        link = re.match(r"<([^>]+)>", resp.headers.get("Link", ""))
        path = link.group(1) if link else None
    return sorted(repos)


def walk(pusher: RegistryPusher, repos: Sequence[str]) -> Namespace:
    """Tags, manifest digests and distinct blobs of ``repos``, read with the stdlib pusher (not gcrsync)."""
    tags: dict[str, dict[str, str]] = {}
    blobs: dict[str, int] = {}
    for repo in repos:
        tags[repo] = {}
        for tag in pusher.list_tags(repo):
            raw, _ = pusher.get_manifest(repo, tag)
            tags[repo][tag] = manifest_digest(raw)
            todo = [raw]
            while todo:  # an index pulls in its children, which must exist on the target too
                doc = _json(todo.pop())
                if "manifests" in doc:
                    todo += [pusher.get_manifest(repo, m["digest"])[0] for m in doc["manifests"]]
                else:
                    blobs.update({d["digest"]: int(d["size"]) for d in [doc["config"], *doc["layers"]]})
    return Namespace(tags, sum(blobs.values()), len(blobs))


def verify(target: RegistryServer, expected: dict[str, dict[str, str]]) -> list[str]:
    """Differences between ``target`` and ``expected`` ({target repo: {tag: digest}}); empty if identical."""
    pusher = target.pusher()
    present = list_repos(pusher)
    problems = [f"unexpected repository {repo}" for repo in present if repo not in expected]
    for repo, want in sorted(expected.items()):
        try:
            got = walk(pusher, [repo]).tags[repo] if repo in present else {}
        except Exception as exc:  # e.g. an index whose child is missing: that is a finding, not a crash
            problems.append(f"{repo}: cannot read back: {exc}")
            continue
        for tag in sorted(set(want) | set(got)):
            if got.get(tag) != want.get(tag):
                problems.append(f"{repo}:{tag}: target {got.get(tag)} != source {want.get(tag)}")
    return problems


# -- running the tools --------------------------------------------------------------------------------------
def gcrsync_cmd() -> list[str]:
    """The installed console script (so real start-up cost counts), next to this interpreter if possible."""
    beside = Path(sys.executable).parent / "gcrsync"
    found = str(beside) if beside.exists() else shutil.which("gcrsync")
    return [found] if found else [sys.executable, "-c", "from gcrsync.cli import main; main()"]


def tool_env(work: Path) -> dict[str, str]:
    """The environment both tools run in: no proxy, no user config or credentials, bytecode cached.

    With PYTHONDONTWRITEBYTECODE set (as in some CI images) every gcrsync process would recompile its own
    modules (~0.2 s each); a pip-installed gcrsync has .pyc files, so the bench caches bytecode in its temp dir.
    """
    drop = ("http_proxy", "https_proxy", "all_proxy", "no_proxy", "gcrsync_", "registry_auth_file")
    env = {k: v for k, v in os.environ.items() if not k.lower().startswith(drop)}
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    env.update({"NO_PROXY": "127.0.0.1,localhost", "PYTHONPYCACHEPREFIX": str(work / "pycache"),
                "XDG_CONFIG_HOME": str(work / "home/config"), "XDG_DATA_HOME": str(work / "home/data"),
                "XDG_CACHE_HOME": str(work / "home/cache"), "XDG_STATE_HOME": str(work / "home/state")})  # fmt: skip
    spec = importlib.util.find_spec("gcrsync")  # fill that cache up front, as `pip install` would have
    if spec and spec.submodule_search_locations:
        compile_cmd = [sys.executable, "-m", "compileall", "-q", *spec.submodule_search_locations]
        subprocess.run(compile_cmd, env=env, check=False, capture_output=True)
    return env


# ru_maxrss survives exec and starts at the forking process's own peak, so a tool forked straight from this
# (large) process would report at least our RSS. A tiny launcher forks it instead; its ~10 MiB floor is
# below either tool's real peak. It also times fork→reap, so its own start-up is charged to neither tool.
_LAUNCHER = """
import os, sys, time
out, argv = sys.argv[1], sys.argv[2:]
start = time.perf_counter()
pid = os.fork()
if pid == 0:
    try:
        os.execvp(argv[0], argv)
    finally:
        os._exit(127)
_, status, usage = os.wait4(pid, 0)
with open(out, "w") as f:
    f.write(f"{time.perf_counter() - start} {usage.ru_maxrss} {os.waitstatus_to_exitcode(status)}")
"""


def run_tool(argv: Sequence[str], log: Path, env: dict[str, str]) -> tuple[float, int, int]:
    """(wall seconds, peak RSS KiB, exit code) of one tool process; its output is appended to ``log``."""
    result = log.with_suffix(".rusage")
    with log.open("ab") as out:
        out.write(("\n$ " + " ".join(argv) + "\n").encode())
        out.flush()
        launcher = [sys.executable, "-I", "-S", "-c", _LAUNCHER, str(result), *argv]
        proc = subprocess.Popen(launcher, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env,
                                start_new_session=True)  # fmt: skip
        try:
            proc.wait(timeout=TOOL_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            pass  # killed below, reported as a failure
        finally:  # timeout or Ctrl-C: the tool shares the launcher's session, so take both down
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
    if proc.returncode != 0:  # the launcher itself died: no rusage to read
        return float(TOOL_TIMEOUT_S), 0, proc.returncode
    wall, rss, code = result.read_text().split()
    return float(wall), int(rss), int(code)


@dataclass
class Phase:
    """One tool's figures for one scenario."""

    scenario: str
    tool: str
    wall_s: float = 0.0
    peak_rss_kib: int = 0
    processes: int = 0
    src_requests: int = 0
    dst_requests: int = 0
    bytes_pulled: int = 0
    src_manifest_gets: int = 0
    failures: list[str] = field(default_factory=list)
    verify_problems: list[str] = field(default_factory=list)


class Bench:
    def __init__(self, args: argparse.Namespace, work: Path, stack: contextlib.ExitStack) -> None:
        self.args, self.work, self.stack = args, work, stack
        self.env = tool_env(work)
        self.log = work / "tools.log"
        self.counter = 0

    def registry(self, name: str) -> RegistryServer:
        self.counter += 1
        server = start_registry(self.work / f"{self.counter:02d}-{name}")
        self.stack.callback(server.stop)  # stop() is idempotent, so drop() before this is fine
        return server

    def drop(self, server: RegistryServer) -> None:
        """Stop a finished target and delete its storage now, so disk use stays at about two copies."""
        server.stop()
        shutil.rmtree(server.workdir, ignore_errors=True)

    @contextlib.contextmanager
    def measure(self, phase: Phase, src: RegistryServer, dst: RegistryServer) -> Iterator[None]:
        """Attribute to ``phase`` every request both registries log inside the ``with`` block."""
        src_start, dst_start = len(read_log(src)), len(read_log(dst))
        yield
        src_log, dst_log = read_log(src)[src_start:], read_log(dst)[dst_start:]
        phase.src_requests, phase.dst_requests = len(src_log), len(dst_log)
        phase.bytes_pulled = sum(e.size for e in src_log if e.method == "GET" and _BLOB_GET_RE.match(e.path))
        phase.src_manifest_gets = sum(e.method == "GET" and "/manifests/" in e.path for e in src_log)

    def run(self, phase: Phase, argv: Sequence[str]) -> None:
        wall, rss, code = run_tool(argv, self.log, self.env)
        phase.wall_s += wall
        phase.peak_rss_kib = max(phase.peak_rss_kib, rss)
        phase.processes += 1
        if code != 0:
            phase.failures.append(f"exit {code}: {' '.join(argv[-2:])} (see the tool output below)")

    def gcrsync_copy(self, src: str, dst: str) -> list[str]:
        return [*gcrsync_cmd(), "copy", src, dst, *(["--jobs", str(self.args.jobs)] if self.args.jobs else [])]

    def copy_every_tag(self, tool: str, src: RegistryServer, ns: Namespace) -> Phase:
        """One process per tag, run one after another, into the same repository names on a fresh target."""
        phase, dst = Phase("A copy every tag", tool), self.registry(f"dst-a-{tool}")
        with self.measure(phase, src, dst):
            for repo, tag in ns.images:
                s, d = f"{src.host}/{repo}:{tag}", f"{dst.host}/{repo}:{tag}"
                skopeo = [*SKOPEO, "copy", "--all", "--preserve-digests", *NO_TLS, f"docker://{s}", f"docker://{d}"]
                self.run(phase, self.gcrsync_copy(s, d) if tool == "gcrsync" else skopeo)
        phase.verify_problems = verify(dst, ns.tags)
        self.drop(dst)
        return phase

    def namespace_sync(self, tool: str, src: RegistryServer, ns: Namespace) -> list[Phase]:
        """Cold sync, then the same command again. Both tools name targets ``mirror/<repo minus bench/>``.

        ``gcrsync --naming preserve`` strips the namespace; ``skopeo sync`` without ``--scoped`` keeps only
        the last path component (Go's path.Base), which is the same thing for ``bench/app-NN``.
        """
        dst = self.registry(f"dst-b-{tool}")
        prefix = f"{dst.host}/mirror"
        if tool == "gcrsync":
            jobs = ["--jobs", str(self.args.jobs)] if self.args.jobs else []
            argv = [*gcrsync_cmd(), "sync", f"{src.host}/{NAMESPACE}", "--dest", prefix, "--naming", "preserve",
                    "--metadata", str(self.work / "metadata"), *jobs]  # fmt: skip
        else:
            spec = self.work / "skopeo-sync.yaml"
            images: dict[str, list[str]] = {repo: [] for repo in ns.tags}  # [] = every tag
            spec.write_text(yaml.safe_dump({src.host: {"tls-verify": False, "images": images}}))
            argv = [*SKOPEO, "sync", "--all", "--preserve-digests", "--src", "yaml", "--dest", "docker",
                    "--dest-tls-verify=false", str(spec), prefix]  # fmt: skip
        expected = {"mirror/" + repo.rsplit("/", 1)[-1]: tags for repo, tags in ns.tags.items()}
        phases = []
        runs = [("B cold sync", argv), ("B no-op re-sync", argv)]
        if tool == "gcrsync":
            runs += [(label, [*argv, *extra]) for label, extra in VARIANTS]
        for scenario, args in runs:
            # --repeat: a no-op is run several times and its median wall time kept (requests are the same
            # every time); at most 6, so the default no-ops all fall between two full verifications.
            samples = []
            for _ in range(1 if scenario == "B cold sync" else self.args.repeat):
                sample = Phase(scenario, tool)
                with self.measure(sample, src, dst):
                    self.run(sample, args)
                samples.append(sample)
            phase = sorted(samples, key=lambda p: p.wall_s)[len(samples) // 2]
            phase.failures = [f for sample in samples for f in sample.failures]
            phase.verify_problems = verify(dst, expected)
            phases.append(phase)
        self.drop(dst)
        return phases

    def rss_sweep(self, src: RegistryServer) -> list[dict[str, Any]]:
        """Peak RSS of copying a one-layer image, per layer size: flat means blobs are streamed, not buffered."""
        rows, pusher, dst = [], src.pusher(), self.registry("dst-rss")
        for mib in self.args.rss_sizes:
            repo = f"rss/layer-{mib}m"
            push_image(pusher, repo, "v1", layers=[big_layer(derive_seed(self.args.seed, "rss", mib), mib * MIB)])
            row: dict[str, Any] = {"layer_mib": mib}
            for tool in ("gcrsync", "skopeo"):
                s, d = f"{src.host}/{repo}:v1", f"{dst.host}/{tool}/{repo}:v1"
                argv = self.gcrsync_copy(s, d) if tool == "gcrsync" else [*SKOPEO, "copy", *NO_TLS, "docker://" + s,
                                                                          "docker://" + d]  # fmt: skip
                wall, rss, code = run_tool(argv, self.log, self.env)
                row[tool] = {"peak_rss_kib": rss, "wall_s": round(wall, 3), "exit": code}
            rows.append(row)
        self.drop(dst)
        return rows


# -- reporting ----------------------------------------------------------------------------------------------
METRICS = [("wall_s", "wall time (s)"), ("peak_rss_kib", "peak RSS (MiB)"), ("src_requests", "source requests"),
           ("dst_requests", "target requests"), ("bytes_pulled", "bytes pulled (MiB)"),
           ("src_manifest_gets", "source manifest GETs")]  # fmt: skip


def _fmt(key: str, value: float) -> str:
    if key in ("peak_rss_kib", "bytes_pulled"):
        return f"{value / (1024 if key == 'peak_rss_kib' else MIB):.1f}"
    return f"{value:.2f}" if key == "wall_s" else str(int(value))


def ratio(a: float, b: float) -> float | None:
    return round(a / b, 3) if b else None


def report(phases: list[Phase], ns: Namespace) -> tuple[str, dict[str, dict[str, float | None]]]:
    """The side-by-side table, and {scenario: {metric: gcrsync/skopeo}}."""
    lines = [f"unique bytes in the namespace: {ns.unique_bytes / MIB:.1f} MiB ({ns.unique_bytes} bytes, "
             f"{ns.blob_count} blobs, {len(ns.images)} tags in {len(ns.tags)} repos)", ""]  # fmt: skip
    header = f"{'scenario':<18} {'metric':<22} {'gcrsync':>10} {'skopeo':>10} {'ratio':>7}"
    lines += [header, "-" * len(header)]
    ratios: dict[str, dict[str, float | None]] = {}
    by_key = {(p.scenario, p.tool): p for p in phases}
    variants = {label for label, _ in VARIANTS}
    for scenario in dict.fromkeys(p.scenario for p in phases if p.scenario not in variants):
        g, s = by_key[(scenario, "gcrsync")], by_key[(scenario, "skopeo")]
        ratios[scenario] = {}
        for i, (key, label) in enumerate(METRICS):
            gv, sv = float(getattr(g, key)), float(getattr(s, key))
            r = ratios[scenario][key] = ratio(gv, sv)
            unique = f"  (= {gv / ns.unique_bytes:.2f}× / {sv / ns.unique_bytes:.2f}× unique bytes)"
            lines.append(f"{scenario if i == 0 else '':<18} {label:<22} {_fmt(key, gv):>10} {_fmt(key, sv):>10} "
                         + f"{'n/a' if r is None else f'{r:.2f}×':>7}"
                         + (unique if key == "bytes_pulled" else ""))  # fmt: skip
        lines.append(f"{'':<18} {'processes':<22} {g.processes:>10} {s.processes:>10}")
    for label in (v for v, _ in VARIANTS if (v, "gcrsync") in by_key):
        t, s = by_key[(label, "gcrsync")], by_key[("B no-op re-sync", "skopeo")]
        lines.append(
            f"\n{label}: wall {t.wall_s:.2f}s ({ratio(t.wall_s, s.wall_s)}× skopeo's no-op), "
            f"{t.src_requests} + {t.dst_requests} requests "
            f"({ratio(t.src_requests + t.dst_requests, s.src_requests + s.dst_requests)}× skopeo's no-op)"
        )
    return "\n".join(lines), ratios


def targets(ratios: dict[str, dict[str, float | None]], phases: list[Phase], ns: Namespace) -> list[dict[str, Any]]:
    """The issue's goals, evaluated for information only."""
    by_key = {(p.scenario, p.tool): p for p in phases}
    noop_g, noop_s = by_key[("B no-op re-sync", "gcrsync")], by_key[("B no-op re-sync", "skopeo")]
    skopeo_noop = noop_s.src_requests + noop_s.dst_requests
    noop_req = ratio(noop_g.src_requests + noop_g.dst_requests, skopeo_noop)
    trusted = by_key.get((TRUST_LEDGER, "gcrsync"))
    trust_req = ratio(trusted.src_requests + trusted.dst_requests, skopeo_noop) if trusted else None
    immutable = by_key.get((IMMUTABLE, "gcrsync"))
    immutable_req = ratio(immutable.src_requests + immutable.dst_requests, skopeo_noop) if immutable else None
    pulled = ratio(by_key[("B cold sync", "gcrsync")].bytes_pulled, ns.unique_bytes)
    # issue 14: the default no-op at 2,000 tags ≤ 0.2× skopeo's wall time and ≤ 0.3× its requests; at 60 tags
    # ≤ 0.6× and ≤ 0.4× (start-up weighs more in a small namespace)
    wall_goal, req_goal = (0.2, 0.3) if len(ns.images) >= 1000 else (0.6, 0.4)
    checks = [("cold sync wall time ≤ 0.6× skopeo", ratios["B cold sync"]["wall_s"], 0.6),
              (f"no-op re-sync wall time ≤ {wall_goal}× skopeo", ratios["B no-op re-sync"]["wall_s"], wall_goal),
              (f"no-op re-sync requests ≤ {req_goal}× skopeo", noop_req, req_goal),
              ("  same, gcrsync --trust-ledger", trust_req, req_goal),
              ("  same, gcrsync --trust-ledger --immutable", immutable_req, req_goal),
              ("cold sync bytes pulled = 1.00× unique", pulled, 1.0)]  # fmt: skip
    return [{"target": label, "value": value, "limit": limit,
             "met": None if value is None else (value == limit if "=" in label[-20:] else value <= limit)}
            for label, value, limit in checks]  # fmt: skip


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description="Benchmark gcrsync against skopeo on local registries.")
    p.add_argument("--repos", type=int, help="repositories under bench/ (default 20; quick 4)")
    p.add_argument("--tags", type=int, help="tags per repository (default 3; quick 2)")
    p.add_argument("--layers", type=int, help="layers per image, about half shared (default 3; quick 2)")
    p.add_argument("--layer-mib", type=float, help="size of each layer in MiB (default 4; quick 1)")
    p.add_argument("--indexes", type=int, help="repos that also get a multi-arch 'multi' tag (default 3; quick 1)")
    p.add_argument("--platforms", type=int, default=3, choices=(2, 3), help="platforms per multi-arch index")
    p.add_argument("--seed", type=int, default=42, help="all image bytes derive from this")
    p.add_argument("--jobs", type=int, help="pass --jobs N to gcrsync (default: gcrsync's own)")
    p.add_argument("--skip-copy", action="store_true", help="leave out scenario A (one process per tag)")
    p.add_argument("--repeat", type=int, default=1, choices=range(1, 7), metavar="1-6",
                   help="run each no-op this many times and keep the median wall time (noisy machines)")
    p.add_argument("--quick", action="store_true", help="smoke run: 4 repos × 2 tags × 2 layers × 1 MiB")
    p.add_argument("--rss-sweep", action="store_true", help="also copy one image with a 16/64/256 MiB layer")
    p.add_argument("--rss-sizes", type=lambda s: [int(x) for x in s.split(",")], default=[16, 64, 256],
                   help="layer sizes in MiB for --rss-sweep (default 16,64,256)")  # fmt: skip
    p.add_argument("--output", type=Path, default=REPO_ROOT / ".bench" / "results.json")
    args = p.parse_args(argv)
    defaults = (4, 2, 2, 1.0, 1) if args.quick else (20, 3, 3, 4.0, 3)
    for name, default in zip(("repos", "tags", "layers", "layer_mib", "indexes"), defaults, strict=True):
        if getattr(args, name) is None:
            setattr(args, name, default)
    if min(args.repos, args.tags, args.layers) < 1 or args.layer_mib <= 0 or args.indexes < 0:
        p.error("--repos, --tags, --layers and --layer-mib must be positive")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    if shutil.which("skopeo") is None:
        print("bench: skopeo is not installed", file=sys.stderr)
        return 2
    started, load_before = time.perf_counter(), os.getloadavg()[0]
    with contextlib.ExitStack() as stack:  # LIFO: registries stop before their temp dir goes
        work = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="gcrsync-bench-")))
        bench = Bench(args, work, stack)
        src = bench.registry("src")
        seed_source(src, args)
        ns = walk(src.pusher(), [r for r in list_repos(src.pusher()) if r.startswith(NAMESPACE + "/")])
        print(f"seeded {len(ns.images)} tags in {len(ns.tags)} repos ({ns.unique_bytes / MIB:.1f} MiB unique) "
              f"in {time.perf_counter() - started:.1f}s", flush=True)  # fmt: skip
        phases: list[Phase] = []
        for tool in ("gcrsync", "skopeo") if not args.skip_copy else ():
            print(f"A copy every tag: {tool} …", flush=True)
            phases.append(bench.copy_every_tag(tool, src, ns))
        for tool in ("gcrsync", "skopeo"):
            print(f"B namespace sync (cold, then no-op): {tool} …", flush=True)
            phases += bench.namespace_sync(tool, src, ns)
        phases.sort(key=lambda p: p.scenario)
        if args.rss_sweep:
            print("RSS sweep …", flush=True)
        sweep = bench.rss_sweep(src) if args.rss_sweep else []
        tool_log_tail = bench.log.read_text(errors="replace")[-4000:]

    table, ratios = report(phases, ns)
    goals = targets(ratios, phases, ns)
    load = (load_before, os.getloadavg()[0])
    print(
        f"\n{table}\n\n1-min load average {load[0]:.1f} → {load[1]:.1f} on {os.cpu_count()} CPUs "
        "(wall times are noisy when this exceeds the CPU count)"
    )
    print("\ntargets (informational, never asserted):")
    for goal in goals:
        mark = {True: "met", False: "NOT met", None: "n/a"}[goal["met"]]
        print(f"  {goal['target']:<40} {goal['value']!s:>7}  {mark}")
    for row in sweep:
        g, s = row["gcrsync"], row["skopeo"]
        print(f"  RSS sweep, one {row['layer_mib']:>4} MiB layer: gcrsync {g['peak_rss_kib'] / 1024:6.1f} MiB "
              f"({g['wall_s']:.2f}s, exit {g['exit']}), skopeo {s['peak_rss_kib'] / 1024:6.1f} MiB "
              f"({s['wall_s']:.2f}s, exit {s['exit']})")  # fmt: skip
    bad = 0
    for p in phases:
        for problem in p.failures + p.verify_problems:
            bad += p.tool == "gcrsync"
            print(f"{'!!! ' if p.tool == 'gcrsync' else 'warning: '}{p.tool} / {p.scenario}: {problem}")
    bad += sum(row["gcrsync"]["exit"] != 0 for row in sweep)
    if bad:
        print(f"!!! {bad} gcrsync failure(s) or digest mismatch(es) above; end of the tools' output:\n{tool_log_tail}")
    results = {"config": {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()},
               "unique_bytes": ns.unique_bytes, "blobs": ns.blob_count, "tags": len(ns.images),
               "phases": [asdict(p) for p in phases], "ratios": ratios, "targets": goals, "rss_sweep": sweep,
               "load_average": load, "cpus": os.cpu_count(), "total_s": round(time.perf_counter() - started, 1),
               "gcrsync_ok": not bad}  # fmt: skip
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(results, indent=2) + "\n")
    print(f"\nresults written to {args.output} (total {results['total_s']}s)")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
