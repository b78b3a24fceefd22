"""``omadm conformance device``: omadm plays a scripted DM server against a device under test.

The device is configured with an account at the runner's URL. For every case the runner
waits for a session of the device: it wakes the device with a Package #0 when it knows
where to send one (``--notify``; the digest uses the SRVCRED secret and the nonce the device
issued to the server, or the resync nonce at first), otherwise it waits for the device's own
poll. The case then drives the session (:class:`~.device_session.DeviceSession`), possibly
over several sessions, and every message either way is kept for the report.

The runner also serves the SCOMO test packages itself (``/packages/<name>.omp`` on the same
listener), signed with ``--signing-key``: a device that checks signatures must trust that
key's public half (``omadm agent init --trust-key`` for omadm's agent). Without the option
the runner makes a key and writes its public half beside the report.
"""

from __future__ import annotations

import asyncio
import contextlib
import secrets
import shutil
import socket
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any

import httpx
import typer
from rich.console import Console

from omadm.package.errors import PackageError
from omadm.package.signing import generate_key, load_private_key, save_private_key, save_public_key
from omadm.protocol.auth import RESYNC_NONCE
from omadm.protocol.codec import Encoding
from omadm.protocol.codes import AlertCode, AuthType
from omadm.protocol.notification import (
    NOTIFICATION_CONTENT_TYPE,
    Notification,
    encode_notification,
    session_id_hex,
)

from . import ics as ics_module
from . import reports
from .device_http import HttpListener, Request, Response
from .device_packages import PackageShelf
from .device_session import DeviceSession, DeviceTarget, ScriptedServer
from .model import (
    Case,
    CaseResult,
    Clock,
    Exchange,
    Inconclusive,
    NotApplicable,
    Role,
    cases_for,
    load_all,
    select,
)
from .runner import Progress, run_cases

#: Package #0s sent for one session before a case is inconclusive.
WAKE_ATTEMPTS = 3

__all__ = [
    "WAKE_ATTEMPTS",
    "DeviceContext",
    "DeviceOptions",
    "DeviceRunner",
    "RunnerError",
    "command",
    "run_device_suite",
]

NOTIFY = ics_module.declare(
    "package0", "the device can be woken with a Package #0 (the runner has its notification address)"
)


@dataclass
class DeviceOptions:
    """Everything a device run needs (the command's options, as data for tests)."""

    listen: tuple[str, int]
    server_id: str = "omadm-conformance"
    username: str = "device"
    password: str = "device-secret"
    server_password: str = "server-secret"
    auth: AuthType = AuthType.MD5
    device_id: str | None = None
    url: str | None = None
    notify: str | None = None
    encoding: Encoding = Encoding.XML
    scratch: str = "./Vendor/Conformance"
    #: Where the device mounts SCOMO.
    scomo_root: str = "./SCOMO"
    signing_key: Path | None = None
    #: Seconds to wait for a session of the device (a poll, when it cannot be woken).
    session_timeout: float = 60.0
    #: Seconds to wait for each message of a session.
    message_timeout: float = 30.0
    case_timeout: float = 180.0
    work_dir: Path | None = None


