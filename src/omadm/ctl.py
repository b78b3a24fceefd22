"""``omadm ctl``: the operator's command line over the server's REST API (``/api/v1``).

Glue only: every command is one or two HTTP requests; the server decides and explains. The
server and the token come from ``--url``/``--token``, else ``OMADM_URL``/``OMADM_TOKEN``, else
the ``[ctl]`` table of ``OMADM_CTL_CONFIG`` (default ``~/.config/omadm/ctl.toml``), else
``http://127.0.0.1:8700`` and no token. Read commands print tables, or the server's JSON
with ``--json``. Exit codes: 0 done; 1 the server refused (its problem document's detail is
printed); 2 usage; 4 the server could not be reached; ``campaigns watch``: 5 the campaign
paused, 6 it stopped or was cancelled (0 when it finished).
"""

from __future__ import annotations

import json
import os
import sys
import tomllib
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, NoReturn
from urllib.parse import quote

import httpx
import typer
from rich.console import Console
from rich.table import Table

__all__ = ["ctl_app"]

EXIT_REFUSED = 1
EXIT_UNREACHABLE = 4
EXIT_PAUSED = 5  # campaigns watch: the campaign waits for an operator
EXIT_HALTED = 6  # campaigns watch: the campaign stopped or was cancelled
DEFAULT_URL = "http://127.0.0.1:8700"

ctl_app = typer.Typer(
    help="Manage devices, packages, jobs and campaigns through the server's REST API.",
    no_args_is_help=True,
    rich_markup_mode=None,
    context_settings={"help_option_names": ["-h", "--help"]},
)
devices_app = typer.Typer(
    help="Devices: register, list, show, accept, tag, update, delete.", no_args_is_help=True
)
packages_app = typer.Typer(help="Packages: upload, list, show, delete.", no_args_is_help=True)
publishers_app = typer.Typer(
    help="Publishers: the trust store of keys uploads must be signed with (list, add, delete).",
    no_args_is_help=True,
)
jobs_app = typer.Typer(help="Jobs: create, list, show, cancel.", no_args_is_help=True)
campaigns_app = typer.Typer(
    help="Campaigns: create, start, pause, resume, cancel, show, watch.", no_args_is_help=True
)
ctl_app.add_typer(devices_app, name="devices")
ctl_app.add_typer(campaigns_app, name="campaigns")
ctl_app.add_typer(packages_app, name="packages")
ctl_app.add_typer(publishers_app, name="publishers")
ctl_app.add_typer(jobs_app, name="jobs")
authorities_app = typer.Typer(
    help="Management authorities (admin tokens of the default authority): list, add.", no_args_is_help=True
)
ctl_app.add_typer(authorities_app, name="authorities")
tokens_app = typer.Typer(
    help="API tokens (admin tokens): list, create (with an expiry), rotate, revoke.", no_args_is_help=True
)
ctl_app.add_typer(tokens_app, name="tokens")

JsonOption = Annotated[bool, typer.Option("--json", help="Print the server's JSON.")]


@dataclass(frozen=True)
class Settings:
    url: str
    token: str


@ctl_app.callback()
def settings(
    ctx: typer.Context,
    url: Annotated[str | None, typer.Option(help=f"The server [{DEFAULT_URL}].", envvar="OMADM_URL")] = None,
    token: Annotated[str | None, typer.Option(help="An API token.", envvar="OMADM_TOKEN")] = None,
) -> None:
    """Where the server is and who we are."""
    file = _config_file()
    ctx.obj = Settings(
        (url or file.get("url") or DEFAULT_URL).rstrip("/"),
        token or file.get("token") or "",
    )


def _config_file() -> dict[str, str]:
    path = Path(os.environ.get("OMADM_CTL_CONFIG") or Path.home() / ".config" / "omadm" / "ctl.toml")
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return {}
    except (OSError, tomllib.TOMLDecodeError) as exc:
        _fail(2, f"cannot read {path}: {exc}")
    section = data.get("ctl", {})
    return {k: str(v) for k, v in section.items()} if isinstance(section, dict) else {}


def _fail(code: int, message: str) -> NoReturn:
    typer.echo(f"error: {message}", err=True)
    raise typer.Exit(code)


@contextmanager
def _client(ctx: typer.Context) -> Iterator[httpx.Client]:
    settings: Settings = ctx.obj
    headers = {"Authorization": f"Bearer {settings.token}"} if settings.token else {}
    with httpx.Client(base_url=f"{settings.url}/api/v1", headers=headers, timeout=60) as client:
        yield client


def _call(ctx: typer.Context, method: str, path: str, **kw: Any) -> Any:
    """One request; a refusal or an unreachable server ends the command with its reason."""
    try:
        with _client(ctx) as client:
            response = client.request(method, path, **kw)
    except httpx.TransportError as exc:
        _fail(EXIT_UNREACHABLE, f"cannot reach {ctx.obj.url}: {exc}")
    if response.status_code >= 400:
        try:
            problem = response.json()
            detail = problem.get("detail") or problem.get("title")
            errors = problem.get("errors") or []
            detail += "".join(f"\n  {e.get('field', '')}: {e.get('message', e)}" for e in errors)
        except (ValueError, AttributeError, TypeError):
            detail = response.text.strip() or response.reason_phrase
        _fail(EXIT_REFUSED, f"{response.status_code}: {detail}")
    return None if response.status_code == 204 or not response.content else response.json()


