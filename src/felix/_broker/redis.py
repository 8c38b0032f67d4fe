"""The Redis broker: several Felix nodes sharing workflows through one Redis.

Keys (``felix:`` prefix):

- ``felix:wf:<id>`` — a hash: the record (task, metadata, timestamps, status,
  ``last_seq``) and the derived state (synthesis, result, error), values JSON.
- ``felix:wf:<id>:agents`` — a hash of agent id to the agent's JSON.
- ``felix:wf:<id>:events`` — a stream of the retained events, entry id
  ``<seq>-0``, trimmed to the history size: the history ``after=`` replays.
- ``felix:wf:<id>:keys`` and ``felix:wf:<id>:keyorder`` — the idempotency keys
  the workflow applied: key to answer (body digest, accepted, first and last
  seq), and the keys by the seq they ended at, trimmed to the most recent
  ``idempotency_keys`` by the commit that adds one.
- ``felix:workflows`` — a sorted set of ids in creation order, for listing.
- ``felix:feed`` — a stream every node tails: one entry per committed batch,
  per broadcast and per created workflow, trimmed to ``broker_feed_length``.

Every write is one Lua script, so Redis applies it whole: a commit checks that
the workflow is still at the ``last_seq`` the node built its events on
(optimistic concurrency — ``seq`` is then global and gap-free whichever node
publishes), answers a repeated idempotency key from the key table instead
(before the ``last_seq`` check, so a retry on a stale node is answered too),
appends the events to the workflow's stream and the feed, stores the new state
and the key, and starts the retention TTL of a finished workflow (its keys
included). The state
machine itself stays in Python (:mod:`felix._core.workflow`); Redis only
refuses a commit built on a stale ``last_seq``.

The client is coredis, which runs on anyio and so under Trio; a Redis that
cannot be reached makes every call raise :class:`BrokerUnavailable` (503)
within ``broker_timeout``, and the feed reader reconnects with backoff.
"""

from __future__ import annotations

import contextlib
import json
import logging
import random
import secrets
import time
from collections.abc import AsyncIterator, Awaitable
from contextlib import asynccontextmanager
from typing import Any, Final, TypeVar
from urllib.parse import urlsplit

import coredis
import coredis.exceptions
import trio
from coredis.tokens import PureToken

from felix._broker import Commit, FeedSink, Stored
from felix._core.events import Event, Frame
from felix._core.idempotency import Applied, Claim
from felix._core.workflow import WorkflowState
from felix._errors import (
    BrokerUnavailable,
    CapacityError,
    WorkflowExists,
    WorkflowNotFound,
    cut,
)
from felix._patches import coredis_stream_leak
from felix.settings import Settings

__all__ = ["RedisBroker", "open_redis_broker"]

logger = logging.getLogger("felix.broker")

T = TypeVar("T")

PREFIX: Final = "felix:wf:"
INDEX: Final = "felix:workflows"
COUNTER: Final = "felix:created"
FEED: Final = "felix:feed"

#: Largest ``after`` a stream id can carry; beyond it nothing is newer anyway.
_MAX_SEQ: Final = 2**63 - 2

#: Backoff of the feed reader after a failure: first wait and cap, in seconds.
_BACKOFF_FIRST: Final = 0.05
_BACKOFF_MAX: Final = 2.0

#: Milliseconds a feed read blocks; also how soon an idle node notices an outage.
_FEED_BLOCK_MS: Final = 1000
_FEED_COUNT: Final = 500

#: What "Redis cannot be reached" looks like: refused or dropped connections,
#: no answer in time, a Redis still loading its data after a restart.
_UNREACHABLE: Final = (
    OSError,
    TimeoutError,
    trio.TooSlowError,
    coredis.exceptions.ConnectionError,
    coredis.exceptions.BusyLoadingError,
)

# The record's JSON-valued fields; the others are plain strings or integers.
_JSON_FIELDS: Final = ("task", "metadata", "synthesis", "result", "error")

