"""The SCOMO management object (``urn:oma:mo:oma-scomo:1.0`` and ``1.1``), declared once.

Software Component Management: ``Download/<X>`` holds delivery packages (DPs) the device is to
fetch, ``Inventory/Delivered/<X>`` the DPs on the device, ``Inventory/Deployed/<X>`` the
installed components (DCs); each has an ``Operations`` node whose children are the primitives
a server Execs (SCOMO digest 2 and 3). The node tables follow digest 2.2-2.4; 1.1 differs only
by its URN and the optional ``Download/<X>/Reboot`` leaf (digest 2.6), so one builder,
:func:`scomo_mo`, makes both.

Access types (the digest gives what implementations advertise; these are our choices):

* The MO root, ``Download``, ``Inventory``, ``Delivered`` and ``Deployed`` are permanent and
  allow Get only. A server creates DPs by Adding *below* them: whether it may is the child's
  AccessType plus the parent's ACL, so the parents need no Add of their own (and a permanent
  node may not have one).
* ``Download/<X>`` and ``Delivered/<X>`` (direct delivery) are the server's: Add, Delete, Get,
  Replace. Their descriptive leaves are written by the server: required ones (PkgID, Name,
  PkgURL) allow Add, Get, Replace; optional ones also Delete. ``Delivered/<X>/Data`` (the
  payload) allows Add and Replace only: a package may be confidential, and echoing megabytes
  back is never useful, so it is write-only like a secret.
* ``Deployed/<X>`` and everything in it is created by the device (after an install, or at boot
  from the installers' inventory): servers only Get. The device itself writes with the tree's
  ``system_*`` methods, which no AccessType restricts.
* ``Status`` and ``State`` are device-maintained ints: Get only, everywhere.
* Operation nodes are ``null`` leaves with Add, Exec, Get (MediaTek's form; Symbian used
  interior nodes). A leaf says what they are: nothing lives below them and they hold no value.
  In this model an interior node without declared children is *open* (anything may be added
  below it), the opposite of what an operation node needs. Add is allowed because servers Add
  the node before Exec when unsure it exists (digest 2.2 "Server rule"); an Add on an existing
  one is 418, which servers treat as harmless. The ``Operations`` interior nodes under the
  server-created ``Download/<X>`` and ``Delivered/<X>`` allow Add too, so that such an Add has
  a parent even if the device did not create it; under ``Deployed/<X>`` the device always
  creates them (Get only).
* Default ACL on the root: ``Add=*&Delete=*&Exec=*&Get=*&Replace=*``: every management server
  the device has an account for may use SCOMO. An agent that wants one server to own software
  management narrows it (e.g. ``Get=*&Exec=srv1&...``) at mount time.

Occurrences marked [unverified] or single-source in the digest are decided here as follows:
``Download/<X>/Name`` is One (digest 2.1 shape; only Symbian's draft says ZeroOrOne; the
device does not require it to Exec), ``Deployed/<X>/Version`` is One (every implementation
fills it; servers decide upgrades on it), ``Reboot`` is a ZeroOrOne chr leaf with no fixed
value syntax, and the operation leaves are ZeroOrOne (a device may support only some
primitives).
"""

from __future__ import annotations

from collections.abc import Iterable
from enum import IntEnum

from .model import Access, Format, MODef, NodeDef, Occurrence, Scope, validate
from .scomo_codes import DeliveredState, DeliveredStatus, DeployedState, DeployedStatus, DownloadStatus

__all__ = [
    "SCOMO_1_0",
    "SCOMO_1_0_URN",
    "SCOMO_1_1",
    "SCOMO_1_1_URN",
    "SCOMO_DEFAULT_ACL",
    "SCOMO_URNS",
    "scomo_mo",
]

SCOMO_1_0_URN = "urn:oma:mo:oma-scomo:1.0"
SCOMO_1_1_URN = "urn:oma:mo:oma-scomo:1.1"
#: MO identifier by SCOMO version.
SCOMO_URNS: dict[str, str] = {"1.0": SCOMO_1_0_URN, "1.1": SCOMO_1_1_URN}
#: Every authenticated management server may manage software; agents may narrow it.
SCOMO_DEFAULT_ACL = "Add=*&Delete=*&Exec=*&Get=*&Replace=*"

