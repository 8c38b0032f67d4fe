"""The routes Quart-Trio serves: REST (:mod:`.rest`), ``/metrics``, the OpenAPI
document and the dashboard. Their paths and policies are the edge's route table's
(:mod:`felix.web.edge.routes`); each module maps route names to handlers."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import TypeAlias

from quart import Response

__all__ = ["View"]

#: A route's handler: path parameters as keyword arguments, a response back.
View: TypeAlias = Callable[..., Awaitable[Response]]