@dataclass
class DeviceContext:
    """What a DEVICE case gets: sessions with the device, the account, the packages."""

    runner: DeviceRunner
    case: Case
    encoding: Encoding
    exchanges: list[Exchange] = field(default_factory=list)
    sessions: list[DeviceSession] = field(default_factory=list)
    clock: Clock = field(default_factory=Clock)
    #: The SessionID (hex) of the last Package #0 sent, when the last session was woken.
    woken_session_id: str | None = None

    @property
    def target(self) -> DeviceTarget:
        return self.runner.target

    @property
    def options(self) -> DeviceOptions:
        return self.runner.options

    @property
    def packages(self) -> PackageShelf:
        return self.runner.packages

    @property
    def can_wake(self) -> bool:
        return self.runner.options.notify is not None

    def scratch(self, name: str = "") -> str:
        """A node path for this case below the scratch root (``--scratch``)."""
        base = f"{self.options.scratch}/{self.case.id.replace('-', '').lower()}"
        return f"{base}/{name}" if name else base

    def record(self, direction: str, text: str) -> None:
        self.exchanges.append(Exchange(direction, text, self.clock()))

    async def session(
        self,
        *,
        wake: bool = True,
        authenticate: bool = True,
        timeout: float | None = None,
        **settings: Any,
    ) -> DeviceSession:
        """The device's next session, woken by Package #0 when possible; authenticated unless told.

        ``settings`` go to the session (``max_msg_size``, ``max_obj_size``).
        """
        session = await self.runner.open_session(self, wake=wake, timeout=timeout, settings=settings)
        self.sessions.append(session)
        if session.encoding.value != self.encoding.value:
            raise Inconclusive(
                f"the device sent {session.encoding.value.upper()} in a run for "
                f"{self.encoding.value.upper()} "
                "(configure the device's encoding, or run with the other --encoding)"
            )
        if authenticate:
            while not session.authenticated and not session.ended:
                await session.turn()
            if not session.authenticated:
                raise Inconclusive(
                    "the device did not authenticate with the configured credentials: "
                    + "; ".join(e.reason for e in session.auth_failures())
                )
        return session

    async def next_session(self, timeout: float | None = None) -> DeviceSession:
        """A session the device opens by itself (an asynchronous report), without waking it."""
        return await self.session(wake=False, timeout=timeout)

    def require_wake(self) -> None:
        if not self.can_wake:
            raise NotApplicable("the runner has no notification address for the device (--notify)")


class RunnerError(Exception):
    """The runner cannot start (the address is taken, the signing key is unreadable...)."""


