"""DM server benchmark: messages per second of one worker against two echo references.

Run ``python bench/server.py`` (about 4 minutes: both engines, 3 runs of 5 s per endpoint,
then a profile) or ``python bench/server.py --quick`` (one 1-second run of each, for a
smoke run). It is a script, not a test: it prints figures and asserts only that the
sessions it times are real (every POST answered 200, every DM session authenticated and
asked for the inventory).

Three endpoints are served, one at a time, by uvicorn with the settings ``omadm server``
uses (one worker, no access log), each on a freshly started process:

* **bare echo**: a Starlette app whose ``POST /dm`` returns the body - the HTTP floor;
* **echo + 1 transaction**: the same, plus one committed ``UPDATE`` of one row per request
  through ``omadm.server.store.engine.make_engine`` on the same database - the floor of a
  durable write (DESIGN rule 4);
* **omadm**: ``omadm.server.app.create_app`` on a migrated database, with the DM endpoint's
  INFO log line per message as ``omadm server`` writes it (to a file here).

The load comes from a separate process with ``--clients`` keep-alive connections over a
minimal HTTP/1.1 client on raw asyncio sockets (httpx costs more per request than the
echo server does; the run measures both once, see "load generator check"). For omadm
each connection is a device registered with MD5 credentials; it loops over real DM
sessions made by ``ClientSession`` over an in-memory tree: Pkg#1 (Alert 1201, DevInfo,
MD5 Cred with the nonce the server issued last), then Pkg#3 (Status and Results of the
``./SCOMO/Inventory?list=StructData`` Get the server sends), two POSTs per session. Each
POST is one DM message. For the echo endpoints every POST carries a real Pkg#1 body.

Each figure is the median of ``--runs`` runs of ``--seconds`` seconds after a warm-up;
runs are interleaved (run 1 of every endpoint, then run 2...) so that a neighbour's load on
a shared machine hits all endpoints alike. Server CPU per message comes from
``/proc/<pid>/stat`` over the same window; it moves less than the rates when the machine is
shared.

The closing part explains the omadm figure on one engine (``--profile-db``):

1. the server under the same load with ``cProfile`` timing the main thread's CPU time, own
   time grouped by where it goes (XML, session logic, SQLAlchemy, driver, pickle, HTTP...),
   plus the SQL statements per message and, on SQLite, what aiosqlite's thread did;
2. the DM endpoint's steps timed with one device (wall time: nothing interleaves, and no
   profiler inflates Python-heavy code);
3. what one SQL statement costs through each layer (driver, Core, ORM, a transaction).
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import functools
import importlib.metadata
import json
import logging
import os
import platform
import pstats
import secrets
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Awaitable, Callable, Iterator, Sequence
from contextlib import asynccontextmanager, contextmanager, suppress
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from omadm.protocol.auth import HMAC_HEADER
from omadm.protocol.codes import AuthType
from omadm.protocol.messages import Alert, Get, Item, ItemCommand, Meta, Source
from omadm.protocol.session import (
    ClientConfig,
    ClientSession,
    Credentials,
    NonceReceived,
    Outcome,
    Outgoing,
)
from omadm.protocol.testing import MemoryTree

HOST = "127.0.0.1"
DEFAULT_PG_ADMIN = "postgresql://postgres@127.0.0.1:5432/postgres"
ENDPOINTS = ("echo", "echo-tx", "omadm")
LABELS = {
    "echo": "bare echo",
    "echo-tx": "echo + 1 transaction",
    "omadm": "omadm Pkg#1/Pkg#3",
    "echo-httpx": "bare echo, httpx client",
}
DM_XML = "application/vnd.syncml.dm+xml"
PASSWORD = "bench-device-pw"
SECRET = "omadm-bench-secret"
LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"  # what ``omadm server`` logs


class BenchError(Exception):
    """The benchmark cannot go on (a server that does not start, a refused message...)."""


# ================================================================================ devices


def device_id(index: int) -> str:
    return f"IMEI:35{index:013d}"


def username(index: int) -> str:
    return f"bench-{index:04d}"


def devinfo(index: int) -> tuple[tuple[str, str], ...]:
    """The five DevInfo leaves a device reports in Pkg#1."""
    return (
        ("./DevInfo/DevId", device_id(index)),
        ("./DevInfo/Man", "Acme Devices Ltd"),
        ("./DevInfo/Mod", "AX-200"),
        ("./DevInfo/DmV", "1.2"),
        ("./DevInfo/Lang", "en-US"),
    )


class InventoryTree(MemoryTree):
    """``MemoryTree`` plus ``Get <uri>?list=StructData`` (the server's inventory question)."""

    def execute(self, command: ItemCommand | Alert) -> list[Outcome]:
        if isinstance(command, Get) and len(command.items) == 1:
            target = command.items[0].target
            uri, _, query = (target.loc_uri if target else "").partition("?")
            if query == "list=StructData" and uri in self.nodes:
                return [Outcome(200, results=self._struct_data(uri))]
        return super().execute(command)

    def _struct_data(self, uri: str) -> tuple[Item, ...]:
        items: list[Item] = []
        for path in sorted(p for p in self.nodes if p == uri or p.startswith(uri + "/")):
            value = self.nodes[path]
            if value is None:  # interior: Meta Format node, no data in StructData
                items.append(Item(source=Source(path), meta=Meta(format="node")))
            elif path.endswith(("/State", "/Status")):
                items.append(Item(source=Source(path), meta=Meta(format="int"), data=value))
            else:
                items.append(Item(source=Source(path), data=value))
        return tuple(items)


def inventory_tree() -> InventoryTree:
    """A small, realistic SCOMO subtree: two deployed components and one delivered package."""
    tree = InventoryTree()
    for interior in (
        "./SCOMO",
        "./SCOMO/Download",
        "./SCOMO/Inventory",
        "./SCOMO/Inventory/Deployed",
        "./SCOMO/Inventory/Delivered",
    ):
        tree.nodes[interior] = None
    components = {
        "Deployed/telemetry": {
            "ID": "com.acme.telemetry",
            "Name": "Acme Telemetry Agent",
            "Version": "3.0.4",
            "Description": "Uploads device health every hour",
            "State": "20",
        },
        "Deployed/ota-helper": {
            "ID": "com.acme.ota-helper",
            "Name": "OTA helper",
            "Version": "1.2.0",
            "Description": "",
            "State": "10",
        },
        "Delivered/pkg-3_1_0": {
            "PkgID": "com.acme.telemetry-3.1.0",
            "Name": "Acme Telemetry Agent 3.1.0",
            "Version": "3.1.0",
            "Description": "Next telemetry release",
            "State": "20",
            "Status": "10",
            "EnvType": "linux-aarch64",
        },
    }
    for node, leaves in components.items():
        base = f"./SCOMO/Inventory/{node}"
        tree.nodes[base] = None
        tree.nodes[f"{base}/Operations"] = None
        for name, value in leaves.items():
            tree.nodes[f"{base}/{name}"] = value
    return tree


