"""Security over real sockets: subscribe tokens, the origin check, rate limits, redaction.

Every behaviour here is checked against a real server on port 0 with real HTTP and
WebSocket clients; a test fails if its behaviour is taken out.
"""

from __future__ import annotations

import hmac
import json
import logging
import re
import time
from datetime import UTC, datetime
from typing import Any

import httpx
import hypothesis.strategies as st
import pytest
import trio
from hypothesis import given
from trio_websocket import ConnectionRejected, open_websocket_url

from felix._errors import AuthenticationError
from felix.settings import Settings
from felix.web.edge import auth
from felix.web.edge.tokens import TokenSigner
from tests.conftest import Server, StartServer, create_workflow, publish, receive_json

KEY = "key-one-0123456789abcdef"
OTHER_KEY = "key-two-fedcba9876543210"
SECRET = "token-secret-0123456789"
URLSAFE = re.compile(r"[A-Za-z0-9_-]+")
RUNNING = {"type": "workflow_status", "status": "running"}


async def mint(server: Server, workflow_id: str, key: str | None = KEY, **body: Any) -> str:
    """Mint a token over REST and return it."""
    async with server.client(api_key=key) as http:
        response = await http.post(f"/api/v1/workflows/{workflow_id}/tokens", json=body or None)
    assert response.status_code == 201, response.text
    token: str = response.json()["token"]
    return token


async def handshake(
    server: Server, path: str, *, headers: list[tuple[bytes, bytes]] | None = None
) -> tuple[int, dict[str, Any], dict[bytes, bytes]]:
    """Open a WebSocket; return 101 and the connected frame, or the refusal's status and body."""
    try:
        async with open_websocket_url(f"{server.ws}{path}", extra_headers=headers) as ws:
            return 101, await receive_json(ws), {}
    except ConnectionRejected as refusal:
        body = json.loads(refusal.body or b"{}")
        assert set(body) >= {"error", "message"}, body
        return refusal.status_code, body, {name.lower(): v for name, v in refusal.headers}


def ws_path(workflow_id: str, query: str = "") -> str:
    path = f"/api/v1/ws/workflows/{workflow_id}"
    return f"{path}?{query}" if query else path


@pytest.fixture
async def keyed(start_server: StartServer) -> Server:
    """A server with two API keys."""
    return await start_server(api_keys=(KEY, OTHER_KEY))


async def keyed_workflow(server: Server) -> str:
    async with server.client(api_key=KEY) as http:
        return await create_workflow(http)


# --- subscribe tokens ------------------------------------------------------------------


