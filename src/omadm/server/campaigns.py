"""Campaigns (issue 6): one SCOMO operation on a target set of devices, in waves.

A campaign installs, updates, removes, activates or deactivates one package or component on
the devices a filter selects, wave after wave. The rules (how waves are cut, when a wave
releases the next one, pauses or stops the campaign, which failures are retried, the
maintenance window) are :mod:`omadm.server.rollout`'s; this module only records them.

* :func:`create_campaign` resolves the target set *now* (accepted devices whose tags and
  DevInfo fields equal the filter's, that have a component deployed, optionally older than a
  version), cuts it into waves and stores a ``draft``. A device can be in only one active
  (running or paused) campaign per component: devices already in one are refused with 409
  naming them, or, with ``skip_busy``, left out and counted in ``Campaign.skipped``.
* :func:`start_campaign`, :func:`pause_campaign`, :func:`resume_campaign` and
  :func:`cancel_campaign` are the operator's actions. Cancelling cancels the jobs not yet sent
  and leaves devices that already installed as they are (nothing is rolled back).
* :func:`advance` is one step of a campaign, run by the sweeper (and at start and resume):
  read the outcomes of its jobs, retry the failures worth it, apply :func:`rollout.decide` to
  the current wave, and create the jobs of the released waves when inside the window.
* :func:`counters` counts devices per state per wave; :func:`preview_campaign` says what a
  campaign would target, creating nothing.

Everything is set-based (issue 14): targets are SQL conditions (:mod:`omadm.server.targets`),
a campaign's devices are written by ``INSERT ... SELECT``, a wave's jobs are made, tied,
flagged and recorded by one statement each, outcomes are read and cancellations made by
UPDATEs over the whole campaign. No statement's size or parameter count grows with the
number of devices, and no device row is loaded into Python.

A campaign belongs to one management authority: it targets only that authority's devices and
uses only its packages (``authority_pk``; the default authority unless given).

Functions work inside the caller's transaction; errors are :class:`RegistryError` (404, 409,
422) like the registry's.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from fractions import Fraction
from typing import Any

from sqlalchemy import (
    JSON,
    Select,
    String,
    and_,
    case,
    cast,
    exists,
    func,
    insert,
    literal,
    or_,
    select,
    update,
)
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import aliased
from sqlalchemy.sql.elements import ColumnElement

from .registry import RegistryError, check_job, refresh_statistics
from .rollout import (
    DEFAULT_ERROR_THRESHOLD,
    DEFAULT_SUCCESS_THRESHOLD,
    RETRYABLE,
    Decision,
    Tally,
    Window,
    decide,
    parse_wave,
    wave_sizes,
)
from .store.models import (
    DEFAULT_AUTHORITY_PK,
    Artifact,
    AuditEntry,
    Campaign,
    CampaignDevice,
    CampaignDeviceState,
    CampaignState,
    Device,
    DeviceEvent,
    DeviceState,
    InventoryEntry,
    InventoryKind,
    Job,
    JobKind,
    JobState,
    UTCDateTime,
    utc_now,
)
from .targets import Target, plan_per_target

__all__ = [
    "CAMPAIGN_KINDS",
    "Preview",
    "WaveCounters",
    "advance",
    "cancel_campaign",
    "counters",
    "create_campaign",
    "get_campaign",
    "left_out_note",
    "pause_campaign",
    "preview_campaign",
    "resume_campaign",
    "select_targets",
    "start_campaign",
]

#: The operations a campaign can apply.
CAMPAIGN_KINDS = (
    JobKind.INSTALL,
    JobKind.INSTALL_INACTIVE,  # staged: installed everywhere first, activated by a later campaign
    JobKind.UPDATE,
    JobKind.REMOVE,
    JobKind.ACTIVATE,
    JobKind.DEACTIVATE,
)
_PACKAGE_KINDS = {JobKind.INSTALL, JobKind.INSTALL_INACTIVE, JobKind.UPDATE}
#: Kinds that act on a deployed component: only devices that have it are targeted.
_NEEDS_COMPONENT = {JobKind.UPDATE, JobKind.REMOVE, JobKind.ACTIVATE, JobKind.DEACTIVATE}
#: Devices named in a 409 at most (then "and N more").
_NAMED = 10
#: The actor of the decisions the server takes by itself (the sweeper's), in the audit log.
SYSTEM_ACTOR = "system"

_DS = CampaignDeviceState


@dataclass
class WaveCounters:
    """One wave's devices by state (``size`` = all of them)."""

    wave: int
    size: int = 0
    states: dict[str, int] = field(default_factory=lambda: {s.value: 0 for s in CampaignDeviceState})


# ------------------------------------------------------------------ creation


def _dialect(db: AsyncSession) -> str:
    return db.get_bind().dialect.name