_CREATE = """
if redis.call('EXISTS', KEYS[1]) == 1 then return 'exists' end
if redis.call('ZCARD', KEYS[2]) >= tonumber(ARGV[1]) then
  -- Finished workflows leave the index only when someone looks: look now.
  for _, id in ipairs(redis.call('ZRANGE', KEYS[2], 0, -1)) do
    if redis.call('EXISTS', ARGV[2] .. id) == 0 then redis.call('ZREM', KEYS[2], id) end
  end
  if redis.call('ZCARD', KEYS[2]) >= tonumber(ARGV[1]) then return 'full' end
end
redis.call('HSET', KEYS[1], unpack(ARGV, 6))
redis.call('ZADD', KEYS[2], redis.call('INCR', KEYS[3]), ARGV[3])
redis.call('XADD', KEYS[4], 'MAXLEN', '~', ARGV[5], '*', 's', ARGV[4])
return 'ok'
"""

_COMMIT = """
local last = redis.call('HGET', KEYS[1], 'last_seq')
if not last then return {'missing'} end
if ARGV[6] ~= '' then
  -- A key already applied wins over everything else: whatever node the
  -- producer retries on, and however stale its copy, it gets the first answer.
  local seen = redis.call('HGET', KEYS[5], ARGV[6])
  if seen then return {'replay', seen} end
end
if last ~= ARGV[1] then return {'conflict', last} end
local i = 10
local n = tonumber(ARGV[9])
if n > 0 then redis.call('HSET', KEYS[1], unpack(ARGV, i, i + 2 * n - 1)) end
i = i + 2 * n
n = tonumber(ARGV[i])
i = i + 1
if n > 0 then redis.call('HSET', KEYS[2], unpack(ARGV, i, i + 2 * n - 1)) end
i = i + 2 * n
local first = i
local seq = tonumber(ARGV[1])
while i <= #ARGV do
  seq = seq + 1
  redis.call('XADD', KEYS[3], 'MAXLEN', ARGV[3], string.format('%d-0', seq), 'e', ARGV[i])
  i = i + 1
end
redis.call('XADD', KEYS[4], 'MAXLEN', '~', ARGV[4], '*', 'w', ARGV[2],
           'e', table.concat(ARGV, '\\n', first, #ARGV))
if ARGV[6] ~= '' then
  -- The key table: key -> answer, and the keys by the seq they ended at,
  -- trimmed to the most recent ARGV[8].
  redis.call('HSET', KEYS[5], ARGV[6], ARGV[7])
  redis.call('ZADD', KEYS[6], seq, ARGV[6])
  -- At most 100 a commit (unpack's stack), so a lowered bound is reached gradually.
  local over = math.min(redis.call('ZCARD', KEYS[6]) - tonumber(ARGV[8]), 100)
  if over > 0 then
    redis.call('HDEL', KEYS[5], unpack(redis.call('ZRANGE', KEYS[6], 0, over - 1)))
    redis.call('ZREMRANGEBYRANK', KEYS[6], 0, over - 1)
  end
end
if ARGV[5] ~= '0' then
  for k = 1, 3 do redis.call('PEXPIRE', KEYS[k], ARGV[5]) end
  for k = 5, 6 do redis.call('PEXPIRE', KEYS[k], ARGV[5]) end
end
return {'ok'}
"""

_LOAD = """
local rec = redis.call('HGETALL', KEYS[1])
if #rec == 0 then return false end
local events = {}
if ARGV[1] == '1' then events = redis.call('XRANGE', KEYS[3], '-', '+') end
return {rec, redis.call('HGETALL', KEYS[2]), events}
"""

_EVENTS = """
if redis.call('EXISTS', KEYS[1]) == 0 then return false end
if ARGV[1] == '' then return {} end
return redis.call('XRANGE', KEYS[2], ARGV[1], '+', 'COUNT', ARGV[2])
"""

_LIST = """
local out = {}
for _, id in ipairs(redis.call('ZRANGE', KEYS[1], 0, -1)) do
  local rec = redis.call('HGETALL', ARGV[1] .. id)
  if #rec == 0 then
    redis.call('ZREM', KEYS[1], id)
  else
    out[#out + 1] = {rec, redis.call('HGETALL', ARGV[1] .. id .. ':agents')}
  end
end
return out
"""


def _keys(workflow_id: str) -> tuple[str, str, str]:
    record = PREFIX + workflow_id
    return record, record + ":agents", record + ":events"


def _key_table(workflow_id: str) -> tuple[str, str]:
    # Idempotency keys: a hash of key -> answer, and a sorted set ordering them.
    record = PREFIX + workflow_id
    return record + ":keys", record + ":keyorder"


