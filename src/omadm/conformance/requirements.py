"""The SCOMO requirements (the RD's numbered list) as data, each tied to the TS and to test cases.

The RD (``docs/scomo/RD.md``) shows this list in a generated block, and the traceability
table (``docs/scomo/traceability.md``) follows each requirement to the TS section that
specifies it and to the catalogue cases that verify it. Keeping the list here, not in the
Markdown, is what lets CI check the chain: ``python -m omadm.conformance.gen_docs --check``
and ``tests/conformance/test_docs_current.py`` fail when a requirement is matched by no case.

Ids are ``SCOMO-RD-<AREA>-<NNN>``. The areas follow the RD's use cases (INV inventory, DEL
delivery, INS installation, UPD update, REM removal, ACT activation, REP reporting) and its
cross-cutting themes (SEC security, PRV privacy, DM what SCOMO needs from the DM 1.2 enabler
beneath it, SRV what a management authority's server must do, IOP interoperability).
``verified_by`` holds case-id glob patterns (:func:`fnmatch.fnmatchcase`, upper case), the
same syntax as ``--only``.

The official OMA-RD-SCOMO requirement ids were not available (SCOMO digest section 12, item
8); these are omadm's own, written from the RD use cases the digest recovered (section 9.1)
and the node and primitive tables.
"""

from __future__ import annotations

import fnmatch
from collections.abc import Iterable
from dataclasses import dataclass

from .model import Case

__all__ = ["AREAS", "REQUIREMENTS", "Requirement", "cases_verifying", "uncovered"]


@dataclass(frozen=True)
class Requirement:
    #: ``SCOMO-RD-<AREA>-<NNN>``.
    id: str
    #: The requirement, one sentence with "shall" (the RD's wording convention).
    text: str
    #: The TS section that specifies it: the number of a heading in ``docs/scomo/TS.md``.
    ts_section: str
    #: Case-id glob patterns; every requirement needs at least one matching case.
    verified_by: tuple[str, ...]

    @property
    def area(self) -> str:
        return self.id.split("-")[2]


#: Area code -> its heading in the RD, in the RD's order.
AREAS: dict[str, str] = {
    "INV": "Inventory",
    "DEL": "Delivery",
    "INS": "Installation",
    "UPD": "Update",
    "REM": "Uninstall and removal",
    "ACT": "Activation and deactivation",
    "REP": "Reporting",
    "SEC": "Security",
    "PRV": "Privacy",
    "DM": "Device management enabler",
    "SRV": "Management authority and DM server",
    "IOP": "Interoperability",
}


def _r(id: str, ts: str, text: str, *verified_by: str) -> Requirement:
    return Requirement(id=id, text=text, ts_section=ts, verified_by=tuple(verified_by))


