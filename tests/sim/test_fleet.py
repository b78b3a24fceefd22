"""The fleet file: a round trip keeps every device, the file is private, a bad file is refused
with one message that names the file, the place and the fault."""

from __future__ import annotations

import json
import stat
from pathlib import Path
from typing import Any

import pytest

from omadm.protocol.codes import AuthType
from omadm.sim.fleet import Fleet, FleetDevice, FleetError, load_fleet, save_fleet

FLEET = Fleet(
    "http://127.0.0.1:8700/dm",
    "omadm",
    (
        FleetDevice("IMEI:350000000000001", "imei350000000000001", "pw1", "md5", "srv1"),
        FleetDevice("IMEI:350000000000002", "imei350000000000002", 'pw\u00e9"2', "hmac", ""),
        FleetDevice("IMEI:350000000000003", "imei350000000000003", "pw3", "basic", "srv3"),
    ),
)


def document(**changes: Any) -> dict[str, Any]:
    data = FLEET.to_json()
    data.update(changes)
    return data


def write(path: Path, data: Any) -> Path:
    path.write_text(json.dumps(data) if not isinstance(data, str) else data, encoding="utf-8")
    return path


def test_a_fleet_survives_a_round_trip_in_a_private_file_with_a_device_per_line(tmp_path: Path) -> None:
    path = tmp_path / "fleet.json"
    save_fleet(FLEET, path)
    assert load_fleet(path) == FLEET
    assert stat.S_IMODE(path.stat().st_mode) == 0o600  # it holds passwords
    text = path.read_text(encoding="utf-8")
    assert json.loads(text) == {**FLEET.to_json(), "version": 1}
    assert sum("IMEI:35" in line for line in text.splitlines()) == 3
    assert [d.auth_type for d in FLEET.devices] == [AuthType.MD5, AuthType.HMAC, AuthType.BASIC]
    assert list(tmp_path.iterdir()) == [path]  # no temporary file left behind


def test_saving_replaces_a_file_whole(tmp_path: Path) -> None:
    path = tmp_path / "fleet.json"
    save_fleet(FLEET, path)
    smaller = Fleet(FLEET.dm_url, "other", FLEET.devices[:1])
    save_fleet(smaller, path)
    assert load_fleet(path) == smaller


def test_auth_and_server_password_may_be_left_out(tmp_path: Path) -> None:
    devices = [{"device_id": "IMEI:1", "username": "u", "password": "p"}]
    fleet = load_fleet(write(tmp_path / "f.json", document(devices=devices)))
    assert fleet.devices == (FleetDevice("IMEI:1", "u", "p", "md5", ""),)


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("{", "is not a JSON document: Expecting property name enclosed in double quotes (line 1, column 2)"),
        ([], "a fleet file is a JSON object, not a list"),
        (document(version=None), "no version (this omadm reads fleet files of version 1)"),
        (document(version=2), "version 2 is not supported (this omadm reads version 1)"),
        (document(version=True), "version True is not supported"),
        (document(dm_url="ftp://x/dm"), "dm_url must be an http:// or https:// URL, not 'ftp://x/dm'"),
        (document(dm_url=3), "dm_url must be a string, not a number"),
        (document(server_id=""), "server_id is empty: give the ServerID the devices must expect"),
        (document(devices={}), "devices must be a list of devices, not an object"),
        (document(devices=[]), "devices is empty: a fleet needs at least one device"),
        (document(devies=[]), "unknown key(s) 'devies' (known: version, dm_url, server_id, devices)"),
        (document(devices=["IMEI:1"]), "devices[0] must be an object, not a string"),
        (document(devices=[{"device_id": "IMEI:1", "password": "p"}]), "devices[0].username is missing"),
        (
            document(devices=[{"device_id": "", "username": "u", "password": "p"}]),
            "devices[0].device_id is empty",
        ),
        (
            document(devices=[{"device_id": "IMEI:1", "username": "u", "password": "p", "auth": "sha1"}]),
            "devices[0].auth must be one of md5, hmac, basic, not 'sha1'",
        ),
        (
            document(devices=[{"device_id": "IMEI:1", "username": "u", "password": "p", "pasword": "q"}]),
            "devices[0]: unknown key(s) 'pasword'",
        ),
        (
            document(
                devices=[FLEET.devices[0].to_json(), FLEET.devices[1].to_json(), FLEET.devices[0].to_json()]
            ),
            "devices[2] has the DevId 'IMEI:350000000000001' of devices[0] already",
        ),
    ],
)
def test_a_bad_file_is_refused_naming_the_file_the_place_and_the_fault(
    tmp_path: Path, content: Any, message: str
) -> None:
    if isinstance(content, dict) and content.get("version") is None:
        content.pop("version")
    path = write(tmp_path / "bad.json", content)
    with pytest.raises(FleetError) as caught:
        load_fleet(path)
    assert str(path) in str(caught.value)
    assert message in str(caught.value)


def test_a_missing_unreadable_or_binary_file_is_refused_clearly(tmp_path: Path) -> None:
    with pytest.raises(FleetError, match=r"no fleet file at .*nope.json \(omadm sim register writes one\)"):
        load_fleet(tmp_path / "nope.json")
    with pytest.raises(FleetError, match="cannot read"):
        load_fleet(tmp_path)  # a directory
    binary = tmp_path / "fleet.bin"
    binary.write_bytes(b"\xff\xfe\x00")
    with pytest.raises(FleetError, match="not a JSON document"):
        load_fleet(binary)


def test_a_fleet_that_cannot_be_written_says_why(tmp_path: Path) -> None:
    with pytest.raises(FleetError, match=r"cannot write .*missing/fleet.json"):
        save_fleet(FLEET, tmp_path / "missing" / "fleet.json")
    twice = Fleet(FLEET.dm_url, FLEET.server_id, (FLEET.devices[0], FLEET.devices[0]))
    with pytest.raises(FleetError, match="has the DevId"):
        save_fleet(twice, tmp_path / "fleet.json")
