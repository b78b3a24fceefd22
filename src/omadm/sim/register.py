"""Register a simulated fleet on an omadm server: generated DevIds and secrets, bulk requests.

:func:`register_fleet` makes ``count`` devices (DevIds from a prefix and a counter, random
passwords and server passwords from :mod:`secrets`), asks the server through the REST API
which DM URL and ServerID its devices must use (``GET /api/v1/whoami``), and registers them
with ``POST /api/v1/devices/bulk`` in batches of up to 10,000: one transaction each on the
server, so 10,000 devices take about a second, not the minutes of one request per device.
It returns the :class:`~omadm.sim.fleet.Fleet` that ``omadm sim run`` drives. With a
notification port (``--notify PORT``) every device is registered with its own Package #0
address, so that the server can wake it (:mod:`omadm.sim.notify`).

A refusal or an unreachable server becomes one :class:`RegistrationError` whose message is
the server's own reason. Batches are all or none on the server, but a batch refused after
others were accepted leaves those registered: the error then carries them
(``RegistrationError.registered``) so that their secrets are not lost.
"""

from __future__ import annotations

import re
import secrets
from collections.abc import Callable
from typing import Any

import httpx

from .fleet import AUTH_SCHEMES, Fleet, FleetDevice
from .notify import NotifyError, notify_address

__all__ = ["MAX_BATCH", "RegistrationError", "fleet_device_ids", "new_devices", "register_fleet"]

#: The most devices the server's bulk endpoint takes in one request.
MAX_BATCH = 10_000
#: An IMEI is 15 digits: ``IMEI:`` prefixes are padded to that length.
IMEI_DIGITS = 15
#: Other prefixes get a counter of at least this many digits.
MIN_COUNTER_DIGITS = 6
#: What the server stores of a DevId.
MAX_DEVICE_ID = 255
#: Seconds a bulk request may take (10,000 devices: about a second on an idle small server).
BATCH_TIMEOUT = 300.0
_SECRET_BYTES = 16  # 22 URL-safe characters


class RegistrationError(Exception):
    """The fleet could not be registered; the message says why, as the server said it.

    ``unreachable``: the server did not answer (rather than refusing). ``registered``: the
    devices of the batches accepted before the failure (None when there were none), which
    exist on the server with the secrets only this fleet knows.
    """

    def __init__(self, message: str, *, unreachable: bool = False, registered: Fleet | None = None) -> None:
        super().__init__(message)
        self.unreachable = unreachable
        self.registered = registered


def fleet_device_ids(prefix: str, count: int, start: int = 1) -> list[str]:
    """``count`` DevIds: ``prefix`` and a zero-padded counter from ``start``.

    An ``IMEI:`` prefix (with the first digits, e.g. ``IMEI:35``) is padded to the 15 digits
    of an IMEI (``IMEI:350000000000001``; no Luhn check digit: the counter stays readable).
    Any other prefix gets a counter of at least 6 digits, as wide as the largest value.
    """
    if not prefix:
        raise RegistrationError("the DevId prefix is empty (e.g. IMEI:35)")
    if count < 1:
        raise RegistrationError(f"the count must be at least 1, not {count}")
    if start < 0:
        raise RegistrationError(f"the counter starts at 0 or more, not {start}")
    last = start + count - 1
    if prefix.upper().startswith("IMEI:"):
        digits = prefix[len("IMEI:") :]
        if not re.fullmatch(r"[0-9]*", digits):
            raise RegistrationError(f"an IMEI prefix has only digits after IMEI:, not {prefix!r}")
        width = IMEI_DIGITS - len(digits)
        if width < 1 or last >= 10**width:
            raise RegistrationError(
                f"{count} devices from {start} do not fit an IMEI after {prefix!r}: "
                f"{max(width, 0)} digits are left for the counter; use a shorter prefix"
            )
    else:
        width = max(MIN_COUNTER_DIGITS, len(str(last)))
        if len(prefix) + width > MAX_DEVICE_ID:
            raise RegistrationError(
                f"the DevId prefix is too long: a DevId has at most {MAX_DEVICE_ID} characters"
            )
    return [f"{prefix}{n:0{width}d}" for n in range(start, last + 1)]


def _username(device_id: str) -> str:
    """The account name: the DevId's letters and digits (``imei350000000000001``).

    Never the DevId itself: its colon would break Basic authentication (``name:password``).
    """
    return re.sub(r"[^0-9a-z]", "", device_id.lower()) or "device"


