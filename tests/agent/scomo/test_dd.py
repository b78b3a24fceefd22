"""OMA Download OTA descriptors: parsing, hardening, install-notify codes and the POST."""

from __future__ import annotations

import httpx
import pytest

from omadm.agent.scomo.dd import (
    DD_CONTENT_TYPE,
    DD_MAX_SIZE,
    DD_NAMESPACE,
    DescriptorError,
    DownloadDescriptor,
    InstallNotifyStatus,
    looks_like_descriptor,
    media_type,
    parse_descriptor,
    redact_url,
    send_install_notify,
)
from omadm.protocol.codes import ScomoResult

BASE = "http://dl.example.com/jobs/7/app.dd"


def dd(body: str, *, namespace: bool = True) -> bytes:
    xmlns = f' xmlns="{DD_NAMESPACE}"' if namespace else ""
    return f'<?xml version="1.0" encoding="UTF-8"?>\n<media{xmlns}>{body}</media>'.encode()


MINIMAL = "<objectURI>app.bin</objectURI><size>1234</size><type>application/x-omp</type>"
FULL = """
  <DDVersion>1.0</DDVersion>
  <name>Example App</name>
  <size> 1234 </size>
  <type>application/x-omp</type>
  <type>application/vnd.oma.drm.message</type>
  <objectURI>../../objects/app-1.2.omp?token=abc</objectURI>
  <installNotifyURI>/notify/7</installNotifyURI>
  <vendor>Example Corp</vendor>
  <description>An  example   package</description>
  <nextURL>https://www.example.com/next</nextURL>
  <infoURL>info.html</infoURL>
  <iconURI>icon.png</iconURI>
  <installParam>-silent</installParam>
"""


class TestParse:
    def test_all_dlota_fields(self) -> None:
        d = parse_descriptor(dd(FULL), base_url=BASE)
        assert d.object_uri == "http://dl.example.com/objects/app-1.2.omp?token=abc"
        assert d.size == 1234
        assert d.types == ("application/x-omp", "application/vnd.oma.drm.message")
        assert d.name == "Example App"
        assert d.dd_version == "1.0"
        assert d.vendor == "Example Corp"
        assert d.description == "An  example   package"
        assert d.install_notify_uri == "http://dl.example.com/notify/7"
        assert d.next_url == "https://www.example.com/next"
        assert d.info_url == "http://dl.example.com/jobs/7/info.html"
        assert d.icon_uri == "http://dl.example.com/jobs/7/icon.png"
        assert d.install_param == "-silent"
        assert d.object_version is None and d.object_id is None
        assert d.source_url == BASE

    def test_no_namespace_and_minimal(self) -> None:
        d = parse_descriptor(dd(MINIMAL, namespace=False), base_url=BASE)
        assert d == DownloadDescriptor(
            object_uri="http://dl.example.com/jobs/7/app.bin",
            size=1234,
            types=("application/x-omp",),
            source_url=BASE,
        )

    def test_absolute_uris_need_no_base(self) -> None:
        d = parse_descriptor(
            dd("<objectURI>https://cdn.example.com/a.omp</objectURI><size>0</size><type>a/b</type>")
        )
        assert d.object_uri == "https://cdn.example.com/a.omp" and d.size == 0 and d.source_url is None

    def test_dlota2_fields(self) -> None:
        d = parse_descriptor(
            dd(
                MINIMAL + "<DDVersion>2.0</DDVersion><objectID>com.example.app</objectID>"
                "<objectVersion>1.2.3</objectVersion>"
            ),
            base_url=BASE,
        )
        assert (d.dd_version, d.object_id, d.object_version) == ("2.0", "com.example.app", "1.2.3")

    def test_unknown_and_vendor_elements_are_ignored(self) -> None:
        body = (
            MINIMAL
            + '<x:PreDownloadMessage xmlns:x="urn:vendor">hello</x:PreDownloadMessage>'
            + "<futureThing>ignored</futureThing>"
            + '<objectURI xmlns="urn:vendor">http://evil.example.com/</objectURI>'
        )
        d = parse_descriptor(dd(body), base_url=BASE)
        assert d.object_uri == "http://dl.example.com/jobs/7/app.bin"

    def test_element_names_are_matched_without_case(self) -> None:
        body = (
            "<objecturi>app.bin</objecturi><SIZE>5</SIZE><Type>a/b</Type>"
            "<INSTALLNOTIFYURI>/n</INSTALLNOTIFYURI>"
        )
        d = parse_descriptor(dd(body), base_url=BASE)
        assert d.size == 5 and d.install_notify_uri == "http://dl.example.com/n"

    def test_informational_duplicates_keep_the_first(self) -> None:
        d = parse_descriptor(dd(MINIMAL + "<name>one</name><name>two</name>"), base_url=BASE)
        assert d.name == "one"

    def test_round_trip_through_to_xml(self) -> None:
        original = parse_descriptor(dd(FULL), base_url=BASE)
        again = parse_descriptor(original.to_xml(), base_url=BASE)
        assert again == original


