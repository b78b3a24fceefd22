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
* :func:`counters` counts devices per state per wave.

A campaign belongs to one management authority: it targets only that authority's devices and
uses only its packages (``authority_pk``; the default authority unless given).

Functions work inside the caller's transaction; errors are :class:`RegistryError` (404, 409,
422) like the registry's.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from packaging.version import InvalidVersion, Version
from sqlalchemy import func, or_, select
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.sql.elements import ColumnElement

from .registry import RegistryError, cancel_job, create_job
from .rollout import Decision, Tally, Window, decide, parse_wave, should_retry, split_waves
from .store.models import (
    DEFAULT_AUTHORITY_PK,
    Artifact,
    Campaign,
    CampaignDevice,
    CampaignDeviceState,
    CampaignState,
    Device,
    DeviceState,
    InventoryEntry,
    InventoryKind,
    Job,
    JobKind,
    JobState,
    utc_now,
)

__all__ = [
    "CAMPAIGN_KINDS",
    "TARGET_KEYS",
    "WaveCounters",
    "advance",
    "cancel_campaign",
    "counters",
    "create_campaign",
    "get_campaign",
    "pause_campaign",
    "resolve_targets",
    "resume_campaign",
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
#: What a target filter may say (all given conditions must hold).
TARGET_KEYS = ("devices", "tags", "devinfo", "has_component", "version_below")
#: Devices named in a 409 at most (then "and N more").
_NAMED = 10

_DS = CampaignDeviceState


@dataclass
class WaveCounters:
    """One wave's devices by state (``size`` = all of them)."""

    wave: int
    size: int = 0
    states: dict[str, int] = field(default_factory=lambda: {s.value: 0 for s in CampaignDeviceState})


# ------------------------------------------------------------------ creation


def _parse_version(text: str) -> Version | None:
    try:
        return Version(text)
    except InvalidVersion:
        return None


def _check_target(target: dict[str, Any]) -> None:
    unknown = sorted(set(target) - set(TARGET_KEYS))
    if unknown:
        raise RegistryError(422, f"unknown target filter keys {unknown}; use {', '.join(TARGET_KEYS)}")
    for key in ("tags", "devinfo"):
        if not isinstance(target.get(key, {}), dict):
            raise RegistryError(422, f"target {key} is a mapping of name to value")
    devices = target.get("devices", [])
    if not isinstance(devices, list) or not all(isinstance(d, str) for d in devices):
        raise RegistryError(422, "target devices is a list of DevIds")
    below = target.get("version_below")
    if below is not None:
        if not target.get("has_component"):
            raise RegistryError(422, "version_below needs has_component: the version of which component?")
        if _parse_version(str(below)) is None:
            raise RegistryError(422, f"version_below {below!r} is not a version (e.g. 2.0)")


async def resolve_targets(
    db: AsyncSession, target: dict[str, Any], *, authority_pk: int = DEFAULT_AUTHORITY_PK
) -> list[Device]:
    """The accepted devices of the authority that the filter selects, in registration order.

    ``devices``: only these DevIds; ``tags``, ``devinfo``: each name equals its value (values
    compared as text); ``has_component``: the device's last inventory has this component
    deployed; ``version_below``: and its version is lower (PEP 440 comparison; a device whose
    version does not parse is not known to be older and is left out).
    """
    _check_target(target)
    query = (
        select(Device)
        .where(Device.authority_pk == authority_pk, Device.state == DeviceState.ACCEPTED.value)
        .order_by(Device.id)
    )
    if target.get("devices"):
        query = query.where(Device.device_id.in_(target["devices"]))
    component = target.get("has_component")
    versions: dict[int, list[str]] = {}
    if component:
        rows = await db.execute(
            select(InventoryEntry.device_pk, InventoryEntry.version).where(
                InventoryEntry.kind == InventoryKind.DEPLOYED.value, InventoryEntry.ident == str(component)
            )
        )
        for device_pk, version in rows:
            versions.setdefault(device_pk, []).append(version)
        query = query.where(Device.id.in_(list(versions)))
    below = _parse_version(str(target["version_below"])) if target.get("version_below") else None
    tags = {str(k): str(v) for k, v in (target.get("tags") or {}).items()}
    devinfo = {str(k): str(v) for k, v in (target.get("devinfo") or {}).items()}
    out = []
    for device in (await db.scalars(query)).all():
        if any(str((device.tags or {}).get(k)) != v or k not in (device.tags or {}) for k, v in tags.items()):
            continue
        info = device.devinfo or {}
        if any(k not in info or str(info[k]) != v for k, v in devinfo.items()):
            continue
        if below is not None:
            parsed = [_parse_version(v) for v in versions.get(device.id, [])]
            if not any(p is not None and p < below for p in parsed):
                continue
        out.append(device)
    return out


async def _busy(
    db: AsyncSession, component_id: str, device_pks: Sequence[int], *, but: int | None = None
) -> dict[int, int]:
    """device pk -> the active campaign (same component) it is in, for the given devices."""
    if not device_pks:
        return {}
    query = (
        select(CampaignDevice.device_pk, Campaign.id)
        .join(Campaign, Campaign.id == CampaignDevice.campaign_id)
        .where(
            Campaign.component_id == component_id,
            Campaign.state.in_([s.value for s in CampaignState if s.active]),
            CampaignDevice.device_pk.in_(list(device_pks)),
        )
    )
    if but is not None:
        query = query.where(Campaign.id != but)
    return {device_pk: campaign_id for device_pk, campaign_id in await db.execute(query)}


def _busy_message(busy: dict[int, int], names: dict[int, str]) -> str:
    listed = [f"{names.get(pk, pk)} (campaign {cid})" for pk, cid in sorted(busy.items())[:_NAMED]]
    more = f" and {len(busy) - _NAMED} more" if len(busy) > _NAMED else ""
    return (
        f"{len(busy)} devices are already in a running or paused campaign for the same component: "
        f"{', '.join(listed)}{more}"
    )


async def create_campaign(
    db: AsyncSession,
    name: str,
    kind: JobKind | str,
    *,
    target: dict[str, Any],
    artifact_id: int | None = None,
    component_id: str | None = None,
    waves: Sequence[int | str] = (),
    success_threshold: float = 1.0,
    error_threshold: float = 0.0,
    device_timeout: float | None = None,
    max_retries: int = 0,
    window: str | None = None,
    skip_busy: bool = False,
    authority_pk: int = DEFAULT_AUTHORITY_PK,
) -> Campaign:
    """A ``draft`` campaign over the devices ``target`` selects now (see :func:`resolve_targets`)
    among the authority's; its package must be the authority's too.

    The component it concerns is ``component_id`` for remove, activate and deactivate, and
    the artifact manifest's first component for install and update (``component_id`` may
    name it). Kinds that act on a deployed component only target devices that have it.
    """
    name = name.strip()
    if not name or len(name) > 255:
        raise RegistryError(422, "a campaign needs a name of 1-255 characters")
    try:
        job_kind = JobKind(kind)
    except ValueError:
        job_kind = None
    if job_kind not in CAMPAIGN_KINDS:
        raise RegistryError(422, f"a campaign's kind is one of {', '.join(k.value for k in CAMPAIGN_KINDS)}")
    assert job_kind is not None
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
    try:
        for spec in waves:
            parse_wave(spec)
    except ValueError as exc:
        raise RegistryError(422, str(exc)) from None
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
    if job_kind in _NEEDS_COMPONENT:
        if target.get("has_component") not in (None, component):
            raise RegistryError(422, f"a {job_kind.value} campaign targets devices that have {component!r}")
        target["has_component"] = component
    devices = await resolve_targets(db, target, authority_pk=authority_pk)
    busy = await _busy(db, component, [d.id for d in devices])
    if busy and not skip_busy:
        raise RegistryError(409, _busy_message(busy, {d.id: d.device_id for d in devices}))
    devices = [d for d in devices if d.id not in busy]
    if not devices:
        raise RegistryError(422, "the target filter selects no device" + (" that is free" if busy else ""))
    now = utc_now()
    campaign = Campaign(
        authority_pk=authority_pk,
        name=name,
        kind=job_kind.value,
        artifact_id=artifact_id,
        component_id=component,
        target=target,
        waves=list(waves),
        success_threshold=success_threshold,
        error_threshold=error_threshold,
        device_timeout=device_timeout,
        max_retries=max_retries,
        window=window or None,
        state=CampaignState.DRAFT.value,
        current_wave=0,
        skipped=len(busy),
        detail="",
        created=now,
        updated=now,
    )
    db.add(campaign)
    await db.flush()
    for index, wave in enumerate(split_waves(devices, list(waves))):
        for device in wave:
            db.add(
                CampaignDevice(
                    campaign_id=campaign.id,
                    device_pk=device.id,
                    wave=index,
                    attempts=0,
                    state=_DS.PENDING.value,
                    detail="",
                    updated=now,
                )
            )
    await db.flush()
    return campaign


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
    # Hold the campaign's devices (in one order: no deadlock) so that two overlapping drafts
    # started at the same moment cannot both pass the check below; the second one waits, then
    # sees the first running.
    members = select(CampaignDevice.device_pk).where(CampaignDevice.campaign_id == campaign.id)
    await db.execute(select(Device.id).where(Device.id.in_(members)).order_by(Device.id).with_for_update())
    pks = list(
        await db.scalars(select(CampaignDevice.device_pk).where(CampaignDevice.campaign_id == campaign.id))
    )
    busy = await _busy(db, campaign.component_id, pks, but=campaign.id)
    if busy:
        query = select(Device.id, Device.device_id).where(Device.id.in_(list(busy)))
        names = {pk: device_id for pk, device_id in await db.execute(query)}
        raise RegistryError(409, _busy_message(busy, names))
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
    campaign.state = CampaignState.CANCELLED.value
    campaign.finished = campaign.updated = now
    campaign.detail = "cancelled by an operator"
    await _halt(db, campaign, now)
    return campaign


# ------------------------------------------------------------------ the driver


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


async def _campaign_devices(db: AsyncSession, campaign: Campaign, *conditions: Any) -> list[CampaignDevice]:
    query = (
        select(CampaignDevice)
        .where(CampaignDevice.campaign_id == campaign.id, *conditions)
        .order_by(CampaignDevice.id)
    )
    return list((await db.scalars(query)).all())


async def _sync_outcomes(db: AsyncSession, campaign: Campaign, now: datetime) -> None:
    """Read the final jobs of running devices; a failure worth it goes back to pending (a retry)
    while the campaign is running or paused."""
    running = await _campaign_devices(db, campaign, CampaignDevice.state == _DS.RUNNING.value)
    job_ids = [cd.job_id for cd in running if cd.job_id is not None]
    jobs = (
        {j.id: j for j in (await db.scalars(select(Job).where(Job.id.in_(job_ids)))).all()} if job_ids else {}
    )
    may_retry = CampaignState(campaign.state).active
    for cd in running:
        job = jobs.get(cd.job_id) if cd.job_id is not None else None
        if job is None:
            cd.state, cd.detail, cd.updated = _DS.FAILED.value, "its job was deleted", now
            continue
        state = JobState(job.state)
        if not state.final:
            continue
        cd.result_code = job.result_code
        cd.detail = job.detail
        cd.updated = now
        if state is JobState.SUCCEEDED:
            cd.state = _DS.SUCCEEDED.value
        elif state is JobState.CANCELLED:
            cd.state = _DS.CANCELLED.value
        elif may_retry and should_retry(job.result_code, cd.attempts, campaign.max_retries):
            cd.state = _DS.PENDING.value  # a new job when its wave may send (running, in the window)
            cd.detail = f"attempt {cd.attempts} {state.value}: retrying ({job.detail})"
        else:
            cd.state = _DS.FAILED.value


async def _halt(db: AsyncSession, campaign: Campaign, now: datetime) -> None:
    """Send nothing more: cancel queued jobs and devices still without one."""
    for cd in await _campaign_devices(
        db, campaign, CampaignDevice.state.in_([_DS.PENDING.value, _DS.RUNNING.value])
    ):
        if cd.state == _DS.RUNNING.value:
            job = await db.get(Job, cd.job_id, with_for_update=True) if cd.job_id is not None else None
            if job is None or job.state != JobState.QUEUED.value:
                continue  # the device has it: its outcome is still read
            await cancel_job(db, job)
            job.detail = f"cancelled: campaign {campaign.id} is {campaign.state}"
        cd.state = _DS.CANCELLED.value
        cd.detail = f"campaign {campaign.state}"
        cd.updated = now


async def _send(db: AsyncSession, campaign: Campaign, now: datetime) -> int:
    """Create the jobs of pending devices in released waves; returns how many."""
    pending = await _campaign_devices(
        db, campaign, CampaignDevice.state == _DS.PENDING.value, CampaignDevice.wave <= campaign.current_wave
    )
    if not pending:
        return 0
    kind = JobKind(campaign.kind)
    params: dict[str, Any] = {}
    if kind in _PACKAGE_KINDS:
        artifact = await db.get(Artifact, campaign.artifact_id) if campaign.artifact_id is not None else None
        if artifact is None:
            campaign.state = CampaignState.STOPPED.value
            campaign.finished = campaign.updated = now
            campaign.detail = f"stopped: artifact {campaign.artifact_id} no longer exists"
            await _halt(db, campaign, now)
            return 0
        params.update(artifact_id=artifact.id, pkg_id=artifact.package_id, name=artifact.filename)
    if kind in _NEEDS_COMPONENT:
        params["component_id"] = campaign.component_id
    devices = {
        d.id: d
        for d in (
            await db.scalars(select(Device).where(Device.id.in_([cd.device_pk for cd in pending])))
        ).all()
    }
    made = 0
    for cd in pending:
        device = devices.get(cd.device_pk)
        cd.updated = now
        if device is None or device.state != DeviceState.ACCEPTED.value:
            cd.state, cd.detail = _DS.FAILED.value, "the device is no longer accepted"
            continue
        try:
            job = await create_job(
                db, device, kind, params, timeout=campaign.device_timeout, campaign_id=campaign.id
            )
        except RegistryError as exc:
            cd.state, cd.detail = _DS.FAILED.value, f"no job could be made: {exc.message}"
            continue
        cd.job_id = job.id
        cd.attempts += 1
        cd.state = _DS.RUNNING.value
        made += 1
    return made


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
            continue
        if decision is Decision.FINISH:
            if not await _open_devices(db, campaign):  # else its stragglers and retries go on
                _finish(campaign, now, f"finished: {summary}")
        elif decision is Decision.PAUSE:
            campaign.state = CampaignState.PAUSED.value
            campaign.updated = now
            campaign.detail = f"paused: {summary}, below the success threshold {campaign.success_threshold}"
        elif decision is Decision.STOP:
            campaign.state = CampaignState.STOPPED.value
            campaign.finished = campaign.updated = now
            campaign.detail = f"stopped: {summary}, above the error threshold {campaign.error_threshold}"
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
