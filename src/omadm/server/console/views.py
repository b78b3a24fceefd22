"""The console's pages and actions: each one a few API calls and a template.

Pages (``GET``) call the API with the operator's token and render what it answered; an API
error becomes an error page with the problem's title and detail and the API's status (its
5xx as 502: the console itself did not fail), never an unhandled exception. Actions
(``POST``) check the CSRF token, make one API call, and redirect (303, post/redirect/get) to
the page they came from with the outcome as a flash message, so that reloading a page never
repeats an action. A 401 from the API (the token was revoked, or never valid) logs out.

Forms that create something (register a device, upload a package, a new campaign) are
*form pages*: ``GET`` shows the form, ``POST`` makes the API calls and redirects to what was
created, or shows the form again with the API's error and the values typed (never the
passwords), so that a refused form is corrected rather than typed anew. A new campaign is
previewed (``POST /api/v1/campaigns/preview``) before it can be created, and the console
creates only what the operator saw previewed (see :func:`submit_campaign`).

What a role cannot do is not shown: a viewer sees no form that changes anything, and only
admins see the audit log in the menu. The API still decides every call.

Forms are read with :func:`urllib.parse.parse_qs` rather than FastAPI's ``Form``: the
console posts ``application/x-www-form-urlencoded``, except the package upload, which
:mod:`.multipart` streams; this spares the server the ``python-multipart`` dependency.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, quote, urlencode

from jinja2 import Environment, FileSystemLoader, StrictUndefined
from starlette.requests import Request
from starlette.responses import HTMLResponse, RedirectResponse, Response

from ..store.models import CampaignDeviceState, CampaignState, DeviceState, JobKind, JobState
from .client import ApiClient, ApiError, Params
from .multipart import MultipartError, MultipartReader, boundary_of
from .session import (
    COOKIE,
    Flash,
    clear_token,
    csrf_token,
    csrf_valid,
    pop_flash,
    read_flash,
    set_flash,
    set_token,
)

__all__ = ["ACTIONS", "FORMS", "PAGES", "login_form", "login_submit", "logout", "root", "upload_package"]

HERE = Path(__file__).resolve().parent
PREFIX = "/console"
PAGE_SIZE = 50
_FORM_MAX = 64 * 1024

#: Defence in depth behind autoescaping: no inline script or style, no framing, forms post
#: only here. Everything the console needs is served from ``/console/static``.
SECURITY_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
        "form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
    ),
    "X-Frame-Options": "DENY",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",
    "Cache-Control": "no-store",
}


def _when(value: Any) -> str:
    """An API timestamp (ISO 8601) as ``YYYY-MM-DD HH:MM:SS`` UTC; ``-`` when there is none."""
    if not value:
        return "-"
    try:
        return datetime.fromisoformat(str(value)).strftime("%Y-%m-%d %H:%M:%S")
    except ValueError:
        return str(value)


def _pathpart(value: Any) -> str:
    """One URL path segment: a DevId may hold ``/``, ``?`` or ``#``."""
    return quote(str(value), safe="")


def _pretty(value: Any) -> str:
    return json.dumps(value, indent=2, sort_keys=True, ensure_ascii=False, default=str)


def _jsontext(value: Any) -> str:
    """JSON on one line, as text (autoescaped), unlike ``tojson`` which is for scripts."""
    return json.dumps(value, sort_keys=True, ensure_ascii=False, default=str)


_env = Environment(
    loader=FileSystemLoader(HERE / "templates"),
    autoescape=True,
    undefined=StrictUndefined,
    trim_blocks=True,
    lstrip_blocks=True,
)
_env.filters["when"] = _when
_env.filters["pathpart"] = _pathpart
_env.filters["pretty"] = _pretty
_env.filters["jsontext"] = _jsontext


def render(
    request: Request,
    template: str,
    *,
    status: int = 200,
    csrf: str = "",
    **context: Any,
) -> HTMLResponse:
    """A page: the template with the flash message and the CSRF token, and strict headers."""
    flash = read_flash(request)
    context.setdefault("is_admin", False)
    html = _env.get_template(template).render(
        prefix=PREFIX,
        path=request.url.path,
        csrf=csrf,
        logged_in=bool(csrf),
        flash=flash,
        **context,
    )
    response = HTMLResponse(html, status_code=status, headers=SECURITY_HEADERS)
    if flash is not None:
        pop_flash(request, response)
    return response


def _here(request: Request) -> str:
    return request.url.path + (f"?{request.url.query}" if request.url.query else "")


def _safe_next(value: str | None, default: str) -> str:
    """Only a console path: a posted ``next`` must not send the operator to another site."""
    if value and value.startswith(PREFIX + "/") and "\\" not in value and value.isprintable():
        return value
    return default


def _secret(request: Request) -> bytes:
    secret: bytes = request.app.state.config.secret_bytes()
    return secret


def _redirect(url: str) -> RedirectResponse:
    return RedirectResponse(url, status_code=303, headers={"Cache-Control": "no-store"})


