"""The REST API's request and response bodies (pydantic), and paging.

Responses never carry secrets: a device's passwords are write-only (``has_server_password``
says whether one is set), a token is shown once when it is created.
"""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Annotated, Any, Generic, Literal, TypeVar

from fastapi import Path, Query
from pydantic import BaseModel, ConfigDict, Field, StringConstraints, model_validator

from ..artifacts.service import signature_of
from ..registry import MAX_BULK_DEVICES
from ..rollout import DEFAULT_ERROR_THRESHOLD, DEFAULT_SUCCESS_THRESHOLD
from ..store.models import ApiRole, JobKind

T = TypeVar("T")

MAX_LIMIT = 500

TagKey = Annotated[str, StringConstraints(min_length=1, max_length=64, pattern=r"^[^=]+$")]
TagValue = Annotated[str, StringConstraints(max_length=255)]
Tags = dict[TagKey, TagValue]


#: Ids and offsets stay within a signed 32-bit integer: what both engines store (a larger
#: value in a URL is a 422, never a database overflow).
MAX_ID = 2**31 - 1
RowId = Annotated[int, Path(ge=1, le=MAX_ID, description="The row's id.")]


class Paging:
    """``limit`` (1-500, default 100) and ``offset`` query parameters."""

    def __init__(
        self,
        limit: Annotated[int, Query(ge=1, le=MAX_LIMIT, description="At most this many items.")] = 100,
        offset: Annotated[int, Query(ge=0, le=MAX_ID, description="Skip this many items.")] = 0,
    ) -> None:
        self.limit = limit
        self.offset = offset


class Page(BaseModel, Generic[T]):
    """One page of a list: ``items``, how many match in all (``total``), and the paging asked."""

    items: list[T]
    total: int
    limit: int
    offset: int


class ProblemOut(BaseModel):
    """An error (RFC 9457, sent as ``application/problem+json``)."""

    type: str = Field(default="about:blank")
    title: str
    status: int
    detail: str
    errors: list[dict[str, str]] | None = Field(
        default=None, description="422 for a bad request: each field in error (location) and why."
    )


class _Out(BaseModel):
    model_config = ConfigDict(from_attributes=True)


# ------------------------------------------------------------------ devices


class DeviceCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    device_id: str = Field(min_length=1, max_length=255, examples=["IMEI:490154203237518"])
    username: str = Field(max_length=255, description="What the device presents (CLCRED name).")
    password: str = Field(max_length=255)
    auth: str = Field(default="md5", description="md5, hmac or basic.")
    server_password: str = Field(default="", max_length=255, description="SRVCRED: proves this server.")
    notify_address: str = Field(
        default="",
        max_length=255,
        description="Package #0 address, udp://host:port or http(s)://... (no link-local or metadata "
        "address unless the server allows local URLs). Without server_password, one is generated.",
    )
    tags: Tags = Field(default_factory=dict)


class DevicesCreate(BaseModel):
    """A batch of devices to pre-register at once (``POST /devices/bulk``): all or none."""

    model_config = ConfigDict(extra="forbid")

    devices: list[DeviceCreate] = Field(
        min_length=1,
        max_length=MAX_BULK_DEVICES,
        description=f"1 to {MAX_BULK_DEVICES} devices, each DevId once and not registered yet.",
    )


class DevicesCreated(BaseModel):
    """What a batch registration did: only a count, so that the answer stays small."""

    created: int = Field(description="How many devices were registered (all of the batch).")


class DeviceAccept(BaseModel):
    model_config = ConfigDict(extra="forbid")

    username: str | None = Field(default=None, max_length=255)
    password: str | None = Field(default=None, max_length=255)
    auth: str | None = Field(default=None, description="md5, hmac or basic (when giving credentials).")


