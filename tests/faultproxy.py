"""A fault-injecting reverse proxy in front of one registry, for reliability tests.

Clients talk to ``FaultProxy.url`` as if it were the registry; the proxy forwards every request (streamed both
ways) and, when a configured fault matches, answers 5xx/429 itself, cuts a body short (reset or clean close),
stalls, adds headers, or serves lying bytes. It runs its own asyncio loop in a daemon thread, so sync tests
(urllib, skopeo) and async tests (whose loop is not ours) drive it the same way.

Random decisions are reproducible: the k-th request to a given (method, path) draws from
``random.Random(f"{seed}:{method}:{path}:{k}")``, so a concurrent client that interleaves requests differently
from run to run still gets the same fault on the same request. ``max_faults`` caps random faults so a retrying
client is guaranteed to finish; ``fail_next`` queues exact, uncapped faults.
"""

from __future__ import annotations

import asyncio
import copy
import email.utils
import json
import random
import re
import socket
import struct
import threading
import time
import urllib.parse
from collections import Counter
from collections.abc import AsyncIterator, Callable, Iterable
from dataclasses import dataclass, field
from typing import Any, NamedTuple

import aiohttp
from aiohttp import web
from multidict import CIMultiDict
from yarl import URL

from personalities.base import ThreadedApp, catch_all

STATUS_KINDS = {"500": 500, "502": 502, "503": 503, "429": 429, "413": 413}
FAULT_KINDS = frozenset({*STATUS_KINDS, "reset", "truncate", "stall", "trickle"})
_ERROR_CODES = {500: "UNKNOWN", 502: "UNAVAILABLE", 503: "UNAVAILABLE", 429: "TOOMANYREQUESTS", 413: "SIZE_INVALID"}
# Hop-by-hop headers (RFC 9110 §7.6.1) describe one connection, not the message; Expect is dropped because
# the proxy reads the body itself, and Host is rewritten to the upstream's.
_HOP = frozenset(
    h.lower()
    for h in ("Connection", "Keep-Alive", "Proxy-Connection", "Proxy-Authenticate", "Proxy-Authorization",
              "TE", "Trailer", "Transfer-Encoding", "Upgrade", "Host", "Expect")
)  # fmt: skip
BLOB_PATH_RE = re.compile(r"^/v2/(?P<name>.+)/blobs/(?P<digest>[a-z0-9]+(?:[+._-][a-z0-9]+)*:[a-fA-F0-9]+)$")
MANIFEST_PATH_RE = re.compile(r"^/v2/.+/manifests/[^/]+$")
ManifestLie = bytes | Callable[[bytes], bytes] | None


class FaultProxyError(RuntimeError):
    """Bad proxy configuration (unknown fault kind, bad probability or regex) or a proxy that failed to start."""


@dataclass(frozen=True)
class Fault:
    """One kind of fault and where it applies. Empty ``methods``/``path`` match everything.

    ``path`` is a regex searched in the decoded request path (no query). ``retry_after`` (429) is seconds, sent
    as an HTTP-date when ``retry_after_date``; None omits the header. ``cut`` (reset/truncate) is a fraction of
    Content-Length (float) or a byte count (int), always clamped below the length; bodies of unknown length
    are cut before their first byte. ``stall_seconds`` ends early when the proxy stops; for ``trickle`` it is
    the pause between the 8 pieces the body is sent in (a slow transfer that keeps making progress).
    """

    kind: str
    probability: float = 1.0
    methods: tuple[str, ...] = ()
    path: str = ""
    retry_after: int | None = 0
    retry_after_date: bool = False
    cut: float | int = 0.5
    stall_seconds: float = 30.0

    def __post_init__(self) -> None:
        if self.kind not in FAULT_KINDS:
            raise FaultProxyError(f"unknown fault kind {self.kind!r}; expected one of {sorted(FAULT_KINDS)}")
        if not 0.0 <= self.probability <= 1.0:
            raise FaultProxyError(f"fault probability must be within [0, 1], got {self.probability}")
        if self.cut < 0 or self.stall_seconds < 0:
            raise FaultProxyError("fault cut and stall_seconds must not be negative")
        object.__setattr__(self, "methods", tuple(m.upper() for m in self.methods))
        _compile(self.path)

    def matches(self, method: str, path: str) -> bool:
        return (not self.methods or method in self.methods) and _compile(self.path).search(path) is not None

    def cut_point(self, length: int | None) -> int:
        """How many body bytes to send before cutting: strictly fewer than ``length`` when it is known."""
        if length is None:
            return 0
        wanted = int(length * self.cut) if isinstance(self.cut, float) else self.cut
        return max(0, min(wanted, length - 1))


