"""The edge: one route table, one authenticate, one error renderer, one body reader.

Table-driven where it can be: every route of :data:`felix.web.edge.ROUTES` is
tried without credentials on a keyed server, so a route added to the table
is checked without anyone writing a test for it.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path
from typing import Any

import httpx
import pytest
import trio

import felix.web
from felix.web import create_app
from felix.web.edge import ROUTES, Credential, MethodNotAllowed, Route, RouteNotFound, match, quote
from felix.web.edge import app as edge_app
from felix.web.edge.params import MAX_QUERY_PARAMS, parse_query
from felix.web.routes import rest
from felix.web.routes.openapi import openapi_document
from tests.conftest import Server, StartServer, create_workflow
from tests.web.test_security import handshake, ws_path

KEY = "edge-test-key-0123456789"
#: What werkzeug says; none of it may reach a client.
WERKZEUG_WORDS = ("The requested URL", "The method is not allowed", "Not Found", "Bad Request")


def concrete(route: Route, workflow_id: str = "wf_000000000000") -> str:
    """The route's path with its parameters filled in."""
    return route.openapi_path.replace("{workflow_id}", workflow_id).replace("{name}", "app.js")


@pytest.fixture
async def keyed(start_server: StartServer) -> Server:
    return await start_server(api_keys=(KEY,))


def error_body(response: httpx.Response, status: int) -> dict[str, Any]:
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/json"
    body: dict[str, Any] = response.json()
    assert set(body) >= {"error", "message"}
    assert not any(words in body["message"] for words in WERKZEUG_WORDS), body
    return body


# --- one authenticate -------------------------------------------------------------------


@pytest.mark.parametrize("route", ROUTES, ids=lambda route: f"{route.method} {route.path}")
async def test_every_route_is_judged_by_its_policy(keyed: Server, route: Route) -> None:
    path = concrete(route)
    if route.websocket:
        status, body, _ = await handshake(keyed, path)
    else:
        async with keyed.client() as http:
            response = await http.request(route.method, path)
        json = response.headers.get("content-type") == "application/json"
        status, body = response.status_code, response.json() if json else {}
    if route.opens == Credential.OPEN:
        assert status != 401, (route, body)
    else:
        assert (status, body["error"]) == (401, "unauthorized"), route


@pytest.mark.parametrize(
    "route",
    [route for route in ROUTES if Credential.API_KEY in route.opens],
    ids=lambda route: f"{route.method} {route.path}",
)
async def test_the_key_opens_every_keyed_route(keyed: Server, route: Route) -> None:
    path = concrete(route, workflow_id="wf_000000000000")
    if route.websocket:
        status, _, _ = await handshake(keyed, f"{path}?api_key={KEY}")
        assert status in {101, 404}  # past authentication: the workflow does not exist
        return
    async with keyed.client(api_key=KEY) as http:
        if route.stream:  # an event stream never ends by itself: its head is the answer
            async with http.stream(route.method, path) as streamed:
                status, text = streamed.status_code, ""
        else:
            response = await http.request(route.method, path)
            status, text = response.status_code, response.text
    assert status != 401, (route, text)


async def test_unknown_paths_are_authenticated_before_they_are_404(keyed: Server) -> None:
    async with keyed.client() as http:
        error_body(await http.get("/api/v1/nothing"), 401)
    async with keyed.client(api_key=KEY) as http:
        error_body(await http.get("/api/v1/nothing"), 404)


# --- one error renderer -----------------------------------------------------------------


async def test_unknown_route_is_404_in_felix_words(client: httpx.AsyncClient) -> None:
    body = error_body(await client.get("/api/v1/nothing"), 404)
    assert body == {"error": "not_found", "message": "no route at '/api/v1/nothing'"}
    error_body(await client.get("/api/v1/workflows/"), 404)  # no redirect to another path


async def test_wrong_method_is_405_with_allow(client: httpx.AsyncClient) -> None:
    response = await client.put("/api/v1/workflows")
    body = error_body(response, 405)
    assert body["error"] == "method_not_allowed"
    assert body["message"] == "'PUT' is not served at '/api/v1/workflows'; use GET, POST, HEAD"
    assert response.headers["allow"] == "GET, POST, HEAD"
    response = await client.get("/api/v1/workflows/wf_1/tokens")
    assert error_body(response, 405)["error"] == "method_not_allowed"
    assert response.headers["allow"] == "POST"


async def test_unknown_websocket_route_is_404_json(server: Server) -> None:
    status, body, _ = await handshake(server, "/api/v1/ws/elsewhere")
    assert (status, body["error"]) == (404, "not_found")


# --- one workflow-id check ---------------------------------------------------------------


