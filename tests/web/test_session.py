"""The dashboard's files and its session cookie, over real sockets (no browser).

What the cookie opens is checked route by route: the reads and the token
minting the dashboard needs, with the dashboard header (and a same-origin
``Origin`` for a POST or a WebSocket), and nothing else.
"""

from __future__ import annotations

import time
from typing import Any

import pytest

from felix._errors import AuthenticationError
from felix.settings import Settings
from felix.web.edge.session import SESSION_TTL, SessionSigner, session_credential
from felix.web.edge.tokens import TokenSigner
from felix.web.hypercorn.access_log import RedactingLogger
from felix.web.routes.dashboard import content_security_policy
from tests.conftest import Server, StartServer, create_workflow
from tests.web.test_security import handshake, ws_path

KEY = "dashboard-key-one-0123456789"
OTHER_KEY = "dashboard-key-two-0123456789"
DASHBOARD = {"X-Felix-Dashboard": "1"}


@pytest.fixture
async def keyed(start_server: StartServer) -> Server:
    return await start_server(api_keys=(KEY, OTHER_KEY))


async def sign_in(server: Server, key: str = KEY) -> str:
    """Sign in like the dashboard does; return the session cookie's value."""
    async with server.client() as http:
        response = await http.post(
            "/dashboard/session", headers={"Authorization": f"Bearer {key}", "Origin": server.http}
        )
    assert response.status_code == 200, response.text
    value: str = response.cookies["felix_session"]
    return value


def browser_headers(server: Server, value: str, **extra: str) -> dict[str, str]:
    """What the dashboard's fetches carry: the cookie, the header, this origin."""
    return {"Cookie": f"felix_session={value}", "Origin": server.http, **DASHBOARD, **extra}


# --- the files -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("path", "content_type"),
    [
        ("/", "text/html; charset=utf-8"),
        ("/dashboard/app.js", "text/javascript; charset=utf-8"),
        ("/dashboard/style.css", "text/css; charset=utf-8"),
        ("/dashboard/favicon.svg", "image/svg+xml"),
    ],
)
async def test_files_are_served_without_the_key_with_a_strict_policy(
    keyed: Server, path: str, content_type: str
) -> None:
    async with keyed.client() as http:
        response = await http.get(path)
        assert response.status_code == 200
        assert response.headers["content-type"] == content_type
        assert response.headers["cache-control"] == "no-cache"
        assert response.headers["x-content-type-options"] == "nosniff"
        assert response.headers["referrer-policy"] == "no-referrer"
        policy = response.headers["content-security-policy"]
        assert "default-src 'none'" in policy
        assert "script-src 'self';" in policy
        assert "frame-ancestors 'none'" in policy
        assert "unsafe" not in policy
        host = keyed.http.removeprefix("http://")
        assert f"connect-src 'self' ws://{host} wss://{host};" in policy
        # Revalidation: the same file is not sent twice.
        again = await http.get(path, headers={"If-None-Match": response.headers["etag"]})
        assert again.status_code == 304
        assert again.content == b""


async def test_the_page_has_no_inline_script_and_no_secret(keyed: Server) -> None:
    async with keyed.client() as http:
        page = (await http.get("/")).text
        script = (await http.get("/dashboard/app.js")).text
    assert '<script type="module" src="/dashboard/app.js"></script>' in page
    assert page.count("<script") == 1
    assert "style=" not in page
    assert KEY not in page
    # Event data reaches the page as text only.
    assert "innerHTML" not in script
    assert "insertAdjacentHTML" not in script
    assert "localStorage" not in script


async def test_unknown_dashboard_file_is_404(keyed: Server) -> None:
    async with keyed.client() as http:
        for name in ("index.html", "nope.js", "..%2Fsession.py"):
            response = await http.get(f"/dashboard/{name}")
            assert response.status_code == 404
            assert response.json()["error"] == "not_found"


def test_policy_leaves_out_a_strange_host() -> None:
    assert "ws://" not in content_security_policy("evil.example; script-src *")
    assert "ws://[::1]:8000 " in content_security_policy("[::1]:8000")


# --- signing in and out ----------------------------------------------------------------


async def test_sign_in_sets_a_cookie_that_is_not_the_key(keyed: Server) -> None:
    async with keyed.client() as http:
        state = await http.get("/dashboard/session")
        assert state.json() == {"key_required": True, "signed_in": False, "expires_at": None}
        assert state.headers["cache-control"] == "no-store"
        for headers in ({}, {"Authorization": "Bearer wrong"}, {"X-API-Key": ""}):
            refused = await http.post("/dashboard/session", headers=headers)
            assert refused.status_code == 401
            assert "set-cookie" not in refused.headers
        response = await http.post("/dashboard/session", headers={"X-API-Key": OTHER_KEY})
    assert response.status_code == 200
    body = response.json()
    assert body["signed_in"] is True
    cookie = response.headers["set-cookie"]
    assert cookie.startswith("felix_session=")
    assert KEY not in cookie
    assert OTHER_KEY not in cookie
    attributes = {part.strip().split("=")[0].lower() for part in cookie.split(";")}
    assert {"httponly", "path", "max-age"} <= attributes
    assert "samesite=strict" in cookie.lower()
    assert f"max-age={SESSION_TTL}" in cookie.lower()
    assert "secure" not in attributes  # plain http here


