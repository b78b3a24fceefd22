"""Targets in SQL select exactly what a plain Python filter over the same rows selects.

The reference below reads every device and inventory row and applies the target language's
rules as written (values compared as text, PEP 440 versions with packaging, unparsable
versions never older or equal); :class:`omadm.server.targets.Target` must agree on each
engine, for targets drawn by hypothesis over a fleet drawn at random once per test. Then a
campaign over 40,000 devices (above the old 32,767 bound parameters) is created, started and
cancelled on each engine.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from packaging.version import InvalidVersion, Version
from sqlalchemy import LargeBinary, func, insert, literal, select, text, update
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from omadm.server.campaigns import (
    cancel_campaign,
    counters,
    create_campaign,
    preview_campaign,
    start_campaign,
)
from omadm.server.registry import NewDevice, RegistryError, add_authority, add_devices
from omadm.server.rollout import wave_sizes
from omadm.server.store.models import (
    Campaign,
    CampaignDevice,
    Device,
    DeviceAttribute,
    DeviceState,
    InventoryEntry,
    Job,
    JobState,
    UTCDateTime,
    utc_now,
)
from omadm.server.targets import Target
from omadm.server.version_key import version_key

pytestmark = pytest.mark.anyio

Sessions = async_sessionmaker[AsyncSession]

TAG_KEYS = ("ring", "site")
TAG_VALUES = ("a", "b", "c", "5")
MODELS = ("M1", "M2", "5")
COMPONENTS = ("c1", "c2")
VERSIONS = ("1.0", "1.0.0", "1.0.post1", "2.0rc1", "2.0", "10.0", "bad version", "")
STATES = tuple(DeviceState)


@dataclass
class Row:
    pk: int
    authority: int
    device_id: str
    state: str
    tags: dict[str, Any]
    devinfo: dict[str, Any]
    deployed: list[tuple[str, str]]


def _version(text: str) -> Version | None:
    try:
        return Version(text)
    except InvalidVersion:
        return None


def reference(rows: list[Row], target: Target, authority: int) -> list[int]:
    """The target's rules applied row by row, in Python."""
    out = []
    for row in rows:
        if row.authority != authority or (target.state is not None and row.state != target.state.value):
            continue
        if target.devices and row.device_id not in target.devices:
            continue
        if target.prefix and not row.device_id.startswith(target.prefix):
            continue
        if any(k not in row.tags or str(row.tags[k]) != v for k, v in target.tags.items()):
            continue
        if any(k not in row.devinfo or str(row.devinfo[k]) != v for k, v in target.devinfo.items()):
            continue
        if target.component:
            versions = [_version(v) for ident, v in row.deployed if ident == target.component]
            if not versions:
                continue
            if target.version is not None:
                wanted = Version(target.version)
                versions = [v for v in versions if v is not None and v == wanted]
            if target.version_below is not None:
                below = Version(target.version_below)
                versions = [v for v in versions if v is not None and v < below]
            if not versions:
                continue
        out.append(row.pk)
    return sorted(out)


async def make_fleet(sessions: Sessions, seed: int, count: int = 70) -> list[Row]:
    """``count`` devices across two authorities with random tags, DevInfo and inventory."""
    rng = random.Random(seed)
    async with sessions() as db, db.begin():
        other = (await add_authority(db, "acme", server_id="acme.example")).id
        for index in range(count):
            authority = 1 if rng.random() < 0.8 else other
            name = f"{rng.choice(['IMEI:', 'MAC:', 'IMEI:9'])}{index:03}"
            await add_devices(
                db,
                [
                    NewDevice(
                        device_id=name,
                        username=name,
                        password="pw",
                        tags={k: rng.choice(TAG_VALUES) for k in TAG_KEYS if rng.random() < 0.7},
                    )
                ],
                state=rng.choice(STATES),
                authority_pk=authority,
            )
            pk = await db.scalar(
                select(Device.id).where(Device.device_id == name, Device.authority_pk == authority)
            )
            devinfo: dict[str, Any] = {"Mod": rng.choice(MODELS)} if rng.random() < 0.8 else {}
            if rng.random() < 0.3:
                devinfo["Lang"] = 5  # a number: compared as text
            await db.execute(update(Device).where(Device.id == pk).values(devinfo=devinfo))
            for node in range(rng.randrange(3)):
                db.add(
                    InventoryEntry(
                        device_pk=pk,
                        kind="deployed",
                        node=f"n{node}",
                        ident=rng.choice(COMPONENTS),
                        version=rng.choice(VERSIONS),
                    )
                )
        await db.flush()
        devices = (await db.scalars(select(Device))).all()
        inventory = (
            await db.execute(select(InventoryEntry.device_pk, InventoryEntry.ident, InventoryEntry.version))
        ).all()
    deployed: dict[int, list[tuple[str, str]]] = {}
    for pk, ident, version in inventory:
        deployed.setdefault(pk, []).append((ident, version))
    return [
        Row(d.id, d.authority_pk, d.device_id, d.state, dict(d.tags), dict(d.devinfo), deployed.get(d.id, []))
        for d in devices
    ]


