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
        "The device shall expose the SCOMO management object with Download, Inventory/Delivered and "
        "Inventory/Deployed, under a root a server finds by its MO type (urn:oma:mo:oma-scomo:1.0).",
        "SCOMO-DEV-INV-*",
        "SCOMO-SRV-EXEC-011",
    ),
    _r(
        "SCOMO-RD-INV-002",
        "2.4",
        "A management authority shall be able to list the components deployed on the device, each with its "
        "identifier, name, version, state and operations.",
        "SCOMO-DEV-INV-*",
        "IOP-007",
    ),
    _r(
        "SCOMO-RD-INV-003",
        "2.3",
        "A management authority shall be able to list the delivery packages held on the device, with their "
        "package identifier and state.",
        "SCOMO-DEV-DL-003",
        "SCOMO-DEV-DLV-*",
    ),
    _r(
        "SCOMO-RD-INV-004",
        "2.4",
        "The identifier and Deployed entry of a component shall stay the same across an upgrade; only its "
        "version changes.",
        "SCOMO-DEV-DL-013",
        "IOP-005",
    ),
    _r(
        "SCOMO-RD-INV-005",
        "2.5",
        "The inventory shall be readable as a structure in one request (Get with ?list=Struct, StructData or "
        "TNDS).",
        "SCOMO-DEV-INV-002",
        "DM-CLI-LIST-*",
    ),
    # Delivery
    _r(
        "SCOMO-RD-DEL-001",
        "7.2",
        "A management authority shall be able to have the device download a package from a URL it names "
        "(indirect delivery) without installing it.",
        "SCOMO-DEV-DL-003",
        "SCOMO-SRV-EXEC-008",
        "IOP-008",
    ),
    _r(
        "SCOMO-RD-DEL-002",
        "7.1",
        "A management authority shall be able to deliver a package inside the DM session (direct delivery), "
        "as a DM large object when it is larger than one message.",
        "SCOMO-DEV-DLV-004",
        "DM-CLI-LO-001",
    ),
    _r(
        "SCOMO-RD-DEL-003",
        "4.1",
        "The progress of a download and install shall be visible in the Download entry's Status, which "
        "returns to Idle after success and keeps the failure value after a failure.",
        "SCOMO-DEV-DL-004",
        "SCOMO-DEV-DL-005",
        "SCOMO-DEV-DL-010",
    ),
    _r(
        "SCOMO-RD-DEL-004",
        "5",
        "A download that fails shall be reported with the result code that names the cause (1402 for a URL "
        "the server refuses, 1501 for a server nobody answers).",
        "SCOMO-DEV-DL-005",
        "SCOMO-DEV-DL-006",
        "IOP-006",
    ),
    # Installation
    _r(
        "SCOMO-RD-INS-001",
        "3.1",
        "A management authority shall be able to download and install a package in one operation, leaving "
        "its components active (DownloadInstall) or inactive (DownloadInstallInactive).",
        "SCOMO-DEV-DL-001",
        "SCOMO-DEV-DL-002",
        "SCOMO-SRV-EXEC-009",
        "IOP-001",
        "IOP-009",
    ),
    _r(
        "SCOMO-RD-INS-002",
        "3.2",
        "A management authority shall be able to install a package delivered earlier, active (Install) or "
        "inactive (InstallInactive).",
        "SCOMO-DEV-DLV-001",
        "SCOMO-DEV-DLV-002",
        "SCOMO-DEV-DLV-004",
    ),
    _r(
        "SCOMO-RD-INS-003",
        "3.4",
        "An operation whose preconditions are missing (no PkgURL, an unknown component) shall be refused "
        "with a DM status in the session and change nothing.",
        "SCOMO-DEV-DL-011",
        "SCOMO-DEV-DEP-005",
    ),
    _r(
        "SCOMO-RD-INS-004",
        "5",
        "A package the device cannot host (an execution environment it lacks, an install step that fails) "
        "shall be refused with the result code that names the cause.",
        "SCOMO-DEV-DL-009",
        "SCOMO-DEV-DL-010",
    ),
    # Update
    _r(
        "SCOMO-RD-UPD-001",
        "3.5",
        "Installing a newer version of a deployed component shall update that component in place.",
        "SCOMO-DEV-DL-013",
        "IOP-005",
    ),
    # Removal
    _r(
        "SCOMO-RD-REM-001",
        "3.3",
        "A management authority shall be able to uninstall a deployed component (Remove); its Deployed entry "
        "then disappears on the device and in the server's inventory.",
        "SCOMO-DEV-DEP-004",
        "SCOMO-SRV-EXEC-007",
        "IOP-004",
    ),
    _r(
        "SCOMO-RD-REM-002",
        "3.2",
        "A management authority shall be able to delete a delivered package from the device.",
        "SCOMO-DEV-DLV-003",
    ),
    # Activation
    _r(
        "SCOMO-RD-ACT-001",
        "3.3",
        "A management authority shall be able to activate an inactive component and deactivate an active "
        "one without removing it; State shows the result.",
        "SCOMO-DEV-DEP-001",
        "SCOMO-DEV-DEP-002",
        "SCOMO-DEV-DEP-006",
        "SCOMO-SRV-EXEC-005",
        "SCOMO-SRV-EXEC-006",
        "IOP-002",
        "IOP-003",
    ),
    _r(
        "SCOMO-RD-ACT-002",
        "4.3",
        "Activating an active component shall change nothing and shall not be reported as a failure.",
        "SCOMO-DEV-DEP-003",
    ),
    # Reporting
    _r(
        "SCOMO-RD-REP-001",
        "6.1",
        "The outcome of every primitive shall be reported: in the Exec's Status, or with 202 and later a "
        "Generic Alert of type urn:oma:at:scomo:1.0:OperationComplete.",
        "SCOMO-DEV-ALERT-*",
        "SCOMO-DEV-DL-001",
        "SCOMO-DEV-DEP-001",
    ),
    _r(
        "SCOMO-RD-REP-002",
        "6.2",
        "The asynchronous report shall carry the Exec's Correlator exactly when one was sent, the node "
        "executed as Source, and the result code and identifier in its Data.",
        "SCOMO-DEV-ALERT-*",
        "SCOMO-DEV-DL-014",
    ),
    _r(
        "SCOMO-RD-REP-003",
        "3.4",
        "An Exec repeated after the job finished shall not run the operation again; the device reports the "
        "same outcome, and a server sending an Exec again keeps its Correlator.",
        "SCOMO-DEV-DL-012",
        "SCOMO-SRV-EXEC-010",
    ),
    _r(
        "SCOMO-RD-REP-004",
        "4",
        "Status and State leaves shall follow the TS state tables at every transition, so a server that got "
        "no report learns the outcome by reading them.",
        "SCOMO-DEV-DL-004",
        "SCOMO-DEV-DL-005",
        "SCOMO-DEV-DEP-006",
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
        "The device shall enforce the ACLs of its tree, the SCOMO nodes included: a server the ACL does not "
        "grant a command gets 425 and nothing changes.",
        "DM-CLI-ACL-*",
    ),
    _r(
        "SCOMO-RD-SEC-003",
        "8.2",
        "Device-maintained nodes (the standard MOs' read-only leaves, SCOMO's Status, State and Deployed) "
        "shall refuse a server's Replace or Delete.",
        "DM-CLI-CMD-012",
        "DM-CLI-CMD-013",
        "MO-CLI-*",
    ),
    _r(
        "SCOMO-RD-SEC-004",
        "8.3",
        "The device shall check a package's integrity and authenticity before installing it, and refuse one "
        "changed after signing or signed by a key it does not trust, with result code 1407.",
        "SCOMO-DEV-DL-007",
        "SCOMO-DEV-DL-008",
    ),
    # Privacy
    _r(
        "SCOMO-RD-PRV-001",
        "8.4",
        "The device shall disclose a node, the software inventory included, only to servers its ACL grants "
        "Get.",
        "DM-CLI-ACL-001",
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
        "A server shall be able to wake the device with a verified notification (Package #0), and a server "
        "shall accept the Generic Alerts and server-initiated sessions of a device.",
        "DM-CLI-SESS-003",
        "DM-CLI-SESS-008",
        "DM-CLI-SESS-009",
        "DM-SRV-ALERT-*",
    ),
    # Server
    _r(
        "SCOMO-RD-SRV-001",
        "6.2",
        "A DM server shall answer a SCOMO OperationComplete alert with Status 200, match it to its job by "
        "Correlator, record a failure with its code, and ignore a copy or an unknown Correlator harmlessly.",
        "SCOMO-SRV-ALERT-*",
    ),
    _r(
        "SCOMO-RD-SRV-002",
        "6.3",
        "A DM server shall keep a job the device accepted (202) open until its report, without sending it "
        "again, and fail a job whose Exec was refused at once.",
        "SCOMO-SRV-ASYNC-*",
    ),
    _r(
        "SCOMO-RD-SRV-003",
        "2.4",
        "A DM server shall read a device's SCOMO inventory, again after each report and when asked.",
        "SCOMO-SRV-INV-*",
    ),
    _r(
        "SCOMO-RD-SRV-004",
        "3.1",
        "A DM server shall build each primitive correctly: PkgID and PkgURL before the Exec, the right "
        "operation node, a fresh Correlator on every Exec.",
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
        "install, activation, update, removal, failure reporting) and agree on the outcome.",
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