class DeviceUpdate(BaseModel):
    """``PATCH /devices/{device_id}``: only the fields given change (the others stay)."""

    model_config = ConfigDict(extra="forbid")

    username: str | None = Field(default=None, min_length=1, max_length=255, description="CLCRED name.")
    password: str | None = Field(default=None, min_length=1, max_length=255, description="CLCRED secret.")
    auth: str | None = Field(default=None, description="md5, hmac or basic.")
    server_password: str | None = Field(
        default=None,
        max_length=255,
        description="SRVCRED. Empty removes it, unless the device keeps a notification address.",
    )
    notify_address: str | None = Field(
        default=None,
        max_length=255,
        description="Package #0 address, checked as at registration; empty removes it. With no "
        "server password, one is generated and shown once (generated_server_password).",
    )
    tags: Tags | None = Field(default=None, description="Replace all the tags.")


class DeviceOut(_Out):
    device_id: str
    state: str
    auth: str
    username: str
    has_server_password: bool
    notify_address: str
    tags: dict[str, Any]
    devinfo: dict[str, Any]
    devdetail: dict[str, Any]
    scomo_root: str
    created: datetime
    last_contact: datetime | None
    inventory_updated: datetime | None
    generated_server_password: str | None = Field(
        default=None,
        description="Only in the answer to a registration with a notification address and no "
        "server_password: the server password made for it (shown this once; configure it on the device).",
    )


class DeviceCount(StrEnum):
    """How the device list counts its matches (``count``): a count is a cost at a million devices."""

    AUTO = "auto"  # exact up to a bound, then the planner's estimate (PostgreSQL)
    EXACT = "exact"
    NONE = "none"


class DevicePage(BaseModel):
    """One page of the device list, in DevId order.

    Not :class:`Page`: a fleet of a million devices is paged by a cursor, since an offset
    makes the database walk every skipped row, and its total may be an estimate, since an
    exact count walks every match.
    """

    items: list[DeviceOut]
    limit: int
    offset: int
    next_cursor: str | None = Field(
        description="Pass as `cursor` for the next page (same filters); null on the last page."
    )
    total: int | None = Field(description="How many match in all; null with count=none.")
    total_exact: bool = Field(description="False when total is the planner's estimate (or null).")


class InventoryOut(_Out):
    kind: str
    node: str
    ident: str
    name: str
    version: str
    state: int | None
    status: int | None
    state_name: str | None = Field(
        default=None, description="State as a word: active/inactive (deployed), delivered/installed."
    )
    status_name: str | None = Field(
        default=None, description="Status as a word: idle, install_progressing, activate_failed, ..."
    )
    env_type: str
    pkg_id_ref: str
    description: str
    updated: datetime


class EventOut(_Out):
    id: int
    at: datetime = Field(description="When (for collapsed sessions: the last one).")
    kind: str = Field(description="What happened; 'sessions' for consecutive routine sessions shown as one.")
    detail: dict[str, Any]
    text: str = Field(default="", description="The event in words.")
    count: int = Field(default=1, description="How many stored events this item stands for.")


# ------------------------------------------------------------------ packages


class PackageOut(_Out):
    id: int
    filename: str
    size: int
    sha256: str
    content_type: str
    package_id: str
    version: str
    manifest: dict[str, Any]
    created: datetime
    signature: Literal["verified", "unsigned", "unverified"] = Field(
        default="unsigned",
        description="verified: signed by a publisher of the trust store; unverified: signed by "
        "another key (uploaded with allow_unsigned, or before the trust store); unsigned.",
    )
    publisher: str | None = Field(default=None, description="Who signed it (verified only).")
    key_id: str | None = Field(default=None, description="The signing key's id (verified only).")

    @model_validator(mode="after")
    def _signer(self) -> PackageOut:
        """Who signed it comes from the manifest summary kept at upload."""
        facts = signature_of(self.manifest)
        self.signature, self.publisher, self.key_id = facts["signature"], facts["publisher"], facts["key_id"]
        return self


class PublisherCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str = Field(min_length=1, max_length=100, description="Who publishes with this key.")
    public_key: str = Field(
        min_length=1, max_length=16384, description="The Ed25519 public key, PEM (KEY.pub.pem)."
    )