def _print(data: Any, as_json: bool, columns: list[str], title: str | None = None) -> None:
    if as_json:
        typer.echo(json.dumps(data, indent=2))
        return
    rows = data["items"] if isinstance(data, dict) and "items" in data else data
    rows = rows if isinstance(rows, list) else [rows]
    table = Table(title=title, title_justify="left")
    for column in columns:
        table.add_column(column)
    for row in rows:
        table.add_row(*[_cell(row.get(c)) for c in columns])
    Console(highlight=False).print(table)
    if isinstance(data, dict) and "total" in data and data["total"] > len(rows):
        typer.echo(f"{len(rows)} of {data['total']} (use --offset/--limit for more)")


def _named(entry: dict[str, Any], field: str) -> str | None:
    """A SCOMO State/Status as its word and number (``active (20)``): the number alone says little."""
    value, name = entry.get(field), entry.get(f"{field}_name")
    if value is None:
        return None
    return f"{name} ({value})" if name else str(value)


def _cell(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, dict):
        return ", ".join(f"{k}={v}" for k, v in value.items())
    return str(value)


def _tags(values: list[str]) -> dict[str, str]:
    tags = {}
    for value in values:
        key, sep, val = value.partition("=")
        if not sep or not key:
            _fail(2, f"a tag is key=value, not {value!r}")
        tags[key] = val
    return tags


# -- devices -----------------------------------------------------------------------------


def _device(device_id: str, sub: str = "") -> str:
    """The API path of a device (and a sub-resource): the DevId percent-encoded whole, so
    that a "/", "?", "#", a space or a non-ASCII letter in it stays part of the DevId."""
    return f"/devices/{quote(device_id, safe='')}{sub}"


@devices_app.command("add")
def devices_add(
    ctx: typer.Context,
    device_id: Annotated[str, typer.Argument(help="The DevId, e.g. IMEI:490154203237518.")],
    username: Annotated[str, typer.Option(help="What the device presents (CLCRED name).")],
    password: Annotated[str, typer.Option(help="Its password.")],
    auth: Annotated[str, typer.Option(help="md5, hmac or basic.")] = "md5",
    server_password: Annotated[str, typer.Option(help="SRVCRED: proves the server to the device.")] = "",
    notify: Annotated[str, typer.Option(help="Package #0 address: udp://h:p or http://h:p/.")] = "",
    tag: Annotated[list[str] | None, typer.Option(help="key=value (repeatable).")] = None,
    as_json: JsonOption = False,
) -> None:
    """Pre-register a device with the credentials it will present."""
    body = {
        "device_id": device_id,
        "username": username,
        "password": password,
        "auth": auth,
        "server_password": server_password,
        "notify_address": notify,
        "tags": _tags(tag or []),
    }
    device = _call(ctx, "POST", "/devices", json=body)
    _print(device, as_json, ["device_id", "state", "auth", "username", "tags"])


@devices_app.command("list")
def devices_list(
    ctx: typer.Context,
    state: Annotated[str | None, typer.Option(help="pending, accepted or rejected.")] = None,
    tag: Annotated[list[str] | None, typer.Option(help="name=value (repeatable: all must match).")] = None,
    devinfo: Annotated[
        list[str] | None, typer.Option(help="name=value of a DevInfo leaf, e.g. Mod=W7 (repeatable).")
    ] = None,
    component: Annotated[str | None, typer.Option(help="Has this component deployed (its id).")] = None,
    version: Annotated[str | None, typer.Option(help="With --component: at this version.")] = None,
    version_below: Annotated[
        str | None, typer.Option("--version-below", help="With --component: at a version below this.")
    ] = None,
    q: Annotated[
        str | None, typer.Option("--q", "--prefix", help="The DevId starts with this (case matters).")
    ] = None,
    limit: Annotated[int, typer.Option(help="At most this many.")] = 100,
    offset: Annotated[int, typer.Option(help="Skip this many (slow far in: prefer --cursor).")] = 0,
    cursor: Annotated[
        str | None, typer.Option(help="Start where the previous page ended (the cursor it printed).")
    ] = None,
    count: Annotated[str, typer.Option(help="auto, exact or none: how to count the matches.")] = "auto",
    as_json: JsonOption = False,
) -> None:
    """Devices in DevId order, with filters; page on with the --cursor the list prints."""
    params: dict[str, Any] = {
        "limit": limit,
        "tag": tag or [],
        "devinfo": devinfo or [],
        "count": count,
    }
    optional = {
        "state": state,
        "component": component,
        "version": version,
        "version_below": version_below,
        "q": q,
        "cursor": cursor,
    }
    params.update({name: value for name, value in optional.items() if value})
    if offset:
        params["offset"] = offset
    page = _call(ctx, "GET", "/devices", params=params)
    if as_json:
        typer.echo(json.dumps(page, indent=2))
        return
    _print({"items": page["items"]}, False, ["device_id", "state", "last_contact", "tags"])
    total = page.get("total")
    shown = f"{len(page['items'])} device{'' if len(page['items']) == 1 else 's'}"
    if total is not None:
        shown += f" of {'' if page.get('total_exact') else 'about '}{total:,}"
    if page.get("next_cursor"):
        shown += f"; next page: --cursor {page['next_cursor']}"
    typer.echo(shown)