async def test_token_opens_its_workflow(keyed: Server) -> None:
    workflow_id = await keyed_workflow(keyed)
    async with keyed.client(api_key=KEY) as http:
        before = time.time()
        response = await http.post(f"/api/v1/workflows/{workflow_id}/tokens")
    assert response.status_code == 201, response.text
    body = response.json()
    assert set(body) == {"token", "expires_at"}
    assert URLSAFE.fullmatch(body["token"])
    expires = datetime.strptime(body["expires_at"], "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=UTC)
    assert before + 298 <= expires.timestamp() <= before + 301  # FELIX_TOKEN_TTL: 300 s
    status, connected, _ = await handshake(keyed, ws_path(workflow_id, f"token={body['token']}"))
    assert status == 101
    assert connected["type"] == "connected"
    assert connected["workflow_id"] == workflow_id


async def test_token_receives_live_events(keyed: Server) -> None:
    workflow_id = await keyed_workflow(keyed)
    token = await mint(keyed, workflow_id)
    async with (
        keyed.open_ws(workflow_id, f"token={token}&after=0") as ws,
        keyed.client(api_key=KEY) as http,
    ):
        assert (await receive_json(ws))["type"] == "connected"
        assert (await publish(http, workflow_id, RUNNING)).status_code == 202
        assert (await receive_json(ws))["seq"] == 1


async def test_token_lifetime_can_be_asked_for_within_the_maximum(
    start_server: StartServer,
) -> None:
    server = await start_server(api_keys=(KEY,), token_ttl=30, token_max_ttl=120)
    workflow_id = await keyed_workflow(server)
    url = f"/api/v1/workflows/{workflow_id}/tokens"
    async with server.client(api_key=KEY) as http:
        before = time.time()
        default = (await http.post(url)).json()
        asked = (await http.post(url, json={"ttl_seconds": 120})).json()
        too_long = await http.post(url, json={"ttl_seconds": 121})
        bad = [
            await http.post(url, json=body)
            for body in (
                {"ttl_seconds": 0},
                {"ttl_seconds": -5},
                {"ttl_seconds": 1.5},
                {"ttl_seconds": "60"},
                {"ttl_seconds": True},
                {"ttl_seconds": None},
                {"ttl": 60},
                [60],
                "60",
            )
        ]
        empty_object = await http.post(url, json={})

    def lifetime(body: dict[str, Any]) -> float:
        moment = datetime.strptime(body["expires_at"], "%Y-%m-%dT%H:%M:%S.%fZ")
        return moment.replace(tzinfo=UTC).timestamp() - before

    assert 28 <= lifetime(default) <= 31
    assert 118 <= lifetime(asked) <= 121
    assert too_long.status_code == 422
    assert too_long.json()["error"] == "invalid"
    assert "120" in too_long.json()["message"]
    assert "FELIX_TOKEN_MAX_TTL" in too_long.json()["message"]
    assert [response.status_code for response in bad] == [422] * len(bad)
    assert empty_object.status_code == 201


async def test_token_route_checks_the_key_before_the_workflow(keyed: Server) -> None:
    workflow_id = await keyed_workflow(keyed)
    answers = {}
    for name, key in (("none", None), ("wrong", "wrong-key-123456"), ("right", KEY)):
        async with keyed.client(api_key=key) as http:
            for target in (workflow_id, "no-such-workflow", "bad%20id"):
                response = await http.post(f"/api/v1/workflows/{target}/tokens")
                answers[name, target] = (response.status_code, response.text)
    unauthorized = answers["none", workflow_id]
    assert unauthorized[0] == 401
    # A 401 is the same whether the workflow exists or not, and whatever the key.
    assert {answers[name, target] for name in ("none", "wrong") for target in
            (workflow_id, "no-such-workflow", "bad%20id")} == {unauthorized}  # fmt: skip
    assert answers["right", workflow_id][0] == 201
    assert answers["right", "no-such-workflow"][0] == 404
    assert answers["right", "bad%20id"][0] == 404


async def test_token_opens_nothing_else(keyed: Server) -> None:
    workflow_id = await keyed_workflow(keyed)
    other_id = await keyed_workflow(keyed)
    token = await mint(keyed, workflow_id)
    for path in (
        ws_path(other_id, f"token={token}"),
        ws_path("no-such-workflow", f"token={token}"),
        f"/api/v1/ws/system/events?token={token}",
        f"/api/v1/ws/nowhere?token={token}",
    ):
        status, body, _ = await handshake(keyed, path)
        assert (status, body["error"]) == (401, "unauthorized"), path
    # No REST call takes it, in any place a credential could go.
    async with httpx.AsyncClient(base_url=keyed.http) as http:
        for headers, query in (
            ({"Authorization": f"Bearer {token}"}, ""),
            ({"X-API-Key": token}, ""),
            ({}, f"?token={token}"),
            ({}, f"?api_key={token}"),
        ):
            for method, url in (
                ("GET", f"/api/v1/workflows/{workflow_id}"),
                ("GET", f"/api/v1/workflows/{workflow_id}/events"),
                ("POST", f"/api/v1/workflows/{workflow_id}/events"),
                ("POST", f"/api/v1/workflows/{workflow_id}/tokens"),
                ("DELETE", f"/api/v1/workflows/{workflow_id}"),
                ("GET", "/api/v1/connections"),
            ):
                response = await http.request(
                    method, url + query, headers=headers, json=RUNNING if method == "POST" else None
                )
                assert response.status_code == 401, (method, url, headers, query)
    # Nor does it pass for the API key on a WebSocket.
    status, _, _ = await handshake(keyed, ws_path(workflow_id, f"api_key={token}"))
    assert status == 401


async def test_forged_tokens_are_refused(keyed: Server) -> None:
    workflow_id = await keyed_workflow(keyed)
    token = await mint(keyed, workflow_id)
    stranger = TokenSigner.from_settings(Settings(api_keys=("somebody-elses-key",)))
    foreign, _ = stranger.mint(workflow_id, now=time.time(), ttl=300)
    flipped = token[:-3] + ("A" if token[-3] != "A" else "B") + token[-2:]
    forgeries = [
        foreign,
        flipped,
        token[:-1],
        token + "A",
        token[:20],
        "",
        "not-a-token",
        "v1.subscribe." + workflow_id,
        "%FF%FE",
        "A" * 5000,
        token + "=" * (4 - len(token) % 4),  # padded
        token.upper(),
    ]
    for forged in forgeries:
        status, body, _ = await handshake(keyed, ws_path(workflow_id, f"token={forged}"))
        assert (status, body) == (
            401,
            {"error": "unauthorized", "message": "invalid or expired token"},
        ), forged
    # The genuine one still works: the refusals above are the token's fault.
    assert (await handshake(keyed, ws_path(workflow_id, f"token={token}")))[0] == 101


async def test_expired_tokens_are_refused(keyed: Server) -> None:
    workflow_id = await keyed_workflow(keyed)
    signer = TokenSigner.from_settings(keyed.settings)
    now = time.time()
    expired, _ = signer.mint(workflow_id, now=now - 1000, ttl=300)
    just_expired, _ = signer.mint(workflow_id, now=now - 2, ttl=1)
    fresh, _ = signer.mint(workflow_id, now=now, ttl=300)
    for token in (expired, just_expired):
        status, body, _ = await handshake(keyed, ws_path(workflow_id, f"token={token}"))
        assert (status, body["message"]) == (401, "invalid or expired token")
    # Signed the same way, only younger: accepted.
    assert (await handshake(keyed, ws_path(workflow_id, f"token={fresh}")))[0] == 101


async def test_a_token_expires_in_real_time(keyed: Server) -> None:
    workflow_id = await keyed_workflow(keyed)
    async with keyed.client(api_key=KEY) as http:
        response = await http.post(
            f"/api/v1/workflows/{workflow_id}/tokens", json={"ttl_seconds": 1}
        )
    token = response.json()["token"]
    expires = datetime.strptime(response.json()["expires_at"], "%Y-%m-%dT%H:%M:%S.%fZ")
    # Wall-clock expiry: wait until the expiry second has begun (at most 1 s).
    await trio.sleep(max(0.0, expires.replace(tzinfo=UTC).timestamp() - time.time()) + 0.01)
    status, _, _ = await handshake(keyed, ws_path(workflow_id, f"token={token}"))
    assert status == 401


async def test_tokens_survive_a_key_rotation(start_server: StartServer) -> None:
    old, new = "rotation-old-key-0001", "rotation-new-key-0002"
    before = await start_server(api_keys=(old,))
    during = await start_server(api_keys=(new, old))
    after = await start_server(api_keys=(new,))
    ids = {}
    for server, key in ((before, old), (during, new), (after, new)):
        async with server.client(api_key=key) as http:
            ids[server.http] = await create_workflow(http, workflow_id="rotating")
    minted_before = await mint(before, "rotating", key=old)
    minted_during_old_key = await mint(during, "rotating", key=old)
    minted_during_new_key = await mint(during, "rotating", key=new)
    path = ws_path("rotating", "token={}")
    # During the rotation both keys' tokens are valid.
    assert (await handshake(during, path.format(minted_before)))[0] == 101
    # Whichever key asked, the first key signs: the token outlives the old key.
    assert minted_during_old_key != minted_before
    assert (await handshake(after, path.format(minted_during_old_key)))[0] == 101
    assert (await handshake(after, path.format(minted_during_new_key)))[0] == 101
    # Once the old key is gone, what it signed is not accepted.
    assert (await handshake(after, path.format(minted_before)))[0] == 401


async def test_token_secret_setting(start_server: StartServer) -> None:
    first = await start_server(api_keys=(KEY,), token_secrets=(SECRET,))
    second = await start_server(api_keys=(OTHER_KEY,), token_secrets=("another-" + SECRET, SECRET))
    keyed_only = await start_server(api_keys=(KEY,))
    for server, key in ((first, KEY), (second, OTHER_KEY), (keyed_only, KEY)):
        async with server.client(api_key=key) as http:
            await create_workflow(http, workflow_id="shared")
    token = await mint(first, "shared")
    path = ws_path("shared", f"token={token}")
    # The secret, not the key, signs: another server with the secret (second in
    # its list, as during a rotation) accepts it; one deriving it from the key does not.
    assert (await handshake(second, path))[0] == 101
    assert (await handshake(keyed_only, path))[0] == 401


async def test_dev_mode_tokens_use_a_process_secret(start_server: StartServer) -> None:
    server = await start_server()
    sibling = await start_server()
    with_secret = await start_server(token_secrets=(SECRET,))
    for each in (server, sibling, with_secret):
        async with each.client() as http:
            await create_workflow(http, workflow_id="dev")
    token = await mint(server, "dev", key=None)
    path = ws_path("dev", f"token={token}")
    assert (await handshake(server, path))[0] == 101
    assert (await handshake(sibling, path))[0] == 101  # the same process
    assert (await handshake(with_secret, path))[0] == 401
    # A presented token is checked in development mode too, so browser code
    # behaves the same there as in production.
    assert (await handshake(server, ws_path("dev", "token=forged")))[0] == 401
    assert (await handshake(server, ws_path("dev")))[0] == 101


async def test_token_route_is_post_only(keyed: Server) -> None:
    async with keyed.client(api_key=KEY) as http:
        response = await http.get("/api/v1/workflows/x/tokens")
    assert response.status_code == 405


# --- tokens, sans-IO ---------------------------------------------------------------------

BASE64URL = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"


@given(
    workflow_id=st.from_regex(r"[A-Za-z0-9_-]{1,64}", fullmatch=True),
    ttl=st.integers(1, 10**6),
    position=st.integers(0, 10**4),
    shift=st.integers(1, 63),
)
def test_any_change_to_a_token_is_refused(
    workflow_id: str, ttl: int, position: int, shift: int
) -> None:
    signer = TokenSigner((b"s" * 32,))
    now = 1_800_000_000.25
    token, expires = signer.mint(workflow_id, now=now, ttl=ttl)
    assert URLSAFE.fullmatch(token)
    assert now + ttl - 1 < expires <= now + ttl
    grant = signer.verify(token, now=now)
    assert (grant.workflow_id, grant.expires) == (workflow_id, expires)
    index = position % len(token)
    changed = BASE64URL[(BASE64URL.index(token[index]) + shift) % 64]
    forged = token[:index] + changed + token[index + 1 :]
    with pytest.raises(AuthenticationError):
        signer.verify(forged, now=now)


def test_token_expiry_boundary_and_rotation() -> None:
    old, new = TokenSigner((b"o" * 32,)), TokenSigner((b"n" * 32,))
    rotating = TokenSigner((b"n" * 32, b"o" * 32))
    token, expires = old.mint("wf", now=100.0, ttl=60)
    assert expires == 160
    assert rotating.verify(token, now=159.999).workflow_id == "wf"
    for signer, now in ((rotating, 160.0), (new, 100.0)):
        with pytest.raises(AuthenticationError):
            signer.verify(token, now=now)
    # The first secret signs.
    assert rotating.mint("wf", now=100.0, ttl=60) == new.mint("wf", now=100.0, ttl=60)


def test_signer_secrets() -> None:
    from_secret = TokenSigner.from_settings(Settings(api_keys=(KEY,), token_secrets=(SECRET,)))
    from_key = TokenSigner.from_settings(Settings(api_keys=(KEY, OTHER_KEY)))
    dev = TokenSigner.from_settings(Settings())
    assert len(from_secret.secrets) == 1
    assert len(from_key.secrets) == 2
    assert dev == TokenSigner.from_settings(Settings())  # one per process
    # No secret is a key, and the signer's repr shows none.
    for signer in (from_secret, from_key, dev):
        assert KEY.encode() not in signer.secrets
        assert SECRET.encode() not in signer.secrets
        assert "secrets" not in repr(signer)
    assert SECRET not in repr(Settings(token_secrets=(SECRET,)))


@pytest.mark.parametrize(
    ("variable", "value"),
    [
        ("FELIX_TOKEN_SECRET", "short-secret"),
        ("FELIX_TOKEN_SECRET", f"{SECRET},tiny"),
        ("FELIX_TOKEN_TTL", "0"),
        ("FELIX_TOKEN_MAX_TTL", "299"),  # below the default FELIX_TOKEN_TTL
        ("FELIX_TOKEN_MAX_TTL", "99999999999"),
        ("FELIX_ALLOWED_ORIGINS", "app.example.com"),
        ("FELIX_ALLOWED_ORIGINS", "https://app.example.com/path"),
        ("FELIX_ALLOWED_ORIGINS", "ftp://app.example.com"),
        ("FELIX_ALLOWED_ORIGINS", "https://app.example.com:99999"),
        ("FELIX_RATE_PUBLISH", "-1"),
        ("FELIX_RATE_HANDSHAKE_BURST", "0"),
        ("FELIX_RATE_MAX_CLIENTS", "0"),
    ],
)
def test_bad_security_settings_name_their_variable(variable: str, value: str) -> None:
    from felix.settings import SettingsError

    with pytest.raises(SettingsError, match=variable) as info:
        Settings.from_env({variable: value})
    if variable == "FELIX_TOKEN_SECRET":
        assert "short-secret" not in str(info.value)
        assert "tiny" not in str(info.value)


def test_security_settings_from_the_environment() -> None:
    settings = Settings.from_env(
        {
            "FELIX_TOKEN_SECRET": f"{SECRET}, {SECRET}-old",
            "FELIX_TOKEN_TTL": "60",
            "FELIX_TOKEN_MAX_TTL": "600",
            "FELIX_ALLOWED_ORIGINS": "https://app.example.com, http://localhost:5173, *",
            "FELIX_RATE_PUBLISH": "2.5",
            "FELIX_RATE_PUBLISH_BURST": "10",
            "FELIX_RATE_HANDSHAKE": "1",
            "FELIX_RATE_HANDSHAKE_BURST": "5",
            "FELIX_RATE_MAX_CLIENTS": "100",
        }
    )
    assert settings.token_secrets == (SECRET, f"{SECRET}-old")
    assert (settings.token_ttl, settings.token_max_ttl) == (60, 600)
    assert settings.allowed_origins == ("https://app.example.com", "http://localhost:5173", "*")
    assert (settings.rate_publish, settings.rate_publish_burst) == (2.5, 10)
    assert (settings.rate_handshake, settings.rate_handshake_burst) == (1, 5)
    assert settings.rate_max_clients == 100
    defaults = Settings()
    assert defaults.rate_publish == defaults.rate_handshake == 0  # off unless configured
    assert (defaults.token_ttl, defaults.token_max_ttl) == (300, 3600)


# --- the origin check ------------------------------------------------------------------


def origin(value: str) -> list[tuple[bytes, bytes]]:
    return [(b"origin", value.encode())]


async def test_origin_same_origin_only_with_a_key(keyed: Server) -> None:
    workflow_id = await keyed_workflow(keyed)
    path = ws_path(workflow_id, f"api_key={KEY}")
    own = keyed.http  # http://127.0.0.1:<port>, what the Host header says
    port = int(own.rsplit(":", 1)[1])
    assert (await handshake(keyed, path))[0] == 101  # no Origin: not a browser
    assert (await handshake(keyed, path, headers=origin(own)))[0] == 101
    assert (await handshake(keyed, path, headers=origin(own.upper())))[0] == 101
    # Host and port are compared, not the scheme: behind a TLS proxy the server
    # cannot tell which one the browser used.
    assert (await handshake(keyed, path, headers=origin(f"https://127.0.0.1:{port}")))[0] == 101
    for foreign in (
        "http://evil.example",
        f"http://evil.example:{port}",
        f"http://127.0.0.1:{port + 1}",
        "http://127.0.0.1",
        "null",
        "",
        f"{own}/path",
        f"http://user@127.0.0.1:{port}",
    ):
        status, body, _ = await handshake(keyed, path, headers=origin(foreign))
        assert (status, body.get("error")) == (403, "origin_not_allowed"), foreign


async def test_origin_allow_list(start_server: StartServer) -> None:
    server = await start_server(
        api_keys=(KEY,), allowed_origins=("https://app.example.com", "http://localhost:5173")
    )
    workflow_id = await keyed_workflow(server)
    path = ws_path(workflow_id, f"api_key={KEY}")
    for allowed in (
        "https://app.example.com",
        "https://APP.example.com",
        "https://app.example.com:443",
        "http://localhost:5173",
    ):
        assert (await handshake(server, path, headers=origin(allowed)))[0] == 101, allowed
    for refused in (
        "http://app.example.com",
        "https://app.example.com:8443",
        "https://evil.app.example.com",
        "http://localhost:5174",
        server.http,  # the list replaces the same-origin rule
    ):
        assert (await handshake(server, path, headers=origin(refused)))[0] == 403, refused


async def test_origin_wildcard_and_dev_mode(start_server: StartServer) -> None:
    anything = await start_server(api_keys=(KEY,), allowed_origins=("*",))
    dev = await start_server()
    dev_with_list = await start_server(allowed_origins=("https://app.example.com",))
    for server in (anything, dev, dev_with_list):
        async with server.client(api_key=KEY) as http:
            await create_workflow(http, workflow_id="o")
    for server, query in ((anything, f"api_key={KEY}"), (dev, "")):
        for value in ("http://evil.example", "null"):
            status, _, _ = await handshake(server, ws_path("o", query), headers=origin(value))
            assert status == 101, (server.settings.allowed_origins, value)
    status, _, _ = await handshake(
        dev_with_list, ws_path("o"), headers=origin("http://evil.example")
    )
    assert status == 403


async def test_origin_is_checked_after_authentication(keyed: Server) -> None:
    workflow_id = await keyed_workflow(keyed)
    evil = origin("http://evil.example")
    token = await mint(keyed, workflow_id)
    cases = [
        (ws_path(workflow_id), 401),  # no credential: 401 whatever the origin
        (ws_path(workflow_id, "api_key=wrong-key-123456"), 401),
        (ws_path(workflow_id, f"api_key={KEY}"), 403),
        (ws_path(workflow_id, f"token={token}"), 403),
        (ws_path("no-such-workflow", f"api_key={KEY}"), 403),  # before existence
        (ws_path(workflow_id, f"api_key={KEY}&after=x"), 403),  # before the query
    ]
    for path, expected in cases:
        assert (await handshake(keyed, path, headers=evil))[0] == expected, path


# --- rate limits -----------------------------------------------------------------------


async def test_publishes_are_unlimited_by_default(
    server: Server, client: httpx.AsyncClient
) -> None:
    workflow_id = await create_workflow(client)
    statuses = [
        (await publish(client, workflow_id, {"type": "synthesis", "content": str(i)})).status_code
        for i in range(60)
    ]
    assert statuses == [202] * 60
    assert server.settings.rate_publish == 0


def assert_rate_limited(response: httpx.Response) -> None:
    assert response.status_code == 429, response.text
    assert response.json().keys() == {"error", "message"}
    assert response.json()["error"] == "rate_limited"
    retry_after = response.headers["Retry-After"]
    assert retry_after.isdigit()
    assert int(retry_after) >= 1


async def test_publish_rate_limit_per_address(start_server: StartServer) -> None:
    server = await start_server(rate_publish=0.01, rate_publish_burst=3)
    async with server.client() as http:
        workflow_id = await create_workflow(http)
        event = {"type": "synthesis", "content": "x"}
        statuses = [(await publish(http, workflow_id, event)).status_code for _ in range(3)]
        assert statuses == [202, 202, 202]
        limited = await publish(http, workflow_id, event)
        assert_rate_limited(limited)
        assert int(limited.headers["Retry-After"]) == 100  # one token at 0.01/s
        # Broadcasts share the publish bucket; reads are not limited.
        assert_rate_limited(await http.post("/api/v1/broadcast", json={"type": "notice"}))
        assert (await http.get(f"/api/v1/workflows/{workflow_id}")).status_code == 200
        assert (await http.post("/api/v1/workflows", json={})).status_code == 201
        assert (await http.post(f"/api/v1/workflows/{workflow_id}/tokens")).status_code == 201
    # The limit is per address: another address still has its burst.
    transport = httpx.AsyncHTTPTransport(local_address="127.0.0.2")
    async with server.client(transport=transport) as other:
        assert (await publish(other, workflow_id, event)).status_code == 202
    assert (await server.hub.get_workflow(workflow_id)).last_seq == 4


async def test_publish_rate_limit_per_key(start_server: StartServer) -> None:
    server = await start_server(api_keys=(KEY, OTHER_KEY), rate_publish=0.01, rate_publish_burst=3)
    workflow_id = await keyed_workflow(server)
    event = {"type": "synthesis", "content": "x"}
    here = httpx.AsyncHTTPTransport(local_address="127.0.0.1")
    there = httpx.AsyncHTTPTransport(local_address="127.0.0.2")
    async with server.client(api_key=KEY, transport=here) as http:
        for _ in range(3):
            assert (await publish(http, workflow_id, event)).status_code == 202
    async with server.client(api_key=KEY, transport=there) as http:
        # A fresh address, but the key has used its burst.
        response = await publish(http, workflow_id, event)
        assert_rate_limited(response)
        assert "key" in response.json()["message"]
        assert KEY not in response.text
    async with server.client(api_key=OTHER_KEY, transport=there) as http:
        assert (await publish(http, workflow_id, event)).status_code == 202


async def test_publish_rate_limit_comes_before_authentication(start_server: StartServer) -> None:
    server = await start_server(api_keys=(KEY,), rate_publish=0.01, rate_publish_burst=3)
    async with server.client(api_key="wrong-key-123456") as http:
        statuses = [
            (await http.post("/api/v1/broadcast", json={"type": "x"})).status_code for _ in range(4)
        ]
    # A key guesser is slowed down like everybody else.
    assert statuses == [401, 401, 401, 429]


async def test_publish_rate_limit_refills(start_server: StartServer) -> None:
    server = await start_server(rate_publish=20, rate_publish_burst=1)
    async with server.client() as http:
        workflow_id = await create_workflow(http)
        event = {"type": "synthesis", "content": "x"}
        assert (await publish(http, workflow_id, event)).status_code == 202
        assert_rate_limited(await publish(http, workflow_id, event))
        await trio.sleep(0.06)  # one token back after 50 ms at 20/s
        assert (await publish(http, workflow_id, event)).status_code == 202


async def test_handshake_rate_limit(start_server: StartServer) -> None:
    server = await start_server(rate_handshake=0.01, rate_handshake_burst=3)
    async with server.client() as http:
        workflow_id = await create_workflow(http)
    for _ in range(3):
        assert (await handshake(server, ws_path(workflow_id)))[0] == 101
    status, body, headers = await handshake(server, ws_path(workflow_id))
    assert (status, body["error"]) == (429, "rate_limited")
    assert body.keys() == {"error", "message"}
    assert int(headers[b"retry-after"]) >= 1
    # REST is not a handshake.
    async with server.client() as http:
        assert (await publish(http, workflow_id, RUNNING)).status_code == 202


async def test_handshake_rate_limit_per_credential(start_server: StartServer) -> None:
    server = await start_server(
        api_keys=(KEY, OTHER_KEY), rate_handshake=0.01, rate_handshake_burst=3
    )
    workflow_id = await keyed_workflow(server)
    # Wrong keys use up the address's bucket, not a key's: 3 refusals, then 429.
    statuses = [
        (await handshake(server, ws_path(workflow_id, "api_key=wrong-key-1234")))[0]
        for _ in range(4)
    ]
    assert statuses == [401, 401, 401, 429]
    # From other addresses, the key's own bucket holds 3.
    codes = []
    for last_octet in (2, 3, 4, 5):
        codes.append(
            await handshake_from(server, ws_path(workflow_id, f"api_key={KEY}"), last_octet)
        )
    assert codes == [101, 101, 101, 429]
    assert await handshake_from(server, ws_path(workflow_id, f"api_key={OTHER_KEY}"), 6) == 101


async def handshake_from(server: Server, path: str, last_octet: int) -> int:
    """The status of a raw handshake from 127.0.0.<last_octet>."""
    host, port = server.http.rsplit("//", 1)[1].rsplit(":", 1)
    sock = trio.socket.socket()
    try:
        await sock.bind((f"127.0.0.{last_octet}", 0))
        await sock.connect((host, int(port)))
        request = (
            f"GET {path} HTTP/1.1\r\nHost: {host}:{port}\r\nUpgrade: websocket\r\n"
            "Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
            "Sec-WebSocket-Version: 13\r\n\r\n"
        )
        await sock.send(request.encode())
        answer = b""
        with trio.fail_after(5):
            while b"\r\n" not in answer:
                chunk = await sock.recv(1024)
                assert chunk
                answer += chunk
        return int(answer.split(b" ", 2)[1])
    finally:
        sock.close()


# --- redaction -------------------------------------------------------------------------


async def test_no_secret_reaches_any_log(
    start_server: StartServer,
    caplog: pytest.LogCaptureFixture,
    capfd: pytest.CaptureFixture[str],
) -> None:
    caplog.set_level(logging.DEBUG)
    for name in list(logging.root.manager.loggerDict):
        caplog.set_level(logging.DEBUG, logger=name)
    server = await start_server(
        api_keys=(KEY, OTHER_KEY),
        access_log=True,
        log_level="DEBUG",
        rate_publish=0.01,
        rate_publish_burst=2,
    )
    workflow_id = await keyed_workflow(server)
    token = await mint(server, workflow_id)
    other_token = await mint(server, await keyed_workflow(server))
    signer = TokenSigner.from_settings(server.settings)
    expired, _ = signer.mint(workflow_id, now=time.time() - 1000, ttl=300)
    forged = token[:-4] + "AAAA"
    wrong = "wrong-key-abcdef0123456789"
    secrets = [KEY, OTHER_KEY, token, other_token, expired, forged, wrong]

    async with server.client() as http:
        for headers in (
            {"Authorization": f"Bearer {KEY}"},
            {"X-API-Key": OTHER_KEY},
            {"Authorization": f"Bearer {wrong}"},
            {"X-API-Key": token},
            {"Authorization": f"bearer {forged}"},
            {},
        ):
            for query in ("", f"?api_key={KEY}&token={token}", f"?token={expired}"):
                await http.get(f"/api/v1/workflows/{workflow_id}{query}", headers=headers)
                await http.get(f"/api/v1/workflows/nope{query}", headers=headers)
                await http.post(
                    f"/api/v1/workflows/{workflow_id}/events{query}",
                    headers=headers,
                    json={"type": "synthesis", "content": "x"},
                )  # some of these are rate limited (429)
                await http.post(
                    f"/api/v1/workflows/{workflow_id}/tokens{query}",
                    headers=headers,
                    json={"ttl_seconds": 10**6},
                )
    for query in (
        f"token={token}",
        f"token={token}&after=0&types=synthesis",
        f"token={other_token}",
        f"token={expired}",
        f"token={forged}",
        f"api_key={KEY}",
        f"api_key={wrong}",
        f"api_key={KEY}&after=oops",
        f"token={token}&token={token}",
        f"%74oken={token}",  # names arrive percent-encoded too
        f"api_%6Bey={KEY}",
    ):
        for path in (ws_path(workflow_id, query), f"/api/v1/ws/system/events?{query}"):
            await handshake(server, path)
            await handshake(server, path, headers=origin("http://evil.example"))
    await handshake(
        server, ws_path(workflow_id), headers=[(b"authorization", f"Bearer {KEY}".encode())]
    )
    await handshake(server, ws_path(workflow_id), headers=[(b"x-api-key", wrong.encode())])

    out, err = capfd.readouterr()
    assert "/api/v1/ws/workflows" in out, "the access log did not run"
    for status in (" 401 ", " 403 ", " 429 "):
        assert status in out
    # Client libraries of this test log the URLs they were given; only the
    # server's loggers are the server's to keep clean.
    server_records = [
        record
        for record in caplog.records
        if not record.name.startswith(("httpx", "httpcore", "trio-websocket", "trio_websocket"))
    ]
    assert server_records, "no server log records were captured"
    server_text = "\n".join(
        f"{record.name} {record.getMessage()} {record.exc_text or ''}" for record in server_records
    )
    for secret in secrets:
        assert secret not in out
        assert secret not in err
        assert secret not in server_text


@pytest.mark.parametrize(
    "query",
    [
        b"token=SECRET",
        b"%74oken=SECRET",
        b"api_%6Bey=SECRET&after=1",
        b"%61%70%69%5F%6B%65%79=SECRET",
        b"types=a&token=SECRET&token=SECRET",
        b"after=%FF&token=SECRET",
    ],
)
def test_access_log_query_redaction(query: bytes) -> None:
    from felix.web.hypercorn.access_log import redact_query

    redacted = redact_query(query)
    assert b"SECRET" not in redacted
    assert b"redacted" in redacted


async def test_percent_encoded_names_are_redacted_in_the_access_log(
    start_server: StartServer, capfd: pytest.CaptureFixture[str]
) -> None:
    # The server decodes parameter names, so it accepts these as credentials:
    # the access log must hide them as well.
    server = await start_server(api_keys=(KEY,), access_log=True)
    workflow_id = await keyed_workflow(server)
    token = await mint(server, workflow_id)
    assert (await handshake(server, ws_path(workflow_id, f"%74oken={token}")))[0] == 101
    assert (await handshake(server, ws_path(workflow_id, f"api_%6Bey={KEY}")))[0] == 101
    out, err = capfd.readouterr()
    assert "/api/v1/ws/workflows" in out
    for secret in (token, KEY):
        assert secret not in out
        assert secret not in err


# --- timing- and enumeration-safe authentication ---------------------------------------


@pytest.mark.parametrize("presented", [None, "", "wrong", "k" * 1000, KEY[:-1]])
def test_wrong_and_missing_keys_take_the_same_path(
    monkeypatch: pytest.MonkeyPatch, presented: str | None
) -> None:
    compared: list[tuple[int, int]] = []
    original = hmac.compare_digest

    def counting(a: bytes, b: bytes) -> bool:
        compared.append((len(a), len(b)))
        return original(a, b)

    monkeypatch.setattr(hmac, "compare_digest", counting)
    keys = (KEY, OTHER_KEY, "third-key")
    with pytest.raises(AuthenticationError) as info:
        auth.check_api_key(keys, presented)
    assert info.value.message == "missing or invalid API key"
    # Every key is compared, as fixed-length digests, whatever was presented.
    assert compared == [(32, 32)] * len(keys)
    compared.clear()
    assert auth.check_api_key(keys, OTHER_KEY) == 1
    assert compared == [(32, 32)] * len(keys)


async def test_ws_401_never_reveals_a_workflow(keyed: Server) -> None:
    workflow_id = await keyed_workflow(keyed)
    token = await mint(keyed, workflow_id)
    stranger, _ = TokenSigner.from_settings(Settings(api_keys=("x" * 20,))).mint(
        "no-such-workflow", now=time.time(), ttl=60
    )
    answers = set()
    for target in (workflow_id, "no-such-workflow", "bad%20id"):
        for query in ("", "api_key=nope", f"token={stranger}", "token=junk", "after=x&api_key=a"):
            status, body, _ = await handshake(keyed, ws_path(target, query))
            answers.add((status, body["error"]))
    assert answers == {(401, "unauthorized")}
    # With a token for another workflow the answer is the same 401.
    status, body, _ = await handshake(keyed, ws_path("no-such-workflow", f"token={token}"))
    assert (status, body["message"]) == (401, "invalid or expired token")
