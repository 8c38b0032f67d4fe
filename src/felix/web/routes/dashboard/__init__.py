"""The live web dashboard: its static files at ``/`` and ``/dashboard/…``, and its session.

The page is three plain files shipped in this package (``index.html``,
``app.js``, ``style.css``, plus an icon), with no build step: an ES module that
speaks the public API like any other client. It lists the workflows and
follows the system stream for their status, and shows one workflow live over
its WebSocket, resuming with ``after=`` after a drop.

These routes are open: the files hold no data, and the session routes do
their own checks. With ``FELIX_API_KEY`` set, the page signs in through
``POST /dashboard/session`` (the key in the ``Authorization`` header, once),
which answers with the session cookie of :mod:`felix.web.edge.session`; the key is
never stored by the page and the cookie never holds it. In development mode
no sign-in is needed.

Every answer carries a strict Content-Security-Policy (scripts and styles from
this origin only, no inline script, connections to this origin only, no
framing), ``nosniff`` and ``no-referrer``; the files are revalidated by ETag on
each load, so an upgraded server never runs with a stale script.
"""

from __future__ import annotations

import hashlib
import importlib.resources
import re
import time
from typing import Final

import attrs
from quart import Blueprint, Response, current_app, request

from felix._errors import AuthenticationError
from felix.settings import Settings
from felix.web.edge import CREDENTIAL, RouteNotFound, quote
from felix.web.edge.session import COOKIE_NAME, SESSION_TTL, cookie_value, signer_for
from felix.web.edge.tokens import expires_at
from felix.web.routes import View
from felix.web.routes.rest import json_response

__all__ = ["VIEWS", "blueprint", "content_security_policy"]

#: File name -> content type of what the dashboard serves; nothing else is.
_TYPES: Final = {
    "index.html": "text/html; charset=utf-8",
    "app.js": "text/javascript; charset=utf-8",
    "style.css": "text/css; charset=utf-8",
    "favicon.svg": "image/svg+xml",
}
#: A Host header fit to be written into the policy; anything else is left out of it.
_HOST: Final = re.compile(
    r"[A-Za-z0-9.-]{1,253}(?::[0-9]{1,5})?|\[[0-9A-Fa-f:.]{2,45}\](?::[0-9]{1,5})?"
)
_SECURITY_HEADERS: Final = {
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "X-Frame-Options": "DENY",
    "Cross-Origin-Opener-Policy": "same-origin",
    "Cross-Origin-Resource-Policy": "same-origin",
}


@attrs.frozen
class _Asset:
    body: bytes = attrs.field(repr=False)
    content_type: str
    etag: str


def _load() -> dict[str, _Asset]:
    files = importlib.resources.files(__name__)
    assets = {}
    for name, content_type in _TYPES.items():
        body = (files / name).read_bytes()
        etag = '"' + hashlib.sha256(body).hexdigest()[:20] + '"'
        assets[name] = _Asset(body=body, content_type=content_type, etag=etag)
    return assets


_ASSETS: Final = _load()


def content_security_policy(host: str | None) -> str:
    """The dashboard's policy; ``host`` (the request's Host) names its WebSocket origins.

    ``connect-src 'self'`` covers ``ws:``/``wss:`` to this host in browsers
    following CSP 3; the explicit origins are for those that do not.
    """
    connect = "'self'"
    if host and _HOST.fullmatch(host):
        connect += f" ws://{host} wss://{host}"
    return (
        "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; "
        f"connect-src {connect}; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
    )


async def _secure(response: Response) -> Response:
    response.headers["Content-Security-Policy"] = content_security_policy(request.host)
    for name, value in _SECURITY_HEADERS.items():
        response.headers[name] = value
    return response


def _file(name: str) -> Response:
    asset = _ASSETS[name]
    headers = {"ETag": asset.etag, "Cache-Control": "no-cache"}
    if asset.etag in request.headers.get("If-None-Match", "") or (
        request.headers.get("If-None-Match", "").strip() == "*"
    ):
        return Response(b"", status=304, headers=headers)
    return Response(asset.body, status=200, content_type=asset.content_type, headers=headers)


async def index() -> Response:
    """The dashboard page (``/#/`` lists workflows, ``/#/workflows/{id}`` shows one)."""
    return _file("index.html")


async def asset(name: str) -> Response:
    """One of the dashboard's script, style sheet and icon; 404 for any other name."""
    if name not in _ASSETS or name == "index.html":
        raise RouteNotFound(f"no dashboard file {quote(name)}")
    return _file(name)


def _settings() -> Settings:
    settings: Settings = current_app.config["FELIX_SETTINGS"]
    return settings


def _state(*, signed_in: bool, expires: int | None) -> Response:
    response = json_response(
        {
            "key_required": not _settings().dev_mode,
            "signed_in": signed_in,
            "expires_at": expires_at(expires) if expires is not None else None,
        }
    )
    response.headers["Cache-Control"] = "no-store"
    return response


def _https() -> bool:
    # Behind a proxy terminating TLS the request is http, but the browser's
    # Origin (sent with every fetch POST and DELETE) still says https.
    return request.scheme == "https" or request.headers.get("Origin", "").startswith("https://")


async def session_state() -> Response:
    """``{"key_required", "signed_in", "expires_at"}``: whether the page must ask for a key."""
    settings = _settings()
    if settings.dev_mode:
        return _state(signed_in=True, expires=None)
    value = cookie_value(request.headers.items())
    if value is not None:
        try:
            expires = signer_for(settings).verify(value, now=time.time())
        except AuthenticationError:
            pass  # expired or from a removed key: simply not signed in
        else:
            return _state(signed_in=True, expires=expires)
    return _state(signed_in=False, expires=None)


async def sign_in() -> Response:
    """Trade the API key (in ``Authorization`` or ``X-API-Key``) for a session cookie.

    The edge has checked the key (401 for a missing or wrong one, as on
    every keyed route) and says which key matched. The cookie lasts
    :data:`~felix.web.edge.session.SESSION_TTL` seconds; the key itself is never
    stored. In development mode there is nothing to sign in to: 200, no cookie.
    """
    settings = _settings()
    credential = request.scope.get(CREDENTIAL)  # "k:<index>", or None in development mode
    index = int(credential[2:]) if isinstance(credential, str) and credential[:2] == "k:" else None
    if index is None:
        return _state(signed_in=True, expires=None)
    value, expires = signer_for(settings).mint(index, now=time.time())
    response = _state(signed_in=True, expires=expires)
    response.set_cookie(
        COOKIE_NAME,
        value,
        max_age=SESSION_TTL,
        path="/",
        secure=_https(),
        httponly=True,
        samesite="Strict",
    )
    return response


async def sign_out() -> Response:
    """Clear the session cookie (always 200; a DELETE cannot be forged cross-site)."""
    response = _state(signed_in=_settings().dev_mode, expires=None)
    response.delete_cookie(COOKIE_NAME, path="/", secure=_https(), httponly=True, samesite="Strict")
    return response


#: Route name (:data:`felix.web.edge.routes.ROUTES`) -> handler.
VIEWS: Final[dict[str, View]] = {
    "dashboard": index,
    "dashboard_file": asset,
    "dashboard_session": session_state,
    "dashboard_sign_in": sign_in,
    "dashboard_sign_out": sign_out,
}


def blueprint() -> Blueprint:
    """A new blueprint for one app, its answers carrying the page's security headers.

    The app adds the URL rules, from the route table.
    """
    pages = Blueprint("felix_dashboard", __name__)
    pages.after_request(_secure)
    return pages
