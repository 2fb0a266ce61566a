"""No credential ever leaves the process in a readable form: not in DEBUG logs, reports, the ledger, the
CHANGELOG, error messages, nor in an Authorization header sent to another host after a redirect.

Every secret is searched for as itself and as the base64 of ``user:password`` (what a Basic header carries).
"""

from __future__ import annotations

import asyncio
import base64
import json
import logging
import traceback
import uuid
from collections.abc import AsyncIterator, Iterable, Iterator
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from click.testing import CliRunner, Result
from multidict import CIMultiDict
from tools.imagefactory import make_layer, push_image, push_index

from gcrsync.cli import main
from gcrsync.engine.blobs import BlobMover
from gcrsync.engine.copy import copy_image
from gcrsync.errors import AuthError, first_error
from gcrsync.registry.client import RegistryClient
from gcrsync.registry.credentials import Credential, CredentialStore
from gcrsync.registry.transport import Transport, TransportOptions
from harness import RegistryServer, skopeo_digest, unique_repo
from tokenissuer import TokenIssuer

_HOP = frozenset({"connection", "keep-alive", "transfer-encoding", "content-length", "host", "content-encoding"})


def forms(user: str | None, secret: str) -> list[str]:
    """A secret as written, and as it appears inside a Basic Authorization header."""
    out = [secret]
    if user is not None:
        out.append(base64.b64encode(f"{user}:{secret}".encode()).decode())
    return out


def assert_absent(secrets: Iterable[str], **texts: str) -> None:
    for where, text in texts.items():
        for secret in secrets:
            if secret in text:  # pytest.fail, not assert: a failing `in` would print the secret it found
                pytest.fail(f"a secret ({secret[:4]}…) leaked into {where}", pytrace=False)


def tree_text(root: Path) -> str:
    """Every file under root (work tree and .git alike), decoded leniently, for substring search."""
    return "\n".join(p.read_bytes().decode("utf-8", "replace") for p in sorted(root.rglob("*")) if p.is_file())


@contextmanager
def capture_tokens(issuer: TokenIssuer, monkeypatch: pytest.MonkeyPatch) -> Iterator[list[str]]:
    """Record every bearer token the issuer hands out (its reply body), for the leak search."""
    issued: list[str] = []
    reply = issuer._reply

    def spy(handler: Any, status: int, body: dict[str, object], record: Any) -> None:
        if status == 200:
            issued.extend(str(body[k]) for k in ("token", "access_token") if k in body)
        reply(handler, status, body, record)

    monkeypatch.setattr(issuer, "_reply", spy)
    yield issued


def run_cli(tmp_path: Path, *args: str, env: dict[str, str] | None = None) -> tuple[Result, str]:
    """`gcrsync --debug ...` in-process; returns the result and everything it printed (stdout + stderr)."""
    base = {"DOCKER_CONFIG": str(tmp_path / "nodocker"), "XDG_DATA_HOME": str(tmp_path / "data"),
            "XDG_CACHE_HOME": str(tmp_path / "cache"), "XDG_STATE_HOME": str(tmp_path / "state"),
            "GCRSYNC_SRC_CREDS": None, "GCRSYNC_DEST_CREDS": None}
    result = CliRunner().invoke(main, ["--debug", *args], env={**base, **(env or {})})
    return result, result.stdout + result.stderr + result.output


@pytest.fixture
def gcrsync_debug_log(caplog: pytest.LogCaptureFixture) -> pytest.LogCaptureFixture:
    """caplog recording the `gcrsync` loggers at DEBUG, where every request URL is logged."""
    caplog.set_level(logging.DEBUG, logger="gcrsync")
    return caplog