def select_targets(
    db: AsyncSession, target: dict[str, Any], *, authority_pk: int = DEFAULT_AUTHORITY_PK
) -> Select[Any]:
    """The ids of the accepted devices of the authority that the filter selects (a query).

    ``devices``: only these DevIds; ``tags``, ``devinfo``: each name equals its value (values
    compared as text); ``has_component``: the device's last inventory has this component
    deployed; ``version`` / ``version_below``: at this version / older than it (PEP 440; a
    device whose version does not parse is not known to be older and is left out). The
    query is run by the database: nothing is loaded here (:mod:`omadm.server.targets`).
    """
    where = Target.from_campaign(target).where(authority_pk, _dialect(db))
    return select(Device.id).where(where)


def _busy_condition(component_id: str, *, but: int | None = None) -> ColumnElement[bool]:
    """``devices`` rows already in an active campaign (running or paused) for the component."""
    other = aliased(Campaign)
    conditions = [
        CampaignDevice.device_pk == Device.id,
        other.id == CampaignDevice.campaign_id,
        other.component_id == component_id,
        other.state.in_([s.value for s in CampaignState if s.active]),
    ]
    if but is not None:
        conditions.append(other.id != but)
    return exists().where(*conditions)


async def _others_active(db: AsyncSession, component_id: str, *, but: int | None = None) -> bool:
    """Whether any running or paused campaign (``but`` this one) concerns the component:
    when none does, no device can be busy, and the fleet-wide busy count is skipped."""
    query = select(Campaign.id).where(
        Campaign.component_id == component_id,
        Campaign.state.in_([s.value for s in CampaignState if s.active]),
    )
    if but is not None:
        query = query.where(Campaign.id != but)
    return await db.scalar(query.limit(1)) is not None


async def _refuse_busy(
    db: AsyncSession, among: ColumnElement[bool], component_id: str, *, but: int | None = None
) -> None:
    """A 409 naming the first of the devices (among those ``among`` selects) that are in a
    running or paused campaign for the component (``but`` that one), if any are."""
    busy = _busy_condition(component_id, but=but)
    count = int(await db.scalar(select(func.count()).select_from(Device).where(among, busy)) or 0)
    if not count:
        return
    other = aliased(Campaign)
    conditions = [
        among,
        other.component_id == component_id,
        other.state.in_([s.value for s in CampaignState if s.active]),
    ]
    if but is not None:
        conditions.append(other.id != but)
    named = await db.execute(
        select(Device.device_id, func.min(other.id))
        .join(CampaignDevice, CampaignDevice.device_pk == Device.id)
        .join(other, other.id == CampaignDevice.campaign_id)
        .where(*conditions)
        .group_by(Device.device_id)
        .order_by(Device.device_id)
        .limit(_NAMED)
    )
    listed = [f"{device_id} (campaign {cid})" for device_id, cid in named]
    more = f" and {count - len(listed)} more" if count > len(listed) else ""
    raise RegistryError(
        409,
        f"{count} devices are already in a running or paused campaign for the same component: "
        f"{', '.join(listed)}{more}",
    )


@dataclass
class Preview:
    """What a campaign would target now: how many devices, how many are busy, a sample."""

    devices: int  # selected and free: what the campaign would hold
    busy: int  # selected but in another active campaign for the component
    sample: list[str]  # the first DevIds (registration order)
    waves: list[int]  # the sizes the waves would have


@dataclass
class _Plan:
    """A campaign's operation and devices, checked: what create and preview share."""

    kind: JobKind
    component: str
    target: dict[str, Any]  # as stored: the filter given, with the component it implies
    selected: ColumnElement[bool]  # the devices the target selects (a condition on devices)

    async def busy_split(self, db: AsyncSession) -> tuple[int, int, ColumnElement[bool]] | None:
        """(selected, busy, the free devices) when another running or paused campaign concerns
        the component, in one count; None when none does (no device can be busy)."""
        if not await _others_active(db, self.component):
            return None
        busy = _busy_condition(self.component)
        counted = select(func.count(), func.count().filter(busy)).select_from(Device).where(self.selected)
        selected, busy_count = (int(n) for n in (await db.execute(counted)).one())
        return selected, busy_count, and_(self.selected, ~busy)