class PublisherOut(_Out):
    id: int
    name: str
    key_id: str = Field(description="16 hex digits: what 'omadm package keygen' printed.")
    fingerprint: str = Field(description="The whole SHA-256 of the raw key (64 hex digits).")
    public_key: str = Field(description="The PEM.")
    created: datetime


# ------------------------------------------------------------------ jobs


class JobCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    device_id: str = Field(min_length=1, max_length=255)
    kind: JobKind
    artifact_id: int | None = Field(
        default=None, ge=1, le=MAX_ID, description="An uploaded package (package kinds)."
    )
    url: str | None = Field(default=None, max_length=2048, description="A package hosted elsewhere.")
    pkg_id: str | None = Field(
        default=None, max_length=255, description="The package's id (as its manifest says): needed with url."
    )
    component_id: str | None = Field(default=None, max_length=255, description="remove, activate, ...")
    node: str | None = Field(default=None, max_length=255, description="Delivered/<X> (the Delivered kinds).")
    descriptor: bool = Field(default=False, description="Deliver through an OMA download descriptor.")
    timeout: float | None = Field(default=None, gt=0, description="Seconds before the job times out.")


class JobOut(_Out):
    id: int
    device_id: str
    kind: str
    state: str
    params: dict[str, Any]
    correlator: str
    result_code: int | None
    detail: str
    campaign_id: int | None
    attempts: int
    created: datetime
    updated: datetime
    sent_at: datetime | None
    accepted_at: datetime | None
    finished_at: datetime | None
    deadline: datetime | None


# ------------------------------------------------------------------ tokens, audit


class TokenCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str = Field(min_length=1, max_length=100)
    role: ApiRole
    authority: str | None = Field(
        default=None,
        min_length=1,
        max_length=100,
        description="The management authority it acts for (default: the creating token's). "
        "Only admins of the default authority create tokens of another authority.",
    )
    expires_in: str | None = Field(
        default=None,
        max_length=20,
        description="It expires this long from now: 30d, 12h, 90m, 45s, 2w or seconds.",
        examples=["30d"],
    )
    expires_at: datetime | None = Field(
        default=None, description="It expires at this time (ISO 8601 with a timezone). Neither: never."
    )


class TokenRotate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    grace: str = Field(
        default="0",
        max_length=20,
        description="How long the replaced secret is still accepted (30m, 1h, ...; 0: not at all).",
        examples=["1h"],
    )
    expires_in: str | None = Field(
        default=None,
        max_length=20,
        description="The new secret expires this long from now. Neither this nor expires_at: the "
        "token's own lifetime again from now (or never, for a token that does not expire).",
    )
    expires_at: datetime | None = Field(default=None, description="The new secret expires at this time.")
    never_expires: bool = Field(default=False, description="The new secret does not expire.")


class TokenOut(_Out):
    id: int
    name: str
    role: str
    authority: str = Field(description="The management authority whose devices it sees.")
    created: datetime
    last_used: datetime | None
    expires: datetime | None = Field(description="When it stops working; null: never.")
    rotated: datetime | None = Field(description="When its current secret was issued by a rotation.")
    previous_expires: datetime | None = Field(
        description="Until when the secret its last rotation replaced is still accepted."
    )


class WhoAmIOut(_Out):
    name: str = Field(description="The token's name: the actor in the audit log.")
    role: str = Field(description="viewer, operator or admin.")
    authority: str = Field(description="The management authority whose devices it sees.")
    server_id: str = Field(
        description="The authority's DM ServerID: what its devices' DMAcc account names and "
        "the server signs its credentials with."
    )
    dm_url: str = Field(
        description="Where the authority's devices open DM sessions (their DMAcc address): "
        "/dm for the default authority, /dm/<name> for the others."
    )


class TokenCreated(TokenOut):
    token: str = Field(description="The bearer token: shown this once, only its hash is kept.")


class AuditOut(_Out):
    id: int
    at: datetime
    authority: str = Field(description="The management authority whose log it is in.")
    actor: str = Field(description="A token's name, or shell:<user> for the server's shell.")
    action: str
    target: str
    detail: dict[str, Any]


# ------------------------------------------------------------------ authorities


class AuthorityCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str = Field(min_length=1, max_length=100, pattern=r"^[^/\s]+$", examples=["acme"])
    server_id: str = Field(
        min_length=1,
        max_length=255,
        examples=["acme-dm"],
        description="The DM ServerID its devices know it by (DMAcc ServerID, ACL principal).",
    )
    description: str = Field(default="", max_length=1000)


class AuthorityOut(_Out):
    id: int
    name: str
    server_id: str | None = Field(description="null for the default authority: the server's configured one.")
    description: str
    created: datetime
    devices: int
    tokens: int
    packages: int
    campaigns: int


# ------------------------------------------------------------------ campaigns

CampaignKind = Literal["install", "update", "remove", "activate", "deactivate"]
WaveSpec = (
    Annotated[int, Field(ge=1)] | Annotated[str, StringConstraints(pattern=r"^\s*\d+(\.\d+)?\s*%?\s*$")]
)


class CampaignTarget(BaseModel):
    """Which accepted devices: every condition given must hold."""

    model_config = ConfigDict(extra="forbid")

    devices: list[str] | None = Field(default=None, description="Only these DevIds.")
    tags: Tags | None = Field(default=None, description="Each tag equals its value.")
    devinfo: dict[str, str] | None = Field(default=None, description="Each DevInfo field equals its value.")
    has_component: str | None = Field(
        default=None, max_length=255, description="The last inventory has this component deployed."
    )
    version: str | None = Field(
        default=None, max_length=64, description="And its version equals this (PEP 440: 1.0 is 1.0.0)."
    )
    version_below: str | None = Field(
        default=None, max_length=64, description="And its version is lower than this (PEP 440)."
    )


class CampaignCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str = Field(min_length=1, max_length=255)
    kind: CampaignKind
    artifact_id: int | None = Field(
        default=None, ge=1, le=MAX_ID, description="The package (install, update)."
    )
    component_id: str | None = Field(
        default=None,
        max_length=255,
        description="remove, activate, deactivate; for install and update, the manifest's first component.",
    )
    target: CampaignTarget = Field(default_factory=CampaignTarget)
    waves: list[WaveSpec] = Field(
        default_factory=list,
        examples=[[10, "25%", "100%"]],
        description="Sizes or percentages; the last takes the rest.",
    )
    all_devices: bool = Field(
        default=False,
        description="Meant: an empty target acts on every device (else an empty target is a 422).",
    )
    success_threshold: float = Field(
        default=DEFAULT_SUCCESS_THRESHOLD,
        ge=0,
        le=1,
        description="Share of a wave that releases the next; below it the campaign pauses at the wave's end.",
    )
    error_threshold: float = Field(
        default=DEFAULT_ERROR_THRESHOLD,
        ge=0,
        le=1,
        description="Share of a wave failed above which it stops.",
    )
    device_timeout: float | None = Field(
        default=None, gt=0, description="Seconds before a device's job times out."
    )
    max_retries: int = Field(default=0, ge=0, le=100, description="New jobs after a transient failure.")
    window: str | None = Field(
        default=None, max_length=32, examples=["22:00-04:00"], description="UTC, daily."
    )
    skip_busy: bool = Field(
        default=False,
        description="Leave out devices already in a running or paused campaign for the component (else 409).",
    )


class WaveCountersOut(BaseModel):
    wave: int = Field(description="From 1.")
    size: int
    pending: int
    running: int
    succeeded: int
    failed: int
    cancelled: int


class CampaignOut(_Out):
    id: int
    name: str
    kind: str
    artifact_id: int | None
    component_id: str
    target: dict[str, Any]
    waves: list[Any]
    success_threshold: float
    error_threshold: float
    device_timeout: float | None
    max_retries: int
    window: str | None
    state: str
    current_wave: int = Field(description="From 1.")
    skipped: int
    detail: str
    created: datetime
    updated: datetime
    started: datetime | None
    finished: datetime | None
    counters: dict[str, int] = Field(description="Devices per state, all waves.")


class CampaignDetail(CampaignOut):
    wave_counters: list[WaveCountersOut]