_SERVER_REQUIRED = Access.ADD | Access.GET | Access.REPLACE
"""A leaf the server writes when it creates a DP and that the DP cannot do without."""
_SERVER_OPTIONAL = _SERVER_REQUIRED | Access.DELETE
"""A leaf the server may write, change or drop."""
_DP = Access.ADD | Access.DELETE | Access.GET | Access.REPLACE
"""A DP node the server creates and deletes."""
_PAYLOAD = Access.ADD | Access.REPLACE
"""Write-only: the server sends it, nobody reads it back."""
_OPERATION = Access.ADD | Access.EXEC | Access.GET
"""An operation leaf: Exec'd; Addable so that the server's Add-before-Exec works."""
_OPERATIONS_PARENT = Access.ADD | Access.GET
"""An Operations node under a server-created DP: Addable so operation leaves have a parent."""


def _codes(enum: type[IntEnum]) -> str:
    return ", ".join(f"{m.value} {m.name.replace('_', ' ').lower()}" for m in enum)


def _leaf(
    name: str,
    description: str,
    access: Access,
    *,
    optional: bool = False,
    fmt: Format = Format.CHR,
    mime: str | None = None,
) -> NodeDef:
    return NodeDef(
        name,
        fmt,
        access,
        Occurrence.ZERO_OR_ONE if optional else Occurrence.ONE,
        Scope.DYNAMIC,
        mime=mime,
        description=description,
    )


def _device_int(name: str, description: str) -> NodeDef:
    """A Status or State leaf: an int only the device writes."""
    return _leaf(name, description, Access.GET, fmt=Format.INT)


def _operations(description: str, access: Access, primitives: Iterable[tuple[str, str]]) -> NodeDef:
    children = tuple(
        NodeDef(
            name,
            Format.NULL,
            _OPERATION,
            Occurrence.ZERO_OR_ONE,
            Scope.DYNAMIC,
            description=text
            + " A null leaf: Exec it (with a Correlator); the device answers 202 and reports the "
            "outcome in a Generic Alert of type urn:oma:at:scomo:1.0:OperationComplete, or 200 "
            "when it finished within the session.",
        )
        for name, text in primitives
    )
    return NodeDef(
        "Operations",
        Format.NODE,
        access,
        Occurrence.ONE,
        Scope.DYNAMIC,
        description=description,
        children=children,
    )


def _ext(description: str, access: Access = Access.GET, scope: Scope = Scope.DYNAMIC) -> NodeDef:
    return NodeDef("Ext", Format.NODE, access, Occurrence.ZERO_OR_ONE, scope, description=description)


def _download(version: str) -> NodeDef:
    reboot = (
        (
            _leaf(
                "Reboot",
                "SCOMO 1.1: when the device should reboot around the installation of a "
                "DownloadInstall or DownloadInstallInactive (before and/or after). The value "
                "syntax is device-specific; a device that cannot honour it fails the install "
                "rather than ignore it.",
                _SERVER_OPTIONAL,
                optional=True,
            ),
        )
        if version == "1.1"
        else ()
    )
    dp = NodeDef(
        "<X>",
        Format.NODE,
        _DP,
        Occurrence.ZERO_OR_MORE,
        Scope.DYNAMIC,
        title="Delivery package to download",
        description=(
            "One delivery package (DP) to fetch, named by the server, which Adds it with its PkgID "
            "and PkgURL, then Execs one of its operations. The server may Delete it once the "
            "operation was reported."
        ),
        children=(
            _leaf(
                "PkgID",
                "Identifier of the DP, chosen by the server; must be set before an Exec. It "
                "becomes PkgIDRef of the components the DP installs.",
                _SERVER_REQUIRED,
            ),
            _leaf("Name", "Human-readable name of the DP (not needed to Exec).", _SERVER_REQUIRED),
            _leaf(
                "PkgURL",
                "URL (HTTP or HTTPS) of the DP or of its OMA download descriptor; must be set "
                "before an Exec.",
                _SERVER_REQUIRED,
            ),
            _leaf(
                "InstallParams",
                "Installation parameters handed to the installer as they are (used by "
                "DownloadInstall and DownloadInstallInactive).",
                _SERVER_OPTIONAL,
                optional=True,
            ),
            *reboot,
            _leaf("Description", "Free text describing the DP.", _SERVER_OPTIONAL, optional=True),
            _device_int(
                "Status",
                "Progress of the download and install, kept current by the device (Get only): "
                f"{_codes(DownloadStatus)}.",
            ),
            _leaf(
                "EnvType",
                "Execution environment the DP targets (an installer name on this device); an "
                "environment the device cannot host fails the operation with result 1413.",
                _SERVER_OPTIONAL,
                optional=True,
            ),
            _leaf("PkgType", "MIME content type of the DP.", _SERVER_OPTIONAL, optional=True),
            _operations(
                "The download primitives of this DP. The device creates it with the DP; a server "
                "may Add it (418 if it exists).",
                _OPERATIONS_PARENT,
                (
                    ("Download", "Fetch PkgURL; on success the DP appears in Inventory/Delivered."),
                    (
                        "DownloadInstall",
                        "Fetch PkgURL, then install the DP's components in the Active state.",
                    ),
                    (
                        "DownloadInstallInactive",
                        "Fetch PkgURL, then install the DP's components in the Inactive state.",
                    ),
                ),
            ),
            _ext("Vendor-specific extensions for this DP; their structure is not defined by SCOMO."),
        ),
    )
    return NodeDef(
        "Download",
        Format.NODE,
        Access.GET,
        description=(
            "DPs waiting to be, or being, downloaded by the device (indirect delivery); a Get lists "
            "the pending downloads. Servers Add children here."
        ),
        children=(dp,),
    )


