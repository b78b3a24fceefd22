"""``omadm server``: run the DM server, migrate its database, and administer it from the shell.

Glue only. ``omadm server`` with no sub-command serves (uvicorn; ``--workers N`` forks N
processes sharing the database); ``migrate`` brings the schema to this version; ``device``,
``artifact``, ``job``, ``token`` and ``authority`` change the registry directly in the
database, for set-up scripts and operators on the server's own machine (the REST API and
``omadm ctl`` do the same over HTTP). ``--authority NAME`` picks the management authority a
command works in (``default`` when not given). Every change is written to the audit log with
the actor ``shell:<os user>``. Exit codes: 0 done, 1 a problem with the request or the configuration (one
``error:`` line says which), 2 usage.
"""

from __future__ import annotations

import asyncio
import dataclasses
import getpass
import json
import logging
import os
import shlex
import shutil
import tempfile
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Annotated, Any, NoReturn, TypeVar

import typer
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from .config import ConfigError, ServerConfig, load_server_config
from .http_layer import http_layer
from .registry import (
    RegistryError,
    add_authority,
    add_device,
    cancel_job,
    create_job,
    delete_device,
    find_device,
    get_authority,
    list_authorities,
    record_event,
    update_device,
)
from .store.engine import SchemaError, database_url, make_engine, mask_url, session_factory
from .store.models import (
    DEFAULT_AUTHORITY,
    DEFAULT_AUTHORITY_PK,
    Authority,
    Device,
    DeviceEvent,
    DeviceState,
    InventoryEntry,
    Job,
    JobKind,
)

__all__ = ["server_app"]

T = TypeVar("T")
EXIT_PROBLEM = 1

server_app = typer.Typer(
    help="The DM server: serve devices, migrate the database, administer the registry.",
    invoke_without_command=True,
    rich_markup_mode=None,
    context_settings={"help_option_names": ["-h", "--help"]},
)
device_app = typer.Typer(
    help="Devices: register, list, show, accept or reject, update, delete.",
    no_args_is_help=True,
    rich_markup_mode=None,
)
artifact_app = typer.Typer(help="Packages devices download.", no_args_is_help=True, rich_markup_mode=None)
job_app = typer.Typer(help="SCOMO jobs for one device.", no_args_is_help=True, rich_markup_mode=None)
server_app.add_typer(device_app, name="device")
server_app.add_typer(artifact_app, name="artifact")
server_app.add_typer(job_app, name="job")

ConfigOption = Annotated[
    Path | None,
    typer.Option("--config", "-c", help="omadm-server.toml ([server] table).", envvar="OMADM_SERVER_CONFIG"),
]
DbOption = Annotated[str | None, typer.Option("--db", help="Database URL (sqlite:///F or postgresql://...).")]
AuthorityOption = Annotated[
    str, typer.Option("--authority", help="The management authority (see 'omadm server authority list').")
]


def shell_actor() -> str:
    """The audit log's actor for a change made from this shell: ``shell:<os user>``."""
    try:
        user = getpass.getuser()
    except (OSError, KeyError):  # no user name in the environment nor the password database
        user = f"uid{os.getuid()}" if hasattr(os, "getuid") else "unknown"
    return f"shell:{user}"


def audit(
    db: AsyncSession, actor: str, action: str, target: str, *, authority_pk: int, **detail: Any
) -> None:
    """Record a shell change in the audit log (the API's :func:`omadm.server.api.auth.audit`)."""
    from .api.auth import audit as record  # noqa: PLC0415 - the web stack only when writing

    record(db, actor, action, target, authority_pk=authority_pk, **detail)


async def _authority_pk(db: AsyncSession, name: str) -> int:
    if name == DEFAULT_AUTHORITY:
        return DEFAULT_AUTHORITY_PK
    return (await get_authority(db, name)).id


def _fail(message: str) -> NoReturn:
    typer.echo(f"error: {message}", err=True)
    raise typer.Exit(EXIT_PROBLEM)


def _config(config: Path | None, **overrides: Any) -> ServerConfig:
    try:
        return load_server_config(config, **overrides)
    except ConfigError as exc:
        _fail(str(exc))


def _logging(level: int = logging.INFO, log_format: str = "text") -> None:
    from .logs import configure  # noqa: PLC0415

    configure(log_format, level)  # text or JSON lines on stderr (logs.py)


