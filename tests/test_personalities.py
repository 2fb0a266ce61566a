"""The quay and ghcr personalities answer as their sources say the services do (so the end-to-end tests
in test_quay.py / test_ghcr.py exercise the documented behaviour, not a convenient imitation)."""

from __future__ import annotations

import base64
import json
import urllib.error
import urllib.request
from typing import Any

from tools.imagefactory import make_layer, push_image

from harness import RegistryServer, unique_repo
from personalities.ghcr import GhcrPersonality
from personalities.quay import QuayPersonality

_OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}))


def _get(url: str, headers: dict[str, str] | None = None) -> tuple[int, Any, dict[str, str]]:
    try:
        with _OPENER.open(urllib.request.Request(url, headers=headers or {}), timeout=30) as resp:
            return resp.status, json.loads(resp.read()), dict(resp.headers)
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read()), dict(exc.headers)


def test_quay_personality(registry: RegistryServer) -> None:
    ns = unique_repo("qp")
    push_image(registry.pusher(), f"{ns}/app", "v1", layers=[make_layer(501, 200)])
    robot = f"{ns}+bot"
    with QuayPersonality(registry, robots={robot: "pw"}) as quay:
        status, body, headers = _get(f"{quay.url}/v2/")
        assert status == 401 and headers["WWW-Authenticate"].startswith(f'Bearer realm="{quay.url}/v2/auth"')
        assert _get(f"{quay.url}/v2/_catalog")[1] == {"repositories": []}  # anonymous: nothing, and no challenge
        basic = "Basic " + base64.b64encode(f"{robot}:pw".encode()).decode()
        assert _get(f"{quay.url}/v2/_catalog", {"Authorization": basic})[1] == {"repositories": [f"{ns}/app"]}
        token = _get(f"{quay.url}/v2/auth", {"Authorization": basic})[1]["token"]
        assert _get(f"{quay.url}/v2/_catalog", {"Authorization": f"Bearer {token}"})[1]["repositories"] == [f"{ns}/app"]
        status, body, _ = _get(f"{quay.url}/api/v1/repository/{ns}/nothing/tag/?limit=100&page=1")
        assert status == 404 and body["error_message"] == "Not Found" and body["detail"] == "Not Found"
        _, tags, _ = _get(f"{quay.url}/api/v1/repository/{ns}/app/tag/?onlyActiveTags=true&limit=100&page=1")
        [tag] = tags["tags"]
        assert tags["has_additional"] is False and tag["name"] == "v1" and tag["is_manifest_list"] is False
        assert tag["manifest_digest"].startswith("sha256:") and tag["last_modified"].endswith("GMT")


def test_ghcr_personality(registry: RegistryServer) -> None:
    org = unique_repo("gp")
    layer = make_layer(502, 200)
    for name in ("a", "b/c", "d"):
        push_image(registry.pusher(), f"{org}/{name}", "v1", layers=[layer], labels={"n": name})
    with GhcrPersonality(registry, tokens={"t0k"}, orgs={org}, max_per_page=2) as gh:
        status, body, headers = _get(f"{gh.api_url}/orgs/{org}/packages?package_type=container")
        assert status == 401 and body["message"] == "Requires authentication"
        assert int(headers["x-ratelimit-remaining"]) < int(headers["x-ratelimit-limit"])
        assert _get(f"{gh.api_url}/orgs/{org}/packages?package_type=container",
                    {"Authorization": "Bearer nope"})[1]["message"] == "Bad credentials"
        auth = {"Authorization": "Bearer t0k"}
        status, page, headers = _get(f"{gh.api_url}/orgs/{org}/packages?package_type=container", auth)
        assert [p["name"] for p in page] == ["a", "b/c"]
        link = headers["Link"]
        assert 'rel="next"' in link and 'rel="last"' in link and "/organizations/" in link
        versions = f"{gh.api_url}/orgs/{org}/packages/container/b%2Fc/versions"
        assert _get(versions, auth)[1][0]["metadata"]["container"]["tags"] == ["v1"]
        assert _get(versions.replace("%2F", "/"), auth)[0] == 404  # a raw '/' is another path
        assert _get(f"http://{gh.host}/v2/_catalog")[0] == 401
        token = _get(f"http://{gh.host}/token")[1]["token"]
        assert _get(f"http://{gh.host}/v2/_catalog", {"Authorization": f"Bearer {token}"})[0] == 404