def _delivered() -> NodeDef:
    dp = NodeDef(
        "<X>",
        Format.NODE,
        _DP,
        Occurrence.ZERO_OR_MORE,
        Scope.DYNAMIC,
        title="Delivered package",
        description=(
            "One DP held on the device: created by the device when a download finished, or "
            "Added by the server for direct delivery (with PkgID, Name and Data), then installed "
            "with Install or InstallInactive. Match it by PkgID: the device may name it "
            "differently from the Download entry."
        ),
        children=(
            _leaf(
                "PkgID",
                "Identifier of the DP; required before an Exec. Written by the server only when it "
                "creates the DP for direct delivery.",
                _SERVER_REQUIRED,
            ),
            _leaf("Name", "Human-readable name of the DP.", _SERVER_REQUIRED),
            _leaf("Description", "Free text describing the DP.", _SERVER_OPTIONAL, optional=True),
            _leaf(
                "InstallParams",
                "Installation parameters for Install and InstallInactive, handed to the installer "
                "as they are.",
                _SERVER_OPTIONAL,
                optional=True,
            ),
            _leaf(
                "Data",
                "The DP itself for direct delivery (usually sent as a large object in several "
                "messages), with the package MIME type as Meta Type. Required before an Exec of a "
                "directly delivered DP. Write-only: Add and Replace, never Get.",
                _PAYLOAD,
                optional=True,
                fmt=Format.BIN,
                mime="application/octet-stream",
            ),
            _device_int(
                "Status",
                f"Progress of Install or Remove on this DP, kept current by the device (Get only): "
                f"{_codes(DeliveredStatus)}.",
            ),
            _device_int(
                "State",
                "Whether the DP's components were installed; the DP stays either way (Get only): "
                f"{_codes(DeliveredState)}.",
            ),
            _leaf(
                "EnvType",
                "Execution environment the DP targets (an installer name on this device); an "
                "environment the device cannot host fails the install with result 1413.",
                _SERVER_OPTIONAL,
                optional=True,
            ),
            _leaf("PkgType", "MIME content type of the DP.", _SERVER_OPTIONAL, optional=True),
            _operations(
                "The primitives applicable to this DP. The device creates it with the DP; a server "
                "may Add it (418 if it exists).",
                _OPERATIONS_PARENT,
                (
                    ("Install", "Install the DP's components in the Active state."),
                    ("InstallInactive", "Install the DP's components in the Inactive state."),
                    ("Remove", "Delete the DP from the device; installed components are not touched."),
                ),
            ),
            _ext("Vendor-specific extensions for this DP; their structure is not defined by SCOMO."),
        ),
    )
    return NodeDef(
        "Delivered",
        Format.NODE,
        Access.GET,
        description=("DPs on the device, installed or not. Servers Add children here for direct delivery."),
        children=(dp,),
    )