async def _plan(
    db: AsyncSession,
    kind: JobKind | str,
    target: dict[str, Any],
    *,
    artifact_id: int | None,
    component_id: str | None,
    waves: Sequence[int | str],
    authority_pk: int,
    all_devices: bool = False,
) -> _Plan:
    try:
        for spec in waves:
            parse_wave(spec)
    except ValueError as exc:
        raise RegistryError(422, str(exc)) from None
    try:
        job_kind = JobKind(kind)
    except ValueError:
        job_kind = None
    if job_kind not in CAMPAIGN_KINDS:
        raise RegistryError(422, f"a campaign's kind is one of {', '.join(k.value for k in CAMPAIGN_KINDS)}")
    assert job_kind is not None
    target = dict(target)
    if job_kind in _PACKAGE_KINDS:
        if artifact_id is None:
            raise RegistryError(422, f"a {job_kind.value} campaign needs an artifact_id")
        artifact = await db.get(Artifact, artifact_id, with_for_update={"read": True})
        if artifact is None or artifact.authority_pk != authority_pk:
            raise RegistryError(404, f"no artifact {artifact_id}")
        components = (artifact.manifest or {}).get("components") or []
        first = str(components[0].get("id", "")) if components else ""
        component = component_id or first or artifact.package_id
    else:
        if artifact_id is not None:
            raise RegistryError(422, f"a {job_kind.value} campaign acts on a component: give no artifact_id")
        if not component_id:
            raise RegistryError(422, f"a {job_kind.value} campaign needs component_id")
        component = component_id
    if not component:
        raise RegistryError(422, "the campaign's component is unknown: give component_id")
    if not any(value not in (None, "", [], {}) for value in target.values()) and not all_devices:
        raise RegistryError(
            422,
            "the campaign has no target, so it would act on every device: give a target (devices, tags, "
            "devinfo, has_component, version, version_below) or all_devices to mean the whole fleet",
        )
    if job_kind in _NEEDS_COMPONENT:
        if target.get("has_component") not in (None, component):
            raise RegistryError(422, f"a {job_kind.value} campaign targets devices that have {component!r}")
        target["has_component"] = component
    chosen = await Target.from_campaign(target).with_stored_names(db)
    selected = chosen.where(authority_pk, _dialect(db))
    await plan_per_target(db)
    return _Plan(job_kind, component, target, selected)


async def preview_campaign(
    db: AsyncSession,
    kind: JobKind | str,
    *,
    target: dict[str, Any],
    artifact_id: int | None = None,
    component_id: str | None = None,
    waves: Sequence[int | str] = (),
    authority_pk: int = DEFAULT_AUTHORITY_PK,
    sample: int = 20,
    all_devices: bool = False,
) -> Preview:
    """What :func:`create_campaign` would target now, without creating anything."""
    plan = await _plan(
        db,
        kind,
        target,
        artifact_id=artifact_id,
        component_id=component_id,
        waves=waves,
        authority_pk=authority_pk,
        all_devices=all_devices,
    )
    split = await plan.busy_split(db)
    if split is None:
        selected = int(await db.scalar(select(func.count()).select_from(Device).where(plan.selected)) or 0)
        busy_count, free_devices = 0, plan.selected
    else:
        selected, busy_count, free_devices = split
    first = await db.scalars(select(Device.device_id).where(free_devices).order_by(Device.id).limit(sample))
    free = selected - busy_count
    return Preview(devices=free, busy=busy_count, sample=list(first), waves=wave_sizes(free, list(waves)))


async def create_campaign(
    db: AsyncSession,
    name: str,
    kind: JobKind | str,
    *,
    target: dict[str, Any],
    artifact_id: int | None = None,
    component_id: str | None = None,
    waves: Sequence[int | str] = (),
    success_threshold: float = DEFAULT_SUCCESS_THRESHOLD,
    error_threshold: float = DEFAULT_ERROR_THRESHOLD,
    all_devices: bool = False,
    device_timeout: float | None = None,
    max_retries: int = 0,
    window: str | None = None,
    skip_busy: bool = False,
    authority_pk: int = DEFAULT_AUTHORITY_PK,
) -> Campaign:
    """A ``draft`` campaign over the devices ``target`` selects now (see :func:`select_targets`)
    among the authority's; its package must be the authority's too.

    The component it concerns is ``component_id`` for remove, activate and deactivate, and
    the artifact manifest's first component for install and update (``component_id`` may
    name it). Kinds that act on a deployed component only target devices that have it.
    The devices are written by one ``INSERT ... SELECT`` (waves cut in registration order by
    the database), never loaded here.
    """
    name = name.strip()
    if not name or len(name) > 255:
        raise RegistryError(422, "a campaign needs a name of 1-255 characters")
    for label, value in (("success_threshold", success_threshold), ("error_threshold", error_threshold)):
        if not 0 <= value <= 1:
            raise RegistryError(422, f"{label} is a fraction between 0 and 1, not {value}")
    if device_timeout is not None and device_timeout <= 0:
        raise RegistryError(422, "device_timeout is a number of seconds above 0")
    if max_retries < 0:
        raise RegistryError(422, "max_retries cannot be negative")
    if window:
        try:
            Window.parse(window)
        except ValueError as exc:
            raise RegistryError(422, str(exc)) from None
    plan = await _plan(
        db,
        kind,
        target,
        artifact_id=artifact_id,
        component_id=component_id,
        waves=waves,
        authority_pk=authority_pk,
        all_devices=all_devices,
    )
    skipped = 0
    free = plan.selected
    split = await plan.busy_split(db)
    if split is not None:
        selected, skipped, free = split
        if skipped and not skip_busy:
            await _refuse_busy(db, plan.selected, plan.component)
        if selected == skipped:
            raise RegistryError(
                422, "the target filter selects no device" + (" that is free" if skipped else "")
            )
    elif await db.scalar(select(Device.id).where(free).limit(1)) is None:  # stops at the first
        raise RegistryError(422, "the target filter selects no device")
    now = utc_now()
    campaign = Campaign(
        authority_pk=authority_pk,
        name=name,
        kind=plan.kind.value,
        artifact_id=artifact_id,
        component_id=plan.component,
        target=plan.target,
        waves=list(waves),
        success_threshold=success_threshold,
        error_threshold=error_threshold,
        device_timeout=device_timeout,
        max_retries=max_retries,
        window=window or None,
        state=CampaignState.DRAFT.value,
        current_wave=0,
        skipped=skipped,
        detail="",
        created=now,
        updated=now,
    )
    db.add(campaign)
    await db.flush()
    await plan_per_target(db, on=False)  # the insert's foreign-key checks keep their cached plans
    numbered = (
        select(
            Device.id.label("device_pk"),
            func.row_number().over(order_by=Device.id).label("n"),
            func.count().over().label("total"),
        )
        .where(free)
        .subquery()
    )
    wave = _wave_of(numbered.c.n, numbered.c.total, list(waves))
    written = await db.execute(
        insert(CampaignDevice).from_select(
            ["campaign_id", "device_pk", "wave", "attempts", "state", "detail", "updated"],
            select(
                literal(campaign.id),
                numbered.c.device_pk,
                wave,
                literal(0),
                literal(_DS.PENDING.value),
                literal(""),
                literal(now, UTCDateTime()),
            ),
        )
    )
    rows = int(getattr(written, "rowcount", 0) or 0)
    if not rows:
        raise RegistryError(422, "the target filter selects no device")
    await refresh_statistics(db, rows, "campaign_devices")
    campaign.detail = (await left_out_note(db, campaign, selected=rows + skipped)).removeprefix("; ")
    return campaign


