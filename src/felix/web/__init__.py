"""The web layer: Quart-Trio REST routes, WebSocket routes, Hypercorn serving.

It translates HTTP and WebSocket traffic into hub calls and holds no
workflow state. Two modules fix defects of the stack and say so in their
names: :mod:`felix.web.hypercorn.http_close` and :mod:`felix.web.hypercorn.logger`.
"""

from __future__ import annotations

from felix.web.app import create_app, hypercorn_config, serve

__all__ = ["create_app", "hypercorn_config", "serve"]