def _to_login(request: Request, flash: Flash | None = None) -> Response:
    target = _here(request) if request.method == "GET" else ""
    url = f"{PREFIX}/login" + (f"?{urlencode({'next': target})}" if target else "")
    response = _redirect(url)
    if flash is not None:
        clear_token(response, request)
        set_flash(response, request, flash)
    return response


def _logged_out(request: Request, exc: ApiError) -> Response:
    return _to_login(
        request, Flash("error", f"Your token is not accepted any more ({exc.detail}); log in again.")
    )


async def _form(request: Request) -> dict[str, str]:
    body = await request.body()
    if len(body) > _FORM_MAX:
        return {}
    fields = parse_qs(body.decode("utf-8", "replace"), keep_blank_values=True)
    return {name: values[0] for name, values in fields.items()}


# ------------------------------------------------------------------ the per-request context


@dataclass
class Console:
    """One logged-in request: the API client with the operator's token, and the CSRF token."""

    request: Request
    api: ApiClient
    csrf: str
    me: dict[str, Any]  # the token: name, role, authority (GET /api/v1/whoami)

    @property
    def may_change(self) -> bool:
        """The token's role may change the fleet (``operator`` and ``admin``)."""
        return self.me.get("role") in ("operator", "admin")

    def render(self, template: str, *, status: int = 200, **context: Any) -> HTMLResponse:
        # Forms and links a role could only get a 403 from are not shown (the API decides
        # anyway): viewers change nothing, only admins read the audit log.
        return render(
            self.request,
            template,
            status=status,
            csrf=self.csrf,
            me=self.me,
            may_change=self.may_change,
            is_admin=self.me.get("role") == "admin",
            **context,
        )

    def done(self, to: str, text: str) -> Response:
        """Post/redirect/get after a form that worked: to ``to`` (below the console), with ``text``."""
        response = _redirect(PREFIX + to)
        set_flash(response, self.request, Flash("ok", text))
        return response

    def query(self, *names: str) -> Params:
        """The non-empty filters among ``names`` in the page's query, to pass to the API."""
        params: Params = {}
        for name in names:
            values = [v for v in self.request.query_params.getlist(name) if v.strip()]
            if values:
                params[name] = values if len(values) > 1 else values[0]
        return params

    async def listing(self, path: str, *filters: str) -> tuple[dict[str, Any], dict[str, Any]]:
        """One page of the API list at ``path``, filtered by the page's query on ``filters``.

        Returns the API's page and what a list template needs (page, pager, filters).
        """
        chosen = self.query(*filters)
        result: dict[str, Any] = await self.api.get(
            path, {**chosen, "limit": PAGE_SIZE, "offset": self.offset()}
        )
        return result, {"page": result, "pager": self.pager(result), "filters": chosen}

    def offset(self) -> int:
        try:
            return max(0, int(self.request.query_params.get("offset", "0")))
        except ValueError:
            return 0

    def pager(self, page: dict[str, Any]) -> dict[str, Any]:
        """Links to the previous and next pages of a list, keeping the page's filters."""
        offset, limit, total = int(page["offset"]), int(page["limit"]), int(page["total"])

        def link(to: int) -> str:
            items = [(k, v) for k, v in self.request.query_params.multi_items() if k != "offset"]
            return self.request.url.path + "?" + urlencode([*items, ("offset", str(to))])

        return {
            "first": offset + 1 if total else 0,
            "last": min(offset + limit, total),
            "total": total,
            "prev": link(max(0, offset - limit)) if offset > 0 else None,
            "next": link(offset + limit) if offset + limit < total else None,
        }


@dataclass(frozen=True)
class Done:
    """What an action did, and where to go next when it is not the action's object's page."""

    text: str
    to: str  # a console path, without the /console prefix


Page = Callable[[Console], Awaitable[Response]]
Action = Callable[[Console, dict[str, str]], Awaitable[str | Done]]
#: A form page's view: the form, with the values typed and the API's error, if any.
Show = Callable[[Console, dict[str, str], ApiError | None], Awaitable[Response]]
#: A form page's submission: the API calls, then a redirect (or the form again, previewed).
Submit = Callable[[Console, dict[str, str]], Awaitable[Response]]


def page(handler: Page) -> Callable[[Request], Awaitable[Response]]:
    """A page that needs a login: redirect to it without one, show API errors on the page."""

    async def endpoint(request: Request) -> Response:
        token = request.cookies.get(COOKIE)
        if not token:
            return _to_login(request)
        async with ApiClient(request.app, token) as api:
            console = Console(request, api, csrf_token(_secret(request), token), {})
            try:
                console.me = await api.get("/whoami")
                return await handler(console)
            except ApiError as exc:
                if exc.status == 401:
                    return _logged_out(request, exc)
                status = exc.status if 400 <= exc.status < 500 else 502
                return console.render("error.html", status=status, error=exc)

    endpoint.__name__ = handler.__name__
    return endpoint