@server_app.callback()
def serve(
    ctx: typer.Context,
    config: ConfigOption = None,
    host: Annotated[str | None, typer.Option(help="Address to listen on [127.0.0.1].")] = None,
    port: Annotated[int | None, typer.Option(help="Port [8700].")] = None,
    db: DbOption = None,
    workers: Annotated[
        int | None, typer.Option(help="Worker processes [1]; use PostgreSQL for more.")
    ] = None,
    data_dir: Annotated[Path | None, typer.Option("--data-dir", help="SQLite, artifacts, secret.")] = None,
    unknown_devices: Annotated[
        str | None, typer.Option("--unknown-devices", help="reject, pending or accept [reject].")
    ] = None,
    tls_cert: Annotated[
        Path | None,
        typer.Option("--tls-cert", help="Serve HTTPS with this certificate (PEM, the chain after it)."),
    ] = None,
    tls_key: Annotated[
        Path | None, typer.Option("--tls-key", help="The certificate's private key (PEM) [in --tls-cert].")
    ] = None,
    tls_client_ca: Annotated[
        Path | None,
        typer.Option(
            "--tls-client-ca",
            help="Ask clients for a certificate and verify it against this CA bundle (PEM); see "
            "client_cert_auth in the configuration for what a device's certificate means.",
        ),
    ] = None,
    migrate: Annotated[
        bool,
        typer.Option(
            "--migrate",
            help="Upgrade a database of an older omadm before serving (an empty one always gets its schema).",
        ),
    ] = False,
    log_format: Annotated[
        str | None,
        typer.Option(
            "--log-format", help="text, or json: one object per line with device/session/job [text]."
        ),
    ] = None,
) -> None:
    """Serve DM (POST /dm), downloads (/artifacts), the API, the console, /healthz, /readyz, /metrics."""
    ctx.obj = {"config": config, "db": db, "data_dir": data_dir}
    if ctx.invoked_subcommand is not None:
        return
    import uvicorn  # noqa: PLC0415 - only serving needs it

    settings = _config(
        config,
        host=host,
        port=port,
        db=db,
        workers=workers,
        data_dir=data_dir,
        unknown_devices=unknown_devices,
        tls_cert=str(tls_cert) if tls_cert else None,
        tls_key=str(tls_key) if tls_key else None,
        tls_client_ca=str(tls_client_ca) if tls_client_ca else None,
        log_format=log_format,
    )
    _logging(log_format=settings.log_format)
    log = logging.getLogger("omadm.server")
    settings.secret_bytes()  # create it before workers race for it
    # Workers are separate processes: they rebuild the configuration from the environment.
    os.environ["OMADM_SERVER_SETTINGS"] = json.dumps(_as_env(settings))
    try:
        url = database_url(settings.db or None, settings.data_dir)
    except ValueError as exc:
        _fail(str(exc))
    _prepare_database(url, upgrade=migrate)
    if settings.workers > 1 and url.startswith("sqlite"):
        log.warning(
            "%d workers on SQLite only queue for its one writer; use PostgreSQL to scale out",
            settings.workers,
        )
    log.info(
        "serving on %s:%s with %s (%d worker%s)",
        settings.host,
        settings.port,
        mask_url(url),
        settings.workers,
        "s" if settings.workers > 1 else "",
    )
    log.info("HTTP layer: %s", http_layer().describe())
    _check_tls(settings, log)
    for line in _first_steps(settings, config=config, db=db, data_dir=data_dir):
        log.info("%s", line)
    metrics_dir = _metrics_directory(settings)
    try:
        _run_uvicorn(uvicorn, settings)
    finally:
        if metrics_dir is not None:
            shutil.rmtree(metrics_dir, ignore_errors=True)


def _metrics_directory(settings: ServerConfig) -> Path | None:
    """Several workers share their metrics through files (metrics.py): a fresh directory.

    Made here, before uvicorn forks the workers, which inherit the variable; removed when the
    server stops (its counters start from zero with the next start, as Prometheus expects).
    An operator's own ``PROMETHEUS_MULTIPROC_DIR`` is used as it is (and kept).
    """
    variable = "PROMETHEUS_MULTIPROC_DIR"  # metrics.MULTIPROC_ENV (prometheus-client's name)
    if settings.workers < 2 or os.environ.get(variable):
        return None
    directory = Path(tempfile.mkdtemp(prefix="omadm-metrics-"))
    os.environ[variable] = str(directory)
    return directory


def _run_uvicorn(uvicorn: Any, settings: ServerConfig) -> None:
    uvicorn.run(
        "omadm.server.cli:app_from_environment",
        factory=True,
        host=settings.host,
        port=settings.port,
        workers=settings.workers,
        access_log=False,
        log_level="warning",
        timeout_graceful_shutdown=10,
        # A fleet connects at once after an outage: queue its connections in the kernel
        # (the DM endpoint then answers the excess 503 + Retry-After in milliseconds)
        # rather than refuse them at uvicorn's default of 2048.
        backlog=8192,
        # Devices told to come back (503 + Retry-After, at most max_retry_after = 60 s) keep
        # their connection meanwhile: no new TCP connection per retry, and no race with a
        # server closing an idle connection just as the device sends on it (uvicorn: 5 s).
        timeout_keep_alive=75,
        **_tls_options(settings),  # HTTPS: certificate, key, client CA (tls.py)
        # JSON lines: uvicorn's own loggers go through ours (logs.py) instead of its text format.
        **({"log_config": None} if settings.log_format == "json" else {}),
    )


def _check_tls(settings: ServerConfig, log: logging.Logger) -> None:
    """Load the TLS files once here: a bad one is one ``error:`` line, not a traceback per worker."""
    from .tls import TLSSetupError, certificate_warnings, check_tls_files  # noqa: PLC0415

    try:
        if check_tls_files(settings) is None:
            return
    except TLSSetupError as exc:
        _fail(str(exc))
    for warning in certificate_warnings(settings.tls_cert):
        log.warning("%s", warning)
    if settings.tls_client_ca:
        log.info(
            "client certificates: %s, verified against %s; client_cert_auth = %s (by %s)",
            "required" if settings.tls_require_client_cert else "asked for",
            settings.tls_client_ca,
            settings.client_cert_auth,
            settings.client_cert_identity,
        )


def _tls_options(settings: ServerConfig) -> dict[str, Any]:
    from .tls import uvicorn_options  # noqa: PLC0415

    return uvicorn_options(settings)


def _prepare_database(url: str, *, upgrade: bool) -> None:
    """Give an empty database its schema, upgrade an older one when asked, or stop in one line.

    Done here, once, before uvicorn starts: a refusal inside the workers' start-up would be
    a traceback per worker, where the operator needs one sentence saying what to do.
    """
    from .store.migrate import MigrationError, prepare_database  # noqa: PLC0415

    try:
        done = prepare_database(url, upgrade=upgrade)
    except (SchemaError, MigrationError) as exc:
        _fail(str(exc))
    if done:
        logging.getLogger("omadm.server").info("%s", done)