def _wave_of(n: Any, total: Any, waves: list[int | str]) -> ColumnElement[int]:
    """The wave of the ``n``-th of ``total`` devices, in SQL: what :func:`rollout.wave_sizes`
    cuts, computed by the database in the same statement that counts (no count first).

    Wave boundaries add up counts and percentages of ``total`` rounded up, as integer
    arithmetic both engines share: ceil(total * p / 100) = (total * a + b - 1) // b with
    p / 100 = a / b. Boundaries past ``total`` only leave later waves empty (dropped, as
    ``wave_sizes`` drops them); the last wave takes the rest.
    """
    specs = [parse_wave(w) for w in waves]
    if len(specs) <= 1:
        return literal(0)
    whens = []
    bound: Any = literal(0)
    for index, (kind, value) in enumerate(specs[:-1]):
        if kind == "count":
            bound = bound + int(value)
        else:
            share = Fraction(str(value)) / 100
            bound = bound + (total * share.numerator + share.denominator - 1) // share.denominator
        whens.append((n <= bound, index))
    return case(*whens, else_=len(specs) - 1)


# ------------------------------------------------------------------ operator actions


async def get_campaign(
    db: AsyncSession, campaign_id: int, *, for_update: bool = False, authority_pk: int | None = None
) -> Campaign:
    """The campaign; 404 when there is none (or, given ``authority_pk``, it is another authority's)."""
    campaign = await db.get(Campaign, campaign_id, with_for_update=for_update)
    if campaign is None or (authority_pk is not None and campaign.authority_pk != authority_pk):
        raise RegistryError(404, f"no campaign {campaign_id}")
    return campaign


def _require(campaign: Campaign, action: str, *states: CampaignState) -> None:
    if campaign.state not in {s.value for s in states}:
        raise RegistryError(409, f"campaign {campaign.id} is {campaign.state}: it cannot {action}")


async def start_campaign(db: AsyncSession, campaign: Campaign, now: datetime | None = None) -> Campaign:
    """Draft -> running; the first wave's jobs are created at once (inside the window)."""
    now = now or utc_now()
    _require(campaign, "start", CampaignState.DRAFT)
    # Two overlapping drafts started at the same moment must not both pass the check below:
    # starts of one component take turns (a transaction lock on PostgreSQL; SQLite has one
    # writer at a time anyway), and the second then sees the first running.
    if _dialect(db) == "postgresql":
        await db.execute(
            select(func.pg_advisory_xact_lock(func.hashtext(f"campaign:{campaign.component_id}")))
        )
    if await _others_active(db, campaign.component_id, but=campaign.id):
        members = select(CampaignDevice.device_pk).where(CampaignDevice.campaign_id == campaign.id)
        await _refuse_busy(db, Device.id.in_(members), campaign.component_id, but=campaign.id)
    campaign.state = CampaignState.RUNNING.value
    campaign.started = campaign.updated = now
    campaign.current_wave = 0
    await advance(db, campaign, now)
    return campaign


async def pause_campaign(db: AsyncSession, campaign: Campaign, now: datetime | None = None) -> Campaign:
    """Running -> paused: no new jobs; the ones created go on, their outcomes are still read."""
    _require(campaign, "pause", CampaignState.RUNNING)
    campaign.state = CampaignState.PAUSED.value
    campaign.detail = "paused by an operator"
    campaign.updated = now or utc_now()
    return campaign


