"""``/api/v1/campaigns``: create (a draft), list, show with counters per wave, start, pause,
resume, cancel; roles, problems (404, 409, 422) and the audit log."""

from __future__ import annotations

from typing import Any

import pytest
from sqlalchemy import select

from omadm.server.store.models import Artifact, InventoryEntry, Job, JobState, utc_now

from .conftest import Api, problem

pytestmark = pytest.mark.anyio

COMPONENT = "com.example.hello"


async def fleet(api: Api, count: int) -> int:
    """``count`` devices tagged ring=beta with the component 1.0 in their inventory; an artifact id."""
    for i in range(count):
        body = {"device_id": f"DEV:{i}", "username": "u", "password": "p", "tags": {"ring": "beta"}}
        assert (await api.post("/devices", json=body)).status_code == 201
    async with api.sessions() as db, db.begin():
        for i in range(count):
            db.add(
                InventoryEntry(device_pk=i + 1, kind="deployed", node="c0", ident=COMPONENT, version="1.0")
            )
        artifact = Artifact(
            filename="hello-2.0.omp",
            storage_key="k",
            size=1,
            sha256="0" * 64,
            package_id="com.example.hello-package",
            version="2.0",
            manifest={"components": [{"id": COMPONENT, "version": "2.0"}]},
        )
        db.add(artifact)
        await db.flush()
        return artifact.id


def body(artifact: int, **kw: Any) -> dict[str, Any]:
    return {
        "name": "hello 2.0",
        "kind": "update",
        "artifact_id": artifact,
        "target": {"tags": {"ring": "beta"}, "has_component": COMPONENT, "version_below": "2.0"},
        "waves": [1, "50%"],
        "success_threshold": 1.0,
        "error_threshold": 0.5,
        **kw,
    }


async def test_create_start_pause_resume_cancel_with_counters_and_audit(api: Api) -> None:
    artifact = await fleet(api, 3)
    response = await api.post("/campaigns", json=body(artifact, max_retries=2, window="22:00-04:00"))
    assert response.status_code == 201, response.text
    created = response.json()
    cid = created["id"]
    assert created["state"] == "draft" and created["component_id"] == COMPONENT
    assert (
        created["current_wave"] == 1 and created["waves"] == [1, "50%"] and created["window"] == "22:00-04:00"
    )
    assert created["counters"]["pending"] == 3
    assert [(w["wave"], w["size"], w["pending"]) for w in created["wave_counters"]] == [(1, 1, 1), (2, 2, 2)]

    page = (await api.get("/campaigns")).json()
    assert page["total"] == 1 and page["items"][0]["id"] == cid and "wave_counters" not in page["items"][0]
    assert (await api.get("/campaigns", params={"state": "running"})).json()["total"] == 0

    # Whether jobs go out at once depends on the hour (the window is tested with a fake clock).
    started = (await api.post(f"/campaigns/{cid}/start")).json()
    assert started["state"] == "running" and started["started"]
    again = await api.post("/campaigns", json=body(artifact, window=None, name="all day", skip_busy=True))
    problem(again, 422)  # every device is busy in the running campaign

    paused = (await api.post(f"/campaigns/{cid}/pause")).json()
    assert paused["state"] == "paused" and paused["detail"] == "paused by an operator"
    resumed = (await api.post(f"/campaigns/{cid}/resume")).json()
    assert resumed["state"] == "running"
    cancelled = (await api.post(f"/campaigns/{cid}/cancel")).json()
    assert cancelled["state"] == "cancelled" and cancelled["counters"]["cancelled"] == 3
    body_409 = problem(await api.post(f"/campaigns/{cid}/start"), 409)
    assert body_409["detail"] == f"campaign {cid} is cancelled: it cannot start"

    rows = await api.audit_rows()
    campaign_rows = [(r.actor, r.action, r.target) for r in rows if r.action.startswith("campaign.")]
    assert campaign_rows == [
        ("operator-bot", f"campaign.{a}", f"campaign {cid}")
        for a in ("add", "start", "pause", "resume", "cancel")
    ]
    assert rows[-1].detail == {"was": "running", "state": "cancelled"}


async def test_a_running_campaign_sends_jobs_and_shows_their_outcomes(api: Api) -> None:
    artifact = await fleet(api, 2)
    cid = (await api.post("/campaigns", json=body(artifact, waves=[1, 1]))).json()["id"]
    started = (await api.post(f"/campaigns/{cid}/start")).json()
    assert started["wave_counters"][0]["running"] == 1
    async with api.sessions() as db, db.begin():
        job = await db.scalar(select(Job).where(Job.campaign_id == cid))
        assert job is not None and job.kind == "update" and job.params["component_id"] == COMPONENT
        job.state, job.result_code, job.finished_at = JobState.SUCCEEDED.value, 1200, utc_now()
    jobs = (await api.get("/jobs")).json()
    assert [j["campaign_id"] for j in jobs["items"]] == [cid]
    shown = (await api.get(f"/campaigns/{cid}")).json()
    assert shown["wave_counters"][0]["running"] == 1  # read by the sweeper, not by GET


async def test_roles_and_problems(api: Api) -> None:
    artifact = await fleet(api, 2)
    problem(await api.post("/campaigns", "viewer", json=body(artifact)), 403)
    problem(await api.http.get("/api/v1/campaigns"), 401)
    problem(await api.get("/campaigns/99"), 404)
    problem(await api.post("/campaigns/99/start"), 404)
    problem(await api.post("/campaigns", json=body(999)), 404)
    for bad in (
        {"kind": "download"},
        {"waves": [0]},
        {"success_threshold": 1.5},
        {"target": {"colour": "red"}},
        {"window": "25:00-26:00"},
        {"target": {"tags": {"ring": "gamma"}}},
        {"kind": "remove", "artifact_id": None},
    ):
        response = await api.post("/campaigns", json=body(artifact, **bad))
        problem(response, 422)
    cid = (await api.post("/campaigns", json=body(artifact))).json()["id"]
    problem(await api.post(f"/campaigns/{cid}/start", "viewer"), 403)
    problem(await api.post(f"/campaigns/{cid}/pause"), 409)  # a draft is not running
    assert (await api.post(f"/campaigns/{cid}/start")).status_code == 200
    conflict = problem(await api.post("/campaigns", json=body(artifact)), 409)
    assert "DEV:0 (campaign 1), DEV:1 (campaign 1)" in conflict["detail"]
    viewer = await api.get(f"/campaigns/{cid}")
    assert viewer.status_code == 200 and viewer.json()["state"] == "running"
