"""Jobs against a plain standard DM client (no ``?list=``, no Generic Alert): the server's fallbacks.

The client here is the protocol's in-memory tree with a SCOMO inventory in it: it answers
``Get`` node by node, refuses ``?list=StructData`` (404), and accepts Execs with 202 but never
reports. The server must still read the inventory, and must find out how an overdue job
ended by looking at the device (its inventory, then the entry's Status).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from sqlalchemy import select

from omadm.protocol import codec
from omadm.protocol.testing import MemoryTree
from omadm.server.registry import add_device, create_job, find_device
from omadm.server.store.models import InventoryEntry, Job, JobKind, JobState

from .dmharness import BASE, DEVICE, Harness, make_harness

pytestmark = pytest.mark.anyio

APP = "./SCOMO/Inventory/Deployed/app"


def plain_device() -> MemoryTree:
    tree = MemoryTree()
    for node in (
        "./SCOMO",
        "./SCOMO/Inventory",
        "./SCOMO/Inventory/Deployed",
        "./SCOMO/Inventory/Delivered",
        APP,
    ):
        tree.nodes[node] = None
    for leaf, value in {
        "ID": "com.example.app",
        "Name": "App",
        "Version": "1.2.0",
        "State": "10",
        "Status": "10",
        "PkgIDRef": "app-pkg",
        "EnvType": "archive",
    }.items():
        tree.nodes[f"{APP}/{leaf}"] = value
    tree.nodes[f"{APP}/Operations"] = None
    for op in ("Activate", "Deactivate", "Remove"):
        tree.nodes[f"{APP}/Operations/{op}"] = ""
    return tree


@pytest.fixture
async def harness(db_url: str, tmp_path: Path) -> AsyncIterator[Harness]:
    async for h in make_harness(db_url, tmp_path, report_grace=0):
        async with h.sessions() as db, db.begin():
            await add_device(db, DEVICE, username="dev", password="secret")
        yield h


async def inventory(h: Harness) -> list[tuple[str, str, str, int | None]]:
    async with h.sessions() as db:
        rows = (await db.execute(select(InventoryEntry).order_by(InventoryEntry.node))).scalars()
        return [(r.kind, r.ident, r.version, r.state) for r in rows]


async def add_job(h: Harness, kind: JobKind, **params: str) -> int:
    async with h.sessions() as db, db.begin():
        device = await find_device(db, DEVICE)
        assert device is not None
        return (await create_job(db, device, kind, dict(params))).id


async def job(h: Harness, job_id: int) -> Job:
    async with h.sessions() as db:
        found = await db.get(Job, job_id)
        assert found is not None
        return found


async def test_the_inventory_is_read_node_by_node_from_a_client_without_list(harness: Harness) -> None:
    tree = plain_device()
    responses = await harness.run(harness.client(tree=tree))
    assert all(r.status_code == 200 for r in responses)
    assert await inventory(harness) == [("deployed", "com.example.app", "1.2.0", 10)]


async def test_an_overdue_job_is_finished_from_what_the_device_shows(harness: Harness) -> None:
    tree = plain_device()
    await harness.run(harness.client(tree=tree))  # the server learns the inventory
    activate = await add_job(harness, JobKind.ACTIVATE, component_id="com.example.app")
    await harness.run(harness.client(tree=tree, session_id="2"))
    assert (APP + "/Operations/Activate", None) in tree.execs
    assert (await job(harness, activate)).state == JobState.ACCEPTED.value  # 202, then silence
    tree.nodes[f"{APP}/State"] = "20"  # the device did it, but never said so
    await harness.run(harness.client(tree=tree, session_id="3"))
    done = await job(harness, activate)
    assert (done.state, done.result_code) == (JobState.SUCCEEDED.value, 1200)
    assert "no report arrived in time" in done.detail


async def test_an_overdue_failure_is_read_from_the_entry_status(harness: Harness) -> None:
    tree = plain_device()
    await harness.run(harness.client(tree=tree))
    deactivate = await add_job(harness, JobKind.DEACTIVATE, component_id="com.example.app")
    tree.nodes[f"{APP}/State"] = "20"
    await harness.run(harness.client(tree=tree, session_id="2"))
    tree.nodes[f"{APP}/Status"] = "60"  # Deactivate Failed; State stays 20
    await harness.run(harness.client(tree=tree, session_id="3"))
    failed = await job(harness, deactivate)
    assert (failed.state, failed.result_code) == (JobState.FAILED.value, 1410)
    assert "Status 60" in failed.detail


async def test_an_overdue_remove_whose_entry_is_gone_succeeded(harness: Harness) -> None:
    tree = plain_device()
    await harness.run(harness.client(tree=tree))
    remove = await add_job(harness, JobKind.REMOVE, component_id="com.example.app")
    await harness.run(harness.client(tree=tree, session_id="2"))
    for key in [k for k in tree.nodes if k.startswith(APP)]:
        del tree.nodes[key]
    await harness.run(harness.client(tree=tree, session_id="3"))
    assert (await job(harness, remove)).state == JobState.SUCCEEDED.value
    assert await inventory(harness) == []


async def test_a_job_sent_in_a_session_that_died_is_sent_again(harness: Harness) -> None:
    tree = plain_device()
    await harness.run(harness.client(tree=tree))
    activate = await add_job(harness, JobKind.ACTIVATE, component_id="com.example.app")
    client = harness.client(tree=tree, session_id="2")
    out = client.start()
    reply = await harness.post(f"{BASE}/dm", out.body, out.content_type)
    commands = [c.name for c in codec.decode(reply.content, reply.headers["content-type"])[0].commands]
    assert "Exec" in commands  # the job went out... and the device vanished before answering
    assert (await job(harness, activate)).state == JobState.SENT.value
    await harness.run(harness.client(tree=tree, session_id="3"))
    again = await job(harness, activate)
    assert again.attempts == 2 and again.state == JobState.ACCEPTED.value


async def test_a_remove_sent_again_after_a_dead_session_and_answered_404_is_done(harness: Harness) -> None:
    tree = plain_device()
    await harness.run(harness.client(tree=tree))
    remove = await add_job(harness, JobKind.REMOVE, component_id="com.example.app", node="app")
    client = harness.client(tree=tree, session_id="2")
    out = client.start()
    reply = await harness.post(f"{BASE}/dm", out.body, out.content_type)
    client.receive(reply.content, content_type=reply.headers["content-type"])  # the device removes...
    for key in [k for k in tree.nodes if k.startswith(APP)]:
        del tree.nodes[key]  # ...and its answer never reaches the server
    await harness.run(harness.client(tree=tree, session_id="3"))
    done = await job(harness, remove)
    assert (done.state, done.result_code, done.attempts) == (JobState.SUCCEEDED.value, 1200, 2)