async def resume_campaign(db: AsyncSession, campaign: Campaign, now: datetime | None = None) -> Campaign:
    """Paused -> running. A campaign paused because a wave ended below its success threshold
    goes on with the next wave: resuming it is the operator's decision to go on."""
    now = now or utc_now()
    _require(campaign, "resume", CampaignState.PAUSED)
    campaign.state = CampaignState.RUNNING.value
    campaign.detail = ""
    campaign.updated = now
    if campaign.device_timeout:
        # Jobs held queued during the pause (the DM endpoint sends none of a paused campaign's)
        # get their whole time again: the pause must not time them out.
        await db.execute(
            update(Job)
            .where(Job.campaign_id == campaign.id, Job.state == JobState.QUEUED.value)
            .values(deadline=now + timedelta(seconds=campaign.device_timeout), updated=now)
            .execution_options(synchronize_session=False)
        )
    await _sync_outcomes(db, campaign, now)
    tally = await _tally(db, campaign, campaign.current_wave)
    last = campaign.current_wave >= await _last_wave(db, campaign)
    if _decide(campaign, tally, last) is Decision.PAUSE:
        if last:
            _finish(campaign, now, "finished: resumed by an operator after its last wave")
            await _halt(db, campaign, now)
            return campaign
        campaign.current_wave += 1
    await advance(db, campaign, now)
    return campaign


async def cancel_campaign(db: AsyncSession, campaign: Campaign, now: datetime | None = None) -> Campaign:
    """Cancel a draft, running or paused campaign: jobs not yet sent are cancelled, devices
    without a job are cancelled; devices that installed stay as they are, jobs the devices
    work on finish (and are still counted)."""
    now = now or utc_now()
    _require(campaign, "be cancelled", CampaignState.DRAFT, CampaignState.RUNNING, CampaignState.PAUSED)
    before = f" (before that: {campaign.detail})" if campaign.detail else ""
    campaign.state = CampaignState.CANCELLED.value
    campaign.finished = campaign.updated = now
    campaign.detail = f"cancelled by an operator{before}"  # why it had paused stays readable
    await _halt(db, campaign, now)
    return campaign


# ------------------------------------------------------------------ the driver


def _audit_system(db: AsyncSession, campaign: Campaign, action: str, now: datetime, **detail: Any) -> None:
    """Record a decision the server took by itself (wave released, paused or stopped by a
    threshold, finished, devices retried or timed out) in the campaign authority's audit log,
    as the actor ``system``: "who did this?" has an answer for every change of a campaign,
    not only for the operators' (:func:`omadm.server.api.auth.audit` records theirs)."""
    db.add(
        AuditEntry(
            at=now,
            actor=SYSTEM_ACTOR,
            action=f"campaign.{action}",
            target=f"campaign {campaign.id}",
            authority_pk=campaign.authority_pk,
            detail={"name": campaign.name, **detail},
        )
    )


def _decide(campaign: Campaign, tally: Tally, last: bool) -> Decision:
    return decide(
        tally,
        success_threshold=campaign.success_threshold,
        error_threshold=campaign.error_threshold,
        last_wave=last,
    )


def _finish(campaign: Campaign, now: datetime, detail: str) -> None:
    campaign.state = CampaignState.FINISHED.value
    campaign.finished = campaign.updated = now
    campaign.detail = detail


async def left_out_note(db: AsyncSession, campaign: Campaign, *, selected: int | None = None) -> str:
    """What a campaign on a deployed component did not reach, said in words ("" when none).

    Update, remove, activate and deactivate target only devices whose *stored* inventory
    has the component. A device whose inventory the server has not read yet, or read before
    the component came, matches the rest of the target but is not in the campaign; a
    campaign that finished without it must not read as "done everywhere". One count, at
    creation and at the end. ``selected``: how many devices the whole target selects, known
    at creation (members and busy ones): then the count needs no look at the members.
    """
    if JobKind(campaign.kind) not in _NEEDS_COMPONENT:
        return ""
    rest = {
        k: v
        for k, v in (campaign.target or {}).items()
        if k not in ("has_component", "version", "version_below")
    }
    where = Target.from_campaign(rest).where(campaign.authority_pk, _dialect(db))
    if selected is not None:  # the rest of the target, less what the whole of it selects
        count = int(await db.scalar(select(func.count()).select_from(Device).where(where)) or 0) - selected
    else:
        member = exists().where(
            CampaignDevice.campaign_id == campaign.id, CampaignDevice.device_pk == Device.id
        )
        count = int(await db.scalar(select(func.count()).select_from(Device).where(where, ~member)) or 0)
    if not count:
        return ""
    return (
        f"; {count} device{'s' if count != 1 else ''} the rest of the target selects "
        f"{'are' if count != 1 else 'is'} not in it: no {campaign.component_id} in their last inventory "
        "(a refresh-inventory job reads it again)"
    )


async def _last_wave(db: AsyncSession, campaign: Campaign) -> int:
    query = select(func.max(CampaignDevice.wave)).where(CampaignDevice.campaign_id == campaign.id)
    return int(await db.scalar(query) or 0)