def _first_steps(
    settings: ServerConfig, *, config: Path | None, db: str | None, data_dir: Path | None
) -> list[str]:
    """Where everything is, and how to get in: what a new operator needs from the start-up log."""
    from .api import API_PREFIX  # noqa: PLC0415
    from .console.views import PREFIX as CONSOLE_PREFIX  # noqa: PLC0415
    from .docs_ui import DOCS_URL  # noqa: PLC0415

    base = settings.base_url
    # The token command must open the same database as this server: repeat the options given.
    same = "".join(
        f" {option} {shlex.quote(str(value))}"
        for option, value in (
            ("--config", config),
            ("--db", mask_url(db) if db else None),
            ("--data-dir", data_dir),
        )
        if value is not None
    )
    return [
        f"DM endpoint: {base}/dm (the AppAddr of the devices' DMAcc account)",
        f"web console: {base}{CONSOLE_PREFIX}",
        f"REST API: {base}{API_PREFIX}, its docs: {base}{DOCS_URL}",
        f"first API token (console login too): omadm server{same} token add NAME --role admin",
    ]


def _as_env(settings: ServerConfig) -> dict[str, Any]:
    return {
        "host": settings.host,
        "port": settings.port,
        "db": settings.db,
        "data_dir": str(settings.data_dir),
        "public_url": settings.public_url,
        "server_id": settings.server_id,
        "secret": settings.secret,
        "unknown_devices": settings.unknown_devices,
        "enrol": {"username": settings.enrol.username, "password": settings.enrol.password},
        "auth": settings.auth,
        "max_msg_size": settings.max_msg_size,
        "max_obj_size": settings.max_obj_size,
        "max_body": settings.max_body,
        "session_timeout": settings.session_timeout,
        "job_timeout": settings.job_timeout,
        "report_grace": settings.report_grace,
        "notify_interval": settings.notify_interval,
        "sweep_interval": settings.sweep_interval,
        "url_lifetime": settings.url_lifetime,
        "workers": settings.workers,
        "artifacts_dir": settings.artifacts_dir,
        "artifacts": dataclasses.asdict(settings.artifacts),  # [artifacts]: where package bytes live
        "tls_cert": settings.tls_cert,
        "tls_key": settings.tls_key,
        "tls_client_ca": settings.tls_client_ca,
        "tls_require_client_cert": settings.tls_require_client_cert,
        "client_cert_auth": settings.client_cert_auth,
        "client_cert_identity": settings.client_cert_identity,
        "log_format": settings.log_format,
        "metrics": settings.metrics,
        "metrics_token": settings.metrics_token,
        # These five never reached the workers before (a [server] file's value was dropped).
        "group_commit": settings.group_commit,
        "dm_max_in_flight": settings.dm_max_in_flight,
        "max_retry_after": settings.max_retry_after,
        "max_attempts": settings.max_attempts,
        "allow_local_urls": settings.allow_local_urls,
    }


def app_from_environment() -> Any:
    """The uvicorn factory each worker calls (settings come from ``OMADM_SERVER_SETTINGS``)."""
    from .app import create_app  # noqa: PLC0415
    from .config import ArtifactsConfig, EnrolConfig  # noqa: PLC0415

    values = json.loads(os.environ["OMADM_SERVER_SETTINGS"])
    _logging(log_format=values.get("log_format", "text"))
    values["data_dir"] = Path(values["data_dir"])
    values["enrol"] = EnrolConfig(**values["enrol"])
    if "artifacts" in values:
        values["artifacts"] = ArtifactsConfig(**values["artifacts"])
    return create_app(ServerConfig(**values).validate())


def _settings(ctx: typer.Context) -> ServerConfig:
    obj = ctx.obj or {}
    return _config(obj.get("config"), db=obj.get("db"), data_dir=obj.get("data_dir"))


def _with_db(ctx: typer.Context, work: Callable[[AsyncSession], Awaitable[T]], *, commits: bool = False) -> T:
    """Run ``work`` in one transaction (``commits``: ``work`` commits by itself)."""
    settings = _settings(ctx)

    async def run() -> T:
        engine = make_engine(database_url(settings.db or None, settings.data_dir))
        try:
            async with session_factory(engine)() as db:
                if commits:
                    return await work(db)
                async with db.begin():
                    return await work(db)
        finally:
            await engine.dispose()

    try:
        return asyncio.run(run())
    except RegistryError as exc:
        _fail(exc.message)


@server_app.command("migrate")
def migrate_command(ctx: typer.Context) -> None:
    """Create or upgrade the database schema to this version of omadm (safe to repeat)."""
    from .store.migrate import current_revision, migrate  # noqa: PLC0415

    settings = _settings(ctx)
    url = database_url(settings.db or None, settings.data_dir)
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    try:
        migrate(url)
        typer.echo(f"{mask_url(url)} is at revision {current_revision(url)}")
    except Exception as exc:  # the error names the database and says why (unreachable, permissions...)
        _fail(str(exc))