@devices_app.command("show")
def devices_show(
    ctx: typer.Context,
    device_id: Annotated[str, typer.Argument(help="The DevId.")],
    as_json: JsonOption = False,
) -> None:
    """One device: identity, inventory and recent history."""
    device = _call(ctx, "GET", _device(device_id))
    inventory = _call(ctx, "GET", _device(device_id, "/inventory"))
    history = _call(ctx, "GET", _device(device_id, "/history"), params={"limit": 20})
    if as_json:
        typer.echo(json.dumps({"device": device, "inventory": inventory, "history": history}, indent=2))
        return
    _print(device, False, ["device_id", "state", "last_contact", "tags"])
    named = [{**e, "state": _named(e, "state"), "status": _named(e, "status")} for e in inventory]
    _print(named, False, ["kind", "ident", "version", "state", "status", "pkg_id_ref"], title="inventory")
    _print(history, False, ["at", "kind", "detail"], title="history (newest first)")


@devices_app.command("accept")
def devices_accept(
    ctx: typer.Context,
    device_id: Annotated[str, typer.Argument(help="A pending device's DevId.")],
    username: Annotated[str | None, typer.Option(help="Credentials to give it.")] = None,
    password: Annotated[str | None, typer.Option(help="Its password.")] = None,
    reject: Annotated[bool, typer.Option("--reject", help="Reject it instead.")] = False,
    as_json: JsonOption = False,
) -> None:
    """Accept a pending device (or --reject it)."""
    if reject:
        device = _call(ctx, "POST", _device(device_id, "/reject"))
    else:
        body = {k: v for k, v in (("username", username), ("password", password)) if v is not None}
        device = _call(ctx, "POST", _device(device_id, "/accept"), json=body)
    _print(device, as_json, ["device_id", "state"])


@devices_app.command("tag")
def devices_tag(
    ctx: typer.Context,
    device_id: Annotated[str, typer.Argument(help="The DevId.")],
    tags: Annotated[list[str], typer.Argument(help="key=value to set, or key= to remove.")],
    as_json: JsonOption = False,
) -> None:
    """Set or remove tags (the others stay)."""
    changes = _tags(tags)  # a bad argument is a usage error before any request
    current = dict(_call(ctx, "GET", _device(device_id))["tags"])
    for key, value in changes.items():
        if value:
            current[key] = value
        else:
            current.pop(key, None)
    device = _call(ctx, "PUT", _device(device_id, "/tags"), json=current)
    _print(device, as_json, ["device_id", "tags"])


@devices_app.command("update")
def devices_update(
    ctx: typer.Context,
    device_id: Annotated[str, typer.Argument(help="The DevId.")],
    username: Annotated[str | None, typer.Option(help="A new CLCRED name.")] = None,
    password: Annotated[str | None, typer.Option(help="A new password.")] = None,
    auth: Annotated[str | None, typer.Option(help="md5, hmac or basic.")] = None,
    server_password: Annotated[
        str | None, typer.Option(help="A new SRVCRED password; '' removes it (and needs --notify '').")
    ] = None,
    notify: Annotated[
        str | None, typer.Option(help="A new Package #0 address (udp://h:p, http://h:p/); '' removes it.")
    ] = None,
    as_json: JsonOption = False,
) -> None:
    """Change a device's credentials or notification address (only what is given).

    Tags change with 'devices tag'. A notification address on a device with no server
    password gets one generated: it is printed this once, to configure on the device.
    """
    given = {
        "username": username,
        "password": password,
        "auth": auth,
        "server_password": server_password,
        "notify_address": notify,
    }
    body = {name: value for name, value in given.items() if value is not None}
    if not body:
        _fail(2, "nothing to change: give --password, --username, --auth, --server-password or --notify")
    device = _call(ctx, "PATCH", _device(device_id), json=body)
    _print(device, as_json, ["device_id", "state", "auth", "username", "notify_address"])
    if device.get("generated_server_password") and not as_json:
        typer.echo(f"server password (shown once): {device['generated_server_password']}")


