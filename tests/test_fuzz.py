"""Hostile input at every REST route and at the WebSocket, property-based.

Each hypothesis example starts one real server (port 0) and throws a list of
hostile requests at it over raw sockets, so nothing is normalised on the way:
random JSON of every shape, deep nesting, huge numbers and strings, invalid
UTF-8, binary and malformed frames, truncated bodies, wrong content types,
path tricks in workflow ids, duplicate keys, forged tokens. Meanwhile a witness
client is subscribed to a workflow of its own for the whole example. Properties:

- the server never answers 500 (nor any 5xx), and its errors are the
  contract's JSON ``{"error", "message"}``;
- it keeps serving (``/healthz``) and never crashes;
- the witness receives every event published during the example, in order,
  with no gap: its stream is unaffected by what the other clients do;
- no task is leaked: once every client has left, no WebSocket task remains.

Bounded by default so that this file runs in well under a minute;
``FELIX_FUZZ_EXAMPLES`` raises the number of examples per test (``nox -s
fuzz``). No schema is used: this file throws what a schema cannot describe
(bytes, framing, frames); schema-driven fuzzing of the REST API against an
OpenAPI description (schemathesis) is a separate, complementary job.

Two defects it found have their own tests below: an h2c upgrade that pinned a
task the server could not cancel (felix.web.hypercorn.http_close now bounds its
shield) and a message after one over the size limit that stopped the whole
server (felix.web.hypercorn.ws_stream).
"""

from __future__ import annotations

import json
import os
import secrets
import struct
import subprocess
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import attrs
import hypothesis.strategies as st
import trio
from hypothesis import HealthCheck, event, given, note, settings
from trio_websocket import open_websocket_url

import felix
from felix.web import serve
from tests.conftest import run_hub, wait_until, websocket_tasks

#: Examples per test; each example is one server and a list of hostile inputs.
EXAMPLES = int(os.environ.get("FELIX_FUZZ_EXAMPLES", "40"))
#: Most hostile inputs per example.
BATCH = int(os.environ.get("FELIX_FUZZ_BATCH", "16"))

KEY = "fuzz-key-0123456789abcdef"
#: Placeholders replaced at run time by values only the running server knows.
KEY_MARK, TOKEN_MARK, TARGET_MARK = b"<KEY>", b"<TOKEN>", b"<TARGET>"
MAX_BODY = 64 * 1024
MAX_FRAME = 16 * 1024
#: Seconds one example may take before it fails (instead of hanging the run).
SESSION_TIMEOUT = 60
PING_TIMEOUT = 1.0

FUZZ_SETTINGS = settings(
    max_examples=EXAMPLES,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)


# --- the server, the witness and the checks after each example ---------------------------


@attrs.define
class Running:
    hub: felix.Hub
    address: tuple[str, int]
    http: str
    token: str
    target: str


@attrs.define
class Witness:
    """A client subscribed to its own workflow for the whole example."""

    workflow_id: str
    seen: list[dict[str, Any]] = attrs.Factory(list)
    published: int = 0


@asynccontextmanager
async def fuzzed_server() -> AsyncIterator[tuple[Running, Witness]]:
    """A keyed server with a target workflow and a witness reading its own stream.

    On exit: the witness got every event in order, the server still answers,
    and no WebSocket task is left.
    """
    settings = felix.Settings(
        host="127.0.0.1",
        port=0,
        api_keys=(KEY,),
        max_body_bytes=MAX_BODY,
        max_event_bytes=MAX_BODY // 2,
        max_client_frame_bytes=MAX_FRAME,
        keep_alive_timeout=1.0,
        ping_interval=60,
        # A connection that ends while its first ping is being sent leaves the
        # ping task asleep for up to ping_timeout (fix_dead_peers); keep it short.
        ping_timeout=PING_TIMEOUT,
    )
    async with trio.open_nursery() as nursery:
        hub: felix.Hub = await nursery.start(run_hub, settings)
        binds: list[str] = await nursery.start(serve, hub, settings)
        http = binds[0]
        host, port = http.rsplit("//", 1)[1].rsplit(":", 1)
        target = (await hub.create_workflow(workflow_id="target")).workflow_id
        witness = Witness(f"witness_{secrets.token_hex(6)}")
        await hub.create_workflow(workflow_id=witness.workflow_id)
        token = await _mint(http, target)
        ws_url = f"{http.replace('http', 'ws', 1)}/api/v1/ws/workflows/{witness.workflow_id}"
        async with open_websocket_url(f"{ws_url}?after=0&api_key={KEY}") as ws:

            async def read() -> None:
                while True:
                    witness.seen.append(json.loads(await ws.get_message()))

            async with trio.open_nursery() as readers:
                readers.start_soon(read)
                yield Running(hub, (host, int(port)), http, token, target), witness
                with trio.fail_after(10):
                    while len([m for m in witness.seen if "seq" in m]) < witness.published:
                        await trio.sleep(0.01)
                readers.cancel_scope.cancel()
        # Properties that hold whatever was thrown at the server.
        events = [message for message in witness.seen if "seq" in message]
        assert witness.seen[0]["type"] == "connected"
        assert [event["seq"] for event in events] == list(range(1, witness.published + 1))
        assert [event["content"] for event in events] == [
            f"witness {i}" for i in range(witness.published)
        ]
        status, _ = await http_exchange((host, int(port)), b"GET /healthz HTTP/1.1\r\n\r\n")
        assert status == 200
        await wait_until(lambda: websocket_tasks() == [], timeout=PING_TIMEOUT + 5)
        nursery.cancel_scope.cancel()