REQUIREMENTS: tuple[Requirement, ...] = (
    # Inventory
    _r(
        "SCOMO-RD-INV-001",
        "2.1",
        "The device shall expose the SCOMO management object under a root a server can find by its MO type "
        "(urn:oma:mo:oma-scomo:1.0), with Download, Inventory/Delivered and Inventory/Deployed.",
        "SCOMO-DEV-MO-*",
        "SCOMO-DEV-INV-*",
    ),
    _r(
        "SCOMO-RD-INV-002",
        "2.4",
        "A management authority shall be able to list the components deployed on the device, each with its "
        "identifier, name, version and state.",
        "SCOMO-DEV-INV-*",
    ),
    _r(
        "SCOMO-RD-INV-003",
        "2.3",
        "A management authority shall be able to list the delivery packages held on the device, installed or "
        "not, with their package identifier, state and status.",
        "SCOMO-DEV-INV-*",
        "SCOMO-DEV-DLV-*",
        "SCOMO-DEV-DL-*",
    ),
    _r(
        "SCOMO-RD-INV-004",
        "2.4",
        "The identifier of a deployed component shall stay the same across sessions, reboots and upgrades.",
        "SCOMO-DEV-INV-*",
        "SCOMO-DEV-UPD-*",
    ),
    _r(
        "SCOMO-RD-INV-005",
        "2.4",
        "Components installed outside SCOMO (by the user, at the factory) shall appear in the inventory too.",
        "SCOMO-DEV-INV-*",
    ),
    _r(
        "SCOMO-RD-INV-006",
        "2.5",
        "The inventory shall be readable as a structure in one request (Get with ?list=Struct, StructData or "
        "TNDS), whatever its size (large objects, multiple messages).",
        "SCOMO-DEV-INV-*",
        "DM-CLI-LIST-*",
    ),
    # Delivery
    _r(
        "SCOMO-RD-DEL-001",
        "7.2",
        "A management authority shall be able to have the device download a package from a URL it names "
        "(indirect delivery) without installing it.",
        "SCOMO-DEV-DL-*",
    ),
    _r(
        "SCOMO-RD-DEL-002",
        "7.1",
        "A management authority shall be able to deliver a package inside the DM session (direct delivery), "
        "larger than one message, as a DM large object.",
        "SCOMO-DEV-DLV-*",
        "SCOMO-DEV-DIRECT-*",
        "DM-CLI-LO-001",
    ),
    _r(
        "SCOMO-RD-DEL-003",
        "7.3",
        "The device shall accept a package URL that points at an OMA Download descriptor and send its "
        "install notification.",
        "SCOMO-DEV-DD-*",
        "SCOMO-DEV-DLOTA-*",
    ),
    _r(
        "SCOMO-RD-DEL-004",
        "4.1",
        "The progress of a download shall be visible in the Download entry's Status while it runs and after "
        "it failed.",
        "SCOMO-DEV-DL-*",
        "SCOMO-DEV-STATE-*",
    ),
    _r(
        "SCOMO-RD-DEL-005",
        "5",
        "A download that fails (unreachable server, authentication refused, server error, no space, corrupt "
        "bytes) shall be reported with the result code that names the cause.",
        "SCOMO-DEV-ERR-*",
        "SCOMO-DEV-DL-*",
    ),
    # Installation
    _r(
        "SCOMO-RD-INS-001",
        "3.1",
        "A management authority shall be able to download and install a package in one operation, leaving "
        "its components active (DownloadInstall) or inactive (DownloadInstallInactive).",
        "SCOMO-DEV-INST-*",
        "SCOMO-DEV-DLI-*",
    ),
    _r(
        "SCOMO-RD-INS-002",
        "3.2",
        "A management authority shall be able to install a package delivered earlier, active (Install) or "
        "inactive (InstallInactive).",
        "SCOMO-DEV-INST-*",
        "SCOMO-DEV-DLV-*",
    ),
    _r(
        "SCOMO-RD-INS-003",
        "3.4",
        "An operation whose preconditions are missing (no PkgID or PkgURL, no package data) shall be refused "
        "with a DM status and change nothing.",
        "SCOMO-DEV-ERR-*",
        "SCOMO-DEV-EXEC-*",
    ),
    _r(
        "SCOMO-RD-INS-004",
        "5",
        "A package the device cannot host (unsupported environment, no space, failed validation) shall be "
        "refused with the result code that names the cause, and the device left as it was.",
        "SCOMO-DEV-ERR-*",
    ),
    # Update
    _r(
        "SCOMO-RD-UPD-001",
        "3.5",
        "Installing a newer version of a deployed component shall update that component in place: same "
        "Deployed entry and identifier, new version.",
        "SCOMO-DEV-UPD-*",
    ),
    _r(
        "SCOMO-RD-UPD-002",
        "3.5",
        "A package may update a part of an application (one of its components) without touching the others.",
        "SCOMO-DEV-UPD-*",
    ),
    _r(
        "SCOMO-RD-UPD-003",
        "3.5",
        "An update that fails shall leave the previous version installed and in its previous state.",
        "SCOMO-DEV-UPD-*",
        "SCOMO-DEV-ERR-*",
    ),
    # Removal
    _r(
        "SCOMO-RD-REM-001",
        "3.3",
        "A management authority shall be able to uninstall a deployed component (Remove); its Deployed entry "
        "then disappears.",
        "SCOMO-DEV-REM-*",
    ),
    _r(
        "SCOMO-RD-REM-002",
        "3.2",
        "A management authority shall be able to delete a delivered package from the device without touching "
        "the components it installed.",
        "SCOMO-DEV-REM-*",
    ),
    _r(
        "SCOMO-RD-REM-003",
        "5",
        "A removal that fails shall keep the component and be reported with result code 1408.",
        "SCOMO-DEV-REM-*",
        "SCOMO-DEV-ERR-*",
    ),
    # Activation
    _r(
        "SCOMO-RD-ACT-001",
        "3.3",
        "A management authority shall be able to activate an inactive component and deactivate an active one "
        "without removing it; State shows the result.",
        "SCOMO-DEV-ACT-*",
    ),
    _r(
        "SCOMO-RD-ACT-002",
        "4.3",
        "Activating an active component or deactivating an inactive one shall not change the component and "
        "shall not be reported as a failure.",
        "SCOMO-DEV-ACT-*",
    ),
    # Reporting
    _r(
        "SCOMO-RD-REP-001",
        "6.1",
        "The outcome of every primitive shall be reported: synchronously in the Exec's Status, or with 202 "
        "and later a Generic Alert of type urn:oma:at:scomo:1.0:OperationComplete.",
        "SCOMO-DEV-REP-*",
        "SCOMO-DEV-ALERT-*",
    ),
    _r(
        "SCOMO-RD-REP-002",
        "6.2",
        "The asynchronous report shall carry the Correlator of the Exec exactly when one was sent, the node "
        "executed as Source, and the result code and identifier in its Data.",
        "SCOMO-DEV-REP-*",
        "SCOMO-DEV-ALERT-*",
        "SCOMO-DEV-CORR-*",
    ),
    _r(
        "SCOMO-RD-REP-003",
        "6.3",
        "A report shall be resent in later sessions until the server acknowledged it, and never lost across "
        "a restart of the device.",
        "SCOMO-DEV-REP-*",
        "SCOMO-DEV-ALERT-*",
    ),
    _r(
        "SCOMO-RD-REP-004",
        "3.4",
        "An Exec repeated with the same Correlator shall not run the operation twice; the device answers "
        "with the same outcome.",
        "SCOMO-DEV-EXEC-*",
        "SCOMO-DEV-REP-*",
    ),
    _r(
        "SCOMO-RD-REP-005",
        "4",
        "Status and State leaves shall follow the TS state tables at every transition, so a server that got "
        "no report learns the outcome by reading them.",
        "SCOMO-DEV-STATE-*",
        "SCOMO-DEV-ACT-*",
        "SCOMO-DEV-DL-*",
    ),
    # Security
    _r(
        "SCOMO-RD-SEC-001",
        "8.1",
        "Only an authenticated DM server shall manage software: the device shall authenticate the server and "
        "the server the device (basic, MD5 or HMAC), with nonces rotated and replays refused.",
        "DM-CLI-AUTH-*",
        "DM-SRV-AUTH-*",
    ),
    _r(
        "SCOMO-RD-SEC-002",
        "8.2",
        "The device shall enforce the ACLs of the SCOMO nodes: a server without Exec or Add rights gets 425 "
        "and nothing runs.",
        "SCOMO-DEV-ACL-*",
        "DM-CLI-ACL-*",
    ),
    _r(
        "SCOMO-RD-SEC-003",
        "8.2",
        "Device-maintained nodes (Status, State, the Deployed entries) shall not be writable by a server.",
        "SCOMO-DEV-ACL-*",
        "SCOMO-DEV-MO-*",
        "MO-CLI-*",
        "DM-CLI-CMD-012",
        "DM-CLI-CMD-013",
    ),
    _r(
        "SCOMO-RD-SEC-004",
        "8.3",
        "The device shall check a package's integrity and authenticity before installing it and refuse one "
        "that fails with result code 1407.",
        "SCOMO-DEV-ERR-*",
        "SCOMO-DEV-SIG-*",
    ),
    _r(
        "SCOMO-RD-SEC-005",
        "8.3",
        "A download the package server refuses for authentication shall be reported with 1403, not retried "
        "without end.",
        "SCOMO-DEV-ERR-*",
        "SCOMO-DEV-DL-*",
    ),
    # Privacy
    _r(
        "SCOMO-RD-PRV-001",
        "8.4",
        "The software inventory shall be disclosed only to DM servers the ACL allows to read it.",
        "SCOMO-DEV-ACL-*",
        "DM-CLI-ACL-001",
    ),
    _r(
        "SCOMO-RD-PRV-002",
        "8.4",
        "A directly delivered package shall not be readable back from the device (Data is write-only).",
        "SCOMO-DEV-MO-*",
        "SCOMO-DEV-DLV-*",
        "SCOMO-DEV-ACL-*",
    ),
    # DM enabler
    _r(
        "SCOMO-RD-DM-001",
        "9.1",
        "SCOMO shall run over DM 1.2 sessions (package 1 to package 4, one Status per command, the SyncHdr "
        "Status first, Results after their Status), in XML and in WBXML.",
        "DM-CLI-SESS-*",
        "DM-CLI-IDS-*",
        "DM-CLI-ENC-*",
        "DM-CLI-ABORT-*",
        "DM-SRV-HDR-*",
        "DM-SRV-STS-*",
        "DM-SRV-ENC-*",
        "DM-SRV-ABT-*",
    ),
    _r(
        "SCOMO-RD-DM-002",
        "9.2",
        "Commands SCOMO uses (Add, Replace, Delete, Get, Exec, Copy, Atomic, Sequence) shall keep their DM "
        "1.2 meaning and status codes, including 404 for unknown nodes.",
        "DM-CLI-CMD-*",
        "DM-CLI-PROP-*",
        "DM-CLI-LIST-*",
        "DM-CLI-ATOM-*",
        "DM-CLI-SEQ-*",
    ),
    _r(
        "SCOMO-RD-DM-003",
        "9.3",
        "Large objects and multi-message packages shall work both ways within the peer's MaxMsgSize and "
        "MaxObjSize.",
        "DM-CLI-LO-*",
        "DM-CLI-MSG-*",
        "DM-SRV-LO-*",
        "DM-SRV-SIZE-*",
        "DM-SRV-PKG-*",
    ),
    _r(
        "SCOMO-RD-DM-004",
        "9.4",
        "The device shall hold the standard MOs (DevInfo, DevDetail, DMAcc) with the formats, occurrences "
        "and access types of their DDF.",
        "MO-CLI-*",
    ),
    _r(
        "SCOMO-RD-DM-005",
        "9.5",
        "A server shall be able to wake the device with a notification (Package #0), and a device shall be "
        "able to send Generic Alerts in a session it starts.",
        "DM-CLI-SESS-003",
        "DM-CLI-SESS-008",
        "DM-CLI-SESS-009",
        "DM-SRV-ALERT-*",
    ),
    # Server
    _r(
        "SCOMO-RD-SRV-001",
        "6.2",
        "A DM server shall accept a SCOMO OperationComplete alert (Status 200) and match it to its job by "
        "Correlator, in the session it arrives in or a later one.",
        "SCOMO-SRV-*ALERT*",
        "SCOMO-SRV-REP-*",
        "SCOMO-SRV-CORR-*",
    ),
    _r(
        "SCOMO-RD-SRV-002",
        "6.3",
        "A DM server shall handle a device that answers 202 and reports in a later session.",
        "SCOMO-SRV-REP-*",
        "SCOMO-SRV-ASYNC-*",
        "SCOMO-SRV-*ALERT*",
    ),
    _r(
        "SCOMO-RD-SRV-003",
        "2.4",
        "A DM server shall refresh its view of a device's inventory from the Deployed sub-tree.",
        "SCOMO-SRV-INV-*",
    ),
    _r(
        "SCOMO-RD-SRV-004",
        "3.1",
        "A DM server shall build a primitive correctly: the Download entry's PkgID and PkgURL before the "
        "Exec, a Correlator on the Exec.",
        "SCOMO-SRV-INST-*",
        "SCOMO-SRV-DL-*",
        "SCOMO-SRV-JOB-*",
        "SCOMO-SRV-EXEC-*",
    ),
    _r(
        "SCOMO-RD-SRV-005",
        "9.1",
        "A DM server shall follow the DM 1.2 session rules as a server: authentication and challenges, "
        "MsgID/CmdID/MsgRef/CmdRef, RespURI, one Status per client command.",
        "DM-SRV-*",
    ),
    # Interoperability
    _r(
        "SCOMO-RD-IOP-001",
        "10",
        "A real DM client and a real DM server shall carry out the RD use cases together (inventory, "
        "install, activation, update, removal, failure reporting).",
        "IOP-*",
    ),
)


def cases_verifying(requirement: Requirement, cases: Iterable[Case]) -> list[Case]:
    """The cases whose id matches one of the requirement's patterns, in catalogue order."""
    patterns = [p.upper() for p in requirement.verified_by]
    return [c for c in cases if any(fnmatch.fnmatchcase(c.id.upper(), p) for p in patterns)]


def uncovered(cases: Iterable[Case]) -> list[Requirement]:
    """The requirements no case in ``cases`` verifies."""
    every = list(cases)
    return [r for r in REQUIREMENTS if not cases_verifying(r, every)]
