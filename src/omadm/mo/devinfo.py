"""The DevInfo management object (``urn:oma:mo:oma-dm-devinfo:1.0``, ``./DevInfo``).

What a server needs to talk to the device at all: the client sends these five leaves in every
Package #1 (digest 7.8; OMA-TS-DM_StdObj-V1_2 7.1.3.2). All are read-only to servers and
permanent; the default ACL lets every server read them, since a server must identify the
device before any account-specific right could apply.
"""

from __future__ import annotations

from .model import Access, Format, MODef, NodeDef, Occurrence

__all__ = ["DEVINFO", "DEVINFO_URN"]

DEVINFO_URN = "urn:oma:mo:oma-dm-devinfo:1.0"


def _leaf(name: str, description: str) -> NodeDef:
    return NodeDef(name, Format.CHR, Access.READ_ONLY, description=description)


def _extension(name: str, description: str) -> NodeDef:
    return NodeDef(name, Format.NODE, Access.READ_ONLY, Occurrence.ZERO_OR_ONE, description=description)


DEVINFO = MODef(
    name="DevInfo",
    urn=DEVINFO_URN,
    default_path="./DevInfo",
    default_acl="Get=*",
    root=NodeDef(
        "DevInfo",
        Format.NODE,
        Access.READ_ONLY,
        ddf_name=DEVINFO_URN,
        description=(
            "Device information a DM server needs for problem-free operation of the protocol; "
            "the client sends DevId, Man, Mod, DmV and Lang in every session's first package."
        ),
        children=(
            _extension(
                "Ext",
                "The only branch of DevInfo where extensions can be added, permanently or dynamically; "
                "what lies below is implementation-specific.",
            ),
            _extension(
                "Bearer",
                "Items related to the bearer (CDMA, GSM, ...); other standards may mandate this sub-tree.",
            ),
            _leaf(
                "DevId",
                "Unique identifier of the device, formatted as a URN (RFC 2141) and globally unique, "
                "e.g. IMEI:493005100592800; also the Source LocURI of the client's messages.",
            ),
            _leaf("Man", "Manufacturer identifier."),
            _leaf("Mod", "Model identifier (a manufacturer-specified string)."),
            _leaf("DmV", "OMA DM client version identifier (a manufacturer-specified string)."),
            _leaf(
                "Lang",
                "Current language setting of the device, as an RFC 1766 language tag such as en-US.",
            ),
        ),
    ),
)
