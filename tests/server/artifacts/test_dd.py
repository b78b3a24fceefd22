"""The DD we write is the DD the agent reads; install-notify status lines."""

from __future__ import annotations

import pytest
from lxml import etree

from omadm.agent.scomo.dd import DD_CONTENT_TYPE as AGENT_DD_CONTENT_TYPE
from omadm.agent.scomo.dd import DD_NAMESPACE as AGENT_DD_NAMESPACE
from omadm.agent.scomo.dd import InstallNotifyStatus, parse_descriptor
from omadm.server.artifacts import DD_CONTENT_TYPE, InstallNotifyError, build_descriptor, parse_install_notify
from omadm.server.artifacts.dd import DD_NAMESPACE
from omadm.server.store.models import Artifact

OBJECT = "http://dm.test/artifacts/3/hello.omp?d=dev&e=1&s=ab"
NOTIFY = "http://dm.test/artifacts/notify/job-1?s=cd"


def artifact(**manifest: object) -> Artifact:
    return Artifact(
        id=3,
        filename="hello.omp",
        size=12345,
        sha256="0" * 64,
        storage_key="0" * 64,
        content_type="application/vnd.omadm.package",
        package_id="com.example.hello-package",
        version="1.0.0",
        manifest=manifest,
    )


def test_constants_agree_with_the_agent() -> None:
    assert DD_CONTENT_TYPE == AGENT_DD_CONTENT_TYPE
    assert DD_NAMESPACE == AGENT_DD_NAMESPACE


def test_round_trip_through_the_agents_parser() -> None:
    data = build_descriptor(
        artifact(name="Hello", description="Says <hello> & more"),
        OBJECT,
        install_notify_uri=NOTIFY,
        vendor="ACME",
    )
    assert data.startswith(b"<?xml")
    parsed = parse_descriptor(data, base_url="http://dm.test/artifacts/3/dd?x=1")
    assert parsed.object_uri == OBJECT
    assert parsed.size == 12345
    assert parsed.types == ("application/vnd.omadm.package",)
    assert parsed.install_notify_uri == NOTIFY
    assert parsed.name == "Hello 1.0.0"
    assert parsed.dd_version == "1.0"
    assert parsed.vendor == "ACME"
    assert parsed.description == "Says <hello> & more"
    assert parsed.accepts_type("application/vnd.omadm.package")


def test_optional_fields_are_omitted() -> None:
    data = build_descriptor(artifact(), OBJECT)
    root = etree.fromstring(data)
    tags = [etree.QName(child).localname for child in root]
    assert tags == ["type", "size", "objectURI", "name", "DDVersion", "vendor"]
    parsed = parse_descriptor(data)
    assert parsed.name == "hello.omp"  # no manifest name: the file name
    assert parsed.install_notify_uri is None
    assert parsed.description is None
    overridden = parse_descriptor(
        build_descriptor(artifact(name="Hello"), OBJECT, name="Custom", description="d")
    )
    assert (overridden.name, overridden.description) == ("Custom", "d")


@pytest.mark.parametrize("status", list(InstallNotifyStatus))
def test_every_status_the_agent_sends_parses(status: InstallNotifyStatus) -> None:
    assert parse_install_notify(status.line.encode()) == (status.value, status.text)


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        (b"900 Success", (900, "Success")),
        (b"\r\n  900 Success \r\n", (900, "Success")),
        (b"\xef\xbb\xbf901 Insufficient memory\nmore text", (901, "Insufficient memory")),
        (b"952", (952, "")),
        (b"954\tLoader Error", (954, "Loader Error")),
    ],
)
def test_status_lines(body: bytes, expected: tuple[int, str]) -> None:
    assert parse_install_notify(body) == expected


@pytest.mark.parametrize(
    "body", [b"", b"   \n", b"Success", b"200 OK", b"9000 x", b"900Success", b"\xff\xfe"]
)
def test_bad_status_lines(body: bytes) -> None:
    with pytest.raises(InstallNotifyError):
        parse_install_notify(body)
