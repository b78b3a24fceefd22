"""Which devices a filter selects, as SQL: one language for campaign targets and the device list.

A :class:`Target` says which of an authority's devices are meant: these DevIds, these tags,
these DevInfo values (by leaf, ``Man``, or URI, ``./DevInfo/Man``), this admission state,
this component deployed (at this version, or below one), DevIds starting with this prefix.
All given conditions must hold.
:meth:`Target.where` turns it into one SQL condition on ``devices``, written so that every
part can run on an index at a million devices:

* tags and DevInfo are ``EXISTS`` over ``device_attributes`` (plain rows the database keeps
  from the JSON columns, with statistics the planner can use);
* a component is ``EXISTS`` over ``inventory`` on ``(ident, kind, version_key)``, where
  versions compare as bytes in PEP 440 order (:mod:`omadm.server.version_key`);
* a DevId list travels as *one* JSON parameter, unpacked by the database (``json_each`` /
  ``json_array_elements_text``), so no list is ever bound value by value: the drivers' and
  engines' 32,767-parameter limits do not apply, whatever its length;
* a prefix is a range on the DevId index (byte order on both engines).

Nothing here loads devices: callers count, page or ``INSERT ... SELECT`` with the condition.
Values compare as text, as the JSON columns show them ("5" matches the tag 5).
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from typing import Any

from sqlalchemy import JSON, ColumnElement, String, and_, cast, exists, func, literal, select, text
from sqlalchemy import true as sa_true
from sqlalchemy.ext.asyncio import AsyncSession

from .registry import RegistryError
from .store.models import AttributeKind, Device, DeviceAttribute, DeviceState, InventoryEntry, InventoryKind
from .version_key import version_key

__all__ = [
    "CAMPAIGN_TARGET_KEYS",
    "DEVINFO_ROOT",
    "MAX_VALUE",
    "Target",
    "devinfo_names",
    "parse_pairs",
    "plan_per_target",
]

#: What a campaign's ``target`` mapping may say.
CAMPAIGN_TARGET_KEYS = ("devices", "tags", "devinfo", "has_component", "version", "version_below")
#: Longest tag or DevInfo value kept and compared (``device_attributes.value``).
MAX_VALUE = 255
#: The greatest code point: ``prefix + _TOP`` is above every DevId that starts with prefix.
_TOP = "\U0010ffff"


#: Where the DevInfo leaves are in the DM tree: how a device reports them (``./DevInfo/Man``).
DEVINFO_ROOT = "./DevInfo/"


def devinfo_names(name: str) -> tuple[str, str]:
    """The names a DevInfo filter on ``name`` matches: the leaf (``Man``) and its URI
    (``./DevInfo/Man``), whichever of the two was given.

    Devices report DevInfo by URI, and the server keeps their words as they are (the device
    page shows them so); operators write the leaf name, as the DevInfo MO names it. Either
    form selects the same devices, and no stored row is rewritten for it. Both run on the
    attribute index (an ``IN`` of two names).
    """
    leaf = name.removeprefix(DEVINFO_ROOT)
    return leaf, DEVINFO_ROOT + leaf


def parse_pairs(items: Iterable[str], what: str) -> dict[str, str]:
    """``["ring=beta", "site=x"]`` -> ``{"ring": "beta", "site": "x"}`` (query parameters)."""
    pairs: dict[str, str] = {}
    for item in items:
        name, sep, value = item.partition("=")
        if not sep or not name:
            raise RegistryError(422, f"a {what} filter is name=value, not {item!r}")
        pairs[name] = value
    return pairs


def _text_map(value: Any, key: str) -> dict[str, str]:
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        raise RegistryError(422, f"target {key} is a mapping of name to value")
    out = {}
    for name, item in value.items():
        if isinstance(item, (dict, list)) or item is None:
            raise RegistryError(422, f"target {key} {name!r}: a value is a string or a number")
        out[str(name)] = str(item).lower() if isinstance(item, bool) else str(item)
    return out


async def plan_per_target(db: AsyncSession, *, on: bool = True) -> None:
    """Make PostgreSQL plan this transaction's target queries for their values and without
    JIT (``on``), or go back to the server's settings for what follows (``on=False``).

    The driver prepares every statement, and after five runs PostgreSQL may switch to one
    generic plan for all values; but a tag held by 20 % of the fleet and one held by nobody
    want different plans (measured at a million devices: a campaign preview went from 0.55 s
    to 1.0 s on its sixth run, a tag filter's p99 from 56 to 30 ms with custom plans). JIT
    compiles for 50-70 ms, and more, on every count of that size: the preview took 0.9 s
    with it, 0.57 s without. Both last until the transaction ends (``SET LOCAL``), so the DM
    path keeps its cached plans. Turn them off before writing many rows: the foreign-key
    triggers run a cached query per row, planned each time it doubled a 127,272-device
    campaign's insert (2.7 s to 5.4 s), and JIT saves that insert 2 s. Nothing to do on
    SQLite, which plans every statement.
    """
    if db.get_bind().dialect.name != "postgresql":
        return
    if on:
        statement = (
            "SELECT set_config('plan_cache_mode', 'force_custom_plan', true), set_config('jit', 'off', true)"
        )
    else:
        statement = (
            "SELECT set_config(name, reset_val, true) FROM pg_settings"
            " WHERE name IN ('plan_cache_mode', 'jit')"
        )
    await db.execute(text(statement))


def _key(version: str, label: str) -> bytes:
    key = version_key(version)
    if key is None:
        raise RegistryError(422, f"{label} {version!r} is not a version (e.g. 2.0)")
    return key


@dataclass(frozen=True)
class Target:
    """A device filter; empty selects every device of the authority."""

    devices: tuple[str, ...] = ()
    tags: dict[str, str] = field(default_factory=dict)
    devinfo: dict[str, str] = field(default_factory=dict)
    state: DeviceState | None = None
    component: str | None = None
    version: str | None = None  # equal to (PEP 440: 1.0 == 1.0.0); needs component
    version_below: str | None = None  # needs component
    prefix: str | None = None  # the DevId starts with this (case matters)
    #: The forms each DevInfo name is stored under (:meth:`with_stored_names`); else both.
    stored_names: Mapping[str, tuple[str, ...]] | None = None

    async def with_stored_names(self, db: AsyncSession) -> Target:
        """This target, with each DevInfo name narrowed to the forms the database holds.

        A name matches its leaf and its URI (:func:`devinfo_names`), but an ``IN`` of two
        names reads the attribute index in two runs that are not in device order, and the
        planner can no longer merge it with the other conditions: at a million devices a
        campaign preview took 0.8 s with it, 0.6 s with one name. A fleet mostly holds one
        form, so two index probes (stopping at the first row) say which to use.
        """
        if not self.devinfo:
            return self
        forms: dict[str, tuple[str, ...]] = {}
        for name in self.devinfo:
            present = []
            for candidate in devinfo_names(name):
                probe = select(DeviceAttribute.device_pk).where(
                    DeviceAttribute.kind == AttributeKind.DEVINFO.value,
                    DeviceAttribute.name == candidate[:MAX_VALUE],
                )
                if await db.scalar(probe.limit(1)) is not None:
                    present.append(candidate)
            forms[name] = tuple(present) or devinfo_names(name)[:1]
        return replace(self, stored_names=forms)

    def __post_init__(self) -> None:
        texts = [*self.devices, *self.tags, *self.tags.values(), *self.devinfo, *self.devinfo.values()]
        texts += [t for t in (self.component, self.version, self.version_below, self.prefix) if t]
        if any("\x00" in text for text in texts):
            raise RegistryError(422, "a filter value cannot hold a NUL character")
        for label, version in (("version", self.version), ("version_below", self.version_below)):
            if version is None:
                continue
            if not self.component:
                raise RegistryError(422, f"{label} needs a component: the version of which component?")
            _key(version, label)

    @classmethod
    def from_campaign(cls, target: Mapping[str, Any]) -> Target:
        """A campaign's ``target`` mapping (its stored form); only accepted devices are targets."""
        unknown = sorted(set(target) - set(CAMPAIGN_TARGET_KEYS))
        if unknown:
            raise RegistryError(
                422, f"unknown target filter keys {unknown}; use {', '.join(CAMPAIGN_TARGET_KEYS)}"
            )
        devices = target.get("devices") or []
        if not isinstance(devices, list) or not all(isinstance(d, str) for d in devices):
            raise RegistryError(422, "target devices is a list of DevIds")
        component = target.get("has_component")
        for label in ("version", "version_below"):
            if target.get(label) is not None and not component:
                raise RegistryError(422, f"{label} needs has_component: the version of which component?")
        return cls(
            devices=tuple(devices),
            tags=_text_map(target.get("tags"), "tags"),
            devinfo=_text_map(target.get("devinfo"), "devinfo"),
            state=DeviceState.ACCEPTED,
            component=str(component) if component else None,
            version=str(target["version"]) if target.get("version") is not None else None,
            version_below=str(target["version_below"]) if target.get("version_below") is not None else None,
        )

    def where(self, authority_pk: int, dialect: str) -> ColumnElement[bool]:
        """The SQL condition on ``devices`` (``dialect``: the engine's name, for the DevId list)."""
        conditions: list[ColumnElement[bool]] = [Device.authority_pk == authority_pk]
        if self.state is not None:
            conditions.append(Device.state == self.state.value)
        if self.devices:
            conditions.append(Device.device_id.in_(_json_list(self.devices, dialect)))
        if self.prefix:
            conditions.append(and_(Device.device_id >= self.prefix, Device.device_id < self.prefix + _TOP))
        for kind, pairs in ((AttributeKind.TAG, self.tags), (AttributeKind.DEVINFO, self.devinfo)):
            for name, value in sorted(pairs.items()):
                if kind is not AttributeKind.DEVINFO:
                    names: tuple[str, ...] = (name,)
                elif self.stored_names is not None and name in self.stored_names:
                    names = self.stored_names[name]
                else:
                    names = devinfo_names(name)
                conditions.append(
                    exists().where(
                        DeviceAttribute.device_pk == Device.id,
                        DeviceAttribute.kind == kind.value,
                        DeviceAttribute.name == names[0][:MAX_VALUE]
                        if len(names) == 1
                        else DeviceAttribute.name.in_([n[:MAX_VALUE] for n in names]),
                        DeviceAttribute.value == value[:MAX_VALUE],
                    )
                )
        if self.component:
            has = [
                InventoryEntry.device_pk == Device.id,
                InventoryEntry.ident == self.component,
                InventoryEntry.kind == InventoryKind.DEPLOYED.value,
            ]
            if self.version is not None:
                has.append(InventoryEntry.version_key == _key(self.version, "version"))
            if self.version_below is not None:
                has.append(InventoryEntry.version_key < _key(self.version_below, "version_below"))
            conditions.append(exists().where(*has))
        return and_(sa_true(), *conditions)


def _json_list(values: Iterable[str], dialect: str) -> Any:
    """``SELECT value FROM <the list>``, the list bound as one JSON text parameter."""
    text = json.dumps(list(values))
    if dialect == "postgresql":
        rows = func.json_array_elements_text(cast(literal(text, String), JSON)).table_valued("value")
    else:
        rows = func.json_each(text).table_valued("value")
    return select(rows.c.value)