@server_app.command("backup")
def backup_command(
    ctx: typer.Context,
    dest: Annotated[
        Path, typer.Argument(help="The copy to write: a file, or a directory for a time-stamped name.")
    ],
    overwrite: Annotated[bool, typer.Option("--overwrite", help="Replace DEST if it exists.")] = False,
) -> None:
    """Copy the SQLite database while the server runs (SQLite's online backup); PostgreSQL: pg_dump."""
    from .backup import BackupError, backup_sqlite  # noqa: PLC0415

    settings = _settings(ctx)
    try:
        done = backup_sqlite(database_url(settings.db or None, settings.data_dir), dest, overwrite=overwrite)
    except (BackupError, ValueError) as exc:
        _fail(str(exc))
    typer.echo(
        f"backed up {done.source} to {done.dest} ({done.size} bytes, revision {done.revision or 'none'}); "
        f"package files ({settings.artifacts_path}) and the server secret are files: copy them too"
    )


@device_app.command("add")
def device_add(
    ctx: typer.Context,
    device_id: Annotated[str, typer.Argument(help="The DevId, e.g. IMEI:490154203237518.")],
    username: Annotated[str, typer.Option(help="What the device presents (CLCRED name).")],
    password: Annotated[str, typer.Option(help="Its password.")],
    auth: Annotated[str, typer.Option(help="md5, hmac or basic.")] = "md5",
    server_password: Annotated[str, typer.Option(help="SRVCRED: proves this server to the device.")] = "",
    notify: Annotated[str, typer.Option(help="Package #0 address, udp://h:p or http://h:p/.")] = "",
    authority: AuthorityOption = DEFAULT_AUTHORITY,
) -> None:
    """Register a device with the credentials it will present."""

    async def work(db: AsyncSession) -> Device:
        authority_pk = await _authority_pk(db, authority)
        device = await add_device(
            db,
            device_id,
            username=username,
            password=password,
            auth=auth,
            server_password=server_password,
            notify_address=notify,
            authority_pk=authority_pk,
        )
        audit(
            db,
            shell_actor(),
            "device.add",
            device.device_id,
            authority_pk=authority_pk,
            auth=auth,
            username=username,
            notify_address=notify,
        )
        return device

    device = _with_db(ctx, work)
    typer.echo(f"device {device.device_id} registered")


@device_app.command("list")
def device_list(ctx: typer.Context, authority: AuthorityOption = DEFAULT_AUTHORITY) -> None:
    """The authority's devices, their state and last contact."""

    async def work(db: AsyncSession) -> list[Device]:
        authority_pk = await _authority_pk(db, authority)
        query = select(Device).where(Device.authority_pk == authority_pk).order_by(Device.device_id)
        return list((await db.execute(query)).scalars())

    for device in _with_db(ctx, work):
        seen = device.last_contact.isoformat(timespec="seconds") if device.last_contact else "never"
        typer.echo(f"{device.device_id}  {device.state}  last contact {seen}")


@artifact_app.command("add")
def artifact_add(
    ctx: typer.Context,
    path: Annotated[Path, typer.Argument(help="An omadm package (.omp).", exists=True, dir_okay=False)],
    authority: AuthorityOption = DEFAULT_AUTHORITY,
    allow_unsigned: Annotated[
        bool,
        typer.Option(
            "--allow-unsigned",
            help="Accept a package that is unsigned or signed by a key not in the trust store (audited).",
        ),
    ] = False,
) -> None:
    """Upload a package signed by a trusted publisher (see 'publisher add'); prints its artifact id."""
    from .artifacts.backends import open_storage  # noqa: PLC0415
    from .artifacts.publishers import trust_store  # noqa: PLC0415
    from .artifacts.service import ArtifactError, add_artifact, added_facts, signature_of  # noqa: PLC0415
    from .store.models import utc_now  # noqa: PLC0415

    settings = _settings(ctx)

    async def work(db: AsyncSession) -> Any:
        authority_pk = await _authority_pk(db, authority)
        publishers = await trust_store(db, authority_pk=authority_pk)
        await db.commit()  # no transaction held while the package is verified
        started = utc_now()
        try:
            artifact = await add_artifact(
                db,
                open_storage(settings),  # [artifacts]: the directory or the S3 bucket
                path.name,
                path,
                authority_pk=authority_pk,
                publishers=publishers,
                allow_unsigned=allow_unsigned,
            )
        except ArtifactError as exc:
            raise RegistryError(exc.status, str(exc)) from None
        if artifact.created >= started:  # new (add_artifact committed it): worth recording
            audit(
                db,
                shell_actor(),
                "package.add",
                f"package {artifact.id}",
                authority_pk=authority_pk,
                **added_facts(artifact),
                **({"allow_unsigned": True} if allow_unsigned else {}),
            )
            await db.commit()
        return artifact

    artifact = _with_db(ctx, work, commits=True)
    signer = signature_of(artifact.manifest)
    signed = (
        f"signed by {signer['publisher']} (key {signer['key_id']})"
        if signer["signature"] == "verified"
        else signer["signature"]
    )
    typer.echo(
        f"artifact {artifact.id}: {artifact.package_id} {artifact.version} ({artifact.size} bytes, {signed})"
    )


