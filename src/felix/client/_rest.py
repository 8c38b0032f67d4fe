"""The REST half of the client: :class:`FelixClient` and what its calls answer.

Runs on :class:`httpx.AsyncClient`, so it works under Trio and under asyncio
alike. Touches no WebSocket library.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from contextlib import AbstractAsyncContextManager
from typing import Any, Final, Literal
from urllib.parse import quote, urlsplit, urlunsplit

import httpx

from felix.client._answers import Published, SubscribeToken, WorkflowPage
from felix.client._errors import ApiError, ConnectionFailed, os_reason
from felix.client._resume import Event
from felix.client._run import PublishMode, Run, open_run

__all__ = ["CLIENT_LIMITS", "FelixClient", "Published", "SubscribeToken", "WorkflowPage"]

#: Idle pooled connections are dropped after 2 s: before the server's keep-alive
#: timeout (FELIX_KEEP_ALIVE_TIMEOUT, 5 s by default) closes them. With equal
#: timeouts (httpx's default is 5 s too) a request sent on a connection just as
#: the server closes it fails with "Server disconnected" or a reset.
CLIENT_LIMITS: Final = httpx.Limits(keepalive_expiry=2.0)
_HTTP_SCHEMES: Final = {"http": "http", "https": "https", "ws": "http", "wss": "https"}


def _http_base(url: str) -> str:
    parts = urlsplit(url)
    scheme = _HTTP_SCHEMES.get(parts.scheme.lower())
    if scheme is None or not parts.hostname:
        raise ValueError(f"url must be http://, https://, ws:// or wss:// with a host, got {url!r}")
    return urlunsplit((scheme, parts.netloc, parts.path.rstrip("/"), "", ""))


def _path(workflow_id: str, *rest: str) -> str:
    return "/".join(("/api/v1/workflows", quote(workflow_id, safe=""), *rest))


class FelixClient:
    """A REST client of one Felix server, on :class:`httpx.AsyncClient`.

    Use it as an async context manager: it owns the HTTP connection pool and
    leaving the block closes it (:meth:`aclose`, idempotent). ``api_key`` goes
    in the ``X-API-Key`` header of every request.

    Every method raises :class:`ApiError` for an error answer (with the
    contract's ``status``, ``error`` and ``message``) and
    :class:`ConnectionFailed` when the server cannot be reached. Nothing is
    retried: a publish that failed in transit may or may not have been applied.
    """

    def __init__(
        self,
        base_url: str,
        api_key: str | None = None,
        *,
        timeout: float = 10.0,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        self.base_url = _http_base(base_url)
        #: The key sent with every request (and the producer stream's handshake).
        self.api_key = api_key
        #: Seconds a request (or a connect) may take.
        self.timeout = timeout
        headers = {"X-API-Key": api_key} if api_key else {}
        self._http = httpx.AsyncClient(
            base_url=self.base_url,
            headers=headers,
            timeout=timeout,
            transport=transport,
            limits=CLIENT_LIMITS,
        )

    async def __aenter__(self) -> FelixClient:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        """Close the connection pool. Idempotent."""
        await self._http.aclose()

    def run(
        self,
        task: str | None = None,
        workflow_id: str | None = None,
        metadata: Mapping[str, Any] | None = None,
        *,
        publish: PublishMode = "auto",
    ) -> AbstractAsyncContextManager[Run]:
        """Produce one workflow: ``async with client.run(task=…) as run:``.

        Entering creates the workflow (``workflow_id``, ``task``, ``metadata``
        as for :meth:`create_workflow`) and publishes ``workflow_status``
        running; the block publishes through the :class:`Run`. Leaving it
        publishes ``completed`` with :attr:`Run.result`; an exception from the
        block publishes a fatal ``error`` (the exception's message, its type in
        ``exception`` and its traceback in ``traceback``) and then propagates;
        a cancellation publishes ``workflow_status`` cancelled.

        Each publish carries an idempotency key and is retried with it after a
        dropped connection, a 503 or a full inbox (for up to a minute), so a
        server with idempotent publishes applies every event exactly once.
        ``publish="auto"`` uses the producer stream (one WebSocket for the
        run) when the server has it and REST otherwise; ``"rest"`` always
        posts. The block owns that connection; leaving it closes it.

        Raises :class:`ApiError` (409 for a taken ``workflow_id``, 422 for bad
        input or a bad event) and :class:`ConnectionFailed`.
        """
        return open_run(self, task=task, workflow_id=workflow_id, metadata=metadata, mode=publish)

    async def _request(
        self,
        method: str,
        path: str,
        *,
        json_body: Any = None,
        params: Mapping[str, str | int] | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> Any:
        try:
            response = await self._http.request(
                method,
                path,
                json=json_body,
                params={key: str(value) for key, value in (params or {}).items()},
                headers=headers,
            )
        except httpx.TimeoutException:
            raise ConnectionFailed(self.base_url, "timed out") from None
        except httpx.TransportError as error:
            raise ConnectionFailed(self.base_url, os_reason(error)) from None
        if response.status_code >= 400:
            try:
                body = response.json()
            except ValueError:
                body = None
            if not isinstance(body, dict):
                text = response.text.strip()[:200] or response.reason_phrase
                body = {"error": "http_error", "message": text}
            raise ApiError(
                response.status_code,
                str(body.get("error", "error")),
                str(body.get("message", "")),
                body,
            )
        try:
            return response.json()
        except ValueError:
            raise ApiError(
                response.status_code,
                "invalid_response",
                "the server's answer is not JSON",
                {"text": response.text[:200]},
            ) from None

    async def create_workflow(
        self,
        workflow_id: str | None = None,
        task: str | None = None,
        metadata: Mapping[str, Any] | None = None,
    ) -> dict[str, Any]:
        """Create a pending workflow; returns it. 409 if the id is taken, 422 if invalid."""
        body: dict[str, Any] = {}
        if workflow_id is not None:
            body["workflow_id"] = workflow_id
        if task is not None:
            body["task"] = task
        if metadata is not None:
            body["metadata"] = dict(metadata)
        workflow: dict[str, Any] = await self._request("POST", "/api/v1/workflows", json_body=body)
        return workflow

    async def get_workflow(self, workflow_id: str) -> dict[str, Any]:
        """One workflow with the state its events built (agents, synthesis, result…). 404."""
        workflow: dict[str, Any] = await self._request("GET", _path(workflow_id))
        return workflow

    async def list_workflows(
        self,
        status: str | None = None,
        limit: int = 100,
        offset: int = 0,
        order: Literal["oldest", "newest"] = "oldest",
    ) -> WorkflowPage:
        """One page of workflows, optionally of one ``status``. 422.

        ``order="oldest"`` lists in creation order; ``"newest"`` newest first,
        and ``offset`` then skips the newest.
        """
        params: dict[str, str | int] = {"limit": limit, "offset": offset}
        if status is not None:
            params["status"] = status
        if order != "oldest":
            params["order"] = order
        page = await self._request("GET", "/api/v1/workflows", params=params)
        return WorkflowPage(workflows=list(page["workflows"]), total=int(page["total"]))

    async def publish(
        self,
        workflow_id: str,
        event_or_events: Mapping[str, Any] | Sequence[Mapping[str, Any]],
        *,
        idempotency_key: str | None = None,
    ) -> Published:
        """Publish one event, or a batch (a sequence) all or nothing.

        404 unknown workflow, 409 terminal, 413 too large, 422 invalid (the
        body's ``index`` names the first bad event of a batch).

        With ``idempotency_key`` (1 to 128 of ``A-Za-z0-9_.:-``) a repeat of the
        same publish is applied once: a server with idempotent publishes answers
        the repeat as it answered the first; an older one ignores the header.
        Nothing is retried here; :meth:`run` retries with keys.
        """
        body: Any = (
            dict(event_or_events)
            if isinstance(event_or_events, Mapping)
            else [dict(event) for event in event_or_events]
        )
        headers = {"Idempotency-Key": idempotency_key} if idempotency_key else None
        answer = await self._request(
            "POST", _path(workflow_id, "events"), json_body=body, headers=headers
        )
        return Published(
            accepted=int(answer["accepted"]),
            first_seq=answer.get("first_seq"),
            last_seq=answer.get("last_seq"),
        )

    async def cancel(self, workflow_id: str) -> dict[str, Any]:
        """Cancel a workflow (publishes ``workflow_status`` cancelled). 404, 409 if ended."""
        answer: dict[str, Any] = await self._request("DELETE", _path(workflow_id))
        return answer

    async def mint_token(
        self, workflow_id: str, ttl_seconds: float | None = None
    ) -> SubscribeToken:
        """A subscribe token that opens this workflow's WebSocket (``token=``) only."""
        body: dict[str, Any] = {} if ttl_seconds is None else {"ttl_seconds": ttl_seconds}
        answer = await self._request("POST", _path(workflow_id, "tokens"), json_body=body)
        return SubscribeToken(token=str(answer["token"]), expires_at=str(answer["expires_at"]))

    async def events(
        self, workflow_id: str, after: int = 0, limit: int | None = None
    ) -> list[Event]:
        """Retained events with ``seq > after``, oldest first, at most ``limit``. 404."""
        params: dict[str, str | int] = {"after": after}
        if limit is not None:
            params["limit"] = limit
        answer = await self._request("GET", _path(workflow_id, "events"), params=params)
        return list(answer["events"])