class DeviceRunner:
    """Owns the listener, the scripted server and the package shelf for one run."""

    def __init__(self, options: DeviceOptions) -> None:
        self.options = options
        self.target = DeviceTarget(
            server_id=options.server_id,
            username=options.username,
            password=options.password,
            server_password=options.server_password,
            auth=options.auth,
            device_id=options.device_id,
        )
        self.url = options.url or _default_url(options.listen)
        self.server = ScriptedServer(self.target, self.url, message_timeout=options.message_timeout)
        self.packages = PackageShelf(self.url.rsplit("/", 1)[0], options.signing_key, options.work_dir)
        self._listener = HttpListener(self._handle)
        self._last_session_id = secrets.randbelow(0xFFFF)

    async def start(self) -> None:
        host, port = self.options.listen
        try:
            self.packages.build()
        except (OSError, ValueError, PackageError) as exc:
            raise RunnerError(f"cannot build the SCOMO test packages: {exc}") from exc
        try:
            await self._listener.start(host, port)
        except OSError as exc:
            raise RunnerError(f"cannot listen on {host}:{port}: {exc.strerror or exc}") from exc

    async def close(self) -> None:
        await self._drain(wait=0.0)
        await self._listener.close()
        self.packages.close()

    async def _handle(self, request: Request) -> None:
        if request.path.startswith("/packages/"):
            request.reply.set_result(
                self.packages.serve(request.path, request.header("range"), request.method, request.body)
            )
            return
        if request.path.split("?", 1)[0] != "/dm":
            request.reply.set_result(Response(404, b"the DM endpoint is /dm"))
            return
        await self.server.handle(request)

    async def make_context(self, case: Case, encoding: str) -> DeviceContext:
        context = DeviceContext(self, case, Encoding(encoding))
        self.server.set_recorder(context.record)
        return context

    async def close_context(self, context: DeviceContext) -> None:
        for session in context.sessions:
            if not session.ended:
                with contextlib.suppress(Exception):
                    await session.close(timeout=5.0)
        self.server.set_recorder(None)
        self.server.next_settings = {}

    async def _drain(self, wait: float) -> None:
        """End sessions nobody asked for (a late report): answer them and let them close."""
        while True:
            try:
                stray = await asyncio.wait_for(self.server.incoming.get(), wait) if wait else None
                if stray is None:
                    stray = self.server.incoming.get_nowait()
            except (TimeoutError, asyncio.QueueEmpty):
                return
            with contextlib.suppress(Exception):
                await stray.close(timeout=5.0)

    def _new_session_id(self) -> int:
        """The next Package #0 session id: consecutive from a random start, never 0.

        A device refuses a session id it accepted recently (replay protection that outlives
        one run), so two runs against one device must not reuse each other's ids: counting
        up from a random start makes two runs collide only when their ranges overlap.
        """
        self._last_session_id = self._last_session_id % 0xFFFF + 1
        return self._last_session_id

    async def open_session(
        self, context: DeviceContext, *, wake: bool, timeout: float | None, settings: dict[str, Any]
    ) -> DeviceSession:
        options = self.options
        limit = timeout if timeout is not None else options.session_timeout
        if not wake:
            self.server.next_settings = settings
            return await self._wait(limit, None, context)
        await self._drain(wait=0.0)
        if options.notify is None:
            self.server.next_settings = settings
            return await self._wait(limit, None, context)
        # A Package #0 may be lost (UDP) or refused (a session id the device still remembers):
        # send a fresh one up to WAKE_ATTEMPTS times within the session timeout.
        for attempt in range(1, WAKE_ATTEMPTS + 1):
            session_id = self._new_session_id()
            self.server.next_settings = settings
            await self.wake(session_id)
            context.woken_session_id = session_id_hex(session_id)
            try:
                return await self._wait(limit / WAKE_ATTEMPTS, session_id_hex(session_id), context)
            except Inconclusive:
                if attempt == WAKE_ATTEMPTS:
                    raise Inconclusive(
                        f"the device opened no session within {limit:g} s for {WAKE_ATTEMPTS} Package #0s "
                        f"sent to {options.notify}"
                    ) from None
        raise AssertionError("unreachable")  # pragma: no cover

    async def wake(self, session_id: int) -> list[bytes]:
        """Send the Package #0 for ``session_id``; returns the packages sent (a test may replay them).

        The runner cannot always know the nonce the device holds for it: a device issues a new
        one when it verifies the server's credential, and when the session ends on the
        server's package the device has no message left to send it in. So the Package #0 goes
        out signed with the nonce last received and, right after, with the resync nonce
        (digest §11.3) under the same session id: a device opens one session for whichever
        verifies, and refuses the other as a repeat of that session id.
        """
        nonces = [self.target.server_nonce] if self.target.server_nonce else []
        nonces.append(RESYNC_NONCE)
        sent: list[bytes] = []
        for nonce in dict.fromkeys(nonces):
            assert nonce is not None
            sent.append(await self.send_package0(session_id, nonce))
        return sent

    async def _wait(self, limit: float, session_id: str | None, context: DeviceContext) -> DeviceSession:
        """The next new session (one answering the Package #0 ``session_id`` when given)."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + limit
        while True:
            left = deadline - loop.time()
            try:
                session = await asyncio.wait_for(self.server.incoming.get(), max(left, 0.001))
            except TimeoutError:
                how = "its Package #0" if session_id else "its poll (no --notify address)"
                raise Inconclusive(
                    f"the device opened no session within {limit:g} s waiting for {how}"
                ) from None
            first = session.first
            if session_id is not None and not _answers(first, session_id):
                await session.close(timeout=5.0)  # a late report or a poll: not this case's session
                continue
            if self.target.device_id and first.header.source.loc_uri != self.target.device_id:
                await session.close(timeout=5.0)
                continue
            return session

    async def send_package0(
        self, session_id: int, nonce: bytes, *, server_password: str | None = None
    ) -> bytes:
        """Send a Package #0 (server-initiated session request) to ``--notify``."""
        notify = self.options.notify
        if notify is None:
            raise NotApplicable("no notification address (--notify)")
        package = encode_notification(
            Notification(server_id=self.target.server_id, session_id=session_id),
            self.target.server_password if server_password is None else server_password,
            nonce,
        )
        await send_package0(notify, package)
        return package


def _answers(message: Any, session_id: str) -> bool:
    alerts = [c for c in message.commands if getattr(c, "name", "") == "Alert"]
    server_alerted = any(a.code == AlertCode.SERVER_INITIATED_MGMT for a in alerts)
    return message.header.session_id.upper() == session_id.upper() or (
        server_alerted and message.header.session_id.lstrip("0").upper() == session_id.upper()
    )