def action(handler: Action) -> Callable[[Request], Awaitable[Response]]:
    """A change: check the CSRF token, call the API, go back to the page with the outcome.

    Without a ``next`` field the action goes back to its object's page: the action's path
    without its last segment (``/console/jobs/3/cancel`` -> ``/console/jobs/3``).
    """

    async def endpoint(request: Request) -> Response:
        token = request.cookies.get(COOKIE)
        if not token:
            return _to_login(request)
        secret = _secret(request)
        form = await _form(request)
        if not csrf_valid(secret, token, form.get("csrf")):
            return _csrf_refused(request, secret, token)
        back = _safe_next(form.get("next"), request.url.path.rsplit("/", 1)[0])
        async with ApiClient(request.app, token) as api:
            console = Console(request, api, csrf_token(secret, token), {})
            try:
                outcome = await handler(console, form)
                if isinstance(outcome, Done):
                    flash, back = Flash("ok", outcome.text), PREFIX + outcome.to
                else:
                    flash = Flash("ok", outcome)
            except ApiError as exc:
                if exc.status == 401:
                    return _logged_out(request, exc)
                refused = "Refused" if exc.status in (403, 409) else "Failed"
                flash = Flash("error", f"{refused} ({exc.status} {exc.title}): {exc.detail}")
        response = _redirect(back)
        set_flash(response, request, flash)
        return response

    endpoint.__name__ = handler.__name__
    return endpoint


def _csrf_refused(request: Request, secret: bytes, token: str) -> Response:
    return render(
        request,
        "error.html",
        status=403,
        csrf=csrf_token(secret, token),
        error=ApiError(
            403,
            "Forbidden",
            "this form did not come from this console session (CSRF check failed); "
            "reload the page and try again",
        ),
    )


def form_page(show: Show) -> Callable[[Request], Awaitable[Response]]:
    """The ``GET`` of a form page: the empty form (a page like any other)."""

    async def blank(console: Console) -> Response:
        return await show(console, {}, None)

    blank.__name__ = show.__name__
    return page(blank)


def form_submit(show: Show, submit: Submit) -> Callable[[Request], Awaitable[Response]]:
    """The ``POST`` of a form page: CSRF check, then ``submit``; an API error shows the form
    again with the error and the values typed, with the API's status (a 5xx as 502)."""

    async def endpoint(request: Request) -> Response:
        token = request.cookies.get(COOKIE)
        if not token:
            return _to_login(request)
        secret = _secret(request)
        form = await _form(request)
        if not csrf_valid(secret, token, form.get("csrf")):
            return _csrf_refused(request, secret, token)
        async with ApiClient(request.app, token) as api:
            console = Console(request, api, csrf_token(secret, token), {})
            try:
                console.me = await api.get("/whoami")
                try:
                    return await submit(console, form)
                except ApiError as exc:
                    if exc.status == 401:
                        raise
                    return await show(console, form, exc)
            except ApiError as exc:
                if exc.status == 401:
                    return _logged_out(request, exc)
                return console.render("error.html", status=_error_status(exc), error=exc)

    endpoint.__name__ = submit.__name__
    return endpoint


def _error_status(exc: ApiError) -> int:
    """The status of a page that shows the API's error: its own 4xx; 502 for its 5xx."""
    return exc.status if 400 <= exc.status < 500 else 502


def _form_status(console: Console, error: ApiError | None) -> int:
    """A form page's status: the error's, else 403 for a role that may not use the form."""
    if error is not None:
        return _error_status(error)
    return 200 if console.may_change else 403


def _invalid(field: str, message: str) -> ApiError:
    """A form value the console cannot even turn into an API call, said as the API would."""
    return ApiError(
        422, "Unprocessable Content", f"{field}: {message}", [{"field": field, "message": message}]
    )


def _pairs(form: dict[str, str], field: str) -> dict[str, str]:
    """``name=value`` pairs, one per line or separated by commas (tags, DevInfo fields)."""
    pairs: dict[str, str] = {}
    for item in re.split(r"[\n,]", form.get(field, "")):
        if not item.strip():
            continue
        name, sep, value = item.partition("=")
        if not sep or not name.strip():
            raise _invalid(field, f"{item.strip()!r} is not name=value")
        pairs[name.strip()] = value.strip()
    return pairs


def _words(form: dict[str, str], field: str) -> list[str]:
    """A list typed as words separated by commas, spaces or lines (DevIds, wave sizes)."""
    return [word for word in re.split(r"[\s,]+", form.get(field, "")) if word]


def _number(form: dict[str, str], field: str, kind: type[int] | type[float]) -> int | float | None:
    raw = form.get(field, "").strip()
    if not raw:
        return None
    try:
        return kind(raw)
    except ValueError:
        raise _invalid(field, f"{raw!r} is not a {'whole ' if kind is int else ''}number") from None