async def _mint(http: str, workflow_id: str) -> str:
    import httpx

    async with httpx.AsyncClient(base_url=http, headers={"X-API-Key": KEY}) as client:
        response = await client.post(f"/api/v1/workflows/{workflow_id}/tokens")
    assert response.status_code == 201
    token: str = response.json()["token"]
    return token


async def publish_witness(running: Running, witness: Witness) -> None:
    """Publish the witness's next event, as a well-behaved producer would."""
    body = json.dumps({"type": "synthesis", "content": f"witness {witness.published}"})
    request = (
        f"POST /api/v1/workflows/{witness.workflow_id}/events HTTP/1.1\r\n"
        f"X-API-Key: {KEY}\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(body)}\r\n\r\n{body}"
    ).encode()
    status, _ = await http_exchange(running.address, request)
    assert status == 202
    witness.published += 1


def substitute(data: bytes, running: Running) -> bytes:
    return (
        data.replace(KEY_MARK, KEY.encode())
        .replace(TOKEN_MARK, running.token.encode())
        .replace(TARGET_MARK, running.target.encode())
    )


# --- raw HTTP ---------------------------------------------------------------------------


async def _send_all(sock: trio.socket.SocketType, data: bytes) -> None:
    view = memoryview(data)
    with trio.fail_after(10):
        while view:
            sent = await sock.send(view)
            view = view[sent:]


async def _read_to_eof(sock: trio.socket.SocketType, limit: int = 4 * 1024 * 1024) -> bytes:
    answer = b""
    with trio.move_on_after(10) as scope:
        while len(answer) < limit:
            try:
                chunk = await sock.recv(65536)
            except OSError:  # reset by the server: what came before stands
                break
            if not chunk:
                break
            answer += chunk
    assert not scope.cancelled_caught, f"the server neither answered nor closed: {answer[:200]!r}"
    return answer


async def http_exchange(
    address: tuple[str, int], request: bytes, *, half_close: bool = False
) -> tuple[int | None, bytes]:
    """Send raw bytes with ``Connection: close``; return the status (None if none) and body."""
    if b"\r\n\r\n" in request:
        head, _, rest = request.partition(b"\r\n\r\n")
        request = head + b"\r\nHost: fuzz\r\nConnection: close\r\n\r\n" + rest
    sock = trio.socket.socket()
    try:
        await sock.connect(address)
        try:
            await _send_all(sock, request)
            if half_close:
                sock.shutdown(trio.socket.SHUT_WR)
        except OSError:
            pass  # the server answered early (413, 401) and closed: read the answer
        answer = await _read_to_eof(sock)
    finally:
        sock.close()
    if not answer:
        return None, b""
    assert answer.startswith(b"HTTP/1.1 "), answer[:200]
    head, _, body = answer.partition(b"\r\n\r\n")
    status = int(head.split(b" ", 2)[1])
    while 100 <= status < 200 and body.startswith(b"HTTP/1.1 "):  # 100 Continue, then the answer
        head, _, body = body.partition(b"\r\n\r\n")
        status = int(head.split(b" ", 2)[1])
    headers = dict(
        line.split(b":", 1) for line in head.split(b"\r\n")[1:] if b":" in line
    )  # last one wins; enough here
    lowered = {name.strip().lower(): value.strip() for name, value in headers.items()}
    if status >= 400 and lowered.get(b"content-type") == b"application/json" and body:
        error = json.loads(body)
        assert isinstance(error, dict)
        assert set(error) >= {"error", "message"}, error
    return status, body


# --- strategies: hostile pieces ---------------------------------------------------------

