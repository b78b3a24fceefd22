"""Who is logged in to the console, and proof that a form came from the console.

The operator logs in by pasting an API token. The cookie holds **the token itself**, not a
signed session id: the token already is a secret the API checks on every call, so a forged
or altered cookie is just an unknown token the API refuses (401), and signing would protect
nothing more. Keeping the token means the console stays stateless (any worker serves any
page, as with the DM endpoint) and revoking the token logs the console out at once. The
cookie is ``HttpOnly`` (page scripts cannot read it), ``SameSite=Strict`` (other sites'
pages cannot make the browser send it), limited to ``/console`` and ``Secure`` over HTTPS.

Forms that change something carry a CSRF token: HMAC-SHA256 of the API token under the
server secret. ``SameSite=Strict`` already stops cross-site posts in current browsers; the
HMAC adds a check that does not depend on the browser, needs no storage, and cannot be
computed by someone who does not know both the token and the server secret.

A flash message (the outcome of an action, shown on the page the action redirects to) rides
in a short-lived cookie rather than in the URL, so that a crafted link cannot put words on
an operator's screen.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
from dataclasses import dataclass
from typing import Literal

from starlette.requests import Request
from starlette.responses import Response

__all__ = [
    "COOKIE",
    "FLASH_COOKIE",
    "Flash",
    "clear_token",
    "csrf_token",
    "csrf_valid",
    "pop_flash",
    "read_flash",
    "set_flash",
    "set_token",
]

COOKIE = "omadm_console"
FLASH_COOKIE = "omadm_console_flash"
PATH = "/console"
#: A login lasts a working day; the token's own life is the API's business.
MAX_AGE = 12 * 3600
_FLASH_MAX = 600
_CSRF_LABEL = b"omadm-console-csrf\x00"


def _secure(request: Request) -> bool:
    return request.url.scheme == "https"


def set_token(response: Response, request: Request, token: str) -> None:
    response.set_cookie(
        COOKIE,
        token,
        max_age=MAX_AGE,
        path=PATH,
        httponly=True,
        samesite="strict",
        secure=_secure(request),
    )


def clear_token(response: Response, request: Request) -> None:
    response.delete_cookie(COOKIE, path=PATH, httponly=True, samesite="strict", secure=_secure(request))


def csrf_token(secret: bytes, token: str) -> str:
    """The CSRF token of the session that ``token`` opened (the same on every worker)."""
    return hmac.new(secret, _CSRF_LABEL + token.encode(), hashlib.sha256).hexdigest()


def csrf_valid(secret: bytes, token: str, sent: str | None) -> bool:
    return bool(sent) and hmac.compare_digest(csrf_token(secret, token), sent or "")


@dataclass(frozen=True)
class Flash:
    """One message for the next page: ``ok`` (an action worked) or ``error``."""

    kind: Literal["ok", "error"]
    text: str


def set_flash(response: Response, request: Request, flash: Flash) -> None:
    raw = json.dumps([flash.kind, flash.text[:_FLASH_MAX]]).encode()
    response.set_cookie(
        FLASH_COOKIE,
        base64.urlsafe_b64encode(raw).decode(),
        max_age=60,
        path=PATH,
        httponly=True,
        samesite="strict",
        secure=_secure(request),
    )


def read_flash(request: Request) -> Flash | None:
    """The message an earlier response left, if it is one (anything else is ignored)."""
    raw = request.cookies.get(FLASH_COOKIE)
    if not raw:
        return None
    try:
        kind, text = json.loads(base64.urlsafe_b64decode(raw.encode()))
    except (ValueError, TypeError):
        return None
    if kind not in ("ok", "error") or not isinstance(text, str):
        return None
    return Flash(kind, text[:_FLASH_MAX])


def pop_flash(request: Request, response: Response) -> None:
    """Forget the flash message once a page has shown it."""
    if FLASH_COOKIE in request.cookies:
        response.delete_cookie(FLASH_COOKIE, path=PATH, httponly=True, samesite="strict")