async def send_package0(address: str, package: bytes) -> None:
    """POST ``package`` to an http(s) URL, or send it as a datagram to ``udp://host:port``."""
    if address.startswith("udp://"):
        host, port = parse_listen(address[len("udp://") :], "--notify")
        loop = asyncio.get_running_loop()
        transport, _ = await loop.create_datagram_endpoint(asyncio.DatagramProtocol, remote_addr=(host, port))
        try:
            transport.sendto(package)
        finally:
            transport.close()
        return
    async with httpx.AsyncClient(timeout=10.0) as client:
        try:
            await client.post(address, content=package, headers={"Content-Type": NOTIFICATION_CONTENT_TYPE})
        except httpx.HTTPError as exc:
            raise Inconclusive(f"cannot deliver the Package #0 to {address}: {exc}") from exc


def _default_url(listen: tuple[str, int]) -> str:
    host, port = listen
    return f"http://{_url_host(host)}:{port}/dm"


def _url_host(host: str) -> str:
    if host in ("", "0.0.0.0", "::"):
        return socket.gethostname() if host == "::" else "127.0.0.1"
    return f"[{host}]" if ":" in host else host


def parse_listen(text: str, option: str = "--listen") -> tuple[str, int]:
    """``HOST:PORT`` (``[v6]:PORT`` too) as a pair; a clear error otherwise."""
    host, sep, port = text.rpartition(":")
    if not sep or not port.isdigit() or not 0 <= int(port) <= 65535:
        raise ValueError(f"{option} {text!r} is not HOST:PORT (e.g. 127.0.0.1:8700)")
    return host.strip("[]") or "127.0.0.1", int(port)


async def run_device_suite(
    options: DeviceOptions,
    *,
    ics: ics_module.Ics | None = None,
    only: str | None = None,
    progress: Progress | None = None,
    cases: list[Case] | None = None,
) -> list[CaseResult]:
    """Run the DEVICE cases (``only`` a comma-separated id glob list) and return the verdicts."""
    chosen = cases if cases is not None else select(cases_for(Role.DEVICE), only)
    runner = DeviceRunner(options)
    await runner.start()
    try:
        return await run_cases(
            chosen,
            encoding=options.encoding.value,
            ics=ics or ics_module.Ics(),
            make_context=runner.make_context,
            close_context=runner.close_context,
            timeout=options.case_timeout,
            progress=progress,
        )
    finally:
        await runner.close()