async def test_an_invalid_id_is_named_as_such(server: Server, client: httpx.AsyncClient) -> None:
    expected = "'has space' is not a valid workflow id"
    for method, path in (
        ("GET", "/api/v1/workflows/has%20space"),
        ("GET", "/api/v1/workflows/has%20space/events"),
        ("POST", "/api/v1/workflows/has%20space/events"),
        ("POST", "/api/v1/workflows/has%20space/tokens"),
        ("DELETE", "/api/v1/workflows/has%20space"),
    ):
        body = error_body(await client.request(method, path), 404)
        assert body["error"] == "workflow_not_found"
        assert body["message"].startswith(expected), (method, path, body)
    status, body, _ = await handshake(server, ws_path("has%20space"))
    assert status == 404
    assert body["message"].startswith(expected)
    long = "x" * 200 + "!"
    body = error_body(await client.get(f"/api/v1/workflows/{long}"), 404)
    assert f"'{'x' * 80}…' is not a valid workflow id" in body["message"]


# --- integer and query bounds (issue 15) -------------------------------------------------


async def test_integer_parameters_have_a_length_bound(
    server: Server, client: httpx.AsyncClient
) -> None:
    workflow_id = await create_workflow(client)
    for query, name in (
        (f"limit={'9' * 19}", "limit"),
        (f"offset={'9' * 5000}", "offset"),
    ):
        body = error_body(await client.get(f"/api/v1/workflows?{query}"), 422)
        assert f"'{name}'" in body["message"]
        assert len(body["message"]) < 200
    body = error_body(
        await client.get(f"/api/v1/workflows/{workflow_id}/events?limit={'1' * 30}"), 422
    )
    assert "'limit'" in body["message"]
    # after= is bounded like the rest (issue 15: 422 on REST), not read as "beyond".
    body = error_body(
        await client.get(f"/api/v1/workflows/{workflow_id}/events?after={'9' * 5000}"), 422
    )
    assert "'after'" in body["message"]
    assert len(body["message"]) < 200
    status, body, _ = await handshake(server, ws_path(workflow_id, f"after={'9' * 5000}"))
    assert (status, body["error"]) == (400, "bad_request")
    assert "'after'" in body["message"]
    assert len(body["message"]) < 200


async def test_too_many_parameters_with_the_right_key_is_400(keyed: Server) -> None:
    async with keyed.client(api_key=KEY) as http:
        workflow_id = await create_workflow(http)
    crowd = "&".join(f"p{n}=1" for n in range(65))
    for path in (
        ws_path(workflow_id, f"api_key={KEY}&{crowd}"),
        ws_path(workflow_id, f"{crowd}&api_key={KEY}"),
    ):
        status, body, _ = await handshake(keyed, path)
        assert (status, body["error"]) == (400, "bad_request"), body
        assert "parameters" in body["message"]
    # With a wrong key it stays a 401: nothing is answered before authentication.
    status, _, _ = await handshake(keyed, ws_path(workflow_id, f"api_key=wrong&{crowd}"))
    assert status == 401


def test_query_parsing_keeps_credentials_readable() -> None:
    raw = ("&".join(f"p{n}=1" for n in range(100)) + "&api_key=K").encode()
    query = parse_query(raw)
    assert query.first("api_key") == "K"
    with pytest.raises(Exception, match=f"at most {MAX_QUERY_PARAMS}"):
        query.strict()
    assert parse_query(b"%ff=1").problem is not None


async def test_messages_cut_what_they_quote(client: httpx.AsyncClient) -> None:
    body = error_body(await client.post("/api/v1/workflows", json={"y" * 100_000: 1}), 422)
    assert len(body["message"]) < 200
    assert "…" in body["message"]


def test_quote_cuts_at_80() -> None:
    assert quote("abc") == "'abc'"
    assert quote("a" * 81) == repr("a" * 80 + "…")


# --- one bounded body reader --------------------------------------------------------------


async def raw_request(server: Server, head: str) -> list[bytes]:
    """Send a request head only (no body); return the status lines up to a final one."""
    host, port = server.http.removeprefix("http://").split(":")
    stream = await trio.open_tcp_stream(host, int(port))
    async with stream:
        await stream.send_all(head.replace("\n", "\r\n").encode())
        answer = b""
        with trio.fail_after(5):
            while not re.search(rb"HTTP/1.1 [2-5]\d\d .*\r\n\r\n", answer, re.DOTALL):
                chunk = await stream.receive_some(4096)
                if not chunk:
                    break
                answer += chunk
    return re.findall(rb"HTTP/1.1 \d\d\d", answer)


def expect_100(path: str, length: int) -> str:
    return (
        f"POST {path} HTTP/1.1\nHost: x\nContent-Type: application/json\n"
        f"Expect: 100-continue\nContent-Length: {length}\n\n"
    )


ROUTES_WITH_BODIES = ["events", "broadcast", "create"]


def body_path(route: str, workflow_id: str) -> str:
    return {
        "events": f"/api/v1/workflows/{workflow_id}/events",
        "broadcast": "/api/v1/broadcast",
        "create": "/api/v1/workflows",
    }[route]


@pytest.mark.parametrize("route", ROUTES_WITH_BODIES)
async def test_a_body_over_the_limit_is_refused_unread(
    start_server: StartServer, route: str
) -> None:
    server = await start_server(max_body_bytes=1000)
    async with server.client() as http:
        workflow_id = await create_workflow(http)
    # No byte of the body is ever sent: the 413 comes from Content-Length alone.
    statuses = await raw_request(server, expect_100(body_path(route, workflow_id), 5000))
    assert statuses[-1] == b"HTTP/1.1 413", statuses