async def _open_devices(db: AsyncSession, campaign: Campaign) -> int:
    """Devices of the campaign not final yet (pending or running)."""
    query = select(func.count()).where(
        CampaignDevice.campaign_id == campaign.id,
        CampaignDevice.state.in_([_DS.PENDING.value, _DS.RUNNING.value]),
    )
    return int(await db.scalar(query) or 0)


async def _tally(db: AsyncSession, campaign: Campaign, wave: int) -> Tally:
    rows = await db.execute(
        select(CampaignDevice.state, func.count())
        .where(CampaignDevice.campaign_id == campaign.id, CampaignDevice.wave == wave)
        .group_by(CampaignDevice.state)
    )
    by_state: dict[str, int] = {state: count for state, count in rows}
    failed = by_state.get(_DS.FAILED.value, 0) + by_state.get(_DS.CANCELLED.value, 0)
    return Tally(size=sum(by_state.values()), succeeded=by_state.get(_DS.SUCCEEDED.value, 0), failed=failed)


def _running(campaign: Campaign) -> ColumnElement[bool]:
    return and_(CampaignDevice.campaign_id == campaign.id, CampaignDevice.state == _DS.RUNNING.value)


def _job_of_device(*columns: Any) -> Any:
    """A correlated ``SELECT`` over the campaign device's current job (for UPDATE ... SET)."""
    return select(*columns).where(Job.id == CampaignDevice.job_id).scalar_subquery()


async def _sync_outcomes(db: AsyncSession, campaign: Campaign, now: datetime) -> None:
    """Read the final jobs of running devices; a failure worth it goes back to pending (a retry)
    while the campaign is running or paused.

    Set-based: one UPDATE per kind of outcome, each over the running devices whose job is
    final (found from the campaign's final jobs, an index range), whatever the campaign's size.
    """
    running = _running(campaign)
    final_jobs = select(Job.id).where(
        Job.campaign_id == campaign.id, Job.state.in_([s.value for s in JobState if s.final])
    )
    await db.execute(
        update(CampaignDevice)
        .where(
            running,
            or_(CampaignDevice.job_id.is_(None), ~exists().where(Job.id == CampaignDevice.job_id)),
        )
        .values(state=_DS.FAILED.value, detail="its job was deleted", updated=now)
        .execution_options(synchronize_session=False)
    )
    finished = and_(running, CampaignDevice.job_id.in_(final_jobs))
    outcome = {
        "result_code": _job_of_device(Job.result_code),
        "detail": _job_of_device(Job.detail),
        "updated": now,
    }

    def job_is(*conditions: ColumnElement[bool]) -> ColumnElement[bool]:
        return exists().where(Job.id == CampaignDevice.job_id, *conditions)

    async def settle(condition: ColumnElement[bool], **values: Any) -> int:
        done = await db.execute(
            update(CampaignDevice)
            .where(finished, condition)
            .values(**{**outcome, **values})
            .execution_options(synchronize_session=False)
        )
        return int(getattr(done, "rowcount", 0) or 0)

    await settle(job_is(Job.state == JobState.SUCCEEDED.value), state=_DS.SUCCEEDED.value)
    await settle(job_is(Job.state == JobState.CANCELLED.value), state=_DS.CANCELLED.value)
    if CampaignState(campaign.state).active:  # a retry: a new job when its wave may send
        retryable = job_is(
            Job.state.in_([JobState.FAILED.value, JobState.TIMED_OUT.value]),
            or_(Job.result_code.is_(None), Job.result_code.in_(sorted(int(c) for c in RETRYABLE))),
        )
        detail = (
            literal("attempt ")
            + cast(CampaignDevice.attempts, String)
            + literal(" ")
            + _job_of_device(Job.state)
            + literal(": retrying (")
            + _job_of_device(Job.detail)
            + literal(")")
        )
        retried = await settle(
            and_(retryable, CampaignDevice.attempts <= campaign.max_retries),
            state=_DS.PENDING.value,
            detail=detail,
        )
        if retried:
            _audit_system(db, campaign, "retried", now, devices=retried, wave=campaign.current_wave + 1)
    timed_out = await settle(job_is(Job.state == JobState.TIMED_OUT.value), state=_DS.FAILED.value)
    if timed_out:  # the sweeper timed their jobs out: the devices fail here, for good
        _audit_system(db, campaign, "timed-out", now, devices=timed_out, wave=campaign.current_wave + 1)
    await settle(job_is(Job.state == JobState.FAILED.value), state=_DS.FAILED.value)


