"""Signed links: bound to artifact, device, expiry (and job); expired and forged told apart."""

from __future__ import annotations

from datetime import UTC, datetime
from urllib.parse import parse_qsl, urlsplit

import pytest

from omadm.server.artifacts import (
    BadSignature,
    LinkExpired,
    descriptor_url,
    download_url,
    notify_url,
    verify_descriptor,
    verify_download,
    verify_notify,
)
from omadm.server.artifacts.urls import expiry_timestamp
from omadm.server.store.models import Artifact

from .helpers import BASE, LATER, NOW, SECRET

ARTIFACT = Artifact(id=7, filename="hello 1.0.omp")
DEVICE = "IMEI:490154203237518"


def query(url: str) -> dict[str, str]:
    return dict(parse_qsl(urlsplit(url).query, keep_blank_values=True))


def test_download_url_shape() -> None:
    url = download_url(BASE + "/", ARTIFACT, DEVICE, LATER, SECRET)
    parts = urlsplit(url)
    assert f"{parts.scheme}://{parts.netloc}" == BASE
    assert parts.path == "/artifacts/7/hello%201.0.omp"
    params = query(url)
    assert params["d"] == DEVICE
    assert params["e"] == str(LATER)
    assert len(params["s"]) == 64
    assert verify_download(7, params, SECRET, now=NOW) == DEVICE


def test_expiry_as_datetime() -> None:
    aware = datetime.fromtimestamp(LATER, UTC)
    naive = aware.replace(tzinfo=None)
    assert expiry_timestamp(aware) == expiry_timestamp(naive) == LATER
    assert query(download_url(BASE, ARTIFACT, DEVICE, aware, SECRET)) == query(
        download_url(BASE, ARTIFACT, DEVICE, LATER, SECRET)
    )
    with pytest.raises(TypeError):
        expiry_timestamp("tomorrow")  # type: ignore[arg-type]


def test_expired_is_not_a_bad_signature() -> None:
    params = query(download_url(BASE, ARTIFACT, DEVICE, LATER, SECRET))
    with pytest.raises(LinkExpired, match="expired at"):
        verify_download(7, params, SECRET, now=LATER)
    assert verify_download(7, params, SECRET, now=LATER - 1) == DEVICE


@pytest.mark.parametrize(
    "change",
    [
        {"d": "IMEI:000000000000000"},  # another device
        {"e": str(LATER + 86400)},  # a later expiry
        {"s": "0" * 64},
        {"s": "é" * 64},  # not even hex
        {"s": ""},
    ],
)
def test_tampered_links_are_bad_signatures(change: dict[str, str]) -> None:
    params = query(download_url(BASE, ARTIFACT, DEVICE, LATER, SECRET)) | change
    with pytest.raises(BadSignature):
        verify_download(7, params, SECRET, now=NOW)


def test_other_artifact_other_secret_missing_fields() -> None:
    params = query(download_url(BASE, ARTIFACT, DEVICE, LATER, SECRET))
    with pytest.raises(BadSignature):
        verify_download(8, params, SECRET, now=NOW)
    with pytest.raises(BadSignature):
        verify_download(7, params, b"another-secret-0123456789", now=NOW)
    for missing in ("d", "e", "s"):
        with pytest.raises(BadSignature):
            verify_download(7, {k: v for k, v in params.items() if k != missing}, SECRET, now=NOW)
    with pytest.raises(BadSignature, match="not a number"):
        verify_download(7, params | {"e": "1e9"}, SECRET, now=NOW)


def test_an_expired_forgery_is_reported_as_forged() -> None:
    params = query(download_url(BASE, ARTIFACT, DEVICE, NOW - 10, SECRET)) | {"d": "other"}
    with pytest.raises(BadSignature):
        verify_download(7, params, SECRET, now=NOW)


def test_signatures_do_not_cross_link_kinds() -> None:
    download = query(download_url(BASE, ARTIFACT, DEVICE, LATER, SECRET))
    with pytest.raises(BadSignature):
        verify_descriptor(7, download, SECRET, now=NOW)
    dd = query(descriptor_url(BASE, ARTIFACT, DEVICE, LATER, SECRET))
    with pytest.raises(BadSignature):
        verify_download(7, dd, SECRET, now=NOW)


def test_descriptor_url_with_and_without_correlator() -> None:
    url = descriptor_url(BASE, ARTIFACT, DEVICE, LATER, SECRET, correlator="job-42")
    assert urlsplit(url).path == "/artifacts/7/dd"
    grant = verify_descriptor(7, query(url), SECRET, now=NOW)
    assert (grant.device_id, grant.expires, grant.correlator) == (DEVICE, LATER, "job-42")
    with pytest.raises(BadSignature):
        verify_descriptor(7, query(url) | {"c": "job-43"}, SECRET, now=NOW)
    without = query(url)
    del without["c"]
    with pytest.raises(BadSignature):
        verify_descriptor(7, without, SECRET, now=NOW)
    plain = verify_descriptor(
        7, query(descriptor_url(BASE, ARTIFACT, DEVICE, LATER, SECRET)), SECRET, now=NOW
    )
    assert plain.correlator is None
    with pytest.raises(LinkExpired):
        verify_descriptor(7, query(url), SECRET, now=LATER + 1)


def test_notify_url() -> None:
    url = notify_url(BASE, "job/42 x", SECRET)
    assert urlsplit(url).path == "/artifacts/notify/job%2F42%20x"
    verify_notify("job/42 x", query(url), SECRET)
    with pytest.raises(BadSignature):
        verify_notify("job/43 x", query(url), SECRET)
    with pytest.raises(BadSignature, match="not signed"):
        verify_notify("job/42 x", {}, SECRET)


def test_a_short_secret_is_refused() -> None:
    with pytest.raises(ValueError, match="at least 16 bytes"):
        download_url(BASE, ARTIFACT, DEVICE, LATER, b"short")