@devices_app.command("delete")
def devices_delete(
    ctx: typer.Context,
    device_id: Annotated[str, typer.Argument(help="The DevId.")],
    yes: Annotated[bool, typer.Option("--yes", "-y", help="Do not ask for confirmation.")] = False,
) -> None:
    """Delete a device with its jobs, inventory, history and campaign memberships.

    Refused while the device works on a job (sent, not finished). Asks first unless --yes.
    """
    if not yes and not typer.confirm(f"Delete device {device_id} and all its history?"):
        _fail(EXIT_REFUSED, "not deleted")
    _call(ctx, "DELETE", _device(device_id))
    typer.echo(f"device {device_id} deleted")


# -- packages ----------------------------------------------------------------------------


def _signed_by(data: Any, as_json: bool) -> Any:
    """Add ``signed_by`` to each package shown as a table: "acme (key 1a2b...)", "unsigned" or
    "unverified" (signed by a key the trust store did not hold), from what the API says."""
    if as_json:
        return data
    rows = data["items"] if isinstance(data, dict) and "items" in data else [data]
    for row in rows:
        verified = row.get("signature") == "verified"
        row["signed_by"] = f"{row['publisher']} (key {row['key_id']})" if verified else row.get("signature")
    return data


@packages_app.command("upload")
def packages_upload(
    ctx: typer.Context,
    path: Annotated[Path, typer.Argument(help="An omadm package (.omp).", exists=True, dir_okay=False)],
    allow_unsigned: Annotated[
        bool,
        typer.Option(
            "--allow-unsigned",
            help="Admins: accept it although it is unsigned or signed by a key the server does not "
            "trust (audited).",
        ),
    ] = False,
    as_json: JsonOption = False,
) -> None:
    """Upload a package signed by a trusted publisher ('publishers add'); prints its id."""
    params: dict[str, str] = {"filename": path.name}
    if allow_unsigned:
        params["allow_unsigned"] = "true"
    with path.open("rb") as body:
        package = _call(
            ctx,
            "POST",
            "/packages",
            params=params,
            content=body.read(),
            headers={"content-type": "application/octet-stream"},
        )
    columns = ["id", "filename", "package_id", "version", "size", "signed_by", "sha256"]
    _print(_signed_by(package, as_json), as_json, columns)


@packages_app.command("list")
def packages_list(ctx: typer.Context, as_json: JsonOption = False) -> None:
    """Uploaded packages, newest first, with who signed them."""
    columns = ["id", "filename", "package_id", "version", "size", "signed_by"]
    _print(_signed_by(_call(ctx, "GET", "/packages"), as_json), as_json, columns)


@packages_app.command("show")
def packages_show(
    ctx: typer.Context,
    package_id: Annotated[int, typer.Argument(help="The package's id.")],
    as_json: JsonOption = False,
) -> None:
    """One package and its manifest."""
    package = _call(ctx, "GET", f"/packages/{package_id}")
    columns = ["id", "filename", "package_id", "version", "size", "signed_by", "sha256", "manifest"]
    _print(_signed_by(package, as_json), as_json, columns)


@packages_app.command("delete")
def packages_delete(
    ctx: typer.Context,
    package_id: Annotated[int, typer.Argument(help="The package's id.")],
    yes: Annotated[bool, typer.Option("--yes", "-y", help="Do not ask for confirmation.")] = False,
) -> None:
    """Delete a package (its file too). Refused while an unfinished job or campaign uses it."""
    if not yes and not typer.confirm(f"Delete package {package_id}?"):
        _fail(EXIT_REFUSED, "not deleted")
    _call(ctx, "DELETE", f"/packages/{package_id}")
    typer.echo(f"package {package_id} deleted")


# -- publishers --------------------------------------------------------------------------

_PUBLISHER_COLUMNS = ["name", "key_id", "fingerprint", "created"]


@publishers_app.command("list")
def publishers_list(ctx: typer.Context, as_json: JsonOption = False) -> None:
    """The trust store: the publisher keys uploads must be signed with."""
    publishers = _call(ctx, "GET", "/publishers")
    _print(publishers, as_json, _PUBLISHER_COLUMNS)
    if not publishers and not as_json:
        typer.echo("no publishers: uploads are refused until one is added (publishers add NAME KEY.pub.pem)")


@publishers_app.command("add")
def publishers_add(
    ctx: typer.Context,
    name: Annotated[str, typer.Argument(help="Who publishes with the key (shown in package lists).")],
    key: Annotated[
        Path,
        typer.Argument(
            help="The public key, PEM (KEY.pub.pem from 'omadm package keygen').", exists=True, dir_okay=False
        ),
    ],
    as_json: JsonOption = False,
) -> None:
    """Trust a publisher's public key (admins): packages it signed can then be uploaded."""
    try:
        pem = key.read_bytes()[: 64 << 10].decode("ascii")
    except (OSError, UnicodeDecodeError) as exc:
        _fail(2, f"cannot read {key} as a PEM file: {exc}")
    publisher = _call(ctx, "POST", "/publishers", json={"name": name, "public_key": pem})
    _print(publisher, as_json, _PUBLISHER_COLUMNS)