async def _halt(db: AsyncSession, campaign: Campaign, now: datetime) -> None:
    """Send nothing more: cancel queued jobs and devices still without one (set-based).

    A job the device has already been sent is left: its outcome is still read. A job a DM
    session sends at this very moment is either cancelled here first (the session then does
    not see it) or sent first (the UPDATE finds it no longer queued and leaves it).
    """
    await db.execute(
        update(Job)
        # A campaign's queued jobs are exactly those of its running devices (a retry's job is
        # made only once the last one is final): an index range, no join.
        .where(Job.campaign_id == campaign.id, Job.state == JobState.QUEUED.value)
        .values(
            state=JobState.CANCELLED.value,
            finished_at=now,
            updated=now,
            detail=f"cancelled: campaign {campaign.id} is {campaign.state}",
        )
        .execution_options(synchronize_session=False)
    )
    cancelled_jobs = select(Job.id).where(
        Job.campaign_id == campaign.id, Job.state == JobState.CANCELLED.value
    )
    await db.execute(
        update(CampaignDevice)
        .where(
            CampaignDevice.campaign_id == campaign.id,
            or_(
                CampaignDevice.state == _DS.PENDING.value,
                and_(CampaignDevice.state == _DS.RUNNING.value, CampaignDevice.job_id.in_(cancelled_jobs)),
            ),
        )
        .values(state=_DS.CANCELLED.value, detail=f"campaign {campaign.state}", updated=now)
        .execution_options(synchronize_session=False)
    )


def _correlator(dialect: str) -> ColumnElement[str]:
    """A fresh random correlator per row, made by the database (``omadm-`` + 16 hex digits)."""
    if dialect == "postgresql":
        random_hex: ColumnElement[str] = func.substr(
            func.md5(cast(func.random(), String) + cast(func.clock_timestamp(), String)), 1, 16
        )
    else:
        random_hex = func.lower(func.hex(func.randomblob(8)))
    return literal("omadm-") + random_hex


def _json_object(dialect: str, *pairs: Any) -> ColumnElement[Any]:
    return (func.json_build_object if dialect == "postgresql" else func.json_object)(*pairs)


async def _send(db: AsyncSession, campaign: Campaign, now: datetime) -> int:
    """Create the jobs of pending devices in released waves; returns how many.

    Set-based, whatever the wave's size: devices that can no longer take the job fail with
    the reason, then one ``INSERT ... SELECT`` makes the jobs, one UPDATE ties each device
    to its job, one raises the devices' ``has_open_jobs`` (an UPDATE that always writes: see
    :func:`omadm.server.registry.raise_open_jobs`) and one writes their history.
    """
    released = and_(
        CampaignDevice.campaign_id == campaign.id,
        CampaignDevice.state == _DS.PENDING.value,
        CampaignDevice.wave <= campaign.current_wave,
    )
    if not await db.scalar(select(CampaignDevice.id).where(released).limit(1)):
        return 0
    kind = JobKind(campaign.kind)
    params: dict[str, Any] = {}
    if kind in _PACKAGE_KINDS:
        artifact = await db.get(Artifact, campaign.artifact_id) if campaign.artifact_id is not None else None
        if artifact is None or artifact.authority_pk != campaign.authority_pk:
            campaign.state = CampaignState.STOPPED.value
            campaign.finished = campaign.updated = now
            campaign.detail = f"stopped: artifact {campaign.artifact_id} no longer exists"
            _audit_system(db, campaign, "stopped", now, reason=campaign.detail)
            await _halt(db, campaign, now)
            return 0
        params.update(artifact_id=artifact.id, pkg_id=artifact.package_id, name=artifact.filename)
    if kind in _NEEDS_COMPONENT:
        params["component_id"] = campaign.component_id
    try:
        params = check_job(kind, params)
    except RegistryError as exc:
        campaign.state = CampaignState.STOPPED.value
        campaign.finished = campaign.updated = now
        campaign.detail = f"stopped: no job could be made: {exc.message}"
        _audit_system(db, campaign, "stopped", now, reason=campaign.detail)
        await _halt(db, campaign, now)
        return 0

    def fail(condition: ColumnElement[bool], detail: str) -> Any:
        return (
            update(CampaignDevice)
            .where(released, condition)
            .values(state=_DS.FAILED.value, detail=detail, updated=now)
            .execution_options(synchronize_session=False)
        )

    accepted = exists().where(
        Device.id == CampaignDevice.device_pk, Device.state == DeviceState.ACCEPTED.value
    )
    await db.execute(fail(~accepted, "the device is no longer accepted"))
    if kind in _NEEDS_COMPONENT:
        has = exists().where(
            InventoryEntry.device_pk == CampaignDevice.device_pk,
            InventoryEntry.kind == InventoryKind.DEPLOYED.value,
            InventoryEntry.ident == campaign.component_id,
        )
        await db.execute(
            fail(
                ~has,
                f"no job could be made: no deployed component {campaign.component_id!r} in its inventory",
            )
        )
    dialect = _dialect(db)
    before = int(await db.scalar(select(func.max(Job.id))) or 0)
    deadline = now + timedelta(seconds=campaign.device_timeout) if campaign.device_timeout else None
    made = await db.execute(
        insert(Job).from_select(
            [
                "device_pk",
                "kind",
                "params",
                "state",
                "correlator",
                "exec_uri",
                "detail",
                "campaign_id",
                "session_token",
                "attempts",
                "created",
                "updated",
                "deadline",
            ],
            select(
                CampaignDevice.device_pk,
                literal(kind.value),
                literal(params, JSON),
                literal(JobState.QUEUED.value),
                _correlator(dialect),
                literal(""),
                literal(""),
                literal(campaign.id),
                literal(""),
                literal(0),
                literal(now, UTCDateTime()),
                literal(now, UTCDateTime()),
                literal(deadline, UTCDateTime()),
            )
            .where(released)
            .order_by(CampaignDevice.device_pk),
        )
    )
    new_jobs = and_(Job.campaign_id == campaign.id, Job.id > before)
    made_count = int(getattr(made, "rowcount", 0) or 0)
    await refresh_statistics(db, made_count, "jobs")
    await db.execute(  # UPDATE ... FROM jobs: a join on device_pk, whatever the statistics say
        update(CampaignDevice)
        .where(released, new_jobs, Job.device_pk == CampaignDevice.device_pk)
        .values(
            job_id=Job.id,
            attempts=CampaignDevice.attempts + 1,
            state=_DS.RUNNING.value,
            updated=now,
        )
        .execution_options(synchronize_session=False)
    )
    await db.execute(
        update(Device)
        .where(Device.id.in_(select(Job.device_pk).where(new_jobs)))
        .values(has_open_jobs=True)
        .execution_options(synchronize_session=False)
    )
    await db.execute(
        insert(DeviceEvent).from_select(
            ["device_pk", "at", "kind", "detail"],
            select(
                Job.device_pk,
                literal(now, UTCDateTime()),
                literal("job-created"),
                _json_object(
                    dialect,
                    literal("job"),
                    Job.id,
                    literal("kind"),
                    literal(kind.value),
                    literal("campaign"),
                    literal(campaign.id),
                ),
            ).where(new_jobs),
        )
    )
    return made_count