class TestInvalid:
    @pytest.mark.parametrize(
        ("body", "needle"),
        [
            ("<size>1</size><type>a/b</type>", "objectURI"),
            ("<objectURI>a</objectURI><type>a/b</type>", "size"),
            ("<objectURI>a</objectURI><size>1</size>", "type"),
            ("<objectURI>a</objectURI><size>1</size><type> </type>", "<type> element is empty"),
            ("<objectURI>a</objectURI><size>12kB</size><type>a/b</type>", "'12kB'"),
            ("<objectURI>a</objectURI><size>-1</size><type>a/b</type>", "'-1'"),
            (
                "<objectURI>a</objectURI><objectURI>b</objectURI><size>1</size><type>a/b</type>",
                "more than once",
            ),
            ("<objectURI>a</objectURI><size>1</size><size>2</size><type>a/b</type>", "more than once"),
            ("<objectURI>file:///etc/passwd</objectURI><size>1</size><type>a/b</type>", "not an http"),
            ("<objectURI>ftp://h/x</objectURI><size>1</size><type>a/b</type>", "not an http"),
            (MINIMAL + "<installNotifyURI>mailto:a@b</installNotifyURI>", "installNotifyURI"),
        ],
    )
    def test_invalid_descriptor_is_906(self, body: str, needle: str) -> None:
        with pytest.raises(DescriptorError) as caught:
            parse_descriptor(dd(body), base_url=BASE)
        assert needle in str(caught.value)
        assert caught.value.status is InstallNotifyStatus.INVALID_DESCRIPTOR
        assert caught.value.result == ScomoResult.DOWNLOAD_FAILED

    @pytest.mark.parametrize("version", ["3.0", "0.9", "x"])
    def test_unsupported_ddversion_is_951(self, version: str) -> None:
        with pytest.raises(DescriptorError) as caught:
            parse_descriptor(dd(MINIMAL + f"<DDVersion>{version}</DDVersion>"), base_url=BASE)
        assert caught.value.status is InstallNotifyStatus.INVALID_DD_VERSION
        assert "DDVersion" in str(caught.value)

    @pytest.mark.parametrize(
        "data",
        [
            b"",
            b"not xml at all",
            b"<media><objectURI>a</media>",
            b'<?xml version="1.0"?><html><body/></html>',
            b'<media xmlns="urn:other"><objectURI>http://h/a</objectURI><size>1</size><type>a</type></media>',
        ],
    )
    def test_not_a_descriptor(self, data: bytes) -> None:
        with pytest.raises(DescriptorError) as caught:
            parse_descriptor(data, base_url=BASE)
        assert caught.value.status is InstallNotifyStatus.INVALID_DESCRIPTOR
        assert not looks_like_descriptor(data)

    def test_relative_uri_without_base(self) -> None:
        with pytest.raises(DescriptorError, match="own URL is unknown"):
            parse_descriptor(dd(MINIMAL))

    def test_entities_and_internal_subsets_are_refused(self) -> None:
        bomb = (
            b'<?xml version="1.0"?><!DOCTYPE media [<!ENTITY a "aaaaaaaaaa"><!ENTITY b "&a;&a;&a;">]>'
            b"<media><objectURI>http://h/&b;</objectURI><size>1</size><type>a/b</type></media>"
        )
        xxe = (
            b'<?xml version="1.0"?><!DOCTYPE media [<!ENTITY x SYSTEM "file:///etc/passwd">]>'
            b"<media><objectURI>http://h/a</objectURI><size>1</size><type>&x;</type></media>"
        )
        for data in (bomb, xxe):
            with pytest.raises(DescriptorError, match=r"DOCTYPE|entity"):
                parse_descriptor(data, base_url=BASE)

    def test_oversized_descriptor(self) -> None:
        data = dd(MINIMAL + "<description>" + "x" * DD_MAX_SIZE + "</description>")
        with pytest.raises(DescriptorError, match="exceeds"):
            parse_descriptor(data, base_url=BASE)

    def test_invalid_descriptor_keeps_a_usable_notify_uri(self) -> None:
        with pytest.raises(DescriptorError) as caught:
            parse_descriptor(
                dd("<installNotifyURI>/notify/9</installNotifyURI><size>x</size>"), base_url=BASE
            )
        assert caught.value.install_notify_uri == "http://dl.example.com/notify/9"


