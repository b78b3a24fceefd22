"""The fleet file: which virtual devices exist, their credentials, and where their DM server is.

A JSON document (version 1), written by ``omadm sim register`` and read by ``omadm sim run``
(or written by hand for devices another DM server knows)::

    {
      "version": 1,
      "dm_url": "http://127.0.0.1:8700/dm",
      "server_id": "omadm",
      "devices": [
        {"device_id": "IMEI:350000000000001", "username": "imei350000000000001",
         "password": "...", "auth": "md5", "server_password": "...",
         "notify_address": "udp://127.1.0.1:2948"},
        ...
      ]
    }

``dm_url`` is the DMAcc address every device connects to (an omadm server: ``/dm`` for its
default authority, ``/dm/<name>`` for another), ``server_id`` the ServerID the devices must
expect (the AAuthName of the server's credentials). ``auth`` is the scheme of the client
credentials (``md5``, ``hmac`` or ``basic``); ``server_password`` proves the server to the
device (empty: the server does not authenticate itself). ``notify_address`` (optional) is
where the server sends the device's Package #0: ``omadm sim register --notify PORT`` gives
every device its own loopback address on one port (see :mod:`omadm.sim.notify`), and ``run``
listens there. The file holds passwords, so
:func:`save_fleet` writes it readable by its owner only (0600).

:func:`load_fleet` checks everything and refuses a bad file with one :class:`FleetError`
naming the file, the place (``devices[3].auth``) and what is wrong, so that ``run`` never
starts thousands of devices from a file it half understood. Unknown keys are refused too: a
misspelt one would otherwise be silently ignored.
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from omadm.protocol.codes import AuthType

__all__ = ["AUTH_SCHEMES", "FLEET_VERSION", "Fleet", "FleetDevice", "FleetError", "load_fleet", "save_fleet"]

#: The fleet file format this omadm reads and writes.
FLEET_VERSION = 1
#: The ``auth`` values of a device and the DM authentication type each stands for.
AUTH_SCHEMES = {"md5": AuthType.MD5, "hmac": AuthType.HMAC, "basic": AuthType.BASIC}

_FLEET_KEYS = ("version", "dm_url", "server_id", "devices")
_DEVICE_KEYS = ("device_id", "username", "password", "auth", "server_password", "notify_address")


class FleetError(Exception):
    """A fleet file cannot be read, written or used; the message says which file and why."""


@dataclass(frozen=True, slots=True)
class FleetDevice:
    """One virtual device: its DevId and the credentials of its DMAcc account."""

    device_id: str
    username: str
    password: str
    auth: str = "md5"
    server_password: str = ""
    notify_address: str = ""

    @property
    def auth_type(self) -> AuthType:
        """The DM authentication type of the client credentials (``syncml:auth-md5``...)."""
        return AUTH_SCHEMES[self.auth]

    def to_json(self) -> dict[str, str]:
        """The device as the fleet file and the bulk endpoint spell it (no empty notify_address)."""
        out = {key: getattr(self, key) for key in _DEVICE_KEYS}
        if not self.notify_address:
            del out["notify_address"]
        return out


@dataclass(frozen=True, slots=True)
class Fleet:
    """A fleet file's content: the DM server's address and identity, and the devices."""

    dm_url: str
    server_id: str
    devices: tuple[FleetDevice, ...]

    def to_json(self) -> dict[str, Any]:
        return {
            "version": FLEET_VERSION,
            "dm_url": self.dm_url,
            "server_id": self.server_id,
            "devices": [device.to_json() for device in self.devices],
        }

    @classmethod
    def from_json(cls, data: Any, source: str = "fleet") -> Fleet:
        """The fleet in ``data`` (a parsed document), checked; :class:`FleetError` names ``source``."""
        if not isinstance(data, dict):
            raise FleetError(f"{source}: a fleet file is a JSON object, not {_kind(data)}")
        _refuse_unknown(data, _FLEET_KEYS, source, "")
        version = data.get("version")
        if version is None:
            raise FleetError(
                f"{source}: no version (this omadm reads fleet files of version {FLEET_VERSION})"
            )
        if version != FLEET_VERSION or isinstance(version, bool):
            raise FleetError(
                f"{source}: version {version!r} is not supported (this omadm reads version {FLEET_VERSION})"
            )
        dm_url = _text(data, "dm_url", source, "")
        if not dm_url.startswith(("http://", "https://")):
            raise FleetError(f"{source}: dm_url must be an http:// or https:// URL, not {dm_url!r}")
        server_id = _text(data, "server_id", source, "")
        if not server_id:
            raise FleetError(f"{source}: server_id is empty: give the ServerID the devices must expect")
        devices = data.get("devices")
        if not isinstance(devices, list):
            raise FleetError(f"{source}: devices must be a list of devices, not {_kind(devices)}")
        if not devices:
            raise FleetError(f"{source}: devices is empty: a fleet needs at least one device")
        fleet = cls(dm_url, server_id, tuple(_device(d, source, n) for n, d in enumerate(devices)))
        fleet.check_unique(source)
        return fleet

    def check_unique(self, source: str = "fleet") -> None:
        """Refuse a fleet that names a DevId twice: two devices would share one server row."""
        seen: dict[str, int] = {}
        for n, device in enumerate(self.devices):
            first = seen.setdefault(device.device_id, n)
            if first != n:
                raise FleetError(
                    f"{source}: devices[{n}] has the DevId {device.device_id!r} of devices[{first}] already"
                )


def _kind(value: Any) -> str:
    names = {dict: "an object", list: "a list", str: "a string", bool: "a boolean", type(None): "null"}
    return names.get(type(value), "a number")


def _refuse_unknown(data: dict[str, Any], known: Sequence[str], source: str, where: str) -> None:
    unknown = sorted(set(data) - set(known))
    if unknown:
        raise FleetError(
            f"{source}: {where}unknown key(s) {', '.join(map(repr, unknown))} (known: {', '.join(known)})"
        )


def _text(data: dict[str, Any], key: str, source: str, where: str) -> str:
    if key not in data:
        raise FleetError(f"{source}: {where}{key} is missing")
    value = data[key]
    if not isinstance(value, str):
        raise FleetError(f"{source}: {where}{key} must be a string, not {_kind(value)}")
    return value


def _device(data: Any, source: str, n: int) -> FleetDevice:
    where = f"devices[{n}]"
    if not isinstance(data, dict):
        raise FleetError(f"{source}: {where} must be an object, not {_kind(data)}")
    _refuse_unknown(data, _DEVICE_KEYS, source, f"{where}: ")
    device_id = _text(data, "device_id", source, f"{where}.")
    if not device_id:
        raise FleetError(f"{source}: {where}.device_id is empty")
    auth = _text(data, "auth", source, f"{where}.") if "auth" in data else "md5"
    if auth not in AUTH_SCHEMES:
        raise FleetError(f"{source}: {where}.auth must be one of {', '.join(AUTH_SCHEMES)}, not {auth!r}")
    return FleetDevice(
        device_id=device_id,
        username=_text(data, "username", source, f"{where}."),
        password=_text(data, "password", source, f"{where}."),
        auth=auth,
        server_password=_text(data, "server_password", source, f"{where}.")
        if "server_password" in data
        else "",
        notify_address=_text(data, "notify_address", source, f"{where}.") if "notify_address" in data else "",
    )


def load_fleet(path: Path) -> Fleet:
    """The fleet file at ``path``, checked; :class:`FleetError` when it cannot be used."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise FleetError(f"no fleet file at {path} (omadm sim register writes one)") from None
    except UnicodeDecodeError:
        raise FleetError(f"{path} is not a JSON document (not UTF-8 text)") from None
    except OSError as exc:
        raise FleetError(f"cannot read {path}: {exc.strerror or exc}") from None
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise FleetError(
            f"{path} is not a JSON document: {exc.msg} (line {exc.lineno}, column {exc.colno})"
        ) from None
    return Fleet.from_json(data, str(path))


def save_fleet(fleet: Fleet, path: Path) -> None:
    """Write ``fleet`` to ``path`` (mode 0600: it holds passwords), replacing it whole or not at all.

    One device per line: a fleet of 10,000 stays a file that ``grep`` and ``diff`` read.
    """
    fleet.check_unique(str(path))
    head = [(key, value) for key, value in fleet.to_json().items() if key != "devices"]
    text = (
        "{\n"
        + "".join(f"  {json.dumps(key)}: {json.dumps(value, ensure_ascii=False)},\n" for key, value in head)
        + '  "devices": [\n'
        + ",\n".join("    " + json.dumps(d.to_json(), ensure_ascii=False) for d in fleet.devices)
        + "\n  ]\n}\n"
    )
    try:
        # mkstemp creates the file 0600; replacing the target keeps a reader from ever seeing half a file.
        fd, temporary = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    except OSError as exc:
        raise FleetError(f"cannot write {path}: {exc.strerror or exc}") from None
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as out:
            out.write(text)
            out.flush()
            os.fsync(out.fileno())
        os.replace(temporary, path)
    except OSError as exc:
        Path(temporary).unlink(missing_ok=True)
        raise FleetError(f"cannot write {path}: {exc.strerror or exc}") from None