def _share(form: dict[str, str], field: str) -> float | None:
    """A threshold typed as a share (``0.9``) or a percentage (``90%``); ``None`` if not typed."""
    raw = form.get(field, "").strip()
    if not raw:
        return None
    try:
        return float(raw[:-1]) / 100 if raw.endswith("%") else float(raw)
    except ValueError:
        raise _invalid(field, f"{raw!r} is not a share (0.9) or a percentage (90%)") from None


def _without_secrets(values: dict[str, str]) -> dict[str, str]:
    """The values typed, to fill a form shown again: passwords are never sent back."""
    return {k: v for k, v in values.items() if "password" not in k and k != "csrf"}


# ------------------------------------------------------------------ login, logout


async def root(request: Request) -> Response:
    return _redirect(f"{PREFIX}/dashboard")


async def login_form(request: Request) -> Response:
    return render(request, "login.html", next=_safe_next(request.query_params.get("next"), ""), error=None)


async def login_submit(request: Request) -> Response:
    """Check the pasted token against the API; keep it in the cookie if the API takes it."""
    form = await _form(request)
    token = form.get("token", "").strip()
    target = _safe_next(form.get("next"), f"{PREFIX}/dashboard")
    error: ApiError | None = None
    if not token:
        error = ApiError(401, "Unauthorized", "paste an API token (omadm server token add NAME --role ...)")
    else:
        async with ApiClient(request.app, token) as api:
            try:
                await api.get("/devices", {"limit": 1, "count": "none"})
            except ApiError as exc:
                # 403 is a token the API knows whose scope leaves out the device list: a
                # valid login all the same; the pages will say what it may not see.
                if exc.status != 403:
                    error = exc
    if error is not None:
        status = error.status if 400 <= error.status < 500 else 502
        return render(request, "login.html", status=status, next=form.get("next", ""), error=error)
    response = _redirect(target)
    set_token(response, request, token)
    return response


async def logout(request: Request) -> Response:
    """Forget the token (POST with the CSRF token: a link elsewhere cannot log anyone out)."""
    token = request.cookies.get(COOKIE)
    form = await _form(request)
    if token and not csrf_valid(_secret(request), token, form.get("csrf")):
        return render(
            request,
            "error.html",
            status=403,
            csrf=csrf_token(_secret(request), token),
            error=ApiError(403, "Forbidden", "the logout form did not come from this console session"),
        )
    response = _redirect(f"{PREFIX}/login")
    clear_token(response, request)
    return response


# ------------------------------------------------------------------ pages


def _percent(part: int, whole: int) -> float:
    return round(100.0 * part / whole, 1) if whole else 0.0


def _progress(counters: dict[str, int], size: int | None = None) -> dict[str, Any]:
    """Shares for a stacked bar: succeeded, failed, cancelled, running, pending."""
    total = size if size is not None else sum(counters.values())
    states = ("succeeded", "failed", "cancelled", "running", "pending")
    done = sum(int(counters.get(s, 0)) for s in ("succeeded", "failed", "cancelled"))
    segments, x = [], 0.0
    for state in states:
        width = _percent(int(counters.get(state, 0)), total)
        segments.append({"state": state, "x": x, "width": width, "count": int(counters.get(state, 0))})
        x += width
    return {"total": total, "done": done, "done_pct": _percent(done, total), "segments": segments}


async def dashboard(console: Console) -> Response:
    api = console.api
    everything = await api.get("/devices", {"limit": 1})
    device_counts = {"all": _about(everything["total"], everything["total_exact"])}
    for device_state in DeviceState:
        query: Params = {"state": device_state.value, "limit": 1}
        counted = await api.get("/devices", query)
        device_counts[device_state.value] = _about(counted["total"], counted["total_exact"])
    job_counts = {}
    for job_state in (JobState.QUEUED, JobState.SENT, JobState.ACCEPTED, JobState.FAILED):
        job_counts[job_state.value] = (await api.get("/jobs", {"state": job_state.value, "limit": 1}))[
            "total"
        ]
    active: list[dict[str, Any]] = []
    for campaign_state in (CampaignState.RUNNING, CampaignState.PAUSED):
        active += (await api.get("/campaigns", {"state": campaign_state.value, "limit": 20}))["items"]
    for item in active:
        item["progress"] = _progress(item["counters"])
    recent = (await api.get("/jobs", {"limit": 10}))["items"]
    running = any(item["state"] == CampaignState.RUNNING.value for item in active)
    return console.render(
        "dashboard.html",
        devices=device_counts,
        jobs=job_counts,
        campaigns=active,
        recent=recent,
        refresh=5 if running else 0,
    )


