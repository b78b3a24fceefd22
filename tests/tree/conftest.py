"""Fixtures for the tree engine tests: a fake clock, trees with and without the standard
MOs, and a small test MO (``APPS``) that exercises what DevInfo/DevDetail/DMAcc do not
(Occurrence limits, enumerated values, a non-Add leaf, an executable leaf, int/bool leaves)."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import pytest

from omadm.mo import DEVDETAIL, DEVINFO, DMACC
from omadm.mo.model import Access, Format, MODef, NodeDef, Occurrence, Scope
from omadm.tree.store import TreeStore
from omadm.tree.tree import DMTree

SERVER_A = "srv-a"
SERVER_B = "srv-b"
ALL_RIGHTS = "Add=*&Delete=*&Exec=*&Get=*&Replace=*"

APPS_URN = "urn:example:mo:apps:1.0"
_RW = Access.ADD | Access.DELETE | Access.GET | Access.REPLACE


def _leaf(
    name: str, fmt: Format, access: Access = _RW, *, values: tuple[str, ...] = (), mime: str | None = None
) -> NodeDef:
    return NodeDef(
        name,
        fmt,
        access,
        Occurrence.ZERO_OR_ONE,
        Scope.DYNAMIC,
        description=f"{name}.",
        values=values,
        mime=mime,
    )


#: ``./Apps/<X>`` with at most two apps, each holding leaves of several kinds.
APPS = MODef(
    name="Apps",
    urn=APPS_URN,
    default_path="./Apps",
    default_acl=ALL_RIGHTS,
    root=NodeDef(
        "Apps",
        Format.NODE,
        Access.GET,
        ddf_name=APPS_URN,
        description="Test applications.",
        children=(
            NodeDef(
                "<X>",
                Format.NODE,
                _RW,
                Occurrence.zero_or_n(2),
                Scope.DYNAMIC,
                ddf_name="com.example/1.0/App",
                description="One application.",
                children=(
                    NodeDef(
                        "Name",
                        Format.CHR,
                        Access.ADD | Access.GET | Access.REPLACE,
                        Occurrence.ONE,
                        Scope.DYNAMIC,
                        description="Name.",
                    ),
                    _leaf("Level", Format.INT),
                    _leaf("Enabled", Format.BOOL),
                    _leaf("Mode", Format.CHR, values=("on", "off")),
                    _leaf(
                        "Token",
                        Format.BIN,
                        Access.ADD | Access.DELETE | Access.REPLACE,
                        mime="application/octet-stream",
                    ),
                    _leaf("Locked", Format.CHR, Access.GET),
                    _leaf("Run", Format.CHR, Access.ADD | Access.EXEC | Access.GET),
                    NodeDef(
                        "Ext", Format.NODE, _RW, Occurrence.ZERO_OR_ONE, Scope.DYNAMIC, description="Open."
                    ),
                ),
            ),
        ),
    ),
)


class Clock:
    """A clock the test moves by hand, so TStamp values are predictable."""

    def __init__(self) -> None:
        self.now = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)

    def __call__(self) -> datetime:
        return self.now

    def tick(self, seconds: int = 1) -> None:
        self.now += timedelta(seconds=seconds)


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def bare(clock: Clock) -> Iterator[DMTree]:
    """A tree with the root only (default root ACL ``Add=*&Get=*``)."""
    store = TreeStore(":memory:")
    yield DMTree(store, clock=clock)
    store.close()


@pytest.fixture
def tree(bare: DMTree) -> DMTree:
    """A tree with ``./Vendor`` open to every server for everything: a plain playground."""
    bare.system_add_interior("./Vendor", acl=ALL_RIGHTS)
    return bare


@pytest.fixture
def std(tree: DMTree) -> DMTree:
    """``tree`` plus DevInfo, DevDetail, DMAcc (an account for srv-a) and the APPS MO."""
    tree.mount(
        DEVINFO,
        values={"DevId": "IMEI:493005100592800", "Man": "Acme", "Mod": "X1", "DmV": "1.0", "Lang": "en-US"},
    )
    tree.mount(
        DEVDETAIL, values={"URI/MaxDepth": "0", "URI/MaxTotLen": "0", "URI/MaxSegLen": "0", "LrgObj": "true"}
    )
    tree.mount(DMACC)
    tree.mount(APPS)
    base = "./DMAcc/acc-a"
    tree.system_add_interior(base, acl=f"Add={SERVER_A}&Delete={SERVER_A}&Get={SERVER_A}&Replace={SERVER_A}")
    tree.system_set(f"{base}/AppID", "w7")
    tree.system_set(f"{base}/ServerID", SERVER_A)
    tree.system_set(f"{base}/AppAddr/1/Addr", "https://dm.example.com/dm")
    tree.system_set(f"{base}/AppAddr/1/AddrType", "URI")
    tree.system_set(f"{base}/AppAuth/1/AAuthLevel", "CLCRED")
    tree.system_set(f"{base}/AppAuth/1/AAuthType", "DIGEST")
    tree.system_set(f"{base}/AppAuth/1/AAuthName", "dev-user")
    tree.system_set(f"{base}/AppAuth/1/AAuthSecret", "s3cret-password")
    tree.system_set(
        f"{base}/AppAuth/1/AAuthData", b"\x00\x01nonce\xff", format="bin", type="application/octet-stream"
    )
    return tree