@publishers_app.command("delete")
def publishers_delete(
    ctx: typer.Context,
    name: Annotated[str, typer.Argument(help="The publisher's name, or its key id.")],
) -> None:
    """Stop trusting a publisher's key (admins); packages uploaded already stay."""
    _call(ctx, "DELETE", f"/publishers/{quote(name, safe='')}")
    typer.echo(f"publisher {name} deleted")


# -- authorities -------------------------------------------------------------------------

_AUTHORITY_COLUMNS = ["name", "server_id", "devices", "tokens", "packages", "campaigns", "description"]


@authorities_app.command("list")
def authorities_list(ctx: typer.Context, as_json: JsonOption = False) -> None:
    """The management authorities and what each owns (a null ServerID: the server's own)."""
    _print(_call(ctx, "GET", "/authorities"), as_json, _AUTHORITY_COLUMNS)


@authorities_app.command("add")
def authorities_add(
    ctx: typer.Context,
    name: Annotated[str, typer.Argument(help="Its name.")],
    server_id: Annotated[str, typer.Option("--server-id", help="The DM ServerID its devices know it by.")],
    description: Annotated[str, typer.Option(help="What it is.")] = "",
    as_json: JsonOption = False,
) -> None:
    """Create a management authority (then a token for it: POST /api/v1/tokens with "authority")."""
    body = {"name": name, "server_id": server_id, "description": description}
    _print(_call(ctx, "POST", "/authorities", json=body), as_json, _AUTHORITY_COLUMNS)


# -- tokens ------------------------------------------------------------------------------

_TOKEN_COLUMNS = ["id", "name", "role", "authority", "created", "last_used", "expires", "rotated"]
_ExpiresIn = Annotated[
    str | None, typer.Option("--expires-in", help="It expires this long from now: 30d, 12h, 90m, 2w.")
]
_ExpiresAt = Annotated[
    str | None, typer.Option("--expires-at", help="It expires at this time (ISO 8601 with a timezone).")
]


def _token_id(ctx: typer.Context, name: str) -> int:
    """The id of the token named ``name`` (the API addresses tokens by id, people by name)."""
    for row in _call(ctx, "GET", "/tokens"):
        if row["name"] == name:
            return int(row["id"])
    _fail(EXIT_REFUSED, f"no token named {name!r} (among the tokens this token may manage)")


def _print_secret(data: dict[str, Any], as_json: bool, what: str) -> None:
    if as_json:
        typer.echo(json.dumps(data, indent=2))
        return
    typer.echo(data["token"])
    until = f"expires {data['expires']}" if data.get("expires") else "does not expire"
    typer.echo(f"token {data['name']!r} ({data['role']}) {what}; it {until}; shown only now", err=True)


@tokens_app.command("list")
def tokens_list(ctx: typer.Context, as_json: JsonOption = False) -> None:
    """The tokens: name, role, authority, last use, expiry, last rotation (never the secrets)."""
    _print(_call(ctx, "GET", "/tokens"), as_json, _TOKEN_COLUMNS)


@tokens_app.command("create")
def tokens_create(
    ctx: typer.Context,
    name: Annotated[str, typer.Argument(help="Who uses it: the name the audit log shows.")],
    role: Annotated[str, typer.Option(help="viewer, operator or admin.")] = "viewer",
    authority: Annotated[str | None, typer.Option(help="Its management authority [this token's].")] = None,
    expires_in: _ExpiresIn = None,
    expires_at: _ExpiresAt = None,
    as_json: JsonOption = False,
) -> None:
    """Create a token; prints its secret once (standard output), what it is on standard error."""
    body: dict[str, Any] = {"name": name, "role": role}
    for key, value in (("authority", authority), ("expires_in", expires_in), ("expires_at", expires_at)):
        if value is not None:
            body[key] = value
    _print_secret(_call(ctx, "POST", "/tokens", json=body), as_json, "created")


@tokens_app.command("rotate")
def tokens_rotate(
    ctx: typer.Context,
    name: Annotated[str, typer.Argument(help="The token's name.")],
    grace: Annotated[str, typer.Option(help="How long the old secret still works: 30m, 1h... [0].")] = "0",
    expires_in: _ExpiresIn = None,
    expires_at: _ExpiresAt = None,
    never_expires: Annotated[
        bool, typer.Option("--never-expires", help="The new secret does not expire.")
    ] = False,
    as_json: JsonOption = False,
) -> None:
    """A new secret for the same name and role; the old one works for --grace more, then not."""
    body: dict[str, Any] = {"grace": grace, "never_expires": never_expires}
    for key, value in (("expires_in", expires_in), ("expires_at", expires_at)):
        if value is not None:
            body[key] = value
    token_id = _token_id(ctx, name)
    _print_secret(_call(ctx, "POST", f"/tokens/{token_id}/rotate", json=body), as_json, "rotated")


@tokens_app.command("revoke")
def tokens_revoke(ctx: typer.Context, name: Annotated[str, typer.Argument(help="The token's name.")]) -> None:
    """Revoke a token at once."""
    _call(ctx, "DELETE", f"/tokens/{_token_id(ctx, name)}")
    typer.echo(f"token {name!r} revoked")


