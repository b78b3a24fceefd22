"""Admission control: a bounded number of DM messages in flight, the rest 503 + Retry-After.

The counting and the Retry-After rule with a hand-driven clock; then the real endpoint
(in process, both engines) held at its limit by a message that cannot finish.
"""

from __future__ import annotations

import asyncio
import itertools
import random
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy.exc import TimeoutError as SQLAlchemyTimeoutError

from omadm.server.admission import Admission
from omadm.server.dm_endpoint import DMEndpoint
from omadm.server.registry import add_device

from .dmharness import BASE, DEVICE, Harness, make_harness


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_new_sessions_are_refused_at_the_limit_and_sessions_under_way_get_a_reserve() -> None:
    admission = Admission(4, clock=Clock(), rng=random.Random(1))
    assert all(admission.enter(continuing=False) for _ in range(4))
    assert not admission.enter(continuing=False)
    assert admission.enter(continuing=True) and admission.enter(continuing=True)  # reserve: 4 // 2
    assert not admission.enter(continuing=True)
    assert admission.in_flight == 6 and admission.shed == 2
    admission.leave()
    admission.leave()
    admission.leave()
    assert admission.enter(continuing=False)  # places free again


def test_retry_after_books_refused_devices_at_the_pace_new_sessions_are_admitted() -> None:
    clock = Clock()
    admission = Admission(50, max_retry_after=30, clock=clock, rng=random.Random(7))
    # A busy second: 100 new sessions admitted (the worker's pace), the places then full.
    for _ in range(100):
        assert admission.enter(continuing=False)
        admission.leave()
    for _ in range(50):
        admission.enter(continuing=False)
    clock.now += 1
    assert not admission.enter(continuing=False)
    # 1,000 devices refused now are booked ~100 per second over the next ~10 s, in order.
    waits = [admission.retry_after() for _ in range(1000)]
    assert waits[0] <= 2 and 9 <= waits[-1] <= 12, (waits[0], waits[-1])
    assert all(b >= a - 1 for a, b in itertools.pairwise(waits))  # in booking order
    per_second = {w: waits.count(w) for w in set(waits)}
    assert max(per_second.values()) <= 150, per_second  # spread out, not all at once
    # Beyond the bound, the bound; a session under way is told one second.
    more = [admission.retry_after() for _ in range(5000)]
    assert max(more) == 30 and min(more) >= 1
    assert admission.retry_after(continuing=True) == 1
    with pytest.raises(ValueError, match="at least 1"):
        Admission(0)


@pytest.fixture
async def harness(db_url: str, tmp_path: Path) -> AsyncIterator[Harness]:
    async for h in make_harness(db_url, tmp_path, dm_max_in_flight=1):
        async with h.sessions() as db, db.begin():
            await add_device(db, DEVICE, username="dev", password="secret")
        yield h


@pytest.mark.anyio
async def test_a_worker_over_its_limit_answers_503_with_retry_after_and_the_device_then_completes(
    harness: Harness, monkeypatch: pytest.MonkeyPatch
) -> None:
    entered, release = asyncio.Event(), asyncio.Event()
    message = DMEndpoint._message

    async def held(self: DMEndpoint, request: Any) -> Any:
        if not entered.is_set():  # the first message holds the worker's only place
            entered.set()
            await release.wait()
        return await message(self, request)

    monkeypatch.setattr(DMEndpoint, "_message", held)
    first = asyncio.create_task(harness.run(harness.client()))
    await asyncio.wait_for(entered.wait(), 10)
    other = harness.client(device_id="IMEI:000000000000001", session_id="9")
    out = other.start()
    refused = await harness.post(f"{BASE}/dm", out.body, out.content_type, out.headers)
    assert refused.status_code == 503
    assert 1 <= int(refused.headers["retry-after"]) <= 60
    assert "busy" in refused.text and "retry after" in refused.text
    release.set()
    responses = await asyncio.wait_for(first, 30)
    assert [r.status_code for r in responses] == [200] * len(responses)  # the held one completed
    assert (await harness.device()).last_contact is not None


@pytest.mark.anyio
async def test_a_pool_timeout_is_a_503_not_a_500(harness: Harness, monkeypatch: pytest.MonkeyPatch) -> None:
    async def no_connection(self: DMEndpoint, request: Any) -> Any:
        raise SQLAlchemyTimeoutError("QueuePool limit of size 1 overflow 0 reached")

    monkeypatch.setattr(DMEndpoint, "_message", no_connection)
    out = harness.client().start()
    response = await harness.post(f"{BASE}/dm", out.body, out.content_type, out.headers)
    assert response.status_code == 503 and int(response.headers["retry-after"]) >= 1
    assert "no database connection" in response.text
