"""The edge: the framework-free front of the web layer, which every request passes.

One route table (:mod:`~felix.web.edge.routes`) with each route's policy, one
``authenticate`` (:mod:`~felix.web.edge.auth`), one error renderer
(:mod:`~felix.web.edge.errors`), one bounded body reader
(:mod:`~felix.web.edge.body`), one workflow-id check and query parser
(:mod:`~felix.web.edge.params`), and the hot paths' own handlers: publish
(:mod:`~felix.web.edge.publish`) and the WebSocket routes
(:mod:`~felix.web.edge.websocket`). :class:`Edge` puts them together in front
of the Quart app (``felix.web.routes``).
"""

from __future__ import annotations

from felix.web.edge.app import CREDENTIAL, Edge
from felix.web.edge.auth import Request, authenticate, check_api_key, key_from_headers
from felix.web.edge.body import read_body
from felix.web.edge.errors import (
    MethodNotAllowed,
    RouteNotFound,
    error_for_status,
    quote,
    render_error,
)
from felix.web.edge.log_context import request_id
from felix.web.edge.params import check_workflow_id, parse_query, query_int
from felix.web.edge.routes import ROUTES, Credential, RateClass, Route, ServedBy, match
from felix.web.edge.tokens import TokenSigner

__all__ = [
    "CREDENTIAL",
    "ROUTES",
    "Credential",
    "Edge",
    "MethodNotAllowed",
    "RateClass",
    "Request",
    "Route",
    "RouteNotFound",
    "ServedBy",
    "TokenSigner",
    "authenticate",
    "check_api_key",
    "check_workflow_id",
    "error_for_status",
    "key_from_headers",
    "match",
    "parse_query",
    "query_int",
    "quote",
    "read_body",
    "render_error",
    "request_id",
]