def _pairs(keys: tuple[str, ...], values: tuple[str, ...]) -> st.SearchStrategy[dict[str, str]]:
    return st.dictionaries(st.sampled_from(keys), st.sampled_from(values), max_size=2)


@st.composite
def targets(draw: st.DrawFn, names: list[str]) -> Target:
    component = draw(st.none() | st.sampled_from(COMPONENTS))
    good_versions = [v for v in VERSIONS if _version(v) is not None] + ["3"]
    return Target(
        devices=tuple(draw(st.just([]) | st.lists(st.sampled_from([*names, "IMEI:nobody"]), max_size=12))),
        tags=draw(_pairs((*TAG_KEYS, "none"), TAG_VALUES)),
        devinfo=draw(_pairs(("Mod", "Lang"), (*MODELS, "x"))),
        state=draw(st.none() | st.sampled_from(STATES)),
        component=component,
        version=draw(st.none() | st.sampled_from(good_versions)) if component else None,
        version_below=draw(st.none() | st.sampled_from(good_versions)) if component else None,
        prefix=draw(st.none() | st.sampled_from(["IMEI:", "IMEI:9", "MAC:0", "M", "IMEI:90"])),
    )


async def test_targets_select_what_the_reference_filter_selects(sessions: Sessions) -> None:
    rows = await make_fleet(sessions, seed=14)
    dialect = sessions.kw["bind"].dialect.name
    names = [r.device_id for r in rows]
    seen_nonempty = 0

    @settings(
        max_examples=200,
        deadline=None,
        suppress_health_check=list(HealthCheck),
        database=None,
        derandomize=True,
    )
    @given(target=targets(names), authority=st.sampled_from([1, 2]))
    def check(target: Target, authority: int) -> None:
        nonlocal seen_nonempty
        expected = reference(rows, target, authority)
        seen_nonempty += bool(expected)
        found.append((target, authority, expected))

    found: list[tuple[Target, int, list[int]]] = []
    check()
    async with sessions() as db:
        for target, authority, expected in found:
            query = select(Device.id).where(target.where(authority, dialect)).order_by(Device.id)
            assert list(await db.scalars(query)) == expected, target
    assert seen_nonempty >= 20  # the draws do select devices, not only empty sets


async def test_attribute_rows_follow_the_json_columns(sessions: Sessions) -> None:
    """The triggers keep device_attributes equal to tags and DevInfo through every change."""
    async with sessions() as db, db.begin():
        await add_devices(db, [NewDevice("IMEI:1", "u", "p", tags={"ring": "a", "site": "x"})])
        pk = await db.scalar(select(Device.id).where(Device.device_id == "IMEI:1"))

    async def attributes() -> set[tuple[str, str, str]]:
        async with sessions() as db:
            query = select(DeviceAttribute.kind, DeviceAttribute.name, DeviceAttribute.value)
            return {tuple(r) for r in (await db.execute(query.where(DeviceAttribute.device_pk == pk))).all()}  # type: ignore[misc]

    assert await attributes() == {("tag", "ring", "a"), ("tag", "site", "x")}
    async with sessions() as db, db.begin():
        await db.execute(
            update(Device).where(Device.id == pk).values(tags={"ring": "b"}, devinfo={"Mod": "M1", "Lang": 5})
        )
    assert await attributes() == {("tag", "ring", "b"), ("devinfo", "Mod", "M1"), ("devinfo", "Lang", "5")}
    async with sessions() as db, db.begin():
        await db.execute(update(Device).where(Device.id == pk).values(last_contact=func.now()))  # no change
        await db.execute(update(Device).where(Device.id == pk).values(devinfo={"Nested": {"a": 1}}))
    assert await attributes() == {("tag", "ring", "b")}  # structures are not values
    async with sessions() as db, db.begin():
        await db.execute(Device.__table__.delete().where(Device.id == pk))
    assert await attributes() == set()