async def test_a_body_to_a_refused_request_is_refused_unread(keyed: Server) -> None:
    statuses = await raw_request(keyed, expect_100("/api/v1/workflows/wf_x/events", 50))
    assert statuses[-1] == b"HTTP/1.1 401", statuses


@pytest.mark.parametrize("route", ROUTES_WITH_BODIES)
async def test_a_refused_body_is_never_invited(start_server: StartServer, route: str) -> None:
    server = await start_server(max_body_bytes=1000)
    async with server.client() as http:
        workflow_id = await create_workflow(http)
    statuses = await raw_request(server, expect_100(body_path(route, workflow_id), 5000))
    assert statuses == [b"HTTP/1.1 413"]


# --- the route table is the only source of paths -------------------------------------------


async def test_openapi_paths_are_the_route_table(server: Server) -> None:
    document = openapi_document(server.settings)
    described = {
        (method.upper(), path)
        for path, item in document["paths"].items()
        for method in item
        if method != "parameters"
    }
    assert described == {(r.method, r.openapi_path) for r in ROUTES if not r.websocket}


async def test_quart_rules_are_made_from_the_table(server: Server) -> None:
    app = create_app(server.hub)
    rules = {
        (method, re.sub(r"<(?:[^:>]+:)?([^>]+)>", r"{\1}", rule.rule))
        for rule in app.url_map.iter_rules()
        if rule.endpoint != "static"
        for method in rule.methods or ()
        if method not in {"HEAD", "OPTIONS"}
    }
    served = {(r.method, r.openapi_path) for r in ROUTES if r.served_by.value == "quart"}
    assert rules == served


def _path_literals(source: str) -> list[str]:
    tree = ast.parse(source)
    docstrings = {
        id(node.body[0].value)
        for node in ast.walk(tree)
        if isinstance(node, ast.Module | ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef)
        and node.body
        and isinstance(node.body[0], ast.Expr)
        and isinstance(node.body[0].value, ast.Constant)
    }
    return [
        node.value
        for node in ast.walk(tree)
        if isinstance(node, ast.Constant)
        and isinstance(node.value, str)
        and id(node) not in docstrings
        and re.match(r"/(api/|dashboard|healthz|metrics|openapi|docs)", node.value)
    ]


def test_no_module_but_the_table_writes_a_path() -> None:
    web = Path(felix.web.__file__).parent
    table = web / "edge" / "routes.py"
    found = {
        str(path.relative_to(web)): literals
        for path in web.rglob("*.py")
        if path != table and "hypercorn" not in path.parts
        if (literals := _path_literals(path.read_text()))
    }
    assert found == {}


def test_match_finds_every_route_and_refuses_the_rest() -> None:
    for route in ROUTES:
        found = match(
            "GET" if route.websocket else route.method, concrete(route), websocket=route.websocket
        )
        assert found.route == route
    assert match("HEAD", "/api/v1/workflows").route.name == "list_workflows"
    assert match("POST", "/dashboard/session").route.name == "dashboard_sign_in"
    assert match("GET", "/dashboard/../x").route.name == "dashboard_file"
    with pytest.raises(RouteNotFound):
        match("GET", "/api/v1/ws/workflows/x")  # a WebSocket path over plain HTTP
    with pytest.raises(MethodNotAllowed) as refused:
        match("PATCH", "/api/v1/workflows/x")
    assert refused.value.allow == ("DELETE", "GET", "HEAD")


def test_the_api_reference_lists_the_route_table() -> None:
    page = Path(__file__).parents[2] / "docs" / "reference" / "api.md"
    section = page.read_text().split("### Routes and their policies", 1)[1].split("\n### ", 1)[0]
    listed = set(re.findall(r"^\| `([A-Z]+) (/[^`]*)` \|", section, re.MULTILINE))
    table = {("WS" if r.websocket else r.method, r.openapi_path) for r in ROUTES}
    assert listed == table


# --- one 500, logged once ------------------------------------------------------------------


async def test_an_unexpected_error_is_one_500_logged_once(
    start_server: StartServer, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    async def broken(*args: Any, **kwargs: Any) -> Any:
        raise RuntimeError("boom")

    monkeypatch.setitem(rest.VIEWS, "stats", broken)  # served by Quart
    monkeypatch.setattr(edge_app, "publish_events", broken)  # served by the edge
    server = await start_server()
    async with server.client() as http:
        workflow_id = await create_workflow(http)
        for method, path in (
            ("GET", "/api/v1/stats"),
            ("POST", f"/api/v1/workflows/{workflow_id}/events"),
        ):
            caplog.clear()
            body = error_body(await http.request(method, path, json={}), 500)
            assert body == {"error": "internal_error", "message": "internal server error"}
            logged = [r for r in caplog.records if r.exc_info and "boom" in str(r.exc_info[1])]
            assert len(logged) == 1, (path, caplog.records)
            assert "boom" not in str(body)
