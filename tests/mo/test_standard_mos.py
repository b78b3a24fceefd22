"""DevInfo, DevDetail and DMAcc as OMA-TS-DM_StdObj-V1_2 and the digest (section 7.8) describe them."""

from __future__ import annotations

import pytest

from omadm.mo import DEVDETAIL, DEVINFO, DMACC, Access, Format, MODef, NodeDef, Occurrence, Scope, all_mos
from omadm.mo.dmacc import AAUTH_LEVELS, AAUTH_TYPES, ADDR_TYPES
from omadm.mo.model import validate

MOS = pytest.mark.parametrize("mo", all_mos(), ids=lambda mo: mo.name)


def node(mo: MODef, path: str) -> NodeDef:
    found = mo.resolve(path)
    assert found is not None, path
    return found


@MOS
def test_valid(mo: MODef) -> None:
    validate(mo)


@MOS
def test_every_node_has_a_description(mo: MODef) -> None:
    for path, n in mo.walk():
        assert len(n.description) > 10 and n.description.endswith("."), (mo.name, path)


def test_identifiers_and_mount_points() -> None:
    assert (DEVINFO.urn, DEVINFO.default_path, DEVINFO.default_acl) == (
        "urn:oma:mo:oma-dm-devinfo:1.0",
        "./DevInfo",
        "Get=*",
    )
    assert (DEVDETAIL.urn, DEVDETAIL.default_path, DEVDETAIL.default_acl) == (
        "urn:oma:mo:oma-dm-devdetail:1.0",
        "./DevDetail",
        "Get=*",
    )
    assert (DMACC.urn, DMACC.default_path) == ("urn:oma:mo:oma-dm-dmacc:1.0", "./DMAcc")


def test_devinfo() -> None:
    assert [c.name for c in DEVINFO.root.children] == ["Ext", "Bearer", "DevId", "Man", "Mod", "DmV", "Lang"]
    for name in ("DevId", "Man", "Mod", "DmV", "Lang"):
        leaf = node(DEVINFO, name)
        assert (leaf.format, leaf.access, leaf.occurrence, leaf.scope) == (
            Format.CHR,
            Access.GET,
            Occurrence.ONE,
            Scope.PERMANENT,
        )
    for name in ("Ext", "Bearer"):
        assert node(DEVINFO, name).is_open and node(DEVINFO, name).occurrence == Occurrence.ZERO_OR_ONE
    assert DEVINFO.resolve("Ext/Vendor/Anything") is None  # not described: the implementation's


def test_devdetail() -> None:
    names = ["Ext", "Bearer", "URI", "DevTyp", "OEM", "FwV", "SwV", "HwV", "LrgObj"]
    assert [c.name for c in DEVDETAIL.root.children] == names
    for name in ("URI/MaxDepth", "URI/MaxTotLen", "URI/MaxSegLen", "DevTyp", "OEM", "FwV", "SwV", "HwV"):
        assert node(DEVDETAIL, name).format is Format.CHR
        assert node(DEVDETAIL, name).occurrence == Occurrence.ONE
    assert node(DEVDETAIL, "LrgObj").format is Format.BOOL
    assert node(DEVDETAIL, "URI").is_interior
    assert all(n.access == Access.GET for _, n in DEVDETAIL.walk())


def test_dmacc_shape() -> None:
    account = node(DMACC, "x")
    assert account.is_placeholder and account.occurrence == Occurrence.ONE_OR_MORE
    assert [c.name for c in account.children] == [
        "AppID",
        "ServerID",
        "Name",
        "PrefConRef",
        "ToConRef",
        "AppAddr",
        "AAuthPref",
        "AppAuth",
        "Ext",
    ]
    expected = {
        "AppID": Occurrence.ONE,
        "ServerID": Occurrence.ONE,
        "Name": Occurrence.ZERO_OR_ONE,
        "PrefConRef": Occurrence.ZERO_OR_ONE,
        "ToConRef": Occurrence.ZERO_OR_ONE,
        "ToConRef/y": Occurrence.ONE_OR_MORE,
        "ToConRef/y/ConRef": Occurrence.ONE,
        "AppAddr": Occurrence.ONE,
        "AppAddr/y": Occurrence.ONE_OR_MORE,
        "AppAddr/y/Addr": Occurrence.ONE,
        "AppAddr/y/AddrType": Occurrence.ONE,
        "AppAddr/y/Port": Occurrence.ZERO_OR_ONE,
        "AppAddr/y/Port/z": Occurrence.ONE_OR_MORE,
        "AppAddr/y/Port/z/PortNbr": Occurrence.ONE,
        "AAuthPref": Occurrence.ZERO_OR_ONE,
        "AppAuth": Occurrence.ONE,
        "AppAuth/y": Occurrence.ONE_OR_MORE,
        "AppAuth/y/AAuthLevel": Occurrence.ONE,
        "AppAuth/y/AAuthType": Occurrence.ONE,
        "AppAuth/y/AAuthName": Occurrence.ZERO_OR_ONE,
        "AppAuth/y/AAuthSecret": Occurrence.ZERO_OR_ONE,
        "AppAuth/y/AAuthData": Occurrence.ZERO_OR_ONE,
        "Ext": Occurrence.ZERO_OR_ONE,
    }
    for path, occurrence in expected.items():
        assert node(DMACC, f"x/{path}").occurrence == occurrence, path
    assert node(DMACC, "x/AppAuth/y/AAuthData").format is Format.BIN
    assert node(DMACC, "x/AppAuth/y/AAuthSecret").format is Format.CHR


def test_dmacc_access() -> None:
    assert DMACC.root.access == Access.GET and DMACC.root.scope is Scope.PERMANENT
    for path, n in DMACC.walk():
        if not path:
            continue
        assert n.scope is Scope.DYNAMIC, path  # created and deleted with the account
        assert Access.EXEC not in n.access and Access.COPY not in n.access, path
        assert Access.ADD in n.access, path
        # A ServerID is set with its account and never replaced (it is the ACL principal).
        assert (Access.REPLACE in n.access) == (n.name != "ServerID"), path
        assert (Access.DELETE in n.access) == (n.occurrence.optional or n.is_placeholder), path
        assert (Access.GET in n.access) != n.secret, path
    assert node(DMACC, "x/AppAuth/y/AAuthSecret").access == Access.ADD | Access.DELETE | Access.REPLACE
    assert node(DMACC, "x/AppAuth/y/AAuthData").access == Access.ADD | Access.DELETE | Access.REPLACE


def test_dmacc_enumerated_values() -> None:
    assert (
        node(DMACC, "x/AppAuth/y/AAuthLevel").values == AAUTH_LEVELS == ("CLCRED", "SRVCRED", "OBEX", "HTTP")
    )
    assert node(DMACC, "x/AppAuth/y/AAuthType").values == AAUTH_TYPES
    assert set(AAUTH_TYPES) == {
        "HTTP-BASIC",
        "HTTP-DIGEST",
        "BASIC",
        "DIGEST",
        "HMAC",
        "X509",
        "SECURID",
        "SAFEWORD",
        "DIGIPASS",
        "TRANSPORT",
    }
    addr_type = node(DMACC, "x/AppAddr/y/AddrType")
    assert addr_type.values == ADDR_TYPES == ("URI", "IPv4", "IPv6")
    assert addr_type.default == "URI"
    assert addr_type.value_error("IPv6") is None and addr_type.value_error("ipv6") is not None
    assert node(DMACC, "x/AppID").values == ("w7",)
    assert node(DMACC, "x/AAuthPref").values == ()  # empty is meaningful there (use the last one)