def pkg1_body(index: int = 0, port: int = 8700) -> bytes:
    """A real Pkg#1 (the echo endpoints' request body): Alert 1201, DevInfo, MD5 Cred."""
    session = ClientSession(
        ClientConfig(
            device_id=device_id(index),
            server_uri=f"http://{HOST}:{port}/dm",
            credentials=Credentials(AuthType.MD5, username(index), PASSWORD),
            client_nonce=b"bench-nonce-0001",
            devinfo=devinfo(index),
        ),
        inventory_tree(),
    )
    return session.start().body


# ======================================================================= servers (--role serve)


def echo_app() -> Any:
    from starlette.applications import Starlette  # noqa: PLC0415 - server processes only
    from starlette.requests import Request  # noqa: PLC0415
    from starlette.responses import Response  # noqa: PLC0415
    from starlette.routing import Route  # noqa: PLC0415

    async def echo(request: Request) -> Response:
        body = await request.body()
        return Response(body, media_type=request.headers.get("content-type"))

    return Starlette(routes=[Route("/dm", echo, methods=["POST"])])


def echo_tx_app(url: str, pool_size: int) -> Any:
    """Echo, after one committed UPDATE of the client's row (``?c=<n>``) in ``bench_echo``."""
    from sqlalchemy import text  # noqa: PLC0415
    from starlette.applications import Starlette  # noqa: PLC0415
    from starlette.requests import Request  # noqa: PLC0415
    from starlette.responses import Response  # noqa: PLC0415
    from starlette.routing import Route  # noqa: PLC0415

    from omadm.server.store.engine import make_engine, session_factory  # noqa: PLC0415

    engine = make_engine(url, pool_size=pool_size) if pool_size else make_engine(url)
    sessions = session_factory(engine)
    update = text("UPDATE bench_echo SET n = n + 1 WHERE id = :id")

    async def echo(request: Request) -> Response:
        body = await request.body()
        row = int(request.query_params.get("c", "1"))
        async with sessions() as db, db.begin():
            await db.execute(update, {"id": row})
        return Response(body, media_type=request.headers.get("content-type"))

    @asynccontextmanager
    async def lifespan(app: Starlette) -> Any:
        yield
        await engine.dispose()

    return Starlette(routes=[Route("/dm", echo, methods=["POST"])], lifespan=lifespan)


def omadm_app(url: str, port: int, data_dir: Path, pool_size: int) -> Any:
    from omadm.server.app import create_app  # noqa: PLC0415
    from omadm.server.config import ServerConfig  # noqa: PLC0415
    from omadm.server.store.engine import make_engine  # noqa: PLC0415

    config = ServerConfig(host=HOST, port=port, db=url, data_dir=data_dir, secret=SECRET)
    engine = make_engine(url, pool_size=pool_size) if pool_size else None  # None: the server's own
    return create_app(config.validate(), engine=engine)