async def devices(console: Console) -> Response:
    """The device list, paged by the API's cursor: the next page is a link that carries it.

    An offset in the page's query (an older link) is still passed on; a cursor wins over it.
    """
    chosen = console.query("state", "tag", "devinfo", "component", "q")
    params: Params = {**chosen, "limit": PAGE_SIZE}
    cursor = console.request.query_params.get("cursor", "").strip()
    offset = 0 if cursor else console.offset()
    if cursor:
        params["cursor"] = cursor
    elif offset:
        params["offset"] = offset
    page: dict[str, Any] = await console.api.get("/devices", params)
    request = console.request
    kept = [(k, v) for k, v in request.query_params.multi_items() if k not in ("offset", "cursor")]

    def link(*extra: tuple[str, str]) -> str:
        query = urlencode([*kept, *extra])
        return request.url.path + ("?" + query if query else "")

    shown, total = len(page["items"]), page["total"]
    pager = {
        "shown": shown,
        "first": offset + 1 if shown else 0,
        "last": offset + shown,
        "after_cursor": bool(cursor),
        "total": _about(total, page["total_exact"]) if total is not None else None,
        "start": link() if cursor or offset else None,
        "next": link(("cursor", page["next_cursor"])) if page["next_cursor"] else None,
    }
    return console.render(
        "devices.html", page=page, pager=pager, filters=chosen, states=[s.value for s in DeviceState]
    )


def _about(count: int, exact: bool) -> str:
    """A count as a page shows it: the API's estimates (past 10,000 devices) say so."""
    return str(count) if exact else f"about {count:,}"


async def device(console: Console) -> Response:
    device_id = str(console.request.path_params["device_id"])
    base = f"/devices/{_pathpart(device_id)}"
    api = console.api
    found = await api.get(base)
    inventory = await api.get(f"{base}/inventory")
    jobs = await api.get("/jobs", {"device": device_id, "limit": 20})
    history = await api.get(f"{base}/history", {"limit": 30})
    # The new-job form's choices: recent packages, and the components the device reported.
    choices = await _packages(console)
    return console.render(
        "device.html",
        device=found,
        inventory=inventory,
        jobs=jobs,
        history=history,
        packages=choices,
        auth_schemes=AUTH_SCHEMES,
        job_kinds=JOB_KINDS,
        components=sorted({e["ident"] for e in inventory if e["kind"] == "deployed" and e["ident"]}),
    )


async def packages(console: Console) -> Response:
    _, listed = await console.listing("/packages", "package_id", "version")
    return console.render("packages.html", **listed)


async def package(console: Console) -> Response:
    found = await console.api.get(f"/packages/{_pathpart(console.request.path_params['package_id'])}")
    return console.render("package.html", package=found)


async def jobs(console: Console) -> Response:
    _, listed = await console.listing("/jobs", "device", "state", "kind")
    states, kinds = [s.value for s in JobState], [k.value for k in JobKind]
    return console.render("jobs.html", **listed, states=states, kinds=kinds)


async def job(console: Console) -> Response:
    found = await console.api.get(f"/jobs/{_pathpart(console.request.path_params['job_id'])}")
    return console.render("job.html", job=found)


async def campaigns(console: Console) -> Response:
    result, listed = await console.listing("/campaigns", "state")
    for item in result["items"]:
        item["progress"] = _progress(item["counters"])
    return console.render("campaigns.html", **listed, states=[s.value for s in CampaignState])


async def campaign(console: Console) -> Response:
    """A campaign: its counters per wave, then its devices (a page, filtered by wave and state)
    with each one's job and the reason it is where it is, so that "why did wave 2 pause?" is
    answered on the page."""
    number = _pathpart(console.request.path_params["campaign_id"])
    found = await console.api.get(f"/campaigns/{number}")
    found["progress"] = _progress(found["counters"])
    for wave in found["wave_counters"]:
        wave["progress"] = _progress(wave, wave["size"])
    _, devices = await console.listing(f"/campaigns/{number}/devices", "wave", "state")
    running = found["state"] == CampaignState.RUNNING.value
    return console.render(
        "campaign.html",
        campaign=found,
        devices=devices,
        device_states=[s.value for s in CampaignDeviceState],
        refresh=2 if running else 0,
    )


async def audit(console: Console) -> Response:
    try:
        _, listed = await console.listing("/audit", "actor", "action", "target")
    except ApiError as exc:
        if exc.status != 403:
            raise
        return console.render("audit.html", status=403, refused=exc, page=None, pager=None, filters={})
    return console.render("audit.html", refused=None, **listed)


# ------------------------------------------------------------------ form pages


async def _packages(console: Console) -> list[dict[str, Any]]:
    """The packages a form offers (the newest page of them); none to a role that cannot use them."""
    if not console.may_change:
        return []
    found: list[dict[str, Any]] = (await console.api.get("/packages", {"limit": PAGE_SIZE}))["items"]
    return found


#: The authentication schemes a device may use (the API's ``auth``), md5 first: the default.
AUTH_SCHEMES = ("md5", "hmac", "basic")
#: The operations the console offers: the package kinds take a package, the others a component.
PACKAGE_KINDS = ("install", "update")
COMPONENT_KINDS = ("remove", "activate", "deactivate")
JOB_KINDS = (*PACKAGE_KINDS, *COMPONENT_KINDS)