@job_app.command("add")
def job_add(
    ctx: typer.Context,
    device_id: Annotated[str, typer.Argument(help="The device's DevId.")],
    kind: Annotated[str, typer.Argument(help=", ".join(k.value for k in JobKind))],
    artifact: Annotated[int | None, typer.Option(help="Artifact id (package jobs).")] = None,
    url: Annotated[str | None, typer.Option(help="External package URL (instead of an artifact).")] = None,
    pkg_id: Annotated[
        str | None, typer.Option("--pkg-id", help="The package's id (its manifest's), needed with --url.")
    ] = None,
    component: Annotated[
        str | None, typer.Option(help="Component ID (remove, activate, deactivate).")
    ] = None,
    node: Annotated[
        str | None, typer.Option(help="Delivered/<X> name (install-delivered, remove-delivered).")
    ] = None,
    descriptor: Annotated[
        bool, typer.Option("--descriptor", help="Deliver through a DLOTA descriptor.")
    ] = False,
    authority: AuthorityOption = DEFAULT_AUTHORITY,
) -> None:
    """Queue one SCOMO operation; it is sent in the device's next session."""
    allow_local = _settings(ctx).allow_local_urls
    try:
        job_kind = JobKind(kind)
    except ValueError:
        _fail(f"unknown job kind {kind!r}; one of: {', '.join(k.value for k in JobKind)}")

    async def work(db: AsyncSession) -> Job:
        authority_pk = await _authority_pk(db, authority)
        device = await find_device(db, device_id, authority_pk=authority_pk, for_update=True)
        if device is None:
            raise RegistryError(404, f"no device {device_id}")
        params: dict[str, Any] = {}
        if artifact is not None:
            from .artifacts.service import ArtifactError, get_artifact  # noqa: PLC0415

            try:
                found = await get_artifact(db, artifact, authority_pk=authority_pk)
            except ArtifactError as exc:
                raise RegistryError(exc.status, exc.reason) from None
            params.update(artifact_id=found.id, pkg_id=found.package_id, name=found.filename)
        for key, value in (("url", url), ("pkg_id", pkg_id), ("component_id", component), ("node", node)):
            if value:
                params[key] = value
        if descriptor:
            params["descriptor"] = True
        job = await create_job(db, device, job_kind, params, allow_local_urls=allow_local)
        audit(
            db,
            shell_actor(),
            "job.add",
            f"job {job.id}",
            authority_pk=authority_pk,
            device_id=device.device_id,
            kind=job.kind,
            params=job.params,
        )
        return job

    job = _with_db(ctx, work)
    typer.echo(f"job {job.id} queued ({job.kind}, correlator {job.correlator})")


@job_app.command("list")
def job_list(
    ctx: typer.Context,
    device_id: Annotated[str | None, typer.Argument(help="Only this device's.")] = None,
    authority: AuthorityOption = DEFAULT_AUTHORITY,
) -> None:
    """The authority's jobs with their state and SCOMO result."""

    async def work(db: AsyncSession) -> list[tuple[Job, str]]:
        authority_pk = await _authority_pk(db, authority)
        query = (
            select(Job, Device.device_id)
            .join(Device, Device.id == Job.device_pk)
            .where(Device.authority_pk == authority_pk)
            .order_by(Job.id)
        )
        if device_id:
            query = query.where(Device.device_id == device_id)
        return [(job, dev) for job, dev in (await db.execute(query)).all()]

    for job, dev in _with_db(ctx, work):
        result = job.result_code if job.result_code is not None else "-"
        detail = " | ".join(line.strip() for line in job.detail.splitlines() if line.strip())  # one line
        typer.echo(f"{job.id}  {dev}  {job.kind}  {job.state}  {result}  {detail}")


@job_app.command("cancel")
def job_cancel(ctx: typer.Context, job_id: Annotated[int, typer.Argument(help="The job's id.")]) -> None:
    """Cancel an unfinished job: the server sends it no more (a later report is still recorded)."""

    async def work(db: AsyncSession) -> Job:
        job = await db.get(Job, job_id, with_for_update=True)
        if job is None:
            raise RegistryError(404, f"no job {job_id}")
        device = await db.get_one(Device, job.device_pk)
        await cancel_job(db, job)
        audit(
            db,
            shell_actor(),
            "job.cancel",
            f"job {job.id}",
            authority_pk=device.authority_pk,
            device_id=device.device_id,
            kind=job.kind,
        )
        return job

    job = _with_db(ctx, work)
    typer.echo(f"job {job.id} cancelled")


@device_app.command("show")
def device_show(
    ctx: typer.Context,
    device_id: Annotated[str, typer.Argument(help="The DevId.")],
    authority: AuthorityOption = DEFAULT_AUTHORITY,
) -> None:
    """One device: identity, inventory, jobs and history."""

    async def work(db: AsyncSession) -> tuple[Device, list[InventoryEntry], list[Job], list[DeviceEvent]]:
        device = await find_device(db, device_id, authority_pk=await _authority_pk(db, authority))
        if device is None:
            raise RegistryError(404, f"no device {device_id}")
        inventory = (
            await db.execute(
                select(InventoryEntry)
                .where(InventoryEntry.device_pk == device.id)
                .order_by(InventoryEntry.kind, InventoryEntry.node)
            )
        ).scalars()
        jobs = (await db.execute(select(Job).where(Job.device_pk == device.id).order_by(Job.id))).scalars()
        events = (
            await db.execute(
                select(DeviceEvent).where(DeviceEvent.device_pk == device.id).order_by(DeviceEvent.id)
            )
        ).scalars()
        return device, list(inventory), list(jobs), list(events)

    device, inventory, jobs, events = _with_db(ctx, work)
    seen = device.last_contact.isoformat(timespec="seconds") if device.last_contact else "never"
    typer.echo(f"device     {device.device_id} ({device.state}; last contact {seen})")
    for key, value in sorted({**device.devinfo, **device.devdetail}.items()):
        if value:
            typer.echo(f"           {key} = {value}")
    for entry in inventory:
        state = (
            {10: "inactive", 20: "active"} if entry.kind == "deployed" else {10: "delivered", 20: "installed"}
        )
        typer.echo(
            f"{entry.kind:<10} {entry.ident}  {entry.version}  {state.get(entry.state or 0, '?')}"
            f"  (node {entry.node})"
        )
    for job in jobs:
        typer.echo(f"job        {job.id}  {job.kind}  {job.state}  {job.result_code or '-'}  {job.detail}")
    for event in events:
        typer.echo(
            f"history    {event.at.isoformat(timespec='seconds')}  {event.kind}  {json.dumps(event.detail)}"
        )