# -- a full sync with env credentials ------------------------------------------------------------------------
def test_sync_with_env_credentials_leaks_nothing(auth_registry: RegistryServer, token_registry: RegistryServer,
                                                  monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    ns = unique_repo("secret-src")
    digest, _ = push_image(auth_registry.pusher(), f"{ns}/app", "v1", layers=[make_layer(501, 30_000)])
    index = push_index(auth_registry.pusher(), f"{ns}/multi", "v1", [("linux", "amd64", None),
                                                                      ("linux", "arm64", None)], 8_000, seed=502)
    issuer = token_registry.issuer
    assert issuer is not None and auth_registry.password and token_registry.password
    dest = unique_repo("secret-dst")
    report, meta = tmp_path / "report.json", tmp_path / "meta"
    env = {"GCRSYNC_SRC_CREDS": auth_registry.creds or "", "GCRSYNC_DEST_CREDS": token_registry.creds or ""}
    with capture_tokens(issuer, monkeypatch) as tokens:
        result, printed = run_cli(tmp_path, "sync", f"{auth_registry.host}/{ns}", "--dest",
                                  f"{token_registry.host}/{dest}", "--report", str(report), "--metadata", str(meta),
                                  env=env)
    assert result.exit_code == 0, printed
    # The env credentials really were used: both images are at the token registry, which refuses anonymous pushes.
    assert skopeo_digest(token_registry.ref(f"{dest}/app", "v1"), token_registry.creds) == digest
    assert skopeo_digest(token_registry.ref(f"{dest}/multi", "v1"), token_registry.creds) == index
    assert tokens, "the issuer handed out no token: the leak search would be vacuous"
    assert "DEBUG" in printed and f"GET http://{auth_registry.host}/v2/" in printed  # really at DEBUG level
    ledger = [p for p in meta.rglob("*.json") if ".git" not in p.parts]
    assert ledger and (meta / "CHANGELOG.md").exists() and digest in tree_text(meta)
    secrets = [*forms(auth_registry.username, auth_registry.password),
               *forms(token_registry.username, token_registry.password), *tokens]
    assert_absent(secrets, output=printed, report=report.read_text(), metadata=tree_text(meta))


# -- wrong credentials ---------------------------------------------------------------------------------------
def test_wrong_basic_password_error_leaks_nothing(auth_registry: RegistryServer, registry2: RegistryServer,
                                                  tmp_path: Path) -> None:
    ns = unique_repo("secret-wrong")
    push_image(auth_registry.pusher(), f"{ns}/app", "v1", layers=[make_layer(503, 2_000)])
    wrong = f"wrong-{uuid.uuid4().hex}"
    report = tmp_path / "report.json"
    result, printed = run_cli(tmp_path, "sync", f"{auth_registry.host}/{ns}", "--dest", f"{registry2.host}/x",
                              "--report", str(report), "--metadata", str(tmp_path / "meta"),
                              env={"GCRSYNC_SRC_CREDS": f"{auth_registry.username}:{wrong}"})
    assert result.exit_code == 1, printed
    data = json.loads(report.read_text())
    assert "UNAUTHORIZED" in (data["namespaces"][0]["error"] or "")  # the failure is reported, clearly
    assert_absent([*forms(auth_registry.username, wrong), *forms(auth_registry.username, auth_registry.password)],
                  output=printed, report=report.read_text(), metadata=tree_text(tmp_path / "meta"))


async def test_wrong_token_password_error_leaks_nothing(token_registry: RegistryServer, registry: RegistryServer,
                                                        gcrsync_debug_log: pytest.LogCaptureFixture) -> None:
    repo = unique_repo("secret-token")
    push_image(registry.pusher(), repo, "v1", layers=[make_layer(504, 2_000)])
    wrong = f"wrong-{uuid.uuid4().hex}"
    creds = CredentialStore({token_registry.host: Credential(username=token_registry.username, password=wrong)},
                            use_docker_config=False)
    async with Transport(TransportOptions(max_attempts=2, backoff_base=0.01)) as transport:
        client = RegistryClient(transport, creds)
        with pytest.raises(BaseException) as info:
            await copy_image(client.repository(registry.host, repo), "v1",
                             client.repository(token_registry.host, repo), "v1", BlobMover(2))
    err = first_error(info.value)
    assert isinstance(err, AuthError) and "rejected" in str(err)
    rendered = "".join(traceback.format_exception(info.value))
    logged = "\n".join(r.getMessage() for r in gcrsync_debug_log.records)
    assert "GET http://" in logged  # DEBUG request lines were captured
    assert_absent(forms(token_registry.username, wrong), message=str(err), repr=repr(err), traceback=rendered,
                  log=logged)


# -- redirects -----------------------------------------------------------------------------------------------
@dataclass
class Seen:
    """Authorization headers (None when absent) that each server saw on blob GETs."""

    front: list[str | None] = field(default_factory=list)
    hop: list[str | None] = field(default_factory=list)
    cdn: list[str | None] = field(default_factory=list)


async def _serve(handler: Any, host: str) -> web.ServerRunner:
    runner = web.ServerRunner(web.Server(handler, access_log=None))
    await runner.setup()
    await web.TCPSite(runner, host, 0).start()
    return runner


def _port(runner: web.ServerRunner) -> int:
    return int(runner.addresses[0][1])


@asynccontextmanager
async def redirecting_front(upstream: RegistryServer, signature: str) -> AsyncIterator[tuple[str, Seen]]:
    """A reverse proxy for ``upstream`` on 127.0.0.1 whose blob GETs answer 307 → another port (127.0.0.1) →
    307 → another address (127.0.0.2), where a "CDN" serves the bytes; each records what it was sent."""
    seen = Seen()
    session = aiohttp.ClientSession(auto_decompress=False)
    servers: list[web.ServerRunner] = []

    async def cdn(request: web.BaseRequest) -> web.StreamResponse:
        seen.cdn.append(request.headers.get("Authorization"))
        repo, digest = request.query["repo"], request.path.rsplit("/", 1)[1]
        pusher = upstream.pusher()  # the CDN's own access to the storage, not the client's credentials
        blob = await asyncio.to_thread(pusher.request, "GET", f"/v2/{repo}/blobs/{digest}", repo=repo)
        return web.Response(body=blob.body, status=blob.status, content_type="application/octet-stream")

    async def hop(request: web.BaseRequest) -> web.StreamResponse:
        seen.hop.append(request.headers.get("Authorization"))
        query = f"{request.query_string}&X-Amz-Signature={signature}"
        location = f"http://127.0.0.2:{_port(servers[0])}{request.path}?{query}"
        return web.Response(status=307, headers={"Location": location})

    async def front(request: web.BaseRequest) -> web.StreamResponse:
        parts = request.path.split("/blobs/")
        if request.method == "GET" and len(parts) == 2 and parts[1].startswith("sha256:"):
            seen.front.append(request.headers.get("Authorization"))
            repo = parts[0][len("/v2/"):]
            target = f"http://127.0.0.1:{_port(servers[1])}/cdn/{parts[1]}?repo={repo}"
            return web.Response(status=307, headers={"Location": target})
        headers = CIMultiDict((k, v) for k, v in request.headers.items() if k.lower() not in _HOP)
        async with session.request(request.method, upstream.url + request.path_qs, headers=headers,
                                   data=await request.read(), allow_redirects=False) as resp:
            body = await resp.read()
            out = CIMultiDict((k, v) for k, v in resp.headers.items() if k.lower() not in _HOP)
            if request.method == "HEAD":
                out["Content-Length"] = resp.headers.get("Content-Length", "0")
                return web.Response(status=resp.status, headers=out)
            return web.Response(status=resp.status, headers=out, body=body)

    try:
        servers.append(await _serve(cdn, "127.0.0.2"))
        servers.append(await _serve(hop, "127.0.0.1"))
        servers.append(await _serve(front, "127.0.0.1"))
        yield f"127.0.0.1:{_port(servers[2])}", seen
    finally:
        for runner in servers:
            await runner.cleanup()
        await session.close()


@pytest.mark.parametrize("which", ["auth_registry", "token_registry"])
async def test_authorization_not_forwarded_across_hosts(request: pytest.FixtureRequest, registry2: RegistryServer,
                                                        gcrsync_debug_log: pytest.LogCaptureFixture,
                                                        which: str) -> None:
    upstream: RegistryServer = request.getfixturevalue(which)
    repo = unique_repo("redirect")
    digest, _ = push_image(upstream.pusher(), repo, "v1", layers=[make_layer(505, 40_000), make_layer(506, 9_000)])
    signature = f"cdn-sig-{uuid.uuid4().hex}"
    async with redirecting_front(upstream, signature) as (front_host, seen):
        creds = CredentialStore({front_host: Credential(username=upstream.username, password=upstream.password)},
                                use_docker_config=False)
        async with Transport(TransportOptions(max_attempts=2, backoff_base=0.01)) as transport:
            client = RegistryClient(transport, creds)
            result = await copy_image(client.repository(front_host, repo), "v1",
                                      client.repository(registry2.host, repo), "v1", BlobMover(2))
    assert result.state == "copied" and result.blobs_copied == 3  # config + 2 layers, all via the redirect
    assert skopeo_digest(registry2.ref(repo, "v1")) == digest
    scheme = "Basic " if which == "auth_registry" else "Bearer "
    assert len(seen.front) == 3 and all(h is not None and h.startswith(scheme) for h in seen.front)
    assert seen.hop == [None] * 3  # another port on the same address is another host
    assert seen.cdn == [None] * 3  # and so is another address
    logged = "\n".join(r.getMessage() for r in gcrsync_debug_log.records)
    assert "X-Amz-Signature=REDACTED" in logged  # the CDN hop was logged, with its signature redacted
    assert_absent([signature, *forms(upstream.username, upstream.password or "")], log=logged)