async def new_device(console: Console, values: dict[str, str], error: ApiError | None) -> Response:
    return console.render(
        "device_new.html",
        status=_form_status(console, error),
        values=_without_secrets(values),
        error=error,
        auth_schemes=AUTH_SCHEMES,
    )


async def register_device(console: Console, form: dict[str, str]) -> Response:
    """``POST /api/v1/devices`` with the form's fields; then the new device's page."""
    body = {
        "device_id": form.get("device_id", "").strip(),
        "username": form.get("username", "").strip(),
        "password": form.get("password", ""),
        "auth": form.get("auth", "md5"),
        "server_password": form.get("server_password", ""),
        "notify_address": form.get("notify_address", "").strip(),
        "tags": _pairs(form, "tags"),
    }
    found = await console.api.post("/devices", body)
    device_id = found["device_id"]
    if found.get("generated_server_password"):
        # The API made the server password and shows it this once: so does the console, on
        # a page of its own (no-store) rather than in a redirect's flash cookie.
        return console.render("device_registered.html", status=201, device=found)
    return console.done(f"/devices/{_pathpart(device_id)}", f"Device {device_id} registered.")


async def new_package(console: Console, values: dict[str, str], error: ApiError | None) -> Response:
    return console.render("package_new.html", status=_form_status(console, error), values=values, error=error)


#: The longest small field of the upload form (the CSRF token is 64 characters).
_FIELD_MAX = 1024


async def upload_package(request: Request) -> Response:
    """The upload form's ``POST`` (``multipart/form-data``): the file goes on to the API as it
    arrives, after the CSRF field, which the form puts first, has been checked."""
    token = request.cookies.get(COOKIE)
    if not token:
        return _to_login(request)
    secret = _secret(request)
    fields: dict[str, str] = {}
    async with ApiClient(request.app, token) as api:
        console = Console(request, api, csrf_token(secret, token), {})
        try:
            reader = MultipartReader(request.stream(), boundary_of(request.headers.get("content-type", "")))
            while (part := await reader.next_part()) is not None:
                if part.filename is None:
                    fields[part.name] = (await reader.read(_FIELD_MAX)).decode("utf-8", "replace")
                    continue
                if not csrf_valid(secret, token, fields.get("csrf")):
                    return _csrf_refused(request, secret, token)
                # Browsers send the name alone; some old ones the whole path.
                filename = re.split(r"[/\\]", part.filename)[-1].strip()
                if part.name != "package" or not filename:
                    continue
                status, found = await api.upload("/packages", reader.chunks(), {"filename": filename})
                again = "" if status == 201 else " (these bytes were uploaded before: nothing changed)"
                return console.done(
                    f"/packages/{found['id']}",
                    f"Package {found['id']} ({found['filename']}) uploaded{again}.",
                )
            if not csrf_valid(secret, token, fields.get("csrf")):
                return _csrf_refused(request, secret, token)
            raise _invalid("package", "choose a package file (.omp) to upload")
        except MultipartError as exc:
            error = ApiError(400, "Bad Request", str(exc))
        except ApiError as exc:
            if exc.status == 401:
                return _logged_out(request, exc)
            error = exc
        try:
            console.me = await api.get("/whoami")
        except ApiError as exc:
            return (
                _logged_out(request, exc)
                if exc.status == 401
                else console.render("error.html", status=_error_status(exc), error=exc)
            )
        return await new_package(console, {}, error)


async def new_campaign(
    console: Console,
    values: dict[str, str],
    error: ApiError | None,
    *,
    preview: dict[str, Any] | None = None,
    previewed: str = "",
    changed: bool = False,
) -> Response:
    """The campaign form; after a preview, the devices it would target and the create buttons."""
    choices = await _packages(console)
    return console.render(
        "campaign_new.html",
        status=_form_status(console, error),
        values=values,
        error=error,
        packages=choices,
        kinds=JOB_KINDS,
        package_kinds=PACKAGE_KINDS,
        preview=preview,
        previewed=previewed,
        changed=changed,
    )


def _campaign_body(form: dict[str, str]) -> dict[str, Any]:
    """The ``POST /api/v1/campaigns`` body the form describes (empty fields left out)."""
    kind = form.get("kind", "")
    body: dict[str, Any] = {"name": form.get("name", "").strip(), "kind": kind}
    if kind in PACKAGE_KINDS:
        artifact = _number(form, "artifact_id", int)
        if artifact is None:
            raise _invalid("artifact_id", f"choose the package to {kind}")
        body["artifact_id"] = artifact
    elif component := form.get("component_id", "").strip():
        body["component_id"] = component
    target: dict[str, Any] = {}
    if devices := _words(form, "devices"):
        target["devices"] = devices
    if tags := _pairs(form, "tags"):
        target["tags"] = tags
    if devinfo := _pairs(form, "devinfo"):
        target["devinfo"] = devinfo
    for name in ("has_component", "version", "version_below"):
        if value := form.get(name, "").strip():
            target[name] = value
    body["target"] = target
    body["waves"] = [int(w) if w.isdigit() else w for w in _words(form, "waves")]
    # What is left empty is left out: the API's defaults apply, whatever they become.
    for name in ("success_threshold", "error_threshold"):
        if (share := _share(form, name)) is not None:
            body[name] = share
    numbers: list[tuple[str, type[int] | type[float]]] = [("device_timeout", float), ("max_retries", int)]
    for field, number_type in numbers:
        if (number := _number(form, field, number_type)) is not None:
            body[field] = number
    if window := form.get("window", "").strip():
        body["window"] = window
    if form.get("skip_busy") == "on":
        body["skip_busy"] = True
    if form.get("all_devices") == "on":
        body["all_devices"] = True
    return body