@device_app.command("accept")
def device_accept(
    ctx: typer.Context,
    device_id: Annotated[str, typer.Argument(help="A pending (or rejected) device's DevId.")],
    username: Annotated[
        str | None, typer.Option(help="The credentials it will present (CLCRED name).")
    ] = None,
    password: Annotated[str | None, typer.Option(help="Its password.")] = None,
    reject: Annotated[bool, typer.Option("--reject", help="Refuse the device instead.")] = False,
    authority: AuthorityOption = DEFAULT_AUTHORITY,
) -> None:
    """Accept a device held as pending (giving it credentials), or reject it."""
    from .registry import AUTH_TYPES  # noqa: PLC0415

    async def work(db: AsyncSession) -> Device:
        authority_pk = await _authority_pk(db, authority)
        device = await find_device(db, device_id, authority_pk=authority_pk, for_update=True)
        if device is None:
            raise RegistryError(404, f"no device {device_id}")
        detail: dict[str, Any] = {"before": device.state}
        if username is not None and password is not None:
            detail["username"] = username
        if reject:
            device.state = DeviceState.REJECTED.value
        else:
            if username is not None and password is not None:
                device.username, device.password = username, password
                device.auth_type = device.auth_type or AUTH_TYPES["md5"].value
            if not device.username:
                raise RegistryError(
                    422, f"device {device_id} has no credentials yet: give --username and --password"
                )
            device.state = DeviceState.ACCEPTED.value
        actor = shell_actor()
        await record_event(db, device, "admission", state=device.state, by=actor)
        action = "device.reject" if reject else "device.accept"
        audit(db, actor, action, device.device_id, authority_pk=authority_pk, **detail)
        return device

    device = _with_db(ctx, work)
    typer.echo(f"device {device.device_id} {device.state}")


@device_app.command("update")
def device_update(
    ctx: typer.Context,
    device_id: Annotated[str, typer.Argument(help="The DevId.")],
    username: Annotated[str | None, typer.Option(help="A new CLCRED name.")] = None,
    password: Annotated[str | None, typer.Option(help="A new password.")] = None,
    auth: Annotated[str | None, typer.Option(help="md5, hmac or basic.")] = None,
    server_password: Annotated[
        str | None, typer.Option(help="A new SRVCRED password; '' removes it (and needs --notify '').")
    ] = None,
    notify: Annotated[
        str | None, typer.Option(help="A new Package #0 address (udp://h:p, http://h:p/); '' removes it.")
    ] = None,
    tag: Annotated[
        list[str] | None, typer.Option(help="key=value (repeatable): replaces all the device's tags.")
    ] = None,
    authority: AuthorityOption = DEFAULT_AUTHORITY,
) -> None:
    """Change a device's credentials, notification address or tags (only what is given).

    The rules of 'device add' hold: a notification address passes the URL policy and needs a
    server password (give --server-password with it if the device has none).
    """
    tags: dict[str, str] | None = None
    if tag is not None:
        tags = {}
        for item in tag:
            key, sep, value = item.partition("=")
            if not sep or not key:
                _fail(f"a tag is key=value, not {item!r}")
            tags[key] = value
    settings = _settings(ctx)

    async def work(db: AsyncSession) -> dict[str, Any]:
        authority_pk = await _authority_pk(db, authority)
        device = await find_device(db, device_id, authority_pk=authority_pk, for_update=True)
        if device is None:
            raise RegistryError(404, f"no device {device_id}")
        changed = await update_device(
            db,
            device,
            username=username,
            password=password,
            auth=auth,
            server_password=server_password,
            notify_address=notify,
            tags=tags,
            allow_local_urls=settings.allow_local_urls,
        )
        if changed:
            audit(db, shell_actor(), "device.update", device.device_id, authority_pk=authority_pk, **changed)
        return changed

    changed = _with_db(ctx, work)
    typer.echo(f"device {device_id}: {', '.join(changed) + ' changed' if changed else 'nothing changed'}")


@device_app.command("delete")
def device_delete(
    ctx: typer.Context,
    device_id: Annotated[str, typer.Argument(help="The DevId.")],
    yes: Annotated[bool, typer.Option("--yes", "-y", help="Do not ask for confirmation.")] = False,
    authority: AuthorityOption = DEFAULT_AUTHORITY,
) -> None:
    """Delete a device with its jobs, inventory, history and campaign memberships.

    Refused while the device works on a job (sent, not finished). Asks first unless --yes.
    """
    if not yes and not typer.confirm(f"Delete device {device_id} and all its history?"):
        _fail("not deleted")

    async def work(db: AsyncSession) -> dict[str, int]:
        authority_pk = await _authority_pk(db, authority)
        device = await find_device(db, device_id, authority_pk=authority_pk, for_update=True)
        if device is None:
            raise RegistryError(404, f"no device {device_id}")
        state, name = device.state, device.username
        removed = await delete_device(db, device)
        audit(
            db,
            shell_actor(),
            "device.delete",
            device_id,
            authority_pk=authority_pk,
            state=state,
            username=name,
            **removed,
        )
        return removed

    removed = _with_db(ctx, work)
    typer.echo(f"device {device_id} deleted (with {removed['jobs']} job(s))")


