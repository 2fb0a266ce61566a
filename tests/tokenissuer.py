"""A small Docker-token issuer (the ``realm`` of a distribution ``auth: token`` registry) for the test suite.

It checks Basic credentials, signs ES256 JWTs whose ``x5c`` certificate is the registry's ``rootcertbundle``,
and records every request so tests can assert that a client caches its tokens instead of asking each time.
"""

from __future__ import annotations

import base64
import binascii
import json
import threading
import time
import urllib.parse
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

from tools import jose

# (username or None for anonymous, resource type, resource name, requested actions) -> granted actions
Policy = Callable[[str | None, str, str, list[str]], list[str]]


@dataclass(frozen=True)
class TokenRequest:
    """One call to the issuer: who asked (None = anonymous or bad creds), for which scopes, and the answer."""

    username: str | None
    scopes: tuple[str, ...]
    status: int
    method: str = "GET"


class TokenIssuer:
    """Issues JWTs for ``users``; grants valid users what they ask, anonymous users ``anonymous_actions``.

    Set ``policy`` to override the grant decision (e.g. to deny push on some repository), and
    ``expires_in`` to make tokens short-lived. Listens on 127.0.0.1 only.
    """

    def __init__(
        self,
        users: dict[str, str],
        *,
        service: str = "gcrsync-test-registry",
        issuer: str = "gcrsync-test-issuer",
        expires_in: int = 300,
        key_seed: int = 1,
    ) -> None:
        self.users = dict(users)
        self.service = service
        self.issuer = issuer
        self.expires_in = expires_in
        self.anonymous_actions: frozenset[str] = frozenset()
        self.policy: Policy | None = None
        self._key = jose.key_from_seed(key_seed)
        self._cert = jose.self_signed_cert(self._key, issuer)
        self._lock = threading.Lock()
        self._requests: list[TokenRequest] = []
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    # -- lifecycle ------------------------------------------------------------------------------------------
    def start(self) -> TokenIssuer:
        issuer = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                issuer._handle(self, "GET")

            def do_POST(self) -> None:
                issuer._handle(self, "POST")

            def log_message(self, format: str, *args: object) -> None:
                """Silence http.server's stderr access log; requests are recorded in the issuer."""

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, name="token-issuer", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    @property
    def realm(self) -> str:
        """The token endpoint URL to put in the registry's ``auth.token.realm``."""
        if self._server is None:
            raise RuntimeError("token issuer is not running")
        return f"http://127.0.0.1:{self._server.server_address[1]}/token"

    def write_cert(self, path: Path) -> Path:
        """Write the signing certificate (PEM) for the registry's ``rootcertbundle``."""
        path.write_bytes(jose.cert_pem(self._cert))
        return path

    # -- observation ----------------------------------------------------------------------------------------
    @property
    def requests(self) -> list[TokenRequest]:
        with self._lock:
            return list(self._requests)

    @property
    def token_count(self) -> int:
        """How many tokens were issued (successful requests)."""
        return sum(1 for r in self.requests if r.status == 200)

    def clear(self) -> None:
        with self._lock:
            self._requests.clear()

    # -- request handling -----------------------------------------------------------------------------------
    def _grant(self, username: str | None, scope: str) -> dict[str, object] | None:
        parts = scope.split(":")
        if len(parts) < 3:
            return None
        # Repository names never contain ':', but a registry host:port in a scope name could; rejoin.
        rtype, name, actions = parts[0], ":".join(parts[1:-1]), parts[-1].split(",")
        if self.policy is not None:
            granted = self.policy(username, rtype, name, actions)
        elif username is not None:
            granted = actions
        else:
            granted = [a for a in actions if a in self.anonymous_actions]
        return {"type": rtype, "name": name, "actions": granted}

    def _authenticate(
        self, handler: BaseHTTPRequestHandler, form: dict[str, list[str]]
    ) -> tuple[bool, str | None]:
        """(ok, username). No credentials is ok-and-anonymous; wrong credentials is not ok."""
        if "username" in form:  # OAuth2 password grant (POST)
            user, password = form["username"][0], form.get("password", [""])[0]
            return self.users.get(user) == password, user
        header = handler.headers.get("Authorization", "")
        if not header:
            return True, None
        if not header.lower().startswith("basic "):
            return False, None
        try:
            user, _, password = base64.b64decode(header[6:]).decode().partition(":")
        except (binascii.Error, UnicodeDecodeError):
            return False, None
        return self.users.get(user) == password, user

    def _handle(self, handler: BaseHTTPRequestHandler, method: str) -> None:
        parsed = urllib.parse.urlsplit(handler.path)
        form = urllib.parse.parse_qs(parsed.query)
        if method == "POST":
            length = int(handler.headers.get("Content-Length") or 0)
            form = urllib.parse.parse_qs(handler.rfile.read(length).decode())
        scopes = tuple(s for value in form.get("scope", []) for s in value.split(" ") if s)
        if parsed.path != "/token":
            self._reply(handler, 404, {"error": "not found"}, TokenRequest(None, scopes, 404, method))
            return
        if method == "POST" and form.get("grant_type", [""])[0] != "password":
            self._reply(
                handler, 400, {"error": "unsupported_grant_type"}, TokenRequest(None, scopes, 400, method)
            )
            return
        ok, username = self._authenticate(handler, form)
        if not ok:
            self._reply(
                handler, 401, {"error": "invalid credentials"}, TokenRequest(None, scopes, 401, method)
            )
            return
        now = int(time.time())
        access = [g for g in (self._grant(username, s) for s in scopes) if g is not None]
        claims = {
            "iss": self.issuer,
            "sub": username or "",
            "aud": form.get("service", [self.service])[0],
            "exp": now + self.expires_in,
            "nbf": now - 10,
            "iat": now,
            "jti": uuid.uuid4().hex,
            "access": access,
        }
        token = jose.sign_jwt(self._key, claims, cert_der=jose.cert_der(self._cert))
        issued_at = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(now))
        body = {"token": token, "access_token": token, "expires_in": self.expires_in, "issued_at": issued_at}
        self._reply(handler, 200, body, TokenRequest(username, scopes, 200, method))

    def _reply(
        self, handler: BaseHTTPRequestHandler, status: int, body: dict[str, object], record: TokenRequest
    ) -> None:
        # Record before answering: a client that got its token has then always been counted.
        with self._lock:
            self._requests.append(record)
        data = json.dumps(body).encode()
        handler.send_response(status)
        handler.send_header("Content-Type", "application/json")
        handler.send_header("Content-Length", str(len(data)))
        if status == 401:
            handler.send_header("WWW-Authenticate", f'Basic realm="{self.issuer}"')
        handler.end_headers()
        handler.wfile.write(data)