async def advance(db: AsyncSession, campaign: Campaign, now: datetime | None = None) -> None:
    """One step: read outcomes, then (running only) decide on the current wave and send.

    The caller holds the campaign's row (``FOR UPDATE``). On a campaign that is not running,
    this only records the outcomes of jobs still out (stragglers of a stopped, cancelled or
    finished campaign; a paused one's jobs).
    """
    now = now or utc_now()
    if campaign.state == CampaignState.DRAFT.value:
        return
    await _sync_outcomes(db, campaign, now)
    if campaign.state != CampaignState.RUNNING.value:
        return
    last_wave = await _last_wave(db, campaign)
    while True:
        wave = campaign.current_wave
        tally = await _tally(db, campaign, wave)
        decision = _decide(campaign, tally, wave >= last_wave)
        summary = f"wave {wave + 1}: {tally.succeeded}/{tally.size} succeeded, {tally.failed} failed"
        if decision is Decision.NEXT_WAVE:
            campaign.current_wave += 1
            campaign.updated = now
            _audit_system(db, campaign, "wave-released", now, wave=campaign.current_wave + 1, after=summary)
            continue
        if decision is Decision.FINISH:
            if not await _open_devices(db, campaign):  # else its stragglers and retries go on
                _finish(campaign, now, f"finished: {summary}{await left_out_note(db, campaign)}")
                _audit_system(db, campaign, "finished", now, reason=campaign.detail)
        elif decision is Decision.PAUSE:
            campaign.state = CampaignState.PAUSED.value
            campaign.updated = now
            campaign.detail = f"paused: {summary}, below the success threshold {campaign.success_threshold}"
            _audit_system(db, campaign, "paused", now, reason=campaign.detail)
        elif decision is Decision.STOP:
            campaign.state = CampaignState.STOPPED.value
            campaign.finished = campaign.updated = now
            campaign.detail = f"stopped: {summary}, above the error threshold {campaign.error_threshold}"
            _audit_system(db, campaign, "stopped", now, reason=campaign.detail)
            await _halt(db, campaign, now)
        break
    if campaign.state == CampaignState.RUNNING.value:
        if campaign.window and not Window.parse(campaign.window).contains(now):
            return
        await _send(db, campaign, now)


def due_campaigns() -> ColumnElement[bool]:
    """The query of campaigns the sweeper advances: running ones, and others with jobs still out."""
    still_out = (
        select(CampaignDevice.id)
        .where(CampaignDevice.campaign_id == Campaign.id, CampaignDevice.state == _DS.RUNNING.value)
        .exists()
    )
    return or_(Campaign.state == CampaignState.RUNNING.value, still_out)


# ------------------------------------------------------------------ counters


async def counters(db: AsyncSession, campaign: Campaign) -> list[WaveCounters]:
    """Devices per state, per wave (waves in order, every state present)."""
    rows = await db.execute(
        select(CampaignDevice.wave, CampaignDevice.state, func.count())
        .where(CampaignDevice.campaign_id == campaign.id)
        .group_by(CampaignDevice.wave, CampaignDevice.state)
    )
    waves: dict[int, WaveCounters] = {}
    for wave, state, count in rows:
        entry = waves.setdefault(wave, WaveCounters(wave))
        entry.states[state] = entry.states.get(state, 0) + count
        entry.size += count
    return [waves[w] for w in sorted(waves)]