def _compile(pattern: str) -> re.Pattern[str]:
    try:
        return re.compile(pattern)
    except re.error as exc:
        raise FaultProxyError(f"bad path regex {pattern!r}: {exc}") from None


class Decision(NamedTuple):
    """What the proxy decided for one request: ``fault`` is a kind, or None for plain forwarding."""

    method: str
    path: str
    fault: str | None


@dataclass
class ProxyStats:
    """Counters; ``FaultProxy.stats`` returns a snapshot copy, so reading it never races the proxy thread.

    ``blob_full``/``blob_partial`` count blob GETs (keyed by path ``/v2/<name>/blobs/<digest>``) whose body
    was sent completely (status 200) or only partly (206 ranges, resets, truncations, client disconnects).
    ``faults`` counts injected faults per kind, plus ``"lie"`` for every lying blob/manifest body.
    """

    requests: int = 0
    forwarded: int = 0
    faults: Counter[str] = field(default_factory=Counter)
    blob_full: Counter[str] = field(default_factory=Counter)
    blob_partial: Counter[str] = field(default_factory=Counter)
    decisions: list[Decision] = field(default_factory=list)
    in_flight: int = 0  # requests being handled right now
    max_in_flight: int = 0  # the most ever handled at once (what a per-host concurrency cap must bound)

    def blob_serves(self, path: str) -> int:
        return self.blob_full[path] + self.blob_partial[path]

    def max_blob_serves(self) -> int:
        """The most times any single blob path was served (0 if none): what "bounded re-downloads" asserts."""
        return max((self.blob_serves(p) for p in {*self.blob_full, *self.blob_partial}), default=0)

    def serves_by_digest(self) -> Counter[str]:
        """Full + partial serves per digest, summed over repositories (mounts make one blob many paths)."""
        out: Counter[str] = Counter()
        for counter in (self.blob_full, self.blob_partial):
            for path, n in counter.items():
                m = BLOB_PATH_RE.match(path)
                out[m.group("digest") if m else path] += n
        return out


@dataclass
class _Queued:
    fault: Fault
    remaining: int


@dataclass(frozen=True)
class _HeaderRule:
    headers: tuple[tuple[str, str], ...]
    methods: tuple[str, ...]
    path: str


def default_manifest_lie(raw: bytes) -> bytes:
    """Same length, still valid JSON, different digest: swap the first space for a tab (both JSON whitespace)."""
    return raw.replace(b" ", b"\t", 1) if b" " in raw else raw + b"\n"


_FLIP = bytes(b ^ 0xFF for b in range(256))  # bytes.translate table: fast, offset-independent, never identity