def new_devices(
    prefix: str, count: int, auth: str = "md5", *, start: int = 1, notify_port: int | None = None
) -> list[FleetDevice]:
    """``count`` new devices with fresh random passwords and server passwords.

    ``notify_port``: give each device a Package #0 address, ``udp://127.A.B.C:notify_port``
    from its counter (:func:`omadm.sim.notify.notify_address`), where ``omadm sim run`` listens.
    """
    if auth not in AUTH_SCHEMES:
        raise RegistrationError(f"auth must be one of {', '.join(AUTH_SCHEMES)}, not {auth!r}")
    ids = fleet_device_ids(prefix, count, start)
    addresses = [""] * count
    if notify_port is not None:
        try:
            addresses = [notify_address(n, notify_port) for n in range(start, start + count)]
        except NotifyError as exc:
            raise RegistrationError(str(exc)) from None
    return [
        FleetDevice(
            device_id=device_id,
            username=_username(device_id),
            password=secrets.token_urlsafe(_SECRET_BYTES),
            auth=auth,
            server_password=secrets.token_urlsafe(_SECRET_BYTES),
            notify_address=address,
        )
        for device_id, address in zip(ids, addresses, strict=True)
    ]


def _reason(response: httpx.Response) -> str:
    """The status and the server's reason: a problem document's detail, else the body."""
    try:
        problem = response.json()
        detail = str(problem.get("detail") or problem.get("title"))
        errors = problem.get("errors") or []
        detail += "".join(f"; {e.get('field', '')}: {e.get('message', e)}" for e in errors[:3])
    except (ValueError, AttributeError, TypeError):
        detail = response.text.strip()[:200] or response.reason_phrase
    return f"{response.status_code}: {detail}"


async def _identity(client: httpx.AsyncClient, api_url: str) -> dict[str, Any]:
    try:
        response = await client.get("/whoami")
    except httpx.TransportError as exc:
        raise RegistrationError(
            f"cannot reach {api_url}: {exc or type(exc).__name__}", unreachable=True
        ) from None
    if response.status_code != 200:
        raise RegistrationError(f"the server refused the token: {_reason(response)}")
    try:
        identity: dict[str, Any] = response.json()
    except ValueError:
        raise RegistrationError(
            f"{api_url} is not an omadm server (GET /api/v1/whoami is not JSON)"
        ) from None
    return identity


async def register_fleet(
    api_url: str,
    token: str,
    count: int,
    prefix: str = "IMEI:35",
    auth: str = "md5",
    *,
    start: int = 1,
    batch_size: int = MAX_BATCH,
    dm_url: str | None = None,
    server_id: str | None = None,
    notify_port: int | None = None,
    transport: httpx.AsyncBaseTransport | None = None,
    on_batch: Callable[[int, int], None] | None = None,
) -> Fleet:
    """Register ``count`` new devices on the omadm server at ``api_url`` and return their fleet.

    ``token`` is an API token of the operator role (or admin); the devices join its
    management authority, whose DM URL and ServerID the fleet records (``dm_url`` and
    ``server_id`` override what the server says, e.g. when devices reach it through a proxy).
    ``batch_size`` devices go in each request (at most :data:`MAX_BATCH`); ``on_batch(done,
    total)`` is called after each. ``notify_port``: register every device with its own
    Package #0 address on this UDP port (see :func:`new_devices`). ``transport`` is for tests
    (an app in process).
    """
    if not 1 <= batch_size <= MAX_BATCH:
        raise RegistrationError(f"the batch size is 1 to {MAX_BATCH}, not {batch_size}")
    devices = new_devices(prefix, count, auth, start=start, notify_port=notify_port)
    api_url = api_url.rstrip("/")
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    async with httpx.AsyncClient(
        base_url=f"{api_url}/api/v1", headers=headers, timeout=BATCH_TIMEOUT, transport=transport
    ) as client:
        identity = await _identity(client, api_url)
        dm_url = dm_url or identity.get("dm_url")
        server_id = server_id or identity.get("server_id")
        if not dm_url or not server_id:
            raise RegistrationError(
                f"the server at {api_url} does not say its DM URL and ServerID (GET /api/v1/whoami): "
                "give them (--dm-url, --server-id)"
            )
        done = 0
        for begin in range(0, len(devices), batch_size):
            batch = devices[begin : begin + batch_size]
            where = f"batch {begin // batch_size + 1} ({batch[0].device_id} .. {batch[-1].device_id})"
            registered = Fleet(dm_url, server_id, tuple(devices[:done])) if done else None
            try:
                response = await client.post(
                    "/devices/bulk", json={"devices": [device.to_json() for device in batch]}
                )
            except httpx.TransportError as exc:
                raise RegistrationError(
                    f"{where}: no answer from {api_url} ({exc or type(exc).__name__}): "
                    "the server may or may not have registered it",
                    unreachable=True,
                    registered=registered,
                ) from None
            if response.status_code != 201:
                raise RegistrationError(f"{where} refused: {_reason(response)}", registered=registered)
            done += len(batch)
            if on_batch is not None:
                on_batch(done, len(devices))
    return Fleet(dm_url, server_id, tuple(devices))