# -- jobs --------------------------------------------------------------------------------

_JOB_COLUMNS = ["id", "device_id", "kind", "state", "result_code", "detail"]


@jobs_app.command("create")
def jobs_create(
    ctx: typer.Context,
    device_id: Annotated[str, typer.Argument(help="The device's DevId.")],
    kind: Annotated[str, typer.Argument(help="install, install-inactive, download, install-direct, ...")],
    package: Annotated[int | None, typer.Option(help="An uploaded package's id.")] = None,
    url: Annotated[str | None, typer.Option(help="A package hosted elsewhere.")] = None,
    pkg_id: Annotated[
        str | None, typer.Option("--pkg-id", help="The package's id (its manifest's), needed with --url.")
    ] = None,
    component: Annotated[str | None, typer.Option(help="A component ID (remove, activate, ...).")] = None,
    node: Annotated[str | None, typer.Option(help="A Delivered/<X> name.")] = None,
    descriptor: Annotated[
        bool, typer.Option("--descriptor", help="Deliver through a DLOTA descriptor.")
    ] = False,
    as_json: JsonOption = False,
) -> None:
    """Queue one SCOMO operation for one device."""
    body: dict[str, Any] = {"device_id": device_id, "kind": kind, "descriptor": descriptor}
    given = (
        ("artifact_id", package),
        ("url", url),
        ("pkg_id", pkg_id),
        ("component_id", component),
        ("node", node),
    )
    for key, value in given:
        if value is not None:
            body[key] = value
    _print(_call(ctx, "POST", "/jobs", json=body), as_json, _JOB_COLUMNS)


@jobs_app.command("list")
def jobs_list(
    ctx: typer.Context,
    device: Annotated[str | None, typer.Option(help="Only this device's.")] = None,
    state: Annotated[str | None, typer.Option(help="queued, sent, accepted, succeeded, failed, ...")] = None,
    kind: Annotated[str | None, typer.Option(help="Only this kind.")] = None,
    limit: Annotated[int, typer.Option(help="At most this many.")] = 100,
    as_json: JsonOption = False,
) -> None:
    """Jobs, newest first."""
    params = {k: v for k, v in (("device", device), ("state", state), ("kind", kind)) if v}
    _print(_call(ctx, "GET", "/jobs", params={**params, "limit": limit}), as_json, _JOB_COLUMNS)


@jobs_app.command("show")
def jobs_show(
    ctx: typer.Context,
    job_id: Annotated[int, typer.Argument(help="The job's id.")],
    as_json: JsonOption = False,
) -> None:
    """One job."""
    _print(_call(ctx, "GET", f"/jobs/{job_id}"), as_json, [*_JOB_COLUMNS, "correlator", "attempts"])


@jobs_app.command("cancel")
def jobs_cancel(
    ctx: typer.Context,
    job_id: Annotated[int, typer.Argument(help="The job's id.")],
    as_json: JsonOption = False,
) -> None:
    """Cancel an unfinished job: the server sends it no more (a later report is still recorded)."""
    _print(_call(ctx, "POST", f"/jobs/{job_id}/cancel"), as_json, _JOB_COLUMNS)


# -- campaigns -----------------------------------------------------------------------------

_CAMPAIGN_COLUMNS = ["id", "name", "kind", "state", "current_wave", "counters", "detail"]
_FINAL_CAMPAIGN = frozenset({"finished", "stopped", "cancelled"})


def _wave(value: str) -> int | str:
    return int(value) if value.isdigit() else value