async def test_cookie_is_secure_behind_a_tls_proxy(keyed: Server) -> None:
    # The proxy speaks http to Felix, but the browser's Origin says https.
    async with keyed.client() as http:
        response = await http.post(
            "/dashboard/session",
            headers={"X-API-Key": KEY, "Origin": "https://felix.example.com"},
        )
    assert "; secure" in response.headers["set-cookie"].lower()


async def test_session_state_and_sign_out(keyed: Server) -> None:
    value = await sign_in(keyed)
    async with keyed.client() as http:
        state = await http.get("/dashboard/session", headers=browser_headers(keyed, value))
        assert state.json()["signed_in"] is True
        assert state.json()["expires_at"].endswith("Z")
        out = await http.delete("/dashboard/session", headers=browser_headers(keyed, value))
        assert out.status_code == 200
        assert out.json()["signed_in"] is False
        cleared = out.headers["set-cookie"]
        assert cleared.startswith(('felix_session="";', "felix_session=;"))
        assert "max-age=0" in cleared.lower()


async def test_development_mode_needs_no_sign_in(server: Server) -> None:
    async with server.client() as http:
        state = await http.get("/dashboard/session")
        assert state.json() == {"key_required": False, "signed_in": True, "expires_at": None}
        response = await http.post("/dashboard/session")
        assert response.status_code == 200
        assert "set-cookie" not in response.headers


# --- what the cookie opens -------------------------------------------------------------


async def test_cookie_opens_the_dashboards_reads_and_token_minting(keyed: Server) -> None:
    value = await sign_in(keyed)
    async with keyed.client(api_key=KEY) as keyed_http:
        workflow_id = await create_workflow(keyed_http)
    async with keyed.client(headers=browser_headers(keyed, value)) as http:
        assert (await http.get("/api/v1/workflows")).status_code == 200
        assert (await http.get(f"/api/v1/workflows/{workflow_id}")).status_code == 200
        assert (await http.get("/api/v1/workflows/unknown")).status_code == 404
        minted = await http.post(f"/api/v1/workflows/{workflow_id}/tokens")
        assert minted.status_code == 201
    status, connected, _ = await handshake(
        keyed, ws_path(workflow_id, f"token={minted.json()['token']}&after=0")
    )
    assert (status, connected["type"]) == (101, "connected")


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("DELETE", "/api/v1/workflows/{id}"),
        ("POST", "/api/v1/workflows/{id}/events"),
        ("POST", "/api/v1/workflows"),
        ("POST", "/api/v1/broadcast"),
        ("GET", "/api/v1/workflows/{id}/events"),
        ("GET", "/api/v1/connections"),
        ("GET", "/api/v1/stats"),
        ("GET", "/metrics"),
    ],
)
async def test_cookie_opens_nothing_else(keyed: Server, method: str, path: str) -> None:
    value = await sign_in(keyed)
    async with keyed.client(api_key=KEY) as keyed_http:
        workflow_id = await create_workflow(keyed_http)
    async with keyed.client(headers=browser_headers(keyed, value)) as http:
        response = await http.request(
            method,
            path.format(id=workflow_id),
            json={"type": "completed"} if method == "POST" else None,
        )
    assert response.status_code == 401, response.text
    assert response.json()["error"] == "unauthorized"
    async with keyed.client(api_key=KEY) as keyed_http:
        assert (await keyed_http.get(f"/api/v1/workflows/{workflow_id}")).json()["last_seq"] == 0


@pytest.mark.parametrize(
    ("change", "why"),
    [
        ({"X-Felix-Dashboard": None}, "no dashboard header"),
        ({"X-Felix-Dashboard": "yes"}, "another header value"),
        ({"Origin": "http://evil.example"}, "another origin"),
        ({"Origin": None}, "no origin on a POST"),
        ({"Sec-Fetch-Site": "cross-site"}, "the browser says cross-site"),
        ({"Sec-Fetch-Site": "same-site"}, "a sibling site"),
    ],
)
async def test_cookie_does_not_count_for_a_forged_request(
    keyed: Server, change: dict[str, str | None], why: str
) -> None:
    value = await sign_in(keyed)
    async with keyed.client(api_key=KEY) as keyed_http:
        workflow_id = await create_workflow(keyed_http)
    headers: dict[str, Any] = browser_headers(keyed, value)
    for name, replacement in change.items():
        if replacement is None:
            headers.pop(name)
        else:
            headers[name] = replacement
    async with keyed.client() as http:
        minted = await http.post(f"/api/v1/workflows/{workflow_id}/tokens", headers=headers)
    assert minted.status_code == 401, why


