"""Query parameters are checked, not ignored (issue 15, section 6): a filter the server does
not know is a 422, and ``/jobs?campaign=N`` filters by campaign."""

from __future__ import annotations

import pytest

from omadm.server.registry import create_job, find_device
from omadm.server.store.models import JobKind

from .conftest import Api, problem

pytestmark = pytest.mark.anyio


@pytest.mark.parametrize(
    "path",
    [
        "/jobs?campain=3",
        "/devices?tags=ring=beta",
        "/campaigns?stat=running",
        "/packages?x=1",
        "/audit?who=me",
    ],
)
async def test_an_unknown_query_parameter_is_a_422_that_names_it(api: Api, path: str) -> None:
    body = problem(await api.get(path, role="admin"), 422)
    name = path.partition("?")[2].partition("=")[0]
    assert name in body["detail"] or any(name in str(e) for e in body.get("errors", [])), body


async def test_known_parameters_still_work_including_paging(api: Api) -> None:
    assert (await api.get("/jobs?limit=5&offset=0&state=queued")).status_code == 200
    assert (await api.get("/devices?tag=ring=beta&count=none")).status_code == 200


async def test_jobs_filter_by_campaign(api: Api) -> None:
    for device_id in ("IMEI:1", "IMEI:2"):
        body = {"device_id": device_id, "username": "dev", "password": "secret"}
        assert (await api.post("/devices", json=body)).status_code == 201
    async with api.sessions() as db, db.begin():
        one, two = [await find_device(db, d) for d in ("IMEI:1", "IMEI:2")]
        assert one is not None and two is not None
        await create_job(db, one, JobKind.REFRESH_INVENTORY, {}, campaign_id=3)
        await create_job(db, two, JobKind.REFRESH_INVENTORY, {}, campaign_id=4)
        await create_job(db, two, JobKind.REFRESH_INVENTORY, {})
    everything = (await api.get("/jobs")).json()
    assert everything["total"] == 3
    mine = (await api.get("/jobs?campaign=3")).json()
    assert [(j["device_id"], j["campaign_id"]) for j in mine["items"]] == [("IMEI:1", 3)]
    assert (await api.get("/jobs?campaign=99")).json()["total"] == 0