@campaigns_app.command("create")
def campaigns_create(
    ctx: typer.Context,
    name: Annotated[str, typer.Argument(help="What operators will call it.")],
    kind: Annotated[str, typer.Argument(help="install, update, remove, activate or deactivate.")],
    package: Annotated[int | None, typer.Option(help="The package's id (install, update).")] = None,
    component: Annotated[
        str | None, typer.Option(help="The component (remove, activate, deactivate).")
    ] = None,
    wave: Annotated[list[str] | None, typer.Option(help="A wave: a count or NN% (repeat, in order).")] = None,
    tag: Annotated[list[str] | None, typer.Option(help="Target: key=value (repeatable).")] = None,
    device: Annotated[list[str] | None, typer.Option(help="Target: these DevIds (repeatable).")] = None,
    devinfo: Annotated[list[str] | None, typer.Option(help="Target: DevInfo k=v (repeatable).")] = None,
    has_component: Annotated[str | None, typer.Option(help="Target: devices that have it.")] = None,
    version: Annotated[str | None, typer.Option(help="...in this version (PEP 440).")] = None,
    version_below: Annotated[str | None, typer.Option(help="...in a version lower than this.")] = None,
    all_devices: Annotated[
        bool, typer.Option("--all-devices", help="No target: act on every device (required for that).")
    ] = False,
    success: Annotated[
        float | None,
        typer.Option(help="Share of a wave that releases the next; below it, the campaign pauses [1.0]."),
    ] = None,
    error: Annotated[
        float | None, typer.Option(help="Share of a wave failed above which the campaign stops [0.5].")
    ] = None,
    retries: Annotated[int, typer.Option(help="New jobs after a transient failure.")] = 0,
    timeout: Annotated[float | None, typer.Option(help="Seconds before a device's job times out.")] = None,
    window: Annotated[str | None, typer.Option(help="Daily maintenance window, UTC: HH:MM-HH:MM.")] = None,
    skip_busy: Annotated[
        bool, typer.Option("--skip-busy", help="Leave out devices in another campaign.")
    ] = False,
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="Only say how many devices it would target, and which first.")
    ] = False,
    as_json: JsonOption = False,
) -> None:
    """Create a campaign (a draft: start it with 'campaigns start'); --dry-run creates nothing."""
    target: dict[str, Any] = {}
    if tag:
        target["tags"] = _tags(tag)
    if devinfo:
        target["devinfo"] = _tags(devinfo)
    if device:
        target["devices"] = device
    if has_component:
        target["has_component"] = has_component
    if version:
        target["version"] = version
    if version_below:
        target["version_below"] = version_below
    body: dict[str, Any] = {
        "name": name,
        "kind": kind,
        "target": target,
        "waves": [_wave(w) for w in wave or []],
        "max_retries": retries,
        "skip_busy": skip_busy,
        "all_devices": all_devices,
    }
    for key, value in (
        ("artifact_id", package),
        ("component_id", component),
        ("device_timeout", timeout),
        ("success_threshold", success),
        ("error_threshold", error),
    ):
        if value is not None:
            body[key] = value
    if window:
        body["window"] = window
    if dry_run:
        preview = _call(ctx, "POST", "/campaigns/preview", json=body)
        if as_json:
            typer.echo(json.dumps(preview, indent=2))
            return
        waves = ", ".join(str(size) for size in preview["waves"]) or "-"
        typer.echo(f"would target {preview['devices']} devices in waves of {waves}")
        if preview["busy"]:
            typer.echo(f"{preview['busy']} more are busy in another campaign for the component")
        if preview["sample"]:
            typer.echo("first: " + ", ".join(preview["sample"]))
        return
    created = _call(ctx, "POST", "/campaigns", json=body)
    _print(created, as_json, _CAMPAIGN_COLUMNS)
    if not as_json:
        typer.echo(
            f"each wave releases the next at {created['success_threshold']:.0%} succeeded; it pauses "
            f"when a wave ends below that, and stops when more than {created['error_threshold']:.0%} "
            "of a wave failed",
            err=True,
        )


def _campaign_action(action: str, help_text: str) -> None:
    def command(
        ctx: typer.Context,
        campaign_id: Annotated[int, typer.Argument(help="The campaign's id.")],
        as_json: JsonOption = False,
    ) -> None:
        _print(_call(ctx, "POST", f"/campaigns/{campaign_id}/{action}"), as_json, _CAMPAIGN_COLUMNS)

    command.__doc__ = help_text
    campaigns_app.command(action)(command)


_campaign_action("start", "Start a draft campaign: its first wave's jobs are queued at once.")
_campaign_action("pause", "Pause: no new jobs; those the devices have finish and are counted.")
_campaign_action("resume", "Resume a paused campaign (after an automatic pause: the next wave).")
_campaign_action("cancel", "Cancel: jobs not yet sent are called back; installed devices stay as they are.")


@campaigns_app.command("list")
def campaigns_list(ctx: typer.Context, as_json: JsonOption = False) -> None:
    """Campaigns, newest first."""
    _print(_call(ctx, "GET", "/campaigns"), as_json, _CAMPAIGN_COLUMNS)


def _wave_table(campaign: dict[str, Any]) -> Table:
    table = Table(
        title=f"campaign {campaign['id']} {campaign['name']}: {campaign['state']}"
        + (f" ({campaign['detail']})" if campaign.get("detail") else ""),
        title_justify="left",
    )
    for column in ("wave", "size", "pending", "running", "succeeded", "failed", "cancelled", "progress"):
        table.add_column(column)
    for number, wave in enumerate(campaign.get("wave_counters", []), start=1):
        size = int(wave.get("size", 0)) or 1
        done = int(wave.get("succeeded", 0)) + int(wave.get("failed", 0)) + int(wave.get("cancelled", 0))
        bar = "#" * round(20 * done / size)
        marker = ">" if number == campaign.get("current_wave") else " "
        table.add_row(
            f"{marker}{number}",
            *(
                str(wave.get(k, 0))
                for k in ("size", "pending", "running", "succeeded", "failed", "cancelled")
            ),
            f"[green]{bar:<20}[/]",
        )
    return table


_DEVICE_COLUMNS = [
    "device_id",
    "wave",
    "state",
    "attempts",
    "job_id",
    "job_state",
    "result_code",
    "detail",
]