def _fingerprint(body: dict[str, Any]) -> str:
    """What a preview was of: the body without its name (renaming changes no device)."""
    canonical = json.dumps({k: v for k, v in body.items() if k != "name"}, sort_keys=True)
    return hashlib.sha256(canonical.encode()).hexdigest()[:32]


async def submit_campaign(console: Console, form: dict[str, str]) -> Response:
    """Preview, then create (and start) exactly what was previewed.

    Every submission first builds the API body. "Preview" asks the API which devices it
    would target and shows the form again with the answer and the body's fingerprint.
    "Create" (or "Create and start") creates the campaign only when the form still carries
    the fingerprint of the body it now describes; a form changed since its preview is
    previewed again instead, so that nobody starts a rollout to devices they have not seen.
    """
    api = console.api
    body = _campaign_body(form)
    fingerprint = _fingerprint(body)
    verb = form.get("do", "preview")
    if verb in ("create", "start") and form.get("previewed") == fingerprint:
        created = await api.post("/campaigns", body)
        number = created["id"]
        if verb == "create":
            return console.done(f"/campaigns/{number}", f"Campaign {number} created as a draft.")
        try:
            started = await api.post(f"/campaigns/{number}/start")
        except ApiError as exc:
            if exc.status == 401:
                raise
            response = _redirect(f"{PREFIX}/campaigns/{number}")
            text = f"Campaign {number} created, but not started ({exc.status} {exc.title}): {exc.detail}"
            set_flash(response, console.request, Flash("error", text))
            return response
        return console.done(
            f"/campaigns/{number}", f"Campaign {number} created and started: it is {started['state']}."
        )
    found = await api.post("/campaigns/preview", {k: v for k, v in body.items() if k != "name" or v})
    return await new_campaign(
        console,
        form,
        None,
        preview=found,
        previewed=fingerprint,
        changed=verb in ("create", "start"),
    )


# ------------------------------------------------------------------ actions


def _device_page(console: Console, form: dict[str, str], text: str) -> str | Done:
    """Back where the form's ``next`` says, else to the device's page. Not the action's own
    path cut at its last "/": that path arrives decoded, and a DevId's "?" or "#" would then
    end the redirect's path (the device page's forms carry ``next``, encoded, for errors too)."""
    if form.get("next"):
        return text
    return Done(text, f"/devices/{_pathpart(console.request.path_params['device_id'])}")


async def accept_device(console: Console, form: dict[str, str]) -> str | Done:
    device_id = str(console.request.path_params["device_id"])
    username, password = form.get("username", ""), form.get("password", "")
    body = {"username": username, "password": password} if username or password else None
    await console.api.post(f"/devices/{_pathpart(device_id)}/accept", body)
    return _device_page(console, form, f"Device {device_id} accepted.")


async def reject_device(console: Console, form: dict[str, str]) -> str | Done:
    device_id = str(console.request.path_params["device_id"])
    await console.api.post(f"/devices/{_pathpart(device_id)}/reject")
    return _device_page(console, form, f"Device {device_id} rejected.")


async def edit_device(console: Console, form: dict[str, str]) -> str | Done:
    """``PATCH /api/v1/devices/{id}`` with the device page's edit form: what the form says.

    Blank password fields keep the passwords (they are never shown, so never filled in);
    the notification address and the tags are sent as the form shows them (emptied: removed).
    A notification address on a device without a server password needs one typed here: the
    API would make one, but the console shows secrets only on a page of their own, not in a
    redirect's flash, and this form answers with a redirect.
    """
    device_id = str(console.request.path_params["device_id"])
    path = f"/devices/{_pathpart(device_id)}"
    current = await console.api.get(path)
    body: dict[str, Any] = {
        "auth": form.get("auth", current["auth"]),
        "notify_address": form.get("notify_address", "").strip(),
        "tags": _pairs(form, "tags"),
    }
    for name in ("username", "password", "server_password"):
        value = form.get(name, "").strip() if name == "username" else form.get(name, "")
        if value:
            body[name] = value
    if body["notify_address"] and not current["has_server_password"] and "server_password" not in body:
        raise _invalid("server_password", "a notification address needs a server password: type one")
    await console.api.patch(path, body)
    return _device_page(console, form, f"Device {device_id} updated.")