def _deployed() -> NodeDef:
    def read(name: str, description: str, *, optional: bool = False) -> NodeDef:
        return _leaf(name, description, Access.GET, optional=optional)

    dc = NodeDef(
        "<X>",
        Format.NODE,
        Access.GET,
        Occurrence.ZERO_OR_MORE,
        Scope.DYNAMIC,
        title="Deployed component",
        description=(
            "One installed deployment component (DC). Created and deleted only by the device: after "
            "an install, and at start-up for every component its installers report (factory, "
            "user-installed and hand-installed ones included). Servers only read it."
        ),
        children=(
            read(
                "ID",
                "Identifier of the component: stable across upgrades and reboots; the Identifier "
                "reported in OperationComplete alerts.",
            ),
            read(
                "PkgIDRef",
                "PkgID of the DP that installed the component; absent, or -1 (Red Bend's "
                "convention), when the component did not come through SCOMO.",
                optional=True,
            ),
            read("Name", "Human-readable name of the component."),
            read("Description", "Free text describing the component.", optional=True),
            read(
                "Version",
                "Version of the component; servers compare it to decide upgrades and to verify one.",
            ),
            _device_int(
                "Status",
                "Progress of Remove, Activate or Deactivate on this component, kept current by the "
                f"device (Get only): {_codes(DeployedStatus)}.",
            ),
            _device_int("State", f"Whether the component is usable (Get only): {_codes(DeployedState)}."),
            read("EnvType", "Execution environment (installer) that hosts the component.", optional=True),
            _operations(
                "The primitives applicable to this component, created by the device with it.",
                Access.GET,
                (
                    ("Activate", "Make the component usable (State 10 to 20); result 1409 on failure."),
                    (
                        "Deactivate",
                        "Make the component unusable without removing it (State 20 to 10); result "
                        "1410 on failure.",
                    ),
                    ("Remove", "Uninstall the component and delete this node; result 1408 on failure."),
                ),
            ),
            _ext("Vendor-specific extensions for this component; their structure is not defined by SCOMO."),
        ),
    )
    return NodeDef(
        "Deployed",
        Format.NODE,
        Access.GET,
        description="Installed components; a Get lists them (the software inventory).",
        children=(dc,),
    )


def scomo_mo(version: str = "1.0", path: str = "./SCOMO") -> MODef:
    """The SCOMO management object of ``version`` ("1.0" or "1.1"), to be mounted at ``path``.

    The root node takes its name from the last segment of ``path`` (``./SCOMO``, ``./SCM``,
    ``./Vendor/SCOMO``...): SCOMO is found by its Type, not its place. The declaration is
    validated before it is returned.

    Raises:
        ValueError: an unknown version.
        InvalidModelError: ``path`` is not an absolute URI (``./Name``) or names a bad node.
    """
    urn = SCOMO_URNS.get(version)
    if urn is None:
        raise ValueError(f"unknown SCOMO version {version!r}; known: {', '.join(SCOMO_URNS)}")
    root_name = path.rstrip("/").rsplit("/", 1)[-1]
    mo = MODef(
        name="SCOMO",
        urn=urn,
        default_path=path,
        default_acl=SCOMO_DEFAULT_ACL,
        root=NodeDef(
            root_name,
            Format.NODE,
            Access.GET,
            ddf_name=urn,
            description=(
                f"Software Component Management Object {version}: packages to download, packages "
                "on the device, installed components, and the primitives that act on them."
            ),
            children=(
                _download(version),
                NodeDef(
                    "Inventory",
                    Format.NODE,
                    Access.GET,
                    description="What the device holds: delivered packages and deployed components.",
                    children=(_delivered(), _deployed()),
                ),
                _ext(
                    "MO-wide vendor extensions (e.g. policies); their structure is not defined by SCOMO.",
                    scope=Scope.PERMANENT,
                ),
            ),
        ),
    )
    validate(mo)
    return mo


#: SCOMO 1.0 at ``./SCOMO`` (the registered one: ``omadm mo ddf SCOMO``).
SCOMO_1_0 = scomo_mo("1.0")
#: SCOMO 1.1 at ``./SCOMO``: 1.0 plus ``Download/<X>/Reboot``.
SCOMO_1_1 = scomo_mo("1.1")