def _devices_table(page: dict[str, Any], title: str) -> Table:
    table = Table(title=title, title_justify="left")
    for column in _DEVICE_COLUMNS:
        table.add_column(column)
    for row in page["items"]:
        table.add_row(*[_cell(row.get(c)) for c in _DEVICE_COLUMNS])
    if page["total"] > len(page["items"]):
        shown = f"{len(page['items'])} of {page['total']} devices"
        table.caption = f"{shown} (use --wave, --state, --limit, --offset)"
    return table


def _devices(ctx: typer.Context, campaign_id: int, **params: Any) -> Any:
    query = {k: v for k, v in params.items() if v is not None}
    return _call(ctx, "GET", f"/campaigns/{campaign_id}/devices", params=query)


@campaigns_app.command("show")
def campaigns_show(
    ctx: typer.Context,
    campaign_id: Annotated[int, typer.Argument(help="The campaign's id.")],
    wave: Annotated[int | None, typer.Option(help="Only this wave's devices (from 1).")] = None,
    state: Annotated[
        str | None, typer.Option(help="Only devices in this state (pending, running, failed, ...).")
    ] = None,
    limit: Annotated[int, typer.Option(help="At most this many devices.")] = 50,
    offset: Annotated[int, typer.Option(help="Skip this many devices.")] = 0,
    as_json: JsonOption = False,
) -> None:
    """One campaign: its counters per wave, then its devices with their state, job and reason."""
    campaign = _call(ctx, "GET", f"/campaigns/{campaign_id}")
    devices = _devices(ctx, campaign_id, wave=wave, state=state, limit=limit, offset=offset)
    if as_json:
        typer.echo(json.dumps({**campaign, "devices": devices}, indent=2))
        return
    console = Console(highlight=False)
    console.print(_wave_table(campaign))
    console.print(_devices_table(devices, "devices"))


def _summary_line(campaign: dict[str, Any]) -> str:
    waves = campaign.get("wave_counters", [])
    counts = campaign.get("counters", {})
    names = ("pending", "running", "succeeded", "failed", "cancelled")
    states = ", ".join(f"{counts.get(k, 0)} {k}" for k in names)
    where = f"wave {campaign.get('current_wave')}/{len(waves)}"
    line = f"campaign {campaign['id']} {campaign['state']} {where}: {states}"
    return line + (f" ({campaign['detail']})" if campaign.get("detail") else "")


@campaigns_app.command("watch")
def campaigns_watch(
    ctx: typer.Context,
    campaign_id: Annotated[int, typer.Argument(help="The campaign's id.")],
    interval: Annotated[float, typer.Option(help="Seconds between refreshes.")] = 1.0,
) -> None:
    """Follow a campaign until it finishes, pauses or stops (Ctrl-C stops watching, not the
    campaign). Exit 0 when it finished, 5 when it paused, 6 when it stopped or was cancelled,
    so a script can wait on it. On a terminal the tables redraw in place; through a pipe one
    line is printed per change (the campaign's counters, then each device that moved)."""
    import time  # noqa: PLC0415

    campaign = _call(ctx, "GET", f"/campaigns/{campaign_id}")

    def current_devices() -> Any:
        return _devices(ctx, campaign_id, wave=campaign.get("current_wave") or None, limit=100)

    def done() -> bool:
        return campaign["state"] in _FINAL_CAMPAIGN or campaign["state"] == "paused"

    try:
        if sys.stdout.isatty():
            from rich.console import Group  # noqa: PLC0415
            from rich.live import Live  # noqa: PLC0415

            def view() -> Group:
                wave = f"wave {campaign.get('current_wave')}'s devices"
                return Group(_wave_table(campaign), _devices_table(current_devices(), wave))

            with Live(view(), refresh_per_second=4) as live:
                while not done():
                    time.sleep(interval)
                    campaign = _call(ctx, "GET", f"/campaigns/{campaign_id}")
                    live.update(view())
        else:
            last_line = ""
            seen: dict[str, tuple[Any, ...]] = {}
            while True:
                line = _summary_line(campaign)
                if line != last_line:
                    typer.echo(line)
                    last_line = line
                for device in current_devices()["items"]:
                    mark = (device["state"], device["job_state"], device["result_code"], device["detail"])
                    if seen.get(device["device_id"]) != mark:
                        seen[device["device_id"]] = mark
                        result = f" {device['result_code']}" if device["result_code"] is not None else ""
                        reason = f": {device['detail']}" if device["detail"] else ""
                        typer.echo(
                            f"  wave {device['wave']} {device['device_id']} {device['state']}"
                            f" (job {device['job_id'] or '-'} {device['job_state'] or '-'}{result}){reason}"
                        )
                if done():
                    break
                time.sleep(interval)
                campaign = _call(ctx, "GET", f"/campaigns/{campaign_id}")
    except KeyboardInterrupt:
        pass
    reason = f" ({campaign['detail']})" if campaign.get("detail") else ""
    typer.echo(f"campaign {campaign_id}: {campaign['state']}{reason}")
    if campaign["state"] == "paused":
        raise typer.Exit(EXIT_PAUSED)
    if campaign["state"] in ("stopped", "cancelled"):
        raise typer.Exit(EXIT_HALTED)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(ctl_app())