async def test_a_bad_cookie_is_no_credential(keyed: Server) -> None:
    value = await sign_in(keyed)
    expired, _ = SessionSigner.from_settings(keyed.settings).mint(0, now=time.time() - SESSION_TTL)
    token = TokenSigner.from_settings(keyed.settings).mint("x", now=time.time(), ttl=60)[0]
    async with keyed.client() as http:
        for bad in (value[:-2] + "AA", expired, token, "", "x" * 1000):
            response = await http.get("/api/v1/workflows", headers=browser_headers(keyed, bad))
            assert response.status_code == 401, bad
            # 401 before the lookup: an unknown workflow is not revealed.
            unknown = await http.get("/api/v1/workflows/nope", headers=browser_headers(keyed, bad))
            assert unknown.status_code == 401


async def test_a_wrong_key_beside_the_cookie_is_judged_alone(keyed: Server) -> None:
    value = await sign_in(keyed)
    headers = browser_headers(keyed, value, **{"X-API-Key": "wrong"})
    async with keyed.client() as http:
        assert (await http.get("/api/v1/workflows", headers=headers)).status_code == 401


async def test_removing_the_key_ends_its_sessions(start_server: StartServer) -> None:
    first = await start_server(api_keys=(KEY, OTHER_KEY))
    value = await sign_in(first, OTHER_KEY)
    now = time.time()
    kept = Settings(api_keys=(OTHER_KEY, "a-new-key-0123456789"))
    removed = Settings(api_keys=(KEY,))
    assert SessionSigner.from_settings(kept).verify(value, now=now) > now
    with pytest.raises(AuthenticationError):
        SessionSigner.from_settings(removed).verify(value, now=now)


# --- the system stream -----------------------------------------------------------------


def cookie_headers(server: Server, value: str, origin: str | None) -> list[tuple[bytes, bytes]]:
    headers = [(b"cookie", f"felix_session={value}".encode())]
    if origin is not None:
        headers.append((b"origin", origin.encode()))
    return headers


async def test_cookie_opens_the_system_stream_from_this_origin_only(keyed: Server) -> None:
    value = await sign_in(keyed)
    system = "/api/v1/ws/system/events"
    status, connected, _ = await handshake(
        keyed, system, headers=cookie_headers(keyed, value, keyed.http)
    )
    assert (status, connected["workflow_id"]) == (101, None)
    for origin in ("http://evil.example", None):
        status, body, _ = await handshake(
            keyed, system, headers=cookie_headers(keyed, value, origin)
        )
        assert status == 401, origin
        assert body["error"] == "unauthorized"
    # Not a workflow's stream: the page uses a subscribe token there.
    async with keyed.client(api_key=KEY) as http:
        workflow_id = await create_workflow(http)
    status, _, _ = await handshake(
        keyed, ws_path(workflow_id), headers=cookie_headers(keyed, value, keyed.http)
    )
    assert status == 401


# --- the signer and the helper, without a server ---------------------------------------


def test_signer_round_trip_and_refusals() -> None:
    signer = SessionSigner.from_settings(Settings(api_keys=(KEY, OTHER_KEY)))
    value, expires = signer.mint(1, now=1000.0, ttl=60)
    assert expires == 1060
    assert signer.verify(value, now=1059.9) == 1060
    for now in (1060.0, 5000.0):
        with pytest.raises(AuthenticationError):
            signer.verify(value, now=now)
    with pytest.raises(ValueError, match="configured key"):
        SessionSigner.from_settings(Settings()).mint(0, now=0)
    # A subscribe token is signed under another label: it is no session.
    token, _ = TokenSigner.from_settings(Settings(api_keys=(KEY,))).mint("wf", now=0, ttl=60)
    with pytest.raises(AuthenticationError):
        signer.verify(token, now=1)


def test_helper_is_off_in_development_mode() -> None:
    headers = [("cookie", "felix_session=anything"), ("x-felix-dashboard", "1")]
    credential = session_credential(Settings(), method="GET", headers=headers)
    assert credential is None


def test_set_cookie_is_redacted_in_the_access_log() -> None:
    request: dict[str, Any] = {
        "type": "http",
        "method": "POST",
        "path": "/dashboard/session",
        "query_string": b"",
        "headers": [(b"authorization", b"Bearer secret")],
        "scheme": "http",
        "http_version": "1.1",
        "client": ("127.0.0.1", 1234),
    }
    response = {"status": 200, "headers": [(b"set-cookie", b"felix_session=SECRET; HttpOnly")]}
    logger = RedactingLogger.__new__(RedactingLogger)
    atoms = logger.atoms(request, response, 0.001)
    assert atoms["{set-cookie}o"] == "[redacted]"
    assert atoms["{authorization}i"] == "[redacted]"


async def test_openapi_describes_the_dashboard(server: Server) -> None:
    async with server.client() as http:
        paths = (await http.get("/openapi.json")).json()["paths"]
    assert set(paths["/dashboard/session"]) == {"get", "post", "delete"}
    assert "/" in paths
    assert "/dashboard/{name}" in paths