class Instruments:
    """What the profiled server counts beside cProfile: SQL statements, and aiosqlite's thread.

    cProfile sees only the thread it runs in, and C calls made from C (aiosqlite calls the
    sqlite3 methods through ``functools.partial``) not at all; so each job aiosqlite hands
    its worker thread is timed here, by operation (``execute BEGIN``, ``commit``...).
    """

    def __init__(self) -> None:
        self.statements: dict[str, int] = {}
        self.commits = 0
        self.driver: dict[str, list[float]] = {}  # operation -> [calls, seconds]
        self._lock = threading.Lock()

    def install(self) -> None:
        from sqlalchemy import event  # noqa: PLC0415
        from sqlalchemy.engine import Engine  # noqa: PLC0415

        def on_execute(conn: Any, cursor: Any, statement: str, *rest: Any) -> None:
            verb = statement.split(None, 1)[0].upper() if statement.strip() else "?"
            self.statements[verb] = self.statements.get(verb, 0) + 1

        def on_commit(conn: Any) -> None:
            self.commits += 1

        event.listen(Engine, "before_cursor_execute", on_execute)
        event.listen(Engine, "commit", on_commit)
        try:
            from aiosqlite import core  # noqa: PLC0415
        except ImportError:
            return
        original: Callable[..., Awaitable[Any]] = core.Connection._execute

        def timed(name: str, function: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
            started = time.perf_counter()
            try:
                return function(*args, **kwargs)
            finally:
                elapsed = time.perf_counter() - started
                with self._lock:
                    entry = self.driver.setdefault(name, [0, 0.0])
                    entry[0] += 1
                    entry[1] += elapsed

        async def execute(connection: Any, function: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
            name = getattr(function, "__name__", type(function).__name__)
            if name == "execute" and args and isinstance(args[0], str):
                name = f"execute {args[0].split(None, 1)[0].upper()}"
            return await original(connection, functools.partial(timed, name, function), *args, **kwargs)

        core.Connection._execute = execute  # type: ignore[method-assign,assignment]

    def dump(self, path: Path, writer: Any = None, rows: Any = None) -> None:
        data: dict[str, Any] = {"statements": self.statements, "commits": self.commits, "driver": self.driver}
        if writer is not None:  # the DM writer's group commit: messages and the transactions they shared
            data["writer"] = {
                "writes": writer.writes,
                "batches": writer.batches,
                "kept": rows.hits if rows is not None else 0,
            }
        path.write_text(json.dumps(data))


#: DMEndpoint steps timed by ``--stages`` (those that exist in this version of the server).
ENDPOINT_STEPS = (
    "__call__",
    "_transaction",
    "_handle",
    "_load",
    "_admit",
    "_apply",
    "_on_results",
    "_send_work",
    "_poll_overdue",
    "_save",
)


class StageTimers:
    """Wall time of the DM endpoint's steps; meaningful with one client (nothing interleaves)."""

    def __init__(self) -> None:
        self.times: dict[str, list[float]] = {}

    def _add(self, name: str, started: float) -> None:
        entry = self.times.setdefault(name, [0, 0.0])
        entry[0] += 1
        entry[1] += time.perf_counter() - started

    def _wrap_async(self, owner: Any, name: str, label: str) -> None:
        original = getattr(owner, name)

        @functools.wraps(original)
        async def timed(*args: Any, **kwargs: Any) -> Any:
            started = time.perf_counter()
            try:
                return await original(*args, **kwargs)
            finally:
                self._add(label, started)

        setattr(owner, name, timed)

    def _wrap(self, owner: Any, name: str, label: str) -> None:
        original = getattr(owner, name)

        @functools.wraps(original)
        def timed(*args: Any, **kwargs: Any) -> Any:
            started = time.perf_counter()
            try:
                return original(*args, **kwargs)
            finally:
                self._add(label, started)

        setattr(owner, name, timed)

    def install(self) -> None:
        from omadm.protocol import codec  # noqa: PLC0415 - the endpoint calls codec.decode
        from omadm.protocol.session import ServerSession  # noqa: PLC0415
        from omadm.server import dm_endpoint  # noqa: PLC0415

        for name in ENDPOINT_STEPS:
            if name in vars(dm_endpoint.DMEndpoint):
                self._wrap_async(dm_endpoint.DMEndpoint, name, f"DMEndpoint.{name}")
        self._wrap(codec, "decode", "codec.decode (request)")
        for name in ("restore", "receive_message", "reply", "snapshot"):
            self._wrap(ServerSession, name, f"ServerSession.{name}")
        self._wrap(dm_endpoint.log, "info", "log.info (the message's line)")

    def dump(self, path: Path) -> None:
        path.write_text(json.dumps(self.times))


def serve(args: argparse.Namespace) -> int:
    import uvicorn  # noqa: PLC0415

    data_dir = Path(args.data_dir)
    if args.endpoint == "echo":
        app = echo_app()
    elif args.endpoint == "echo-tx":
        app = echo_tx_app(args.url, args.pool_size)
    else:
        if args.server_log != "off":
            logging.basicConfig(level=logging.INFO, format=LOG_FORMAT, stream=sys.stderr)
        app = omadm_app(args.url, args.port, data_dir, args.pool_size)
    # The settings of ``omadm server`` (cli.serve), one worker; --loop/--http force a choice
    # uvicorn otherwise makes itself ("auto": uvloop and httptools when they import).
    config = uvicorn.Config(
        app,
        host=HOST,
        port=args.port,
        access_log=False,
        log_level="warning",
        timeout_graceful_shutdown=10,
        loop=args.loop,
        http=args.http,
    )
    server = uvicorn.Server(config)
    if not args.profile:
        timers = StageTimers() if args.stages else None
        if timers is not None:
            timers.install()
        with suppress(KeyboardInterrupt):  # uvicorn re-raises the SIGINT it shut down on
            server.run()
        if timers is not None:
            timers.dump(Path(args.stages))
        return 0
    instruments = Instruments()
    instruments.install()
    # CPU time of this thread: time descheduled (a busy neighbour, the GIL held by aiosqlite's
    # threads) and time waiting in epoll are not counted against the function that waited.
    profile = cProfile.Profile(time.thread_time)

    async def profiled() -> None:
        # Profile from "started" on: start-up (imports, schema check) is not what we measure.
        serving = asyncio.create_task(server.serve())
        while not server.started and not serving.done():
            await asyncio.sleep(0.01)
        profile.enable()
        try:
            await serving
        finally:
            profile.disable()

    try:
        asyncio.run(profiled())
    except KeyboardInterrupt:
        pass
    finally:
        profile.dump_stats(args.profile)
        instruments.dump(
            Path(args.profile + ".json"),
            getattr(app.state, "writer", None),
            getattr(app.state, "dm_rows", None),
        )
    return 0


# ==================================================================== load (--role load)


@dataclass(frozen=True, slots=True)
class Reply:
    status: int
    headers: dict[str, str]
    body: bytes


Post = Callable[[str, bytes, str, dict[str, str]], Awaitable[Reply]]


class RawConnection(asyncio.Protocol):
    """One keep-alive HTTP/1.1 connection, one request at a time; replies need Content-Length."""

    def __init__(self, port: int) -> None:
        self._host = f"{HOST}:{port}"
        self._transport: asyncio.Transport | None = None
        self._buffer = bytearray()
        self._head: tuple[int, dict[str, str]] | None = None
        self._length = 0
        self._waiter: asyncio.Future[Reply] | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self._transport = transport

    def connection_lost(self, exc: Exception | None) -> None:
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_exception(ConnectionError(f"the server closed the connection: {exc}"))

    def data_received(self, data: bytes) -> None:
        self._buffer += data
        if self._head is None:
            end = self._buffer.find(b"\r\n\r\n")
            if end < 0:
                return
            lines = self._buffer[:end].decode("latin-1").split("\r\n")
            del self._buffer[: end + 4]
            headers: dict[str, str] = {}
            for line in lines[1:]:
                name, _, value = line.partition(":")
                headers[name.strip().lower()] = value.strip()
            if "content-length" not in headers:
                raise BenchError(f"a reply without Content-Length: {lines[0]} {headers}")
            self._head = (int(lines[0].split(" ", 2)[1]), headers)
            self._length = int(headers["content-length"])
        if len(self._buffer) < self._length:
            return
        status, headers = self._head
        body = bytes(self._buffer[: self._length])
        del self._buffer[: self._length]
        self._head = None
        waiter, self._waiter = self._waiter, None
        if waiter is not None and not waiter.done():
            waiter.set_result(Reply(status, headers, body))

    async def post(self, target: str, body: bytes, content_type: str, headers: dict[str, str]) -> Reply:
        assert self._transport is not None and self._waiter is None
        extra = "".join(f"{name}: {value}\r\n" for name, value in headers.items())
        head = (
            f"POST {target} HTTP/1.1\r\nHost: {self._host}\r\nContent-Type: {content_type}\r\n"
            f"Content-Length: {len(body)}\r\n{extra}\r\n"
        )
        self._waiter = asyncio.get_running_loop().create_future()
        self._transport.write(head.encode("latin-1") + body)
        return await self._waiter

    def close(self) -> None:
        if self._transport is not None:
            self._transport.close()


@dataclass
class Window:
    """The timed part of a load run: messages completed in [start, stop) count."""

    start: float
    stop: float
    messages: int = 0
    all_messages: int = 0
    latencies: list[float] = field(default_factory=list)
    sessions: int = 0
    retried: int = 0  # DM sessions that needed more than two POSTs (a challenge)
    without_get: int = 0  # DM sessions in which the server asked nothing (should be none)

    def over(self) -> bool:
        return time.perf_counter() >= self.stop

    def record(self, started: float, ended: float) -> None:
        self.all_messages += 1
        if self.start <= ended < self.stop:
            self.messages += 1
            self.latencies.append(ended - started)


def _target(url: str | None) -> str:
    parts = urlsplit(url or "/dm")
    return parts.path + (f"?{parts.query}" if parts.query else "")


async def echo_client(post: Post, row: int, body: bytes, window: Window) -> None:
    target = f"/dm?c={row}"
    while not window.over():
        started = time.perf_counter()
        reply = await post(target, body, DM_XML, {})
        window.record(started, time.perf_counter())
        if reply.status != 200 or len(reply.body) != len(body):
            raise BenchError(f"echo answered {reply.status} with {len(reply.body)} bytes")


async def device_client(post: Post, index: int, port: int, nonces: dict[str, str], window: Window) -> None:
    """One device: DM sessions back to back; the last one in flight at ``stop`` is finished."""
    dev = device_id(index)
    tree = inventory_tree()
    number = 0
    while not window.over():
        number += 1
        session = ClientSession(
            ClientConfig(
                device_id=dev,
                server_uri=f"http://{HOST}:{port}/dm",
                credentials=Credentials(AuthType.MD5, username(index), PASSWORD),
                client_nonce=bytes.fromhex(nonces.get(dev, "")),
                session_id=f"{number:X}",
                devinfo=devinfo(index),
            ),
            tree,
        )
        out: Outgoing | None = session.start()
        posts = 0
        while out is not None:
            started = time.perf_counter()
            reply = await post(_target(out.url), out.body, out.content_type, out.headers)
            window.record(started, time.perf_counter())
            posts += 1
            if reply.status != 200:
                raise BenchError(f"{dev}: HTTP {reply.status}: {reply.body[:300]!r}")
            events = session.receive(
                reply.body,
                hmac_header=reply.headers.get(HMAC_HEADER),
                content_type=reply.headers.get("content-type"),
            )
            for event in events:
                if isinstance(event, NonceReceived):
                    nonces[dev] = event.nonce.hex()
            out = session.reply()
        window.sessions += 1
        window.retried += posts > 2
        window.without_get += session.commands_received == 0


def thread_cpu(pid: int) -> dict[str, float]:
    """CPU seconds of each thread of process ``pid`` by thread name (the main one as "main")."""
    found: dict[str, float] = {}
    for task in Path(f"/proc/{pid}/task").glob("*"):
        try:
            text = (task / "stat").read_text()
        except OSError:
            continue
        name = "main" if task.name == str(pid) else text[text.index("(") + 1 : text.rindex(")")]
        fields = text.rpartition(")")[2].split()
        found[name] = found.get(name, 0.0) + (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    return found


def process_cpu(pid: int) -> float | None:
    """User + system CPU seconds of process ``pid`` (all threads), from /proc; None elsewhere."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    except OSError:
        return None
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


async def _httpx_posts(port: int, clients: int) -> tuple[list[Post], Callable[[], Awaitable[None]]]:
    import httpx  # noqa: PLC0415

    client = httpx.AsyncClient(
        base_url=f"http://{HOST}:{port}",
        limits=httpx.Limits(max_connections=clients, max_keepalive_connections=clients),
    )

    async def post(target: str, body: bytes, content_type: str, headers: dict[str, str]) -> Reply:
        response = await client.post(target, content=body, headers={"content-type": content_type, **headers})
        return Reply(response.status_code, dict(response.headers), response.content)

    return [post] * clients, client.aclose


async def load(args: argparse.Namespace) -> dict[str, Any]:
    loop = asyncio.get_running_loop()
    rows = range(args.first, args.first + args.clients)
    closers: list[Callable[[], Any]] = []
    if args.http_client == "httpx":
        posts, aclose = await _httpx_posts(args.port, args.clients)
    else:
        posts = []
        for _ in rows:
            _, connection = await loop.create_connection(lambda: RawConnection(args.port), HOST, args.port)
            posts.append(connection.post)
            closers.append(connection.close)
    state = Path(args.state) if args.state else None
    nonces: dict[str, str] = json.loads(state.read_text()) if state and state.exists() else {}
    now = time.perf_counter()
    window = Window(start=now + args.warmup, stop=now + args.warmup + args.seconds)
    samples: dict[str, float] = {}
    threads: dict[str, dict[str, float]] = {}

    async def sample() -> None:
        for name, moment in (("start", window.start), ("stop", window.stop)):
            await asyncio.sleep(max(0.0, moment - time.perf_counter()))
            samples[f"{name}_wall"] = time.perf_counter()
            samples[f"{name}_own"] = time.process_time()
            server = process_cpu(args.server_pid) if args.server_pid else None
            if server is not None:
                samples[f"{name}_server"] = server
                threads[name] = thread_cpu(args.server_pid)

    if args.endpoint == "omadm":
        clients = [
            device_client(post, row, args.port, nonces, window) for post, row in zip(posts, rows, strict=True)
        ]
    else:
        body = pkg1_body(0, args.port)
        clients = [echo_client(post, row, body, window) for post, row in zip(posts, rows, strict=True)]
    await asyncio.gather(sample(), *clients)
    if args.http_client == "httpx":
        await aclose()
    for close in closers:
        close()
    if state is not None:
        state.write_text(json.dumps(nonces))
    wall = samples["stop_wall"] - samples["start_wall"]
    server_cpu = samples.get("stop_server", 0.0) - samples.get("start_server", 0.0)
    return {
        "messages": window.messages,
        "all_messages": window.all_messages,
        "seconds": args.seconds,
        "latencies": window.latencies,
        "loadgen_cpu": (samples["stop_own"] - samples["start_own"]) / wall,
        "server_cpu": server_cpu if "stop_server" in samples else None,
        "server_cpu_share": server_cpu / wall if "stop_server" in samples else None,
        "server_threads": {
            name: cpu - threads.get("start", {}).get(name, 0.0)
            for name, cpu in threads.get("stop", {}).items()
        },
        "sessions": window.sessions,
        "retried": window.retried,
        "without_get": window.without_get,
    }


# ================================================================================ databases


def _libpq(url: str) -> str:
    from sqlalchemy.engine import make_url  # noqa: PLC0415

    return make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)


async def _pg_admin(admin_url: str, *statements: tuple[Any, ...]) -> None:
    import asyncpg  # type: ignore[import-untyped]  # noqa: PLC0415

    connection = await asyncpg.connect(_libpq(admin_url), timeout=10)
    try:
        for statement, *params in statements:
            await connection.execute(statement, *params)
    finally:
        await connection.close()


@contextmanager
def database(kind: str, workdir: Path, pg_admin: str) -> Iterator[str]:
    """A new, empty database of ``kind``; yields its URL, drops it afterwards."""
    if kind == "sqlite":
        yield f"sqlite:///{workdir / 'omadm-bench.sqlite'}"
        return
    from sqlalchemy.engine import make_url  # noqa: PLC0415

    name = f"omadm_bench_{secrets.token_hex(4)}"
    asyncio.run(_pg_admin(pg_admin, (f'CREATE DATABASE "{name}"',)))
    try:
        yield make_url(pg_admin).set(database=name).render_as_string(hide_password=False)
    finally:
        asyncio.run(
            _pg_admin(
                pg_admin,
                (
                    "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
                    " WHERE datname = $1 AND pid <> pg_backend_pid()",
                    name,
                ),
                (f'DROP DATABASE IF EXISTS "{name}"',),
            )
        )


def prepare(url: str, clients: int) -> None:
    """Migrate; add the echo table (one row per client) and one MD5 device per client."""
    from sqlalchemy import text  # noqa: PLC0415

    from omadm.server.registry import add_device  # noqa: PLC0415
    from omadm.server.store.engine import make_engine, session_factory  # noqa: PLC0415
    from omadm.server.store.migrate import migrate  # noqa: PLC0415

    migrate(url)

    async def fill() -> None:
        engine = make_engine(url)
        try:
            async with session_factory(engine)() as db, db.begin():
                await db.execute(text("CREATE TABLE bench_echo (id INTEGER PRIMARY KEY, n INTEGER NOT NULL)"))
                for row in range(clients):
                    await db.execute(text("INSERT INTO bench_echo (id, n) VALUES (:id, 0)"), {"id": row})
                for index in range(clients):
                    await add_device(db, device_id(index), username=username(index), password=PASSWORD)
        finally:
            await engine.dispose()

    asyncio.run(fill())


# ============================================================================== orchestration


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind((HOST, 0))
        port: int = sock.getsockname()[1]
        return port


@dataclass
class Server:
    process: subprocess.Popen[bytes]
    port: int

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGINT)  # uvicorn shuts down gracefully
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


#: uvicorn's event loop and HTTP parser for every server this run starts (--loop, --http).
UVICORN = {"loop": "auto", "http": "auto"}


def start_server(
    endpoint: str,
    url: str,
    workdir: Path,
    *,
    profile: Path | None = None,
    stages: Path | None = None,
    log: str,
    pool_size: int = 0,
) -> Server:
    port = free_port()
    command = [
        sys.executable,
        __file__,
        "--role=serve",
        f"--endpoint={endpoint}",
        f"--url={url}",
        f"--port={port}",
        f"--data-dir={workdir}",
        f"--server-log={log}",
        f"--pool-size={pool_size}",
        f"--loop={UVICORN['loop']}",
        f"--http={UVICORN['http']}",
    ]
    if profile is not None:
        command.append(f"--profile={profile}")
    if stages is not None:
        command.append(f"--stages={stages}")
    stderr = (workdir / f"server-{endpoint}.log").open("ab")
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=stderr)
    stderr.close()
    server = Server(process, port)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise BenchError(f"the {endpoint} server exited with {process.returncode}: see {stderr.name}")
        with suppress(OSError), socket.create_connection((HOST, port), timeout=0.2):
            return server
        time.sleep(0.05)
    server.stop()
    raise BenchError(f"the {endpoint} server did not listen within 60 s")


def run_load(
    endpoint: str,
    server: Server,
    args: argparse.Namespace,
    state: Path,
    *,
    seconds: float,
    http_client: str = "raw",
    clients: int = 0,
) -> dict[str, Any]:
    """Start the load generator process(es) and merge their figures."""
    clients = clients or args.clients
    loaders = max(1, min(args.loaders, clients))
    share = [clients // loaders + (i < clients % loaders) for i in range(loaders)]
    processes = []
    first = 0
    for number, count in enumerate(share):
        command = [
            sys.executable,
            __file__,
            "--role=load",
            f"--endpoint={endpoint}",
            f"--port={server.port}",
            f"--clients={count}",
            f"--first={first}",
            f"--seconds={seconds}",
            f"--warmup={args.warmup}",
            f"--http-client={http_client}",
            f"--state={state.with_suffix(f'.{number}.json')}",
            f"--server-pid={server.process.pid if number == 0 else 0}",
        ]
        first += count
        processes.append(subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE))
    results = []
    for process in processes:
        out, err = process.communicate(timeout=seconds + args.warmup + 120)
        if process.returncode != 0:
            raise BenchError(f"the load generator failed ({endpoint}):\n{err.decode(errors='replace')}")
        results.append(json.loads(out))
    merged = dict(results[0])
    for extra in results[1:]:
        for key in ("messages", "all_messages", "sessions", "retried", "without_get"):
            merged[key] += extra[key]
        merged["latencies"] = merged["latencies"] + extra["latencies"]
        merged["loadgen_cpu"] += extra["loadgen_cpu"]
    if endpoint == "omadm" and (merged["without_get"] or not merged["sessions"]):
        raise BenchError(f"omadm sessions without the inventory Get: {merged['without_get']}")
    return merged


def percentile(values: list[float], fraction: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))]


@dataclass
class Figures:
    """The runs of one endpoint on one engine."""

    engine: str
    endpoint: str
    runs: list[dict[str, Any]] = field(default_factory=list)

    def rates(self) -> list[float]:
        return [run["messages"] / run["seconds"] for run in self.runs]

    def rate(self) -> float:
        return statistics.median(self.rates())

    def median_of(self, pick: Callable[[dict[str, Any]], float | None]) -> float:
        values = [v for v in (pick(run) for run in self.runs) if v is not None]
        return statistics.median(values) if values else float("nan")

    def cpu_per_message(self) -> float:
        """Median server CPU µs per message: steadier than the rate when the machine is shared."""
        return self.median_of(lambda r: r["server_cpu"] / r["messages"] * 1e6 if r["server_cpu"] else None)

    def thread_cpu(self) -> dict[str, float]:
        """Median server CPU µs per message of each thread that did work."""
        names = {name for run in self.runs for name in run.get("server_threads", {})}

        def per_message(name: str) -> Callable[[dict[str, Any]], float]:
            return lambda run: run["server_threads"].get(name, 0.0) / run["messages"] * 1e6

        return {name: self.median_of(per_message(name)) for name in sorted(names)}

    def cells(self, reference: Figures | None) -> tuple[str, ...]:
        rates = self.rates()
        spread = f"{min(rates):,.0f}-{max(rates):,.0f}" if len(rates) > 1 else "-"
        cpu_us = self.cpu_per_message()
        ratio = f"{self.rate() / reference.rate():.0%}" if reference is not None else ""
        retried = sum(run["retried"] for run in self.runs)
        return (
            self.engine,
            LABELS[self.endpoint],
            f"{self.rate():,.0f}",
            spread,
            f"{self.median_of(lambda r: percentile(r['latencies'], 0.5)) * 1e3:.2f}",
            f"{self.median_of(lambda r: percentile(r['latencies'], 0.99)) * 1e3:.2f}",
            f"{cpu_us:,.0f}",
            f"{self.median_of(lambda r: r['server_cpu_share']):.0%}",
            f"{self.median_of(lambda r: r['loadgen_cpu']):.0%}",
            ratio,
            str(retried) if self.endpoint == "omadm" else "",
        )


TABLE_HEADER = (
    "engine",
    "endpoint",
    "msg/s",
    "min-max",
    "p50 ms",
    "p99 ms",
    "srv CPU µs/msg",
    "srv CPU",
    "loadgen CPU",
    "omadm/echo+tx",
    "challenged",
)


def table(header: tuple[str, ...], rows: Sequence[tuple[str, ...]], text_columns: int = 2) -> list[str]:
    widths = [max(len(line[i]) for line in (header, *rows)) for i in range(len(header))]

    def fmt(line: tuple[str, ...]) -> str:
        return "  ".join(
            v.ljust(w) if i < text_columns else v.rjust(w)
            for i, (v, w) in enumerate(zip(line, widths, strict=True))
        ).rstrip()

    return [fmt(header), "  ".join("-" * w for w in widths), *(fmt(line) for line in rows)]


# =================================================================================== profile

#: Where a function's own time goes: first match on (file, name) wins; the rest is "other".
CATEGORIES: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("idle: event loop waiting (epoll)", ("'poll' of 'select.epoll'",)),
    ("logging (one INFO line per message)", ("/logging/",)),
    (
        "XML decode/encode (codec, lxml)",
        ("omadm/protocol/xml_codec.py", "omadm/protocol/codec.py", "omadm/protocol/wbxml.py", "lxml"),
    ),
    ("bench instrumentation (not the server)", ("bench/server.py",)),
    (
        "pickle/snapshot + HMAC seal",
        (
            "_pickle",
            "copyreg",
            "pickle.py",
            "hmac.py",
            "_hashlib",
            "_operator.compare_digest",
            # slotted dataclasses pickle through these (fields() on every object)
            "dataclasses.py _dataclass_",
            "dataclasses.py fields",
            "dataclasses.py <genexpr>",
            "dataclasses.py <listcomp>",
        ),
    ),
    ("DM session logic (omadm.protocol)", ("omadm/protocol/",)),
    ("server endpoint + registry (omadm.server)", ("omadm/server/",)),
    ("SQLAlchemy (ORM, Core, greenlet bridge)", ("sqlalchemy", "greenlet")),
    ("driver (aiosqlite hand-off, asyncpg)", ("aiosqlite/", "asyncpg", "sqlite3", "_queue.SimpleQueue")),
    ("HTTP: uvicorn, h11, Starlette, FastAPI", ("uvicorn/", "/h11/", "starlette/", "fastapi/", "anyio/")),
    ("socket syscalls", ("_socket.socket",)),
    ("asyncio event loop (busy)", ("asyncio/", "_asyncio", "selectors.py", "contextvars", "_contextvars")),
    ("dataclasses, enum, typing, copy (stdlib)", ("dataclasses.py", "enum.py", "typing.py", "copy.py")),
)

StatsKey = tuple[str, int, str]


def category(key: StatsKey) -> str:
    filename, _, name = key
    where = f"{filename} {name}"
    for label, needles in CATEGORIES:
        if any(needle in where for needle in needles):
            return label
    return "other"


def _short(key: StatsKey) -> str:
    filename, line, name = key
    if filename == "~":
        return name
    for marker in ("site-packages/", "/src/", "/lib/python3"):
        if marker in filename:
            filename = filename.split(marker, 1)[1]
            break
    return f"{filename}:{line} {name}"


Raw = dict[StatsKey, tuple[int, int, float, float, Any]]


def _grouped(raw: Raw) -> dict[str, float]:
    """Own time by category; builtins of no category (isinstance, len...) go to their callers'."""
    groups: dict[str, float] = {}
    for key, (_, _, own, _, callers) in raw.items():
        label = category(key)
        if label == "other" and key[0] == "~" and callers:
            for caller, edge in callers.items():
                caller_label = category(caller)
                groups[caller_label] = groups.get(caller_label, 0.0) + edge[2]
            continue
        groups[label] = groups.get(label, 0.0) + own
    return groups


def profile_report(path: Path, messages: int) -> list[str]:
    raw: Raw = pstats.Stats(str(path)).stats  # type: ignore[attr-defined]
    per_msg = 1e6 / max(messages, 1)
    lines: list[str] = []
    groups = _grouped(raw)
    busy = sum(v for k, v in groups.items() if not k.startswith("idle"))
    rows = [
        (
            label,
            f"{seconds:.2f}",
            "" if label.startswith("idle") else f"{seconds / busy:.0%}",
            f"{seconds * per_msg:,.0f}",
        )
        for label, seconds in sorted(groups.items(), key=lambda kv: -kv[1])
    ]
    lines.append(
        f"Where the main thread's time goes (own time of each function; builtins such as isinstance"
        f" count for their caller; {messages:,} messages):"
    )
    lines += table(("category", "s", "% of busy", "µs/msg"), rows, text_columns=1)
    lines.append(f"busy: {busy * per_msg:,.0f} µs/msg (cProfile inflates Python-heavy code more than C)")
    lines.append("")
    lines.append("Top functions by own time:")
    top = sorted(raw.items(), key=lambda kv: -kv[1][2])[:20]
    lines += table(
        ("function", "calls/msg", "own µs/msg"),
        [(_short(k)[:100], f"{v[1] / max(messages, 1):.1f}", f"{v[2] * per_msg:,.1f}") for k, v in top],
        text_columns=1,
    )
    counts = Path(str(path) + ".json")
    if counts.exists():
        data = json.loads(counts.read_text())
        lines.append("")
        statements = sorted(data["statements"].items(), key=lambda kv: -kv[1])
        total = sum(n for _, n in statements)
        lines.append(
            f"SQL per message: {total / max(messages, 1):.2f} statements ("
            + ", ".join(f"{verb} {n / max(messages, 1):.2f}" for verb, n in statements)
            + f"), {data['commits'] / max(messages, 1):.2f} commits"
        )
        writer = data.get("writer")
        if writer and writer["batches"]:
            lines.append(
                f"DM writer (group commit): {writer['writes']:,} messages in {writer['batches']:,}"
                f" transactions, {writer['writes'] / writer['batches']:.1f} per commit;"
                f" {writer.get('kept', 0):,} decided on the rows kept from the device's previous message"
            )
        if data["driver"]:
            lines.append("")
            lines.append("aiosqlite worker threads (beside the main thread; BEGIN IMMEDIATE includes")
            lines.append("the wait for SQLite's write lock, commit includes the WAL fsync):")
            driver_rows = [
                (
                    name,
                    f"{calls / max(messages, 1):.2f}",
                    f"{seconds / calls * 1e6:,.0f}",
                    f"{seconds * per_msg:,.0f}",
                )
                for name, (calls, seconds) in sorted(data["driver"].items(), key=lambda kv: -kv[1][1])
            ]
            lines += table(("operation", "calls/msg", "µs/call", "µs/msg"), driver_rows, text_columns=1)
    return lines


def stage_report(path: Path, messages: int) -> list[str]:
    times: dict[str, list[float]] = json.loads(path.read_text())
    per = max(messages, 1)
    rows = [
        (name, f"{calls / per:.2f}", f"{seconds / per * 1e6:,.0f}")
        for name, (calls, seconds) in sorted(times.items(), key=lambda kv: -kv[1][1])
    ]
    return table(("step (nested steps are included in their callers)", "calls/msg", "µs/msg"), rows, 1)


async def _statement_costs(url: str, repeat: int) -> list[tuple[str, float, float]]:
    """Wall and main-thread CPU µs of one statement, from the driver up to the ORM."""
    from sqlalchemy import select, text  # noqa: PLC0415

    from omadm.server.store.engine import make_engine, session_factory  # noqa: PLC0415
    from omadm.server.store.models import Device, Job, JobState  # noqa: PLC0415

    engine = make_engine(url)
    sessions = session_factory(engine)
    found: list[tuple[str, float, float]] = []

    async def timed(label: str, work: Callable[[], Awaitable[object]]) -> None:
        for _ in range(max(3, repeat // 10)):  # warm-up: connections, statement caches
            await work()
        wall, cpu = time.perf_counter(), time.thread_time()
        for _ in range(repeat):
            await work()
        found.append(
            (label, (time.perf_counter() - wall) / repeat * 1e6, (time.thread_time() - cpu) / repeat * 1e6)
        )

    try:
        async with sessions() as db, db.begin():
            connection = await db.connection()
            raw = (await connection.get_raw_connection()).driver_connection
            assert raw is not None

            async def driver() -> None:
                if hasattr(raw, "fetchval"):  # asyncpg
                    await raw.fetchval("SELECT 1")
                else:  # aiosqlite
                    cursor = await raw.execute("SELECT 1")
                    await cursor.fetchall()
                    await cursor.close()

            async def core() -> None:
                await connection.execute(text("SELECT 1"))

            async def orm_get() -> None:
                db.expunge_all()
                await db.get(Device, 1)

            async def orm_select() -> None:
                query = select(Job).where(Job.device_pk == 1, Job.state == JobState.QUEUED.value)
                (await db.execute(query.with_for_update(skip_locked=True))).scalars().all()

            await timed("driver alone: SELECT 1", driver)
            await timed("SQLAlchemy Core, AsyncConnection: SELECT 1", core)
            await timed("ORM AsyncSession.get(Device), identity map empty", orm_get)
            await timed("ORM select(Job) ... FOR UPDATE SKIP LOCKED, no rows", orm_select)

        async def transaction() -> None:
            async with sessions() as db, db.begin():
                await db.get(Device, 1)

        await timed("a whole transaction: session, BEGIN, get(Device), COMMIT", transaction)
    finally:
        await engine.dispose()
    return found


def statement_costs(url: str, repeat: int) -> list[str]:
    rows = [
        (label, f"{wall:,.0f}", f"{cpu:,.0f}")
        for label, wall, cpu in asyncio.run(_statement_costs(url, repeat))
    ]
    return table(("one statement, sequential, in this process", "wall µs", "CPU µs"), rows, 1)


# ===================================================================================== main


def versions() -> str:
    names = ("uvicorn", "starlette", "fastapi", "sqlalchemy", "aiosqlite", "asyncpg", "h11", "httpx")
    found = []
    for name in names:
        with suppress(importlib.metadata.PackageNotFoundError):
            found.append(f"{name} {importlib.metadata.version(name)}")
    return ", ".join(found)


def environment() -> list[str]:
    from importlib.util import find_spec  # noqa: PLC0415

    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from codec import cpu_count, cpu_name  # noqa: PLC0415 - our sibling bench script

    loop = "uvloop" if find_spec("uvloop") else "asyncio"
    http = "httptools" if find_spec("httptools") else "h11"
    loop = loop if UVICORN["loop"] == "auto" else UVICORN["loop"]
    http = http if UVICORN["http"] == "auto" else UVICORN["http"]
    load1, load5, _ = os.getloadavg()
    return [
        f"Python  {platform.python_implementation()} {platform.python_version()} ({sys.platform})",
        f"libs    {versions()}",
        f"uvicorn loop={loop} http={http}, 1 worker, access log off",
        f"machine {platform.machine()}, {cpu_name()}, nproc {cpu_count()}, "
        f"load average {load1:.2f} (1 min) {load5:.2f} (5 min)",
    ]


def measure_engine(
    kind: str, args: argparse.Namespace, workdir: Path, out: list[Figures]
) -> tuple[str, list[str]] | None:
    """The runs on one engine (and, if asked, the profile); returns the profile's lines."""
    profile_lines: tuple[str, list[str]] | None = None
    with database(kind, workdir, args.pg_admin) as url:
        prepare(url, args.clients)
        state = workdir / f"nonces-{kind}"
        figures = {endpoint: Figures(kind, endpoint) for endpoint in ENDPOINTS}
        for run in range(args.runs):
            for endpoint in ENDPOINTS:
                server = start_server(endpoint, url, workdir, log=args.server_log, pool_size=args.pool_size)
                try:
                    result = run_load(endpoint, server, args, state, seconds=args.seconds)
                finally:
                    server.stop()
                figures[endpoint].runs.append(result)
                print(
                    f"  {kind:<10} {LABELS[endpoint]:<22} run {run + 1}: "
                    f"{result['messages'] / result['seconds']:8,.0f} msg/s",
                    flush=True,
                )
        out.extend(figures.values())
        if args.profile_db == kind:
            profile_lines = profile_engine(
                kind, url, args, workdir=workdir, state=state, omadm=figures["omadm"]
            )
    return profile_lines


def profile_engine(
    kind: str, url: str, args: argparse.Namespace, *, workdir: Path, state: Path, omadm: Figures
) -> tuple[str, list[str]]:
    """cProfile under the full load, then the endpoint's steps with one client, then SQL costs."""
    path = workdir / f"omadm-{kind}.prof"
    server = start_server("omadm", url, workdir, profile=path, log=args.server_log, pool_size=args.pool_size)
    try:
        result = run_load("omadm", server, args, state, seconds=args.seconds)
    finally:
        server.stop()
    rate = result["messages"] / result["seconds"]
    head = (
        f"Profile: omadm on {kind}, {args.clients} devices, {args.seconds:g} s under cProfile "
        f"({rate:,.0f} msg/s while profiled, {omadm.rate():,.0f} without)"
    )
    lines = [
        f"(profiled {result['all_messages']:,} messages in {result['sessions']:,} sessions;"
        " the timer is the main thread's CPU time)"
    ]
    lines += profile_report(path, result["all_messages"])
    if args.keep_profile:
        Path(args.keep_profile).write_bytes(path.read_bytes())
        lines.append(f"(profile kept in {args.keep_profile}; pstats can read it)")
    stages = workdir / f"stages-{kind}.json"
    server = start_server("omadm", url, workdir, stages=stages, log=args.server_log, pool_size=args.pool_size)
    try:
        single = run_load("omadm", server, args, state, seconds=args.seconds, clients=1)
    finally:
        server.stop()
    lines.append("")
    lines.append(
        f"The DM endpoint's steps with ONE device (wall time, nothing interleaves; "
        f"{single['messages'] / single['seconds']:,.0f} msg/s, "
        f"p50 {percentile(single['latencies'], 0.5) * 1e3:.2f} ms):"
    )
    lines += stage_report(stages, single["all_messages"])
    lines.append("")
    lines.append(f"What one SQL statement costs on {kind} (the server's engine settings):")
    lines += statement_costs(url, 50 if args.quick else 300)
    return head, lines


def check_load_generator(args: argparse.Namespace, workdir: Path) -> list[Figures]:
    """Bare echo with the raw client and with httpx: is the load generator the limit?"""
    raw = Figures("-", "echo")
    via_httpx = Figures("-", "echo-httpx")
    state = workdir / "nonces-echo"
    for _ in range(args.runs):
        for figures, client in ((raw, "raw"), (via_httpx, "httpx")):
            server = start_server("echo", "", workdir, log="off")
            try:
                figures.runs.append(
                    run_load("echo", server, args, state, seconds=args.seconds, http_client=client)
                )
            finally:
                server.stop()
    return [raw, via_httpx]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--db", choices=("sqlite", "postgresql", "both"), default="both")
    parser.add_argument("--clients", type=int, default=16, help="concurrent connections / devices [16]")
    parser.add_argument("--seconds", type=float, default=5.0, help="timed seconds per run [5]")
    parser.add_argument("--runs", type=int, default=3, help="runs per endpoint; the median is shown [3]")
    parser.add_argument("--warmup", type=float, default=1.0, help="untimed seconds before each run [1]")
    parser.add_argument("--loaders", type=int, default=1, help="load generator processes [1]")
    parser.add_argument("--quick", action="store_true", help="one 1-second run of each, for a smoke run")
    parser.add_argument(
        "--profile-db", choices=("sqlite", "postgresql", "none"), default="sqlite", help="[sqlite]"
    )
    parser.add_argument("--keep-profile", default="", help="copy the pstats file here")
    parser.add_argument("--no-load-check", action="store_true", help="skip the httpx vs raw client check")
    parser.add_argument(
        "--server-log",
        choices=("info", "off"),
        default="info",
        help="omadm's log level as `omadm server` sets it (info), or no logging configured [info]",
    )
    parser.add_argument(
        "--pool-size",
        type=int,
        default=0,
        help="connection pool of echo+tx and omadm (0: make_engine's default, what the server uses) [0]",
    )
    parser.add_argument("--pg-admin", default=DEFAULT_PG_ADMIN, help=f"[{DEFAULT_PG_ADMIN}]")
    parser.add_argument(
        "--loop",
        choices=("auto", "asyncio", "uvloop"),
        default="auto",
        help="uvicorn's event loop; auto (what omadm server uses): uvloop when installed [auto]",
    )
    parser.add_argument(
        "--http",
        choices=("auto", "h11", "httptools"),
        default="auto",
        help="uvicorn's HTTP parser; auto (what omadm server uses): httptools when installed [auto]",
    )
    # Internal: the server and load generator processes.
    hidden = argparse.SUPPRESS
    parser.add_argument("--role", choices=("main", "serve", "load"), default="main", help=hidden)
    parser.add_argument("--endpoint", choices=(*ENDPOINTS,), default="echo", help=hidden)
    parser.add_argument("--url", default="", help=hidden)
    parser.add_argument("--port", type=int, default=0, help=hidden)
    parser.add_argument("--data-dir", default="", help=hidden)
    parser.add_argument("--profile", default="", help=hidden)
    parser.add_argument("--stages", default="", help=hidden)
    parser.add_argument("--first", type=int, default=0, help=hidden)
    parser.add_argument("--http-client", choices=("raw", "httpx"), default="raw", help=hidden)
    parser.add_argument("--state", default="", help=hidden)
    parser.add_argument("--server-pid", type=int, default=0, help=hidden)
    args = parser.parse_args(argv)

    if args.role == "serve":
        return serve(args)
    if args.role == "load":
        print(json.dumps(asyncio.run(load(args))))
        return 0
    if args.quick:
        args.seconds, args.runs, args.warmup = 1.0, 1, 0.3
    UVICORN.update(loop=args.loop, http=args.http)

    for line in environment():
        print(line)
    print(
        f"{args.clients} connections, {args.loaders} load generator process(es), "
        f"median of {args.runs} run(s) of {args.seconds:g} s after {args.warmup:g} s warm-up"
    )
    engines = ("sqlite", "postgresql") if args.db == "both" else (args.db,)
    figures: list[Figures] = []
    profile: tuple[str, list[str]] | None = None
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="omadm-bench-") as tmp:
        workdir = Path(tmp)
        try:
            for kind in engines:
                profile = measure_engine(kind, args, workdir, figures) or profile
            checks = [] if args.no_load_check else check_load_generator(args, workdir)
        except BenchError as exc:
            print(f"error: {exc}", file=sys.stderr)
            for log in sorted(workdir.glob("server-*.log")):
                print(f"--- {log.name} (last lines)", file=sys.stderr)
                print("\n".join(log.read_text(errors="replace").splitlines()[-15:]), file=sys.stderr)
            return 1
    print()
    rows = []
    for figure in figures:
        reference = None
        if figure.endpoint == "omadm":
            reference = next(f for f in figures if f.engine == figure.engine and f.endpoint == "echo-tx")
        rows.append(figure.cells(reference))
    for line in table(TABLE_HEADER, rows):
        print(line)
    for engine in engines:
        echo_tx = next(f for f in figures if f.engine == engine and f.endpoint == "echo-tx")
        omadm = next(f for f in figures if f.engine == engine and f.endpoint == "omadm")
        print(
            f"{engine}: by server CPU per message, omadm costs {omadm.cpu_per_message() / 1e3:.2f} ms and "
            f"echo+tx {echo_tx.cpu_per_message() / 1e3:.2f} ms: "
            f"{echo_tx.cpu_per_message() / omadm.cpu_per_message():.0%} of the reference's rate at equal CPU"
        )
    for figure in figures:
        if figure.endpoint == "omadm":
            busy = {name: us for name, us in figure.thread_cpu().items() if us >= 1}
            print(
                f"{figure.engine}: omadm's server CPU µs per message by thread: "
                + ", ".join(f"{name} {us:,.0f}" for name, us in busy.items())
            )
    print("challenged: DM sessions that needed a second Pkg#1 (a device's very first, with no nonce yet)")
    if checks:
        print()
        print("Load generator check (bare echo; the same server, two clients):")
        for line in table(TABLE_HEADER[:9], [f.cells(None)[:9] for f in checks]):
            print(line)
    if profile is not None:
        head, lines = profile
        print()
        print(head)
        print()
        for line in lines:
            print(line)
    print()
    print(f"(took {time.monotonic() - started:.0f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