json_scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.integers(min_value=-(2**200), max_value=2**200),
    st.floats(allow_nan=False, allow_infinity=False),
    st.text(max_size=40),
)
json_values = st.recursive(
    json_scalars,
    lambda children: st.one_of(
        st.lists(children, max_size=5), st.dictionaries(st.text(max_size=12), children, max_size=5)
    ),
    max_leaves=25,
)
event_types = st.sampled_from(
    [
        "workflow_status",
        "agent_spawned",
        "agent_output",
        "synthesis",
        "error",
        "completed",
        "connected",
        "pong",
        "command_error",
        "notice",
        "",
        "x" * 300,
    ]
)
field_names = st.sampled_from(
    [
        "status",
        "agent_id",
        "agent_type",
        "spawn_time",
        "content",
        "confidence",
        "message",
        "fatal",
        "result",
        "final",
        "agents_synthesized",
        "seq",
        "workflow_id",
        "timestamp",
        "type",
    ]
)
eventish = st.builds(
    lambda kind, fields: {"type": kind, **fields},
    event_types,
    st.dictionaries(field_names | st.text(max_size=8), json_values, max_size=6),
)


def _json_text(value: Any) -> bytes:
    return json.dumps(value, ensure_ascii=False).encode("utf-8", "surrogatepass")


def _repeat(piece: bytes, count: int) -> bytes:
    return piece * count


bodies = st.one_of(
    json_values.map(_json_text),
    eventish.map(_json_text),
    st.lists(eventish, max_size=8).map(_json_text),
    st.integers(1, 200_000).map(lambda n: b"[" * n + b"]" * n),  # deep nesting
    st.integers(1, 200_000).map(lambda n: b'{"a":' * n),  # deep and unclosed
    st.integers(1, 10_000).map(lambda n: b"1" * n),  # huge integers
    st.sampled_from([b"1e999999", b"-1e400", b"NaN", b"Infinity", b"-0", b"0.0e-999999"]),
    st.integers(1, 3 * MAX_BODY).map(
        lambda n: b'{"type":"synthesis","content":"' + b"a" * n + b'"}'
    ),
    st.binary(max_size=200),  # invalid UTF-8, mostly
    st.sampled_from(
        [
            b'{"type":"synthesis","type":"error","content":"dup"}',
            b'{"type":"synthesis","content":"\\ud800"}',
            b'{"type":"synthesis","content":"\xff\xfe"}',
            b"\xef\xbb\xbf{}",  # a BOM
            b'{"type": "synthesis", "content": "x"',  # truncated
            b'[{"type": "synthesis", "content": "x"}, ',
            b"",
            b"   ",
            b"null",
            b"[]",
            b'{"ttl_seconds": 1e308}',
            b'{"ttl_seconds": 99999999999999999999999}',
            b'{"ttl_seconds": -1}',
            b'{"workflow_id": "../etc"}',
            b'{"workflow_id": "<TARGET>"}',
            b'{"type":"completed"}',
            b'{"type":"workflow_status","status":"cancelled"}',
        ]
    ),
    st.builds(lambda value, cut: _json_text(value)[:cut], json_values, st.integers(0, 30)),
)

workflow_ids = st.one_of(
    st.just(TARGET_MARK),
    st.sampled_from(
        [
            b"nope",
            b"..",
            b".",
            b"../..",
            b"..%2F..%2Fhealthz",
            b"%2E%2E",
            b"a%2Fb",
            b"%2F",
            b"a%00b",
            b"%",
            b"%zz",
            b"%C3%A9",
            b"%E2%80%AE",  # right-to-left override
            b"%F0%9F%98%80",
            b"%FF%FE",
            b"wf_\xc3\xa9",  # raw UTF-8 in the request line
            b"a b",
            b"<TARGET>/../<TARGET>",
            b"<TARGET>%2F..",
            b"<TARGET>;x=1",
            b"<TARGET>#frag",
            b"",
        ]
    ),
    st.integers(65, 20_000).map(lambda n: b"w" * n),  # very long
    st.text(
        alphabet=st.characters(codec="utf-8", exclude_categories=["Cs"]), min_size=1, max_size=20
    ).map(lambda text: "".join(f"%{byte:02X}" for byte in text.encode()).encode()),
)

queries = st.one_of(
    st.just(b""),
    st.sampled_from(
        [
            b"?after=-1",
            b"?after=99999999999999999999999999",
            b"?limit=0",
            b"?limit=100000000000000000000",
            b"?offset=-5",
            b"?status=running&status=failed",
            b"?status=%FF",
            b"?types=a,,b",
            b"?api_key=<KEY>",
            b"?token=<TOKEN>",
            b"?%",
            b"?=&&==",
            b"?" + b"a=1&" * 2000,
        ]
    ),
    st.binary(max_size=60).map(lambda raw: b"?" + raw.replace(b" ", b"+")),
)