def _dump(value: Any) -> str:
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False)


def _pairs(flat: list[Any]) -> dict[str, str]:
    return {str(flat[i]): flat[i + 1] for i in range(0, len(flat), 2)}


def _record(flat_record: list[Any], flat_agents: list[Any]) -> dict[str, Any]:
    raw = _pairs(flat_record)
    record: dict[str, Any] = {
        "workflow_id": raw["workflow_id"],
        "created_at": raw["created_at"],
        "updated_at": raw["updated_at"],
        "status": raw["status"],
        "last_seq": int(raw["last_seq"]),
    }
    for name in _JSON_FIELDS:
        record[name] = json.loads(raw[name])
    agents = {agent_id: json.loads(text) for agent_id, text in _pairs(flat_agents).items()}
    # Creation order, as the in-memory state keeps them.
    record["agents"] = dict(sorted(agents.items(), key=lambda item: item[1]["order"]))
    for agent in record["agents"].values():
        del agent["order"]
    return record


def _events(entries: list[Any]) -> list[Event]:
    return [Event.from_text(_pairs(fields)["e"]) for _entry_id, fields in entries]


def _where(url: str) -> str:
    # Host and port only: a URL may carry a password.
    parts = urlsplit(url)
    if parts.scheme == "unix":
        return parts.path
    return f"{parts.hostname or 'localhost'}:{parts.port or 6379}"