ExpiresInOption = Annotated[
    str | None, typer.Option("--expires-in", help="It expires this long from now: 30d, 12h, 90m, 2w.")
]
ExpiresAtOption = Annotated[
    str | None,
    typer.Option("--expires-at", help="It expires at this time (ISO 8601, e.g. 2027-01-31T12:00Z)."),
]

token_app = typer.Typer(
    help="REST API tokens (roles: viewer, operator, admin).", no_args_is_help=True, rich_markup_mode=None
)
server_app.add_typer(token_app, name="token")


@token_app.command("add")
def token_add(
    ctx: typer.Context,
    name: Annotated[str, typer.Argument(help="Who uses it: the name the audit log shows.")],
    role: Annotated[str, typer.Option(help="viewer (reads), operator (changes), admin (all).")] = "viewer",
    authority: AuthorityOption = DEFAULT_AUTHORITY,
    expires_in: ExpiresInOption = None,
    expires_at: ExpiresAtOption = None,
) -> None:
    """Create an API token of an authority; prints it once (only its hash is kept)."""
    from .api.auth import create_token, resolve_expiry  # noqa: PLC0415

    async def work(db: AsyncSession) -> tuple[str, Any]:
        expires = resolve_expiry(expires_in, expires_at)
        authority_pk = await _authority_pk(db, authority)
        row, token = await create_token(db, name, role, authority_pk=authority_pk, expires=expires)
        audit(
            db,
            shell_actor(),
            "token.add",
            f"token {row.name}",
            authority_pk=authority_pk,
            role=row.role,
            **({"expires": expires.isoformat()} if expires else {}),
        )
        return token, expires

    token, expires = _with_db(ctx, work)
    typer.echo(token)
    until = f", expires {expires.isoformat(timespec='seconds')}" if expires else ""
    typer.echo(f"token {name!r} ({role}{until}) created; it is shown only now", err=True)


@token_app.command("rotate")
def token_rotate(
    ctx: typer.Context,
    name: Annotated[str, typer.Argument(help="The token's name.")],
    grace: Annotated[
        str, typer.Option(help="How long the old secret still works: 30m, 1h, 2d... [0: not at all].")
    ] = "0",
    expires_in: ExpiresInOption = None,
    expires_at: ExpiresAtOption = None,
    never_expires: Annotated[
        bool, typer.Option("--never-expires", help="The new secret does not expire.")
    ] = False,
) -> None:
    """A new secret for a token (same name, role, authority); prints it once, revokes the old one.

    Without --expires-in/--expires-at the token gets its own lifetime again from now (or none,
    if it never expired). An expired token can be rotated: that is how it works again.
    """
    from .api.auth import parse_duration, resolve_expiry, rotate_token  # noqa: PLC0415

    if never_expires and (expires_in is not None or expires_at is not None):
        _fail("--never-expires cannot go with --expires-in or --expires-at")

    async def work(db: AsyncSession) -> tuple[str, Any]:
        wait = parse_duration(grace, "--grace")
        expires = resolve_expiry(expires_in, expires_at)
        if expires is not None or never_expires:
            row, token = await rotate_token(db, name, grace=wait, expires=expires)
        else:
            row, token = await rotate_token(db, name, grace=wait)
        audit(
            db,
            shell_actor(),
            "token.rotate",
            f"token {row.name}",
            authority_pk=row.authority_pk,
            role=row.role,
            grace_s=int(wait.total_seconds()),
            expires=row.expires.isoformat() if row.expires else None,
        )
        grace_end = row.previous_expires
        old = (
            f"still works until {grace_end.isoformat(timespec='seconds')}"
            if wait and grace_end
            else "revoked now"
        )
        until = f"expires {row.expires.isoformat(timespec='seconds')}" if row.expires else "does not expire"
        return token, f"token {row.name!r} rotated: the new secret {until}; the old one {old}"

    token, said = _with_db(ctx, work)
    typer.echo(token)
    typer.echo(said, err=True)


@token_app.command("list")
def token_list(ctx: typer.Context) -> None:
    """The API tokens: name, role, authority, last use (never the tokens)."""
    from .api.auth import list_tokens  # noqa: PLC0415

    async def work(db: AsyncSession) -> list[tuple[Any, str]]:
        names = {a.id: a.name for a in await list_authorities(db)}
        return [(row, names.get(row.authority_pk, "?")) for row in await list_tokens(db)]

    from .store.models import utc_now  # noqa: PLC0415

    now = utc_now()
    for row, authority in _with_db(ctx, work):
        used = row.last_used.isoformat(timespec="seconds") if row.last_used else "never"
        if row.expires is None:
            expiry = "expires never"
        else:
            word = "EXPIRED" if row.expires <= now else "expires"
            expiry = f"{word} {row.expires.isoformat(timespec='seconds')}"
        rotated = f"  rotated {row.rotated.isoformat(timespec='seconds')}" if row.rotated else ""
        typer.echo(
            f"{row.name}  {row.role}  {authority}  created {row.created.isoformat(timespec='seconds')}"
            f"  used {used}  {expiry}{rotated}"
        )


@token_app.command("revoke")
def token_revoke(ctx: typer.Context, name: Annotated[str, typer.Argument(help="The token's name.")]) -> None:
    """Revoke an API token at once."""
    from .api.auth import revoke_token  # noqa: PLC0415

    async def work(db: AsyncSession) -> None:
        row = await revoke_token(db, name)
        audit(
            db,
            shell_actor(),
            "token.revoke",
            f"token {row.name}",
            authority_pk=row.authority_pk,
            role=row.role,
        )

    _with_db(ctx, work)
    typer.echo(f"token {name!r} revoked")


