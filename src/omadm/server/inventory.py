"""Reading a device's SCOMO inventory out of its Results (no I/O).

The server asks once per session for ``<root>/Inventory?list=StructData`` (every node of the
subtree with its value, DM 1.2 section 6.5.7) and turns the answer into one record per
``Deployed/<X>`` and ``Delivered/<X>`` entry. Devices differ in small ways (``./`` or not
before the path, a trailing slash, values with surrounding white space, numbers as text), so
the reader is lenient; a Results it cannot use gives no records, never an exception.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from omadm.protocol.messages import Item

from .store.models import InventoryKind

__all__ = ["InventoryRecord", "inventory_uri", "normalize_path", "parse_inventory"]

_LEAF_FIELDS = {
    "ID": "ident",
    "PkgID": "ident",
    "Name": "name",
    "Version": "version",
    "State": "state",
    "Status": "status",
    "EnvType": "env_type",
    "PkgIDRef": "pkg_id_ref",
    "Description": "description",
}


@dataclass(frozen=True)
class InventoryRecord:
    """One Deployed (a component) or Delivered (a package) entry as the device reported it."""

    kind: InventoryKind
    node: str  # the <X> name
    ident: str = ""  # Deployed: ID; Delivered: PkgID
    name: str = ""
    version: str = ""
    state: int | None = None
    status: int | None = None
    env_type: str = ""
    pkg_id_ref: str = ""
    description: str = ""


def normalize_path(uri: str) -> str:
    """``./A/B``, ``A/B/`` and ``./A//B`` all become ``./A/B`` (query strings dropped)."""
    path = uri.split("?", 1)[0].strip()
    path = path.removeprefix("./").lstrip("/")
    segments = [s for s in path.split("/") if s and s != "."]
    return "./" + "/".join(segments) if segments else "."


def inventory_uri(scomo_root: str) -> str:
    """What the server Gets each session: the whole inventory, values included."""
    return f"{normalize_path(scomo_root)}/Inventory?list=StructData"


def parse_inventory(items: Iterable[Item], scomo_root: str) -> list[InventoryRecord]:
    """The entries found in a ``?list=StructData`` answer (any order of items)."""
    root = normalize_path(scomo_root)
    kinds = {
        f"{root}/Inventory/Deployed": InventoryKind.DEPLOYED,
        f"{root}/Inventory/Delivered": InventoryKind.DELIVERED,
    }
    found: dict[tuple[InventoryKind, str], dict[str, object]] = {}
    for item in items:
        if item.source is None:
            continue
        path = normalize_path(item.source.loc_uri)
        for base, kind in kinds.items():
            if not path.startswith(base + "/"):
                continue
            rest = path[len(base) + 1 :].split("/")
            fields = found.setdefault((kind, rest[0]), {})
            if len(rest) == 2 and rest[1] in _LEAF_FIELDS:
                value = _text(item.data)
                name = _LEAF_FIELDS[rest[1]]
                if name in ("state", "status"):
                    fields[name] = _int(value)
                elif value is not None:
                    fields[name] = value
    return [
        InventoryRecord(kind=kind, node=node, **fields)  # type: ignore[arg-type]
        for (kind, node), fields in sorted(found.items())
    ]


def _text(data: str | bytes | None) -> str | None:
    if data is None:
        return None
    if isinstance(data, bytes):
        data = data.decode("utf-8", "replace")
    return data.strip()


def _int(value: str | None) -> int | None:
    try:
        return int(value) if value else None
    except ValueError:
        return None