async def test_a_devinfo_name_is_narrowed_to_the_forms_stored(sessions: Sessions) -> None:
    """By leaf or by URI, the same devices; one stored form is queried alone (no IN), both when both are."""
    async with sessions() as db, db.begin():
        await add_devices(db, [NewDevice(f"IMEI:{i}", "u", "p") for i in range(3)])
        await db.execute(
            update(Device).where(Device.device_id == "IMEI:0").values(devinfo={"./DevInfo/Mod": "W7"})
        )
        await db.execute(
            update(Device).where(Device.device_id == "IMEI:1").values(devinfo={"./DevInfo/Mod": "X"})
        )

    async def chosen(devinfo: dict[str, str]) -> tuple[Target, list[str]]:
        async with sessions() as db:
            target = await Target(devinfo=devinfo).with_stored_names(db)
            dialect = db.get_bind().dialect.name
            query = select(Device.device_id).where(target.where(1, dialect)).order_by(Device.id)
            return target, list((await db.scalars(query)).all())

    for name in ("Mod", "./DevInfo/Mod"):
        target, found = await chosen({name: "W7"})
        assert found == ["IMEI:0"] and target.stored_names == {name: ("./DevInfo/Mod",)}
    async with sessions() as db, db.begin():
        await db.execute(update(Device).where(Device.device_id == "IMEI:2").values(devinfo={"Mod": "W7"}))
    target, found = await chosen({"Mod": "W7"})
    assert found == ["IMEI:0", "IMEI:2"] and target.stored_names == {"Mod": ("Mod", "./DevInfo/Mod")}
    target, found = await chosen({"Lang": "en"})  # stored by nobody: no match, and no error
    assert found == [] and target.stored_names == {"Lang": ("Lang",)}