authority_app = typer.Typer(
    help="Management authorities: DM server identities, each with its own devices and tokens.",
    no_args_is_help=True,
    rich_markup_mode=None,
)
server_app.add_typer(authority_app, name="authority")


@authority_app.command("add")
def authority_add(
    ctx: typer.Context,
    name: Annotated[str, typer.Argument(help="Its name (what --authority and the API take).")],
    server_id: Annotated[
        str, typer.Option("--server-id", help="The DM ServerID its devices know it by (DMAcc ServerID).")
    ],
    description: Annotated[str, typer.Option(help="What it is (an operator, an OEM...).")] = "",
) -> None:
    """Create a management authority; then give it a token (token add --authority NAME)."""
    settings = _settings(ctx)

    async def work(db: AsyncSession) -> Authority:
        authority = await add_authority(
            db, name, server_id, description=description, configured_server_id=settings.server_id
        )
        audit(
            db,
            shell_actor(),
            "authority.add",
            f"authority {authority.name}",
            authority_pk=DEFAULT_AUTHORITY_PK,
            server_id=authority.server_id,
            description=authority.description,
        )
        return authority

    authority = _with_db(ctx, work)
    typer.echo(f"authority {authority.name} created (ServerID {authority.server_id})")


@authority_app.command("list")
def authority_list(ctx: typer.Context) -> None:
    """The management authorities: name, ServerID, description."""
    settings = _settings(ctx)
    for authority in _with_db(ctx, list_authorities):
        server_id = authority.server_id or f"{settings.server_id} (the server's own)"
        typer.echo(f"{authority.name}  {server_id}  {authority.description}".rstrip())


publisher_app = typer.Typer(
    help="The trust store: publisher keys that uploaded packages must be signed with.",
    no_args_is_help=True,
    rich_markup_mode=None,
)
server_app.add_typer(publisher_app, name="publisher")


@publisher_app.command("add")
def publisher_add(
    ctx: typer.Context,
    name: Annotated[str, typer.Argument(help="Who publishes with the key (shown in package lists).")],
    key: Annotated[
        Path,
        typer.Argument(help="The public key, PEM (KEY.pub.pem from 'omadm package keygen').", dir_okay=False),
    ],
    authority: AuthorityOption = DEFAULT_AUTHORITY,
) -> None:
    """Trust a publisher's public key: packages it signed can then be uploaded."""
    from .artifacts.publishers import add_publisher, publisher_facts  # noqa: PLC0415
    from .artifacts.service import ArtifactError  # noqa: PLC0415

    try:
        pem = key.read_bytes()[: 64 << 10]
    except OSError as exc:
        _fail(f"cannot read {key}: {exc.strerror or exc}")

    async def work(db: AsyncSession) -> tuple[Any, bool]:
        authority_pk = await _authority_pk(db, authority)
        try:
            publisher, created = await add_publisher(db, name, pem, authority_pk=authority_pk)
        except ArtifactError as exc:
            raise RegistryError(exc.status, f"{key}: {exc}" if exc.status == 422 else str(exc)) from None
        if created:
            audit(
                db,
                shell_actor(),
                "publisher.add",
                f"publisher {publisher.name}",
                authority_pk=authority_pk,
                **publisher_facts(publisher),
            )
        return publisher, created

    publisher, created = _with_db(ctx, work)
    done = "trusted" if created else "already trusted"
    typer.echo(f"publisher {publisher.name} {done}: key {publisher.key_id}")


@publisher_app.command("list")
def publisher_list(ctx: typer.Context, authority: AuthorityOption = DEFAULT_AUTHORITY) -> None:
    """The authority's publishers: name, key id, fingerprint."""
    from .artifacts.publishers import list_publishers  # noqa: PLC0415

    async def work(db: AsyncSession) -> list[Any]:
        return await list_publishers(db, authority_pk=await _authority_pk(db, authority))

    publishers = _with_db(ctx, work)
    if not publishers:
        typer.echo("no publishers: uploads are refused until one is added (publisher add NAME KEY.pub.pem)")
    for publisher in publishers:
        typer.echo(f"{publisher.name}  key {publisher.key_id}  sha256 {publisher.fingerprint}")


@publisher_app.command("delete")
def publisher_delete(
    ctx: typer.Context,
    name: Annotated[str, typer.Argument(help="The publisher's name, or its key id.")],
    authority: AuthorityOption = DEFAULT_AUTHORITY,
) -> None:
    """Stop trusting a publisher's key (packages uploaded already stay)."""
    from .artifacts.publishers import delete_publisher, publisher_facts  # noqa: PLC0415
    from .artifacts.service import ArtifactError  # noqa: PLC0415

    async def work(db: AsyncSession) -> Any:
        authority_pk = await _authority_pk(db, authority)
        try:
            publisher = await delete_publisher(db, name, authority_pk=authority_pk)
        except ArtifactError as exc:
            raise RegistryError(exc.status, str(exc)) from None
        audit(
            db,
            shell_actor(),
            "publisher.delete",
            f"publisher {publisher.name}",
            authority_pk=authority_pk,
            **publisher_facts(publisher),
        )
        return publisher

    publisher = _with_db(ctx, work)
    typer.echo(f"publisher {publisher.name} deleted (key {publisher.key_id})")