routes = st.sampled_from(
    [
        (b"POST", b"/api/v1/workflows"),
        (b"GET", b"/api/v1/workflows"),
        (b"GET", b"/api/v1/workflows/{id}"),
        (b"GET", b"/api/v1/workflows/{id}/events"),
        (b"POST", b"/api/v1/workflows/{id}/events"),
        (b"DELETE", b"/api/v1/workflows/{id}"),
        (b"POST", b"/api/v1/workflows/{id}/tokens"),
        (b"POST", b"/api/v1/broadcast"),
        (b"GET", b"/api/v1/connections"),
        (b"GET", b"/api/v1/stats"),
        (b"GET", b"/healthz"),
        (b"PUT", b"/api/v1/workflows/{id}"),
        (b"PATCH", b"/api/v1/broadcast"),
        (b"OPTIONS", b"/api/v1/workflows/{id}/events"),
        (b"HEAD", b"/api/v1/workflows"),
        (b"GET", b"/api/v1/ws/workflows/{id}"),  # a WebSocket path over plain HTTP
        (b"BREW", b"/api/v1/workflows"),
        (b"GET", b"//api/v1/workflows"),
        (b"GET", b"/api/v1/../v1/workflows"),
        (b"GET", b"*"),
        (b"GET", b"http://example.com/api/v1/workflows"),
    ]
)

credentials = st.sampled_from(
    [
        b"X-API-Key: <KEY>\r\n",
        b"X-API-Key: <KEY>\r\n",
        b"Authorization: Bearer <KEY>\r\n",
        b"Authorization: bearer <KEY>\r\n",
        b"",
        b"X-API-Key: wrong\r\n",
        b"Authorization: Bearer <TOKEN>\r\n",
        b"Authorization: Basic Zm9vOmJhcg==\r\n",
        b"Authorization: Bearer\r\n",
        b"X-API-Key: <KEY>\r\nX-API-Key: wrong\r\n",
        b"X-API-Key: \xff\xfe\r\n",
    ]
)

content_types = st.sampled_from(
    [
        b"Content-Type: application/json\r\n",
        b"Content-Type: application/json\r\n",
        b"",
        b"Content-Type: text/plain\r\n",
        b"Content-Type: application/x-www-form-urlencoded\r\n",
        b"Content-Type: multipart/form-data; boundary=xyz\r\n",
        b"Content-Type: application/json; charset=latin-1\r\n",
        b"Content-Type: \x00\r\n",
        b"Content-Encoding: gzip\r\nContent-Type: application/json\r\n",
        b"Expect: 100-continue\r\nContent-Type: application/json\r\n",
    ]
)