class TestHelpers:
    def test_accepts_type(self) -> None:
        d = DownloadDescriptor("http://h/a", 1, ("application/X-OMP", "application/zip"))
        assert d.accepts_type("application/x-omp; charset=binary")
        assert d.accepts_type("Application/Zip")
        assert d.accepts_type(None) and d.accepts_type("")
        assert not d.accepts_type("text/html")

    def test_looks_like_descriptor(self) -> None:
        assert looks_like_descriptor(dd(MINIMAL))
        assert looks_like_descriptor(dd("<size>bad</size>", namespace=False))  # a DD, if a broken one
        assert not looks_like_descriptor(b"PK\x03\x04binary")

    def test_media_type(self) -> None:
        assert media_type(f"{DD_CONTENT_TYPE.upper()} ; charset=utf-8") == DD_CONTENT_TYPE
        assert media_type(None) is None and media_type(" ") is None

    def test_redact_url(self) -> None:
        assert redact_url("http://u:p@h:8080/a?b#c") == "http://h:8080/a?b#c"
        assert redact_url("https://h/a") == "https://h/a"


class TestInstallNotifyStatus:
    def test_lines(self) -> None:
        assert [s.line for s in InstallNotifyStatus] == [
            "900 Success",
            "901 Insufficient memory",
            "902 User Cancelled",
            "903 Loss of Service",
            "905 Attribute mismatch",
            "906 Invalid descriptor",
            "951 Invalid DDVersion",
            "952 Device Aborted",
            "953 Non-Acceptable Content",
            "954 Loader Error",
        ]

    def test_scomo_results(self) -> None:
        assert InstallNotifyStatus.SUCCESS.scomo_result is ScomoResult.SUCCESSFUL
        assert (
            InstallNotifyStatus.INSUFFICIENT_MEMORY.scomo_result is ScomoResult.DOWNLOAD_FAILED_OUT_OF_MEMORY
        )
        assert InstallNotifyStatus.USER_CANCELLED.scomo_result is ScomoResult.USER_CANCELLED
        assert InstallNotifyStatus.ATTRIBUTE_MISMATCH.scomo_result is ScomoResult.DOWNLOAD_FAILED
        assert InstallNotifyStatus.INVALID_DESCRIPTOR.scomo_result is ScomoResult.DOWNLOAD_FAILED
        assert InstallNotifyStatus.NON_ACCEPTABLE_CONTENT.scomo_result is ScomoResult.UNSUPPORTED_ENVIRONMENT
        assert InstallNotifyStatus.LOADER_ERROR.scomo_result is ScomoResult.DOWNLOAD_FAILED

    @pytest.mark.parametrize(
        ("code", "status"),
        [
            (1200, InstallNotifyStatus.SUCCESS),
            (1251, InstallNotifyStatus.SUCCESS),
            (1401, InstallNotifyStatus.USER_CANCELLED),
            (1404, InstallNotifyStatus.INSUFFICIENT_MEMORY),
            (1406, InstallNotifyStatus.INSUFFICIENT_MEMORY),
            (1405, InstallNotifyStatus.NON_ACCEPTABLE_CONTENT),
            (1407, InstallNotifyStatus.NON_ACCEPTABLE_CONTENT),
            (1501, InstallNotifyStatus.LOADER_ERROR),
            (1412, InstallNotifyStatus.DEVICE_ABORTED),
            (1460, InstallNotifyStatus.DEVICE_ABORTED),
        ],
    )
    def test_for_scomo_result(self, code: int, status: InstallNotifyStatus) -> None:
        assert InstallNotifyStatus.for_scomo_result(code) is status


class TestSendInstallNotify:
    def test_posts_the_status_line_as_text(self) -> None:
        seen: list[httpx.Request] = []

        def handler(request: httpx.Request) -> httpx.Response:
            seen.append(request)
            return httpx.Response(200)

        with httpx.Client(transport=httpx.MockTransport(handler)) as client:
            assert send_install_notify(client, "http://h/notify/1", InstallNotifyStatus.SUCCESS)
        (request,) = seen
        assert request.method == "POST" and request.content == b"900 Success"
        assert request.headers["content-type"] == "text/plain"

    def test_server_errors_are_reported_not_raised(self) -> None:
        with httpx.Client(transport=httpx.MockTransport(lambda r: httpx.Response(500))) as client:
            assert not send_install_notify(client, "http://h/n", InstallNotifyStatus.LOADER_ERROR)

    def test_network_errors_and_bad_urls_are_not_raised(self) -> None:
        def refuse(request: httpx.Request) -> httpx.Response:
            raise httpx.ConnectError("refused", request=request)

        with httpx.Client(transport=httpx.MockTransport(refuse)) as client:
            assert not send_install_notify(client, "http://h/n", InstallNotifyStatus.SUCCESS)
            assert not send_install_notify(client, "ht!tp://[bad", InstallNotifyStatus.SUCCESS)
