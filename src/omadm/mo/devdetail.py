"""The DevDetail management object (``urn:oma:mo:oma-dm-devdetail:1.0``, ``./DevDetail``).

Device details that benefit from being standardized but that the client does not send
unprompted: servers Get them when they need them (digest 7.8; OMA-TS-DM_StdObj-V1_2
7.1.3.3). The ``URI`` limits are what the tree engine enforces (414 when exceeded).
All leaves are read-only and permanent; every server may read them ("Get=*").
"""

from __future__ import annotations

from .model import Access, Format, MODef, NodeDef, Occurrence

__all__ = ["DEVDETAIL", "DEVDETAIL_URN"]

DEVDETAIL_URN = "urn:oma:mo:oma-dm-devdetail:1.0"

_UINT16 = " The value is a 16-bit unsigned integer written as a decimal string; 0 means unlimited."


def _leaf(name: str, description: str, fmt: Format = Format.CHR) -> NodeDef:
    return NodeDef(name, fmt, Access.READ_ONLY, description=description)


def _extension(name: str, description: str) -> NodeDef:
    return NodeDef(name, Format.NODE, Access.READ_ONLY, Occurrence.ZERO_OR_ONE, description=description)


DEVDETAIL = MODef(
    name="DevDetail",
    urn=DEVDETAIL_URN,
    default_path="./DevDetail",
    default_acl="Get=*",
    root=NodeDef(
        "DevDetail",
        Format.NODE,
        Access.READ_ONLY,
        ddf_name=DEVDETAIL_URN,
        description=(
            "General device information that benefits from standardization; servers read it on "
            "demand (it is not sent automatically like DevInfo)."
        ),
        children=(
            _extension(
                "Ext",
                "The only branch of DevDetail where extensions can be added, permanently or "
                "dynamically; what lies below is implementation-specific.",
            ),
            _extension(
                "Bearer",
                "Items related to the bearer (CDMA, GSM, ...); other standards may mandate this sub-tree.",
            ),
            NodeDef(
                "URI",
                Format.NODE,
                Access.READ_ONLY,
                description="Limits on the URIs the device accepts for addressing nodes and properties.",
                children=(
                    _leaf(
                        "MaxDepth",
                        "Maximum depth of the management tree: the largest number of URI segments "
                        "the device supports." + _UINT16,
                    ),
                    _leaf(
                        "MaxTotLen",
                        "Maximum total length, in characters, of a URI addressing a node or a node "
                        "property (property suffix included)." + _UINT16,
                    ),
                    _leaf(
                        "MaxSegLen",
                        "Maximum length, in characters, of one URI segment (a node name)." + _UINT16,
                    ),
                ),
            ),
            _leaf("DevTyp", "Device type, e.g. phone, PDA, pager, gateway."),
            _leaf("OEM", "Original equipment manufacturer of the device."),
            _leaf("FwV", "Firmware version of the device."),
            _leaf("SwV", "Software version of the device."),
            _leaf("HwV", "Hardware version of the device."),
            _leaf(
                "LrgObj",
                "Whether the device supports OMA DM large object handling (true or false).",
                Format.BOOL,
            ),
        ),
    ),
)