@attrs.frozen
class HostileRequest:
    method: bytes
    target: bytes
    headers: bytes
    body: bytes
    #: "exact", "none", "chunked", "short" (declares more than it sends, then
    #: half-closes), "long" (declares less: the rest looks like a next request),
    #: or "garbage".
    framing: str

    def __repr__(self) -> str:
        # Bodies can be megabytes; a failing example should still print.
        return (
            f"HostileRequest({self.method!r}, {self.target[:200]!r}, {self.headers!r}, "
            f"body={self.body[:200]!r} ({len(self.body)} bytes), framing={self.framing!r})"
        )

    def _repr_pretty_(self, printer: Any, cycle: bool) -> None:
        # Hypothesis prints examples with its pretty printer, which asks for this.
        printer.text(repr(self))

    def substituted(self, running: Running) -> HostileRequest:
        """This request with the placeholders filled in (before lengths are computed)."""
        return attrs.evolve(
            self,
            target=substitute(self.target, running),
            headers=substitute(self.headers, running),
            body=substitute(self.body, running),
        )

    def encode(self) -> bytes:
        head = self.method + b" " + self.target + b" HTTP/1.1\r\n" + self.headers
        body = self.body
        if self.framing == "exact":
            head += b"Content-Length: %d\r\n" % len(body)
        elif self.framing == "chunked":
            head += b"Transfer-Encoding: chunked\r\n"
            body = (b"%x\r\n" % len(body) + body + b"\r\n" if body else b"") + b"0\r\n\r\n"
        elif self.framing == "short":
            head += b"Content-Length: %d\r\n" % (len(body) + 1000)
        elif self.framing == "long":
            head += b"Content-Length: %d\r\n" % (len(body) // 2)
        elif self.framing == "garbage":
            head += b"Content-Length: 12abc\r\n"
        return head.rstrip(b"\r\n") + b"\r\n\r\n" + body


hostile_requests = st.builds(
    lambda route, workflow_id, query, credential, content_type, body, framing: HostileRequest(
        method=route[0],
        target=route[1].replace(b"{id}", workflow_id) + query,
        headers=credential + content_type,
        body=body,
        framing=framing,
    ),
    routes,
    workflow_ids,
    queries,
    credentials,
    content_types,
    bodies,
    st.sampled_from(["exact"] * 6 + ["none", "chunked", "short", "long", "garbage"]),
)

#: Requests that get past HTTP parsing and authentication, so that the
#: handlers themselves (validation, the hub) see the hostile bodies.
plausible_requests = st.builds(
    lambda route, workflow_id, body: HostileRequest(
        method=route[0],
        target=route[1].replace(b"{id}", workflow_id),
        headers=b"X-API-Key: <KEY>\r\nContent-Type: application/json\r\n",
        body=body,
        framing="exact",
    ),
    st.sampled_from(
        [
            (b"POST", b"/api/v1/workflows/{id}/events"),
            (b"POST", b"/api/v1/workflows/{id}/events"),
            (b"POST", b"/api/v1/workflows"),
            (b"POST", b"/api/v1/broadcast"),
            (b"POST", b"/api/v1/workflows/{id}/tokens"),
            (b"GET", b"/api/v1/workflows/{id}"),
            (b"GET", b"/api/v1/workflows/{id}/events?after=1&limit=5"),
            (b"DELETE", b"/api/v1/workflows/{id}"),
        ]
    ),
    st.sampled_from([TARGET_MARK, TARGET_MARK, b"other", b"nope"]),
    st.one_of(
        eventish.map(_json_text),
        st.lists(eventish, min_size=1, max_size=8).map(_json_text),
        bodies,
        st.dictionaries(
            st.sampled_from(["workflow_id", "task", "metadata", "ttl_seconds"]),
            json_values | st.sampled_from(["other", "<TARGET>", 60]),
            max_size=3,
        ).map(_json_text),
    ),
)

# --- REST -------------------------------------------------------------------------------


async def rest_session(requests: list[HostileRequest]) -> None:
    with trio.fail_after(SESSION_TIMEOUT):
        await _rest_session(requests)


async def _rest_session(requests: list[HostileRequest]) -> None:
    async with fuzzed_server() as (running, witness):
        for request in requests:
            note(repr(request))
            raw = request.substituted(running).encode()
            status, _ = await http_exchange(
                running.address, raw, half_close=request.framing == "short"
            )
            assert status is None or status < 500, (status, raw[:300])
            event(f"HTTP {status or 'closed'}")
            await publish_witness(running, witness)


@FUZZ_SETTINGS
@given(st.lists(plausible_requests | hostile_requests, min_size=1, max_size=BATCH))
def test_rest_survives_hostile_requests(requests: list[HostileRequest]) -> None:
    trio.run(rest_session, requests)


# --- WebSocket --------------------------------------------------------------------------


def frame(
    opcode: int, payload: bytes, *, fin: bool = True, rsv: int = 0, mask: bool = True
) -> bytes:
    """One client frame (masked, as RFC 6455 requires of clients, unless told not to)."""
    first = (0x80 if fin else 0) | (rsv << 4) | opcode
    length = len(payload)
    if length < 126:
        header = struct.pack("!BB", first, (0x80 if mask else 0) | length)
    elif length < 2**16:
        header = struct.pack("!BBH", first, (0x80 if mask else 0) | 126, length)
    else:
        header = struct.pack("!BBQ", first, (0x80 if mask else 0) | 127, length)
    if not mask:
        return header + payload
    key = secrets.token_bytes(4)
    return header + key + bytes(b ^ key[i % 4] for i, b in enumerate(payload))


#: Well-formed messages: each must get exactly one reply, in order.
good_messages = st.one_of(
    st.just((1, b"ping")),
    st.just((1, b'{"type": "ping"}')),
    json_values.map(lambda value: (1, json.dumps(value).encode())),
    st.text(st.characters(codec="utf-8"), max_size=200).map(lambda text: (1, text.encode())),
    st.binary(max_size=200).map(lambda data: (2, data)),
)


#: Frames that break the protocol or the limits: the server may close, never crash.
bad_frames = st.one_of(
    st.binary(max_size=40).map(lambda data: frame(1, b"\xff" + data)),  # invalid UTF-8
    st.just(frame(1, b"x" * (MAX_FRAME + 1))),  # over the frame limit: 1009
    st.just(frame(2, b"\x00" * (MAX_FRAME * 2))),
    st.just(frame(1, b"ping", mask=False)),  # unmasked
    st.just(frame(1, b"ping", rsv=4)),  # a reserved bit
    st.just(frame(1, b"ping", rsv=7)),
    st.sampled_from([3, 4, 5, 6, 7, 11, 12, 13, 14, 15]).map(lambda op: frame(op, b"?")),
    st.just(frame(0, b"continuation without a start")),
    st.just(frame(1, b"part", fin=False) + frame(1, b"another start")),
    st.just(frame(1, b"part", fin=False) + frame(9, b"ping between fragments") + frame(0, b"end")),
    st.just(frame(9, b"p" * 126)),  # control frame too long
    st.just(frame(9, b"", fin=False)),  # fragmented control frame
    st.just(frame(10, b"unsolicited pong")),
    st.builds(
        lambda code, reason: frame(8, struct.pack("!H", code) + reason),
        st.integers(0, 65535),
        st.binary(max_size=30),
    ),
    st.just(frame(8, b"\x03")),  # a one-byte close payload
    st.just(struct.pack("!BBQ", 0x81, 0xFF, 2**63 - 1) + b"mask"),  # claims 8 EiB
    st.just(frame(1, b"truncated payload")[:-5]),
    st.binary(min_size=1, max_size=100),  # noise
)

handshake_paths = st.one_of(
    st.builds(lambda wid, q: b"/api/v1/ws/workflows/" + wid + q, workflow_ids, queries),
    st.builds(lambda q: b"/api/v1/ws/system/events" + q, queries),
    st.sampled_from(
        [
            b"/api/v1/ws/workflows/<TARGET>?token=<TOKEN>",
            b"/api/v1/ws/workflows/<TARGET>?token=<TOKEN>&after=0",
            b"/api/v1/ws/workflows/<TARGET>?token=<TOKEN>x",
            b"/api/v1/ws/workflows/<TARGET>?token=%00",
            b"/api/v1/ws/workflows/<TARGET>?token=" + b"A" * 3000,
            b"/api/v1/ws/system/events?token=<TOKEN>",
            b"/api/v1/ws/workflows/nope?token=<TOKEN>",
            b"/api/v1/ws/workflows/<TARGET>?api_key=<KEY>&api_key=<KEY>",
            b"/api/v1/ws/workflows/<TARGET>?api_key=<KEY>&types=" + b"a," * 500,
            b"/api/v1/ws/workflows/<TARGET>/extra?api_key=<KEY>",
            b"/api/v1/ws/nowhere?api_key=<KEY>",
            b"/api/v1/workflows?api_key=<KEY>",
        ]
    ),
)

handshake_headers = st.lists(
    st.sampled_from(
        [
            b"X-API-Key: <KEY>\r\n",
            b"Authorization: Bearer <KEY>\r\n",
            b"Origin: http://evil.example\r\n",
            b"Origin: null\r\n",
            b"Origin: \xff\r\n",
            b"Sec-WebSocket-Extensions: permessage-deflate; client_max_window_bits=99\r\n",
            b"Sec-WebSocket-Extensions: permessage-deflate; server_max_window_bits\r\n",
            b"Sec-WebSocket-Extensions: x-unknown, ,;;\r\n",
            b"Sec-WebSocket-Protocol: chat, , superchat\r\n",
        ]
    ),
    max_size=3,
)

UPGRADE = (
    b"Upgrade: websocket\r\nConnection: Upgrade\r\n"
    b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n"
)
BROKEN_UPGRADES = [
    b"Upgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Version: 13\r\n",  # no key
    b"Upgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: short\r\n"
    b"Sec-WebSocket-Version: 13\r\n",
    b"Upgrade: websocket\r\nConnection: Upgrade\r\n"
    b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 8\r\n",
    # Not "Upgrade: h2c": see test_h2c_upgrade_does_not_pin_the_server.
]


@attrs.frozen
class HostileConnection:
    path: bytes
    headers: list[bytes]
    upgrade: bytes
    #: Well-formed messages first (each must be answered), then bad frames.
    messages: list[tuple[int, bytes]]
    frames: list[bytes]
    #: How the client leaves: "close" (a close frame), "drop" (socket closed), "half".
    ending: str

    def __repr__(self) -> str:
        frames = [f"{item[:40]!r} ({len(item)} bytes)" for item in self.frames]
        messages = [(opcode, payload[:80]) for opcode, payload in self.messages]
        return (
            f"HostileConnection({self.path[:200]!r}, {self.headers!r}, {self.upgrade!r}, "
            f"messages={messages!r}, frames=[{', '.join(frames)}], ending={self.ending!r})"
        )

    def _repr_pretty_(self, printer: Any, cycle: bool) -> None:
        # Hypothesis prints examples with its pretty printer, which asks for this.
        printer.text(repr(self))


hostile_connections = st.builds(
    HostileConnection,
    path=handshake_paths,
    headers=handshake_headers,
    upgrade=st.sampled_from([UPGRADE] * 4 + BROKEN_UPGRADES),
    messages=st.lists(good_messages, max_size=6),
    frames=st.lists(bad_frames, max_size=3),
    ending=st.sampled_from(["close", "drop", "half"]),
)

#: Connections that are accepted, so that the frames reach the open WebSocket.
plausible_connections = st.builds(
    HostileConnection,
    path=st.sampled_from(
        [
            b"/api/v1/ws/workflows/<TARGET>?api_key=<KEY>",
            b"/api/v1/ws/workflows/<TARGET>?token=<TOKEN>&after=0",
            b"/api/v1/ws/workflows/<TARGET>?api_key=<KEY>&types=synthesis,pong",
            b"/api/v1/ws/system/events?api_key=<KEY>",
        ]
    ),
    headers=st.just([]),
    upgrade=st.just(UPGRADE),
    messages=st.lists(good_messages, max_size=8),
    frames=st.lists(bad_frames, max_size=3),
    ending=st.sampled_from(["close", "drop", "half"]),
)


async def read_frames(sock: trio.socket.SocketType, buffer: bytearray, count: int) -> list[Any]:
    """Read server frames until ``count`` replies to commands have come (or a close)."""
    replies: list[Any] = []
    with trio.fail_after(10):
        while len(replies) < count:
            while True:
                parsed = _parse_frame(buffer)
                if parsed is not None:
                    break
                chunk = await sock.recv(65536)
                assert chunk, f"the server closed with {count - len(replies)} replies owed"
                buffer += chunk
            opcode, payload = parsed
            assert opcode != 8, f"closed while replies were owed: {payload!r}"
            if opcode != 1:
                continue  # pings
            text = payload.decode()
            if text == "pong":
                replies.append(text)
                continue
            message = json.loads(text)
            if message.get("type") in {"pong", "command_error"}:
                replies.append(message)
    return replies


def _parse_frame(buffer: bytearray) -> tuple[int, bytes] | None:
    if len(buffer) < 2:
        return None
    opcode, length = buffer[0] & 0x0F, buffer[1] & 0x7F
    assert not buffer[1] & 0x80, "server frames are never masked"
    offset = 2
    if length == 126:
        if len(buffer) < 4:
            return None
        (length,) = struct.unpack("!H", buffer[2:4])
        offset = 4
    elif length == 127:
        if len(buffer) < 10:
            return None
        (length,) = struct.unpack("!Q", buffer[2:10])
        offset = 10
    if len(buffer) < offset + length:
        return None
    payload = bytes(buffer[offset : offset + length])
    del buffer[: offset + length]
    return opcode, payload


def expected_reply(opcode: int, payload: bytes) -> str:
    if opcode == 2:
        return "command_error"
    if payload == b"ping":
        return "pong-text"
    try:
        command = json.loads(payload)
    except ValueError:
        return "command_error"
    if isinstance(command, dict) and command.get("type") == "ping":
        return "pong"
    return "command_error"


async def ws_connection(running: Running, connection: HostileConnection) -> None:
    headers = b"".join(connection.headers)
    request = b"GET " + connection.path + b" HTTP/1.1\r\n" + connection.upgrade + headers
    request = substitute(request, running) + b"Host: fuzz\r\n\r\n"
    sock = trio.socket.socket()
    try:
        await sock.connect(running.address)
        await _send_all(sock, request)
        buffer = bytearray()
        with trio.fail_after(10):
            while b"\r\n\r\n" not in buffer:
                chunk = await sock.recv(65536)
                if not chunk:
                    assert not buffer, buffer
                    return  # refused without an answer (a malformed request)
                buffer += chunk
        head, _, rest = bytes(buffer).partition(b"\r\n\r\n")
        status = int(head.split(b" ", 2)[1])
        assert status < 500, head
        event(f"handshake {status}")
        if status != 101:
            return
        buffer = bytearray(rest)
        for opcode, payload in connection.messages:
            await _send_all(sock, frame(opcode, payload))
        replies = await read_frames(sock, buffer, len(connection.messages))
        kinds = ["pong-text" if reply == "pong" else reply["type"] for reply in replies]
        assert kinds == [expected_reply(*message) for message in connection.messages]
        for bad in connection.frames:
            try:
                await _send_all(sock, bad)
            except OSError:
                break  # the server closed on an earlier frame
            if len(bad) > MAX_FRAME:
                # Nothing after a message over the limit: see
                # test_a_message_after_one_too_big_does_not_crash_the_server.
                break
        if connection.ending == "close":
            await _send_all(sock, frame(8, struct.pack("!H", 1000)))
        elif connection.ending == "half":
            sock.shutdown(trio.socket.SHUT_WR)
    except OSError:
        pass  # a reset from the server after a protocol error is fine
    finally:
        sock.close()


async def ws_session(connections: list[HostileConnection]) -> None:
    with trio.fail_after(SESSION_TIMEOUT):
        await _ws_session(connections)


async def _ws_session(connections: list[HostileConnection]) -> None:
    async with fuzzed_server() as (running, witness):
        for connection in connections:
            note(repr(connection))
            await ws_connection(running, connection)
            await publish_witness(running, witness)


@FUZZ_SETTINGS
@given(st.lists(plausible_connections | hostile_connections, min_size=1, max_size=BATCH))
def test_websocket_survives_hostile_clients(connections: list[HostileConnection]) -> None:
    trio.run(ws_session, connections)


# --- a defect the fuzzer found ------------------------------------------------------------

H2C_SCRIPT = """
import os, threading, trio, felix
from felix.web import serve

async def main():
    settings = felix.Settings(host="127.0.0.1", port=0)
    async with felix.open_hub(settings) as hub, trio.open_nursery() as nursery:
        binds = await nursery.start(serve, hub, settings)
        host, port = binds[0].rsplit("//", 1)[1].rsplit(":", 1)
        sock = trio.socket.socket()
        await sock.connect((host, int(port)))
        await sock.send(
            b"GET /healthz HTTP/1.1\\r\\nHost: x\\r\\nUpgrade: h2c\\r\\n"
            b"Connection: Upgrade\\r\\n\\r\\n"
        )
        assert (await sock.recv(1024)).startswith(b"HTTP/1.1 101")
        sock.close()
        await trio.sleep(0.2)
        nursery.cancel_scope.cancel()  # stop the server

threading.Timer(3, lambda: os._exit(1)).start()
trio.run(main)
os._exit(0)
"""


def test_h2c_upgrade_does_not_pin_the_server() -> None:
    # One unauthenticated request with "Upgrade: h2c" whose client then leaves:
    # the server must still stop when cancelled. Run in a subprocess, since a
    # task that ignores cancellation would hang this test run.
    result = subprocess.run(
        [sys.executable, "-c", H2C_SCRIPT], capture_output=True, timeout=30, check=False
    )
    assert result.returncode == 0, result.stderr.decode()[-2000:]


async def _too_big_then_another_type() -> None:
    settings = felix.Settings(host="127.0.0.1", port=0, max_client_frame_bytes=MAX_FRAME)
    with trio.fail_after(10):
        await _too_big_then_another_type_on(settings)


async def _too_big_then_another_type_on(settings: felix.Settings) -> None:
    async with felix.open_hub(settings) as hub, trio.open_nursery() as nursery:
        binds: list[str] = await nursery.start(serve, hub, settings)
        await hub.create_workflow(workflow_id="w")
        host, port = binds[0].rsplit("//", 1)[1].rsplit(":", 1)
        sock = trio.socket.socket()
        try:
            await sock.connect((host, int(port)))
            await _send_all(
                sock, b"GET /api/v1/ws/workflows/w HTTP/1.1\r\nHost: x\r\n" + UPGRADE + b"\r\n"
            )
            answer = b""
            while b"\r\n\r\n" not in answer:
                answer += await sock.recv(1)
            assert answer.startswith(b"HTTP/1.1 101")
            await _send_all(sock, frame(1, b"x" * (MAX_FRAME + 1)))  # closed with 1009
            await trio.sleep(0.1)  # in another read than the next frame
            await _send_all(sock, frame(2, b"binary"))
            await trio.sleep(0.2)
        finally:
            sock.close()
        status, _ = await http_exchange((host, int(port)), b"GET /healthz HTTP/1.1\r\n\r\n")
        assert status == 200
        nursery.cancel_scope.cancel()


def test_a_message_after_one_too_big_does_not_crash_the_server() -> None:
    # Anyone who may open a WebSocket (a subscribe-token holder, anybody in
    # development mode) sends a message over FELIX_MAX_CLIENT_FRAME_BYTES, then
    # a binary one: the server must close that connection and keep serving.
    trio.run(_too_big_then_another_type)