async def delete_device(console: Console, form: dict[str, str]) -> Done:
    """``DELETE /api/v1/devices/{id}`` (the button asks first); then the device list."""
    device_id = str(console.request.path_params["device_id"])
    await console.api.delete(f"/devices/{_pathpart(device_id)}")
    return Done(f"Device {device_id} deleted, with its jobs and history.", "/devices")


async def add_job(console: Console, form: dict[str, str]) -> Done:
    """``POST /api/v1/jobs`` for the device of the page; then the new job's page."""
    device_id = str(console.request.path_params["device_id"])
    kind = form.get("kind", "")
    body: dict[str, Any] = {"device_id": device_id, "kind": kind}
    if kind in PACKAGE_KINDS:
        artifact = _number(form, "artifact_id", int)
        if artifact is None:
            raise _invalid("artifact_id", f"choose the package to {kind}")
        body["artifact_id"] = artifact
    elif kind in COMPONENT_KINDS:
        component = form.get("component_id", "").strip()
        if not component:
            raise _invalid("component_id", f"name the component to {kind}")
        body["component_id"] = component
    created = await console.api.post("/jobs", body)
    return Done(f"Job {created['id']} queued: {kind} on {device_id}.", f"/jobs/{created['id']}")


async def publishers(console: Console) -> Response:
    """The trust store (``GET /api/v1/publishers``): every role sees who uploads must be signed by."""
    return console.render("publishers.html", publishers=await console.api.get("/publishers"))


async def add_publisher(console: Console, form: dict[str, str]) -> Done:
    """``POST /api/v1/publishers`` (admins): the API says what is wrong with a pasted key."""
    body = {"name": form.get("name", "").strip(), "public_key": form.get("public_key", "").strip()}
    added = await console.api.post("/publishers", body)
    return Done(f"Publisher {added['name']} trusted (key {added['key_id']}).", "/publishers")


async def delete_publisher(console: Console, form: dict[str, str]) -> Done:
    """``DELETE /api/v1/publishers/{key id}`` (admins); packages uploaded already stay."""
    key = str(console.request.path_params["key_id"])
    await console.api.delete(f"/publishers/{_pathpart(key)}")
    return Done(f"Publisher with key {key} deleted: uploads it signs are refused from now.", "/publishers")


async def cancel_job(console: Console, form: dict[str, str]) -> str:
    job_id = str(console.request.path_params["job_id"])
    await console.api.post(f"/jobs/{_pathpart(job_id)}/cancel")
    return f"Job {job_id} cancelled."


_CAMPAIGN_DONE = {"start": "started", "pause": "paused", "resume": "resumed", "cancel": "cancelled"}


def _campaign_action(verb: str) -> Action:
    async def act(console: Console, form: dict[str, str]) -> str:
        campaign_id = str(console.request.path_params["campaign_id"])
        result = await console.api.post(f"/campaigns/{_pathpart(campaign_id)}/{verb}")
        return f"Campaign {campaign_id} {_CAMPAIGN_DONE[verb]}: it is {result['state']}."

    act.__name__ = f"{verb}_campaign"
    return act


#: ``(path, handler)`` of every page, below ``/console``.
PAGES: list[tuple[str, Page]] = [
    ("/dashboard", dashboard),
    ("/devices", devices),
    # ":path": a DevId may hold "/" (its links encode it as %2F, which arrives decoded).
    ("/devices/{device_id:path}", device),
    ("/packages", packages),
    ("/packages/{package_id}", package),
    ("/publishers", publishers),
    ("/jobs", jobs),
    ("/jobs/{job_id}", job),
    ("/campaigns", campaigns),
    ("/campaigns/{campaign_id}", campaign),
    ("/audit", audit),
]

#: ``(path, show, submit)`` of every form page (``GET`` and ``POST``), below ``/console``;
#: listed before the pages. The registration form is outside ``/devices/``: any word there
#: (``new`` once) is some device's DevId.
FORMS: list[tuple[str, Show, Submit]] = [
    ("/new-device", new_device, register_device),
    ("/campaigns/new", new_campaign, submit_campaign),
]

#: ``(path, handler)`` of every action (``POST``), below ``/console``.
ACTIONS: list[tuple[str, Action]] = [
    ("/devices/{device_id:path}/accept", accept_device),
    ("/devices/{device_id:path}/delete", delete_device),
    ("/devices/{device_id:path}/edit", edit_device),
    ("/devices/{device_id:path}/jobs", add_job),
    ("/devices/{device_id:path}/reject", reject_device),
    ("/jobs/{job_id}/cancel", cancel_job),
    ("/publishers/add", add_publisher),
    ("/publishers/{key_id}/delete", delete_publisher),
    *[(f"/campaigns/{{campaign_id}}/{verb}", _campaign_action(verb)) for verb in _CAMPAIGN_DONE],
]