class RedisBroker:
    """The :class:`~felix._broker.Broker` on Redis. Get one from :func:`open_redis_broker`."""

    kind = "redis"

    def __init__(self, client: coredis.Redis[str], feed: coredis.Redis[str], settings: Settings):
        self._redis = client
        self._feed = feed
        self._settings = settings
        self._where = _where(settings.broker)
        #: Names this node on the feed, so it skips its own broadcasts there.
        self.node_id = secrets.token_hex(6)
        self._connected = True
        self._changed_at = time.time()
        self._create = client.register_script(_CREATE)
        self._commit = client.register_script(_COMMIT)
        self._load = client.register_script(_LOAD)
        self._events = client.register_script(_EVENTS)
        self._list = client.register_script(_LIST)

    # --- health ------------------------------------------------------------------

    @property
    def connected(self) -> bool:
        """False from a failed call or feed read until one succeeds again."""
        return self._connected

    def _set_connected(self, connected: bool) -> None:
        if connected != self._connected:
            self._connected = connected
            self._changed_at = time.time()
            if connected:
                logger.warning("Redis at %s is reachable again", self._where)
            else:
                logger.error("Redis at %s cannot be reached", self._where)

    def health(self) -> dict[str, Any]:
        """What ``/healthz`` shows of the broker (never the URL's password)."""
        return {
            "kind": self.kind,
            "address": self._where,
            "connected": self._connected,
            "since": round(self._changed_at, 3),
        }

    async def _call(self, call: Awaitable[T]) -> T:
        # A known outage fails at once; the feed reader finds out when it ends.
        if not self._connected:
            close = getattr(call, "close", None)
            if close is not None:
                close()  # never awaited: spare the "was never awaited" warning
            raise BrokerUnavailable(f"Redis at {self._where} cannot be reached; retry later")
        try:
            with trio.fail_after(self._settings.broker_timeout):
                result = await call
        except _UNREACHABLE as error:
            self._set_connected(False)
            raise BrokerUnavailable(
                f"Redis at {self._where} did not answer ({type(error).__name__}); retry later"
            ) from None
        return result

    # --- workflows ---------------------------------------------------------------

    async def create(self, state: WorkflowState, max_workflows: int, notice: Frame) -> None:
        """Store a new workflow (see :class:`~felix._broker.Broker`)."""
        record, _agents, _events = _keys(state.workflow_id)
        fields: list[str] = []
        for name, value in self._stored_fields(state).items():
            fields += [name, value]
        outcome: Any = await self._call(
            self._create(
                keys=[record, INDEX, COUNTER, FEED],
                args=[
                    str(max_workflows),
                    PREFIX,
                    state.workflow_id,
                    notice.text,
                    str(self._settings.broker_feed_length),
                    *fields,
                ],
            )
        )
        if outcome == "exists":
            raise WorkflowExists(f"workflow {state.workflow_id} already exists")
        if outcome == "full":
            raise CapacityError(
                f"the broker holds {max_workflows} workflows, the limit; "
                "finished ones are forgotten after their retention period"
            )

    @staticmethod
    def _stored_fields(state: WorkflowState) -> dict[str, str]:
        fields = {
            "workflow_id": state.workflow_id,
            "created_at": state.created_at,
            "updated_at": state.updated_at,
            "status": state.status,
            "last_seq": str(state.last_seq),
        }
        for name in _JSON_FIELDS:
            fields[name] = _dump(getattr(state, name))
        return fields

    async def load(self, workflow_id: str) -> Stored | None:
        """The workflow with its retained history, or None if unknown."""
        return await self._read(workflow_id, with_events=True)

    async def view(self, workflow_id: str) -> Stored | None:
        """The workflow's record and derived state, or None if unknown."""
        return await self._read(workflow_id, with_events=False)

    async def _read(self, workflow_id: str, *, with_events: bool) -> Stored | None:
        reply: Any = await self._call(
            self._load(keys=list(_keys(workflow_id)), args=["1" if with_events else "0"])
        )
        if reply is None:
            return None
        flat_record, flat_agents, entries = reply
        return Stored(_record(flat_record, flat_agents), _events(entries))

    async def commit(
        self,
        before: WorkflowState,
        after: WorkflowState,
        events: list[Event],
        retention_seconds: float | None,
        claim: Claim | None = None,
    ) -> Commit:
        """Append ``events`` if the workflow is still at ``before.last_seq``.

        A ``claim`` is checked and stored in the same script (see
        :meth:`felix._broker.Broker.commit`).
        """
        stored = self._stored_fields(after)
        del stored["workflow_id"], stored["created_at"], stored["task"], stored["metadata"]
        record_pairs: list[str] = []
        for name, value in stored.items():
            record_pairs += [name, value]
        touched = {event.fields["agent_id"] for event in events if "agent_id" in event.fields}
        agent_pairs: list[str] = []
        order = list(after.agents)
        for agent_id in touched & after.agents.keys():
            agent = {**after.agents[agent_id], "order": order.index(agent_id)}
            agent_pairs += [agent_id, _dump(agent)]
        ttl = "0" if retention_seconds is None else str(max(1, int(retention_seconds * 1000)))
        reply: Any = await self._call(
            self._commit(
                keys=[*_keys(before.workflow_id), FEED, *_key_table(before.workflow_id)],
                args=[
                    str(before.last_seq),
                    before.workflow_id,
                    str(self._settings.history_size),
                    str(self._settings.broker_feed_length),
                    ttl,
                    claim.key if claim is not None else "",
                    Applied.of(claim.digest, events).encode() if claim is not None else "",
                    str(self._settings.idempotency_keys),
                    str(len(record_pairs) // 2),
                    *record_pairs,
                    str(len(agent_pairs) // 2),
                    *agent_pairs,
                    *(event.frame.text for event in events),
                ],
            )
        )
        if reply[0] == "missing":
            raise WorkflowNotFound(f"workflow {before.workflow_id} not found")
        if reply[0] == "conflict":
            return Commit(committed=False, current_seq=int(reply[1]))
        if reply[0] == "replay":
            return Commit(committed=False, replayed=Applied.decode(reply[1]))
        return Commit(committed=True)

    async def recall(self, workflow_id: str, key: str) -> Applied | None:
        """The answer the publish under ``key`` got, if the workflow applied one."""
        table, _order = _key_table(workflow_id)
        text: str | None = await self._call(self._redis.hget(table, key))
        return None if text is None else Applied.decode(text)

    async def events_after(self, workflow_id: str, after: int, limit: int) -> list[Event] | None:
        """Retained events with ``seq > after``, or None for an unknown workflow."""
        start = f"{after + 1}-0" if after < _MAX_SEQ else ""
        reply: Any = await self._call(
            self._events(
                keys=[PREFIX + workflow_id, PREFIX + workflow_id + ":events"],
                args=[start, str(limit)],
            )
        )
        if reply is None:
            return None
        return _events(reply)

    async def list(self) -> list[Stored]:
        """Every stored workflow, in creation order, without history."""
        reply: Any = await self._call(self._list(keys=[INDEX], args=[PREFIX]))
        return [Stored(_record(flat_record, flat_agents)) for flat_record, flat_agents in reply]

    async def broadcast(self, frame: Frame) -> None:
        """Put a system broadcast on the feed for the other nodes."""
        await self._call(
            self._redis.xadd(
                FEED,
                {"b": frame.text, "n": self.node_id},
                trim_strategy=PureToken.MAXLEN,
                threshold=self._settings.broker_feed_length,
                trim_operator=PureToken.APPROXIMATELY,
            )
        )

    # --- the feed ------------------------------------------------------------------

    async def run(
        self, sink: FeedSink, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED
    ) -> None:
        """Tail the feed for ever, calling ``sink``; reconnects with backoff.

        Starts from the feed's newest entry: what was committed before this
        node looked at a workflow, it reads from that workflow's own stream.
        """
        last_id = await self._feed_head()
        task_status.started()
        backoff = _BACKOFF_FIRST
        while True:
            try:
                with trio.fail_after(self._settings.broker_timeout + _FEED_BLOCK_MS / 1000):
                    reply = await self._feed.xread(
                        {FEED: last_id}, count=_FEED_COUNT, block=_FEED_BLOCK_MS
                    )
            except _UNREACHABLE:
                self._set_connected(False)
                # Full jitter: nodes that lost Redis together do not return together.
                await trio.sleep(random.uniform(0, backoff))
                backoff = min(backoff * 2, _BACKOFF_MAX)
                continue
            backoff = _BACKOFF_FIRST
            if not self._connected:
                self._set_connected(True)
                sink.feed_resumed()
            for entry in (reply or {}).get(FEED, ()):
                last_id = str(entry.identifier)
                self._dispatch(sink, entry.field_values)

    def _dispatch(self, sink: FeedSink, fields: Any) -> None:
        try:
            if "w" in fields:
                events = [Event.from_text(text) for text in fields["e"].split("\n")]
                sink.feed_events(fields["w"], events)
            elif "b" in fields and fields.get("n") != self.node_id:
                text = fields["b"]
                sink.feed_broadcast(Frame.of(json.loads(text)["type"], text))
            elif "s" in fields:
                text = fields["s"]
                sink.feed_system(Frame.of(json.loads(text)["type"], text))
        except Exception:
            # One malformed entry (another version, a hand-made XADD) must not
            # stop the node from hearing every later one.
            logger.exception("skipped a feed entry that cannot be read")

    async def _feed_head(self) -> str:
        entries = await self._call(self._redis.xrevrange(FEED, count=1))
        return str(entries[0].identifier) if entries else "0-0"


def _unreachable(error: BaseException) -> bool:
    if isinstance(error, BaseExceptionGroup):
        return any(_unreachable(inner) for inner in error.exceptions)
    return isinstance(error, (*_UNREACHABLE, BrokerUnavailable))


@asynccontextmanager
async def open_redis_broker(settings: Settings) -> AsyncIterator[RedisBroker]:
    """Connect to the Redis at ``settings.broker``; fails fast if it cannot be reached.

    Raises :class:`BrokerUnavailable` naming the address (never the password).
    """
    coredis_stream_leak.install()
    where = _where(settings.broker)
    try:
        client: coredis.Redis[str] = coredis.Redis.from_url(
            settings.broker, decode_responses=True, connect_timeout=settings.broker_timeout
        )
        feed: coredis.Redis[str] = coredis.Redis.from_url(
            settings.broker, decode_responses=True, connect_timeout=settings.broker_timeout
        )
    except ValueError as error:
        raise BrokerUnavailable(
            f"FELIX_BROKER is not a usable Redis URL: {cut(str(error))}"
        ) from None
    ready = False
    try:
        async with contextlib.AsyncExitStack() as stack:
            await stack.enter_async_context(client)
            await stack.enter_async_context(feed)
            broker = RedisBroker(client, feed, settings)
            await broker._feed_head()
            ready = True
            yield broker
    except BaseException as error:
        # coredis's pools run task groups, so a failure to connect arrives
        # wrapped in exception groups: say plainly what happened instead.
        if not ready and _unreachable(error):
            raise BrokerUnavailable(f"cannot reach Redis at {where}") from None
        raise