class FaultProxy:
    """Reverse proxy to ``upstream`` (e.g. ``RegistryServer.url``) on 127.0.0.1; ``start()``/``stop()`` or ``with``."""

    def __init__(
        self, upstream: str, *, seed: int = 0, faults: Iterable[Fault] = (), max_faults: int | None = None
    ) -> None:
        parsed = urllib.parse.urlsplit(upstream)
        if parsed.scheme not in ("http", "https") or not parsed.netloc:
            raise FaultProxyError(f"upstream must be an http(s) origin URL, got {upstream!r}")
        self.upstream = f"{parsed.scheme}://{parsed.netloc}"
        self._upstream_host = parsed.netloc
        self.seed = seed
        self.max_faults = max_faults
        self.url = ""
        self.host = ""
        self._faults: list[Fault] = list(faults)
        self._queued: list[_Queued] = []
        self._header_rules: list[_HeaderRule] = []
        self._blob_lies: dict[str, bytes | None] = {}
        self._blob_lies_left: dict[str, int | None] = {}
        self._manifest_lies: list[tuple[str, ManifestLie]] = []
        self._seen: Counter[tuple[str, str]] = Counter()
        self._random_faults = 0
        self._stats = ProxyStats()
        self._lock = threading.Lock()
        self._server: ThreadedApp | None = None
        self._stopping: asyncio.Event | None = None
        self._hold: tuple[str, str] | None = None  # (method, path regex) of the one request to hold
        self._released: asyncio.Event | None = None
        self.held = threading.Event()  # set once the held request has arrived (and is waiting)

    def __repr__(self) -> str:
        return f"FaultProxy({self.url or 'stopped'} -> {self.upstream}, seed={self.seed})"

    # -- configuration (thread-safe; may change while running) -------------------------------------------
    def add_fault(self, kind: str, probability: float = 1.0, **options: Any) -> Fault:
        """Add a random fault; ``options`` are the other ``Fault`` fields (methods, path, cut, ...)."""
        fault = Fault(kind, probability, **options)
        with self._lock:
            self._faults.append(fault)
        return fault

    def fail_next(self, n: int, kind: str, path_regex: str = "", **options: Any) -> None:
        """Inject exactly ``n`` faults of ``kind`` on the next matching requests (not subject to max_faults)."""
        fault = Fault(kind, 1.0, path=path_regex, **options)
        with self._lock:
            self._queued.append(_Queued(fault, n))

    def add_headers(self, headers: dict[str, str], *, methods: Iterable[str] = (), path: str = "") -> None:
        """Set ``headers`` on every matching response, forwarded or injected (e.g. RateLimit budgets)."""
        _compile(path)
        rule = _HeaderRule(tuple(headers.items()), tuple(m.upper() for m in methods), path)
        with self._lock:
            self._header_rules.append(rule)

    def lie_blob(self, digest: str, replacement: bytes | None = None, times: int | None = None) -> None:
        """Serve other bytes of the same length for blob GETs of ``digest`` (any repo, ranges included).

        ``replacement`` must be exactly as long as the blob (the client is expected to catch the digest
        mismatch, not a length error); None flips every bit, which works at any offset. ``times`` limits the
        lie to that many GETs (corruption in transit), None lies for ever.
        """
        with self._lock:
            self._blob_lies[digest] = replacement
            self._blob_lies_left[digest] = times

    def lie_manifest(self, path_regex: str, replacement: ManifestLie = None) -> None:
        """Alter manifest GET bodies whose path matches: fixed bytes, a function of the real bytes, or None for
        ``default_manifest_lie``. Content-Length follows the new body; Docker-Content-Digest stays the real one."""
        _compile(path_regex)
        with self._lock:
            self._manifest_lies.append((path_regex, replacement))

    def hold_next(self, method: str, path_regex: str) -> None:
        """Hold the next request matching ``method`` and ``path_regex`` until ``release()`` (or stop): the
        test knows, through ``held``, that a client is in the middle of that request."""
        _compile(path_regex)
        with self._lock:
            self._hold = (method.upper(), path_regex)
            self._released = None  # a fresh gate, made on the proxy's loop when the request arrives
            self.held.clear()

    def release(self) -> None:
        """Let the held request (and any later one matching the hold) go on to the upstream."""
        with self._lock:
            self._hold = None
        loop = self._server.loop if self._server is not None else None
        if loop is not None and self._released is not None:
            loop.call_soon_threadsafe(self._released.set)

    def clear_faults(self) -> None:
        """Drop every fault, queued fault, header rule and lie (stats are kept)."""
        with self._lock:
            self._faults.clear()
            self._queued.clear()
            self._header_rules.clear()
            self._blob_lies.clear()
            self._blob_lies_left.clear()
            self._manifest_lies.clear()

    @property
    def stats(self) -> ProxyStats:
        with self._lock:
            return copy.deepcopy(self._stats)

    # -- lifecycle -----------------------------------------------------------------------------------------
    def start(self) -> FaultProxy:
        if self._server is not None:
            raise FaultProxyError("proxy already started")
        self._stopping = asyncio.Event()  # bound to the proxy's loop when first awaited there
        stopping = self._stopping
        self._server = ThreadedApp(
            catch_all(self._handle), "faultproxy", on_stop=stopping.set,
            session_options={  # bytes must reach the client exactly as the registry sent them
                "skip_auto_headers": ("User-Agent", "Accept", "Accept-Encoding", "Content-Type"),
                "timeout": aiohttp.ClientTimeout(total=None, sock_connect=10),
            },
        )
        try:
            self._server.start()
        except Exception as exc:
            self._server = None
            raise FaultProxyError(f"fault proxy failed to start: {exc}") from exc
        self.host, self.url = self._server.host, self._server.url
        return self

    def stop(self) -> None:
        """Stop serving; stalled requests end at once. Idempotent."""
        if self._server is not None:
            self._server.stop()  # requests still being handled keep reaching its session until it closes
            self._server = None

    def __enter__(self) -> FaultProxy:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    async def __aenter__(self) -> FaultProxy:
        return await asyncio.to_thread(self.start)

    async def __aexit__(self, *exc: object) -> None:
        await asyncio.to_thread(self.stop)

    # -- decisions -----------------------------------------------------------------------------------------
    def _decide(self, method: str, path: str) -> Fault | None:
        with self._lock:
            self._stats.requests += 1
            chosen = next((q.fault for q in self._queued if q.remaining > 0 and q.fault.matches(method, path)), None)
            if chosen is not None:
                next(q for q in self._queued if q.fault is chosen and q.remaining > 0).remaining -= 1
            else:
                k = self._seen[(method, path)]
                self._seen[(method, path)] += 1
                rng = random.Random(f"{self.seed}:{method}:{path}:{k}")
                capped = self.max_faults is not None and self._random_faults >= self.max_faults
                for fault in self._faults:
                    # Draw for every matching fault, so one fault's outcome never shifts another's draws.
                    if fault.matches(method, path) and rng.random() < fault.probability and chosen is None:
                        chosen = None if capped else fault
                if chosen is not None:
                    self._random_faults += 1
            if chosen is not None:
                self._stats.faults[chosen.kind] += 1
            self._stats.decisions.append(Decision(method, path, chosen.kind if chosen else None))
            return chosen

    def _extra_headers(self, method: str, path: str) -> list[tuple[str, str]]:
        with self._lock:
            rules = list(self._header_rules)
        out: list[tuple[str, str]] = []
        for rule in rules:
            if (not rule.methods or method in rule.methods) and _compile(rule.path).search(path):
                out.extend(rule.headers)
        return out

    def _lie_for(self, method: str, path: str) -> tuple[str, ManifestLie] | None:
        """("blob", replacement) or ("manifest", replacement) when a GET of ``path`` must lie."""
        if method != "GET":
            return None
        with self._lock:
            m = BLOB_PATH_RE.match(path)
            if m and m.group("digest") in self._blob_lies:
                digest = m.group("digest")
                replacement = self._blob_lies[digest]
                left = self._blob_lies_left.get(digest)
                if left is not None:
                    self._blob_lies_left[digest] = left - 1
                    if left <= 1:
                        del self._blob_lies[digest]
                return "blob", replacement
            for pattern, replacement in self._manifest_lies:
                if MANIFEST_PATH_RE.match(path) and _compile(pattern).search(path):
                    return "manifest", replacement
        return None

    def _count(self, *, forwarded: int = 0, lie: int = 0) -> None:
        with self._lock:
            self._stats.forwarded += forwarded
            if lie:
                self._stats.faults["lie"] += lie

    def _count_blob(self, path: str, *, full: bool, undo_full: bool = False) -> None:
        with self._lock:
            (self._stats.blob_full if full else self._stats.blob_partial)[path] += 1
            if undo_full:
                self._stats.blob_full[path] -= 1

    # -- request handling ----------------------------------------------------------------------------------
    async def _take_hold(self, method: str, path: str) -> bool:
        with self._lock:
            hold = self._hold
            match = hold is not None and method == hold[0] and _compile(hold[1]).search(path) is not None
            if match:
                self._hold = None  # only the first matching request is held
        if not match:
            return False
        if self._released is None:
            self._released = asyncio.Event()
        self.held.set()
        assert self._stopping is not None
        stopping = asyncio.ensure_future(self._stopping.wait())
        released = asyncio.ensure_future(self._released.wait())
        await asyncio.wait([stopping, released], return_when=asyncio.FIRST_COMPLETED)
        for task in (stopping, released):
            task.cancel()
        return True

    async def _handle(self, request: web.BaseRequest) -> web.StreamResponse:
        with self._lock:
            self._stats.in_flight += 1
            self._stats.max_in_flight = max(self._stats.max_in_flight, self._stats.in_flight)
        try:
            return await self._handle_counted(request)
        finally:
            with self._lock:
                self._stats.in_flight -= 1

    async def _handle_counted(self, request: web.BaseRequest) -> web.StreamResponse:
        method, path = request.method, request.path
        await self._take_hold(method, path)
        fault = self._decide(method, path)
        if fault is not None and fault.kind == "stall":
            assert self._stopping is not None
            try:
                await asyncio.wait_for(self._stopping.wait(), timeout=fault.stall_seconds)
                return await self._error(request, 503, "fault proxy stopping")
            except TimeoutError:
                pass
        if fault is not None and fault.kind in STATUS_KINDS:
            return await self._error(request, STATUS_KINDS[fault.kind], f"injected fault {fault.kind}", fault)
        headers = CIMultiDict((k, v) for k, v in request.headers.items() if k.lower() not in _HOP)
        headers["Host"] = self._upstream_host
        session = self._server.session if self._server is not None else None
        assert session is not None
        try:
            async with session.request(
                method,
                URL(self.upstream + request.rel_url.raw_path_qs, encoded=True),
                headers=headers,
                data=request.content if request.can_read_body else None,
                allow_redirects=False,
            ) as upstream:
                self._count(forwarded=1)
                return await self._relay(request, upstream, fault)
        except aiohttp.ClientError as exc:
            return await self._error(request, 502, f"fault proxy upstream error: {type(exc).__name__}")

    async def _error(
        self, request: web.BaseRequest, status: int, message: str, fault: Fault | None = None
    ) -> web.StreamResponse:
        """An OCI error answer made by the proxy itself; the request body is drained first, so the client
        sees this status instead of a broken pipe while still uploading."""
        while request.can_read_body and await request.content.readany():
            pass
        body = json.dumps({"errors": [{"code": _ERROR_CODES.get(status, "UNKNOWN"), "message": message}]}).encode()
        resp = web.Response(status=status, body=body, content_type="application/json")
        if fault is not None and fault.kind == "429" and fault.retry_after is not None:
            resp.headers["Retry-After"] = (
                email.utils.formatdate(time.time() + fault.retry_after, usegmt=True)
                if fault.retry_after_date
                else str(fault.retry_after)
            )
        for name, value in self._extra_headers(request.method, request.path):
            resp.headers[name] = value
        return resp

    async def _relay(
        self, request: web.BaseRequest, upstream: aiohttp.ClientResponse, fault: Fault | None
    ) -> web.StreamResponse:
        method, path = request.method, request.path
        headers = CIMultiDict(
            (k, v.replace(self.upstream, self.url)) for k, v in upstream.headers.items() if k.lower() not in _HOP
        )
        for name, value in self._extra_headers(method, path):
            headers[name] = value
        resp = web.StreamResponse(status=upstream.status, reason=upstream.reason, headers=headers)
        ok = 200 <= upstream.status < 300
        lie = self._lie_for(method, path) if ok else None
        if lie is not None and lie[0] == "manifest":
            real, replacement = await upstream.read(), lie[1]
            if callable(replacement):
                body = replacement(real)
            else:
                body = default_manifest_lie(real) if replacement is None else replacement
            resp.headers["Content-Length"] = str(len(body))
            self._count(lie=1)
            await resp.prepare(request)
            await resp.write(body)
            return resp
        flip = lie is not None and lie[1] is None
        blob_replacement = lie[1] if lie is not None and isinstance(lie[1], bytes) else None
        if lie is not None:
            self._count(lie=1)
        offset = _range_start(upstream.headers.get("Content-Range")) if upstream.status == 206 else 0
        cut = fault.cut_point(upstream.content_length) if fault and fault.kind in ("reset", "truncate") else None
        # Count a blob serve *before* the client can see a byte: a test asserting on stats right after its
        # download returns would otherwise race the tail of this handler. Only a serve the client itself
        # breaks off (or an upstream failure) is reclassified from full to partial afterwards.
        blob = method == "GET" and ok and BLOB_PATH_RE.match(path) is not None
        full = upstream.status == 200 and cut is None
        if blob:
            self._count_blob(path, full=full)
        sent = 0
        try:
            await resp.prepare(request)
            trickle = fault is not None and fault.kind == "trickle"
            body_iter = _pieces(upstream, fault.stall_seconds) if trickle and fault else upstream.content.iter_any()
            async for chunk in body_iter:
                if flip:
                    chunk = chunk.translate(_FLIP)
                elif blob_replacement is not None:
                    chunk = blob_replacement[offset + sent : offset + sent + len(chunk)]
                if cut is not None and sent + len(chunk) >= cut:
                    await resp.write(chunk[: cut - sent])
                    break
                await resp.write(chunk)
                sent += len(chunk)
            if cut is not None:
                assert fault is not None
                await _cut_connection(request, reset=fault.kind == "reset")
        except (ConnectionError, aiohttp.ClientError):
            # Client went away, or upstream broke mid-body: either way the client must not see a clean end.
            if request.transport is not None:
                request.transport.abort()
            if blob and full:
                self._count_blob(path, full=False, undo_full=True)
        return resp


async def _pieces(upstream: aiohttp.ClientResponse, pause: float) -> AsyncIterator[bytes]:
    """The whole body in 8 pieces with a pause before each but the first."""
    body = await upstream.read()
    step = max(1, -(-len(body) // 8))
    for i, start in enumerate(range(0, len(body), step)):
        if i:
            await asyncio.sleep(pause)
        yield body[start : start + step]


def _range_start(content_range: str | None) -> int:
    m = re.match(r"bytes (\d+)-", content_range or "")
    return int(m.group(1)) if m else 0


async def _cut_connection(request: web.BaseRequest, *, reset: bool) -> None:
    """End the connection mid-body: a TCP RST (reset) or an orderly FIN after the bytes sent (truncate)."""
    transport = request.transport
    if transport is None:
        return
    # Let the partial body reach the socket first: abort() discards whatever is still buffered.
    while transport.get_write_buffer_size() > 0 and not transport.is_closing():  # progress wait, not timing
        await asyncio.sleep(0.001)
    if reset:
        sock = transport.get_extra_info("socket")
        if sock is not None:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        transport.abort()
    else:
        transport.close()