def command(  # noqa: PLR0917 - a Typer command: one parameter per option
    listen: Annotated[str, typer.Option("--listen", help="HOST:PORT the scripted DM server listens on.")],
    server_id: Annotated[str, typer.Option("--server-id", help="The ServerID of the device's account.")] = (
        "omadm-conformance"
    ),
    device_id: Annotated[
        str | None, typer.Option("--device-id", help="The device's DevId (sessions of others are ignored).")
    ] = None,
    username: Annotated[str, typer.Option("--username", help="The device's user name (CLCRED).")] = "device",
    password: Annotated[str, typer.Option("--password", help="The device's password (CLCRED).")] = (
        "device-secret"
    ),
    server_password: Annotated[
        str, typer.Option("--server-password", help="The server's secret (SRVCRED, Package #0 digest).")
    ] = "server-secret",
    auth: Annotated[str, typer.Option("--auth", help="md5, hmac or basic: the account's scheme.")] = "md5",
    url: Annotated[
        str | None,
        typer.Option("--url", help="The server URL the device is configured with (default from --listen)."),
    ] = None,
    ics_file: Annotated[Path | None, typer.Option("--ics", help="The ICS (TOML) the device claims.")] = None,
    only: Annotated[
        str | None, typer.Option("--only", help="Run only these case ids (globs, comma-separated).")
    ] = None,
    encoding: Annotated[
        str, typer.Option("--encoding", help="xml or wbxml: what the device is set to send.")
    ] = "xml",
    report: Annotated[
        Path | None, typer.Option("--report", help="Write JUnit, Markdown and HTML here.")
    ] = None,
    notify: Annotated[
        str | None,
        typer.Option("--notify", help="Where to send Package #0: an http(s) URL or udp://HOST:PORT."),
    ] = None,
    scratch: Annotated[
        str, typer.Option("--scratch", help="An interior node the server may Add below, for test nodes.")
    ] = "./Vendor/Conformance",
    signing_key: Annotated[
        Path | None,
        typer.Option("--signing-key", help="Ed25519 private key (PEM) that signs the SCOMO test packages."),
    ] = None,
    session_timeout: Annotated[
        float, typer.Option("--session-timeout", help="Seconds to wait for each session of the device.")
    ] = 60.0,
    scomo_root: Annotated[
        str, typer.Option("--scomo-root", help="Where the device mounts SCOMO.")
    ] = "./SCOMO",
) -> None:
    """Play a scripted DM server against a device under test and check it against the catalogue."""
    try:
        listen_at = parse_listen(listen)
        if notify is not None and not notify.startswith(("http://", "https://", "udp://")):
            raise ValueError(f"--notify {notify!r} must be an http(s) URL or udp://HOST:PORT")
        if notify is not None and notify.startswith("udp://"):
            parse_listen(notify[len("udp://") :], "--notify")
        scheme = {"md5": AuthType.MD5, "hmac": AuthType.HMAC, "basic": AuthType.BASIC}.get(auth.lower())
        if scheme is None:
            raise ValueError(f"--auth {auth!r} is not one of md5, hmac, basic")
        try:
            chosen_encoding = Encoding(encoding.lower())
        except ValueError:
            raise ValueError(f"--encoding {encoding!r} is not xml or wbxml") from None
        if signing_key is not None and not signing_key.is_file():
            raise ValueError(f"--signing-key {signing_key}: no such file")
        load_all()  # the case modules declare the capabilities an ICS may name
        ics = ics_module.load_ics(ics_file)
        if chosen_encoding is Encoding.WBXML and not ics.claims("wbxml"):
            raise ValueError(f"--encoding wbxml, but the ICS {ics_file} does not claim wbxml")
    except (ValueError, ics_module.IcsError) as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from None
    chosen = select(cases_for(Role.DEVICE), only)
    if not chosen:
        typer.echo(f"error: --only {only!r} matches no device case", err=True)
        raise typer.Exit(2)
    work = Path(tempfile.mkdtemp(prefix="omadm-conformance-"))
    if signing_key is None:
        signing_key = _test_signing_key(report or work)
    options = DeviceOptions(
        listen=listen_at,
        server_id=server_id,
        username=username,
        password=password,
        server_password=server_password,
        auth=scheme,
        device_id=device_id,
        url=url,
        notify=notify,
        encoding=chosen_encoding,
        scratch=scratch.rstrip("/"),
        signing_key=signing_key,
        session_timeout=session_timeout,
        scomo_root=scomo_root.rstrip("/"),
        work_dir=work,
    )
    typer.echo(f"the scripted DM server is {options.url or _default_url(listen_at)}", err=True)
    try:
        try:
            results = _run_with_progress(options, ics, chosen)
        except RunnerError as exc:
            typer.echo(f"error: {exc}", err=True)
            raise typer.Exit(2) from None
        reports.print_summary(results, Console(stderr=True))
        if report is not None:
            try:
                for path in reports.write_all(results, report, title="omadm conformance: device", ics=ics):
                    typer.echo(f"wrote {path}", err=True)
            except reports.ReportError as exc:
                typer.echo(f"error: {exc}", err=True)
                raise typer.Exit(2) from None
    finally:
        shutil.rmtree(work, ignore_errors=True)
    raise typer.Exit(reports.exit_status(results))


def _test_signing_key(directory: Path) -> Path:
    """The runner's own package signing key in ``directory`` (made once, then reused).

    A device that checks signatures must trust the public half before the SCOMO cases can
    install anything; keeping the key beside the reports lets the operator trust it once.
    """
    directory.mkdir(parents=True, exist_ok=True)
    private, public = directory / "package-signer.pem", directory / "package-signer.pub.pem"
    if not private.exists():
        key = generate_key()
        save_private_key(key, private)
        save_public_key(key, public)
    elif not public.exists():
        save_public_key(load_private_key(private), public)
    typer.echo(f"SCOMO test packages are signed with {private}; the device must trust {public}", err=True)
    return private


def _run_with_progress(options: DeviceOptions, ics: ics_module.Ics, chosen: list[Case]) -> list[CaseResult]:
    with reports.RichProgress(total=len(chosen)) as progress:
        return asyncio.run(run_device_suite(options, ics=ics, cases=chosen, progress=progress))