async def test_a_campaign_over_40000_devices(sessions: Sessions) -> None:
    """Above the 32,767 bound parameters the old target lists hit, on each engine."""
    count = 40_000
    names = [f"IMEI:{n:06}" for n in range(count)]
    async with sessions() as db, db.begin():
        for start in range(0, count, 10_000):
            batch = [
                NewDevice(name, name, "pw", tags={"ring": "beta"}) for name in names[start : start + 10_000]
            ]
            await add_devices(db, batch)
        await db.execute(
            insert(InventoryEntry).from_select(
                [
                    "device_pk",
                    "kind",
                    "node",
                    "ident",
                    "version",
                    "version_key",
                    "name",
                    "env_type",
                    "pkg_id_ref",
                    "description",
                    "updated",
                ],
                select(
                    Device.id,
                    literal("deployed"),
                    literal("n0"),
                    literal("com.example.hello"),
                    literal("1.0"),
                    literal(version_key("1.0"), LargeBinary),
                    *(literal("") for _ in range(4)),
                    literal(utc_now(), UTCDateTime()),
                ),
            )
        )
        if db.get_bind().dialect.name == "postgresql":
            await db.execute(text("ANALYZE inventory"))  # what autovacuum does for DM-reported inventories
    target = {"devices": names, "tags": {"ring": "beta"}, "version_below": "2.0"}
    async with sessions() as db, db.begin():
        preview = await preview_campaign(
            db, "deactivate", component_id="com.example.hello", target=target, waves=[1000, "100%"]
        )
        assert (preview.devices, preview.busy, preview.waves) == (count, 0, [1000, count - 1000])
        assert preview.sample[:2] == names[:2]
        campaign = await create_campaign(
            db, "big", "deactivate", component_id="com.example.hello", target=target, waves=[1000, "100%"]
        )
        assert [w.size for w in await counters(db, campaign)] == [1000, count - 1000]
    async with sessions() as db, db.begin():
        running = await db.get(Campaign, campaign.id, with_for_update=True)
        assert running is not None
        await start_campaign(db, running)
    async with sessions() as db:
        jobs = await db.scalar(select(func.count()).select_from(Job).where(Job.campaign_id == campaign.id))
        flagged = await db.scalar(
            select(func.count()).select_from(Device).where(Device.has_open_jobs.is_(True))
        )
        correlators = await db.scalar(select(func.count(func.distinct(Job.correlator))))
        assert jobs == flagged == correlators == 1000
        if db.get_bind().dialect.name == "postgresql":  # statistics refreshed by the bulk writes
            query = text("SELECT relname, reltuples FROM pg_class WHERE relname = ANY(:names)")
            names = ["devices", "device_attributes", "campaign_devices", "jobs"]
            tuples = dict((await db.execute(query, {"names": names})).all())  # type: ignore[arg-type]
            assert tuples["devices"] >= count and tuples["device_attributes"] >= count
            assert tuples["campaign_devices"] >= count and tuples["jobs"] >= 1000
    async with sessions() as db, db.begin():
        with pytest.raises(RegistryError, match="40000 devices are already in a running or paused campaign"):
            await create_campaign(db, "again", "deactivate", component_id="com.example.hello", target=target)
    async with sessions() as db, db.begin():
        running = await db.get(Campaign, campaign.id, with_for_update=True)
        assert running is not None
        await cancel_campaign(db, running)
    async with sessions() as db:
        states = dict(
            (
                await db.execute(
                    select(Job.state, func.count()).where(Job.campaign_id == campaign.id).group_by(Job.state)
                )
            ).all()  # type: ignore[arg-type]
        )
        assert states == {JobState.CANCELLED.value: 1000}
        left = await db.scalar(
            select(func.count())
            .select_from(CampaignDevice)
            .where(CampaignDevice.campaign_id == campaign.id, CampaignDevice.state != "cancelled")
        )
        assert left == 0


@pytest.mark.parametrize(
    "waves", [[5, "20%", "100%"], ["2.5%", 3], [10, 10], ["33%"], [100, 5], ["1%", "1%", "50%", 1], []]
)
async def test_waves_cut_by_the_database_are_the_rollout_rules(sessions: Sessions, waves: list[Any]) -> None:
    """create_campaign cuts waves in SQL (no count first); the sizes are rollout.wave_sizes'."""
    async with sessions() as db, db.begin():
        await add_devices(db, [NewDevice(f"IMEI:{n:03}", "u", "p") for n in range(37)])
        for pk in await db.scalars(select(Device.id)):
            db.add(InventoryEntry(device_pk=pk, kind="deployed", node="n", ident="c", version="1.0"))
    async with sessions() as db, db.begin():
        campaign = await create_campaign(
            db, "w", "deactivate", component_id="c", target={}, waves=waves, all_devices=True
        )
        sizes = [w.size for w in await counters(db, campaign)]
    assert sizes == wave_sizes(37, waves)


@pytest.mark.parametrize(
    "target",
    [
        {"devices": ["IMEI:\x00"]},
        {"tags": {"ring": "\x00"}},
        {"devinfo": {"\x00": "x"}},
        {"has_component": "c", "version": "1.0\x00"},
    ],
)
async def test_a_nul_in_a_target_is_a_422_not_a_database_error(
    sessions: Sessions, target: dict[str, Any]
) -> None:
    """PostgreSQL text cannot hold NUL: the filter says so (422) before any statement runs."""
    async with sessions() as db, db.begin():
        with pytest.raises(RegistryError, match="NUL character") as refused:
            await preview_campaign(db, "deactivate", component_id="c", target=target)
        assert refused.value.status == 422
