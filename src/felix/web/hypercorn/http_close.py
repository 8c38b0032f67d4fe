"""An ASGI wrapper: HTTP connections that quart-trio under Hypercorn never closes.

Changes no upstream class: it wraps the app, so it applies only where Felix
wraps its own Quart app with it.

The defect (quart-trio 0.12, Hypercorn 0.18, trio worker): quart-trio sends
the last body message of a response from a task whose nursery it cancels as
soon as Hypercorn answers with ``http.disconnect``. Hypercorn runs its
end-of-response bookkeeping — recycling the keep-alive connection, arming the
idle timer, or closing the socket for ``Connection: close`` — *inside* that
``send`` call, so the cancellation lands in the middle of it: the idle timer is
never armed and the socket never closed. A client that reads to end of stream
waits forever, and idle connections pile up.

The fix shields the one ``send`` that carries the final body message, so
Hypercorn's bookkeeping runs to completion. Only HTTP/1 responses are
shielded: after an ``Upgrade: h2c`` request Hypercorn speaks HTTP/2, whose
send waits for flow-control credit a departed client never grants, and a
shield there kept the server from ever being cancelled (found by
tests/test_fuzz.py). The shield also has a deadline (``timeout``; Felix
passes FELIX_SEND_TIMEOUT).

Checked against quart-trio 0.12.0 and Hypercorn's main branch (0e2311f, the
0.18.0 release): unchanged. ``tests/web/test_stack_fixes.py`` reproduces the
hang without this wrapper; drop the module when
``test_quart_trio_leaves_connections_open_without_the_fix`` fails.
"""

from __future__ import annotations

from typing import Any

import trio

from felix.web._asgi import ASGIApp, Receive, Scope, Send

__all__ = ["close_http_connections"]


def close_http_connections(app: ASGIApp, timeout: float = 10.0) -> ASGIApp:
    """Wrap an ASGI app so its final HTTP body message is not cancelled mid-way.

    It may still be cut off after ``timeout`` seconds.
    """

    async def wrapper(scope: Scope, receive: Receive, send: Send) -> None:
        # Only HTTP/1 has the defect; an HTTP/2 send (after an h2c upgrade)
        # waits for flow control and must stay cancellable.
        if scope["type"] != "http" or scope.get("http_version") not in ("1.0", "1.1"):
            await app(scope, receive, send)
            return

        async def send_final_shielded(message: dict[str, Any]) -> None:
            if message["type"] == "http.response.body" and not message.get("more_body", False):
                with trio.CancelScope(shield=True) as shielded:
                    shielded.deadline = trio.current_time() + timeout
                    await send(message)
            else:
                await send(message)

        await app(scope, receive, send_final_shielded)

    return wrapper
