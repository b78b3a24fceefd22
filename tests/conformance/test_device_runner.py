"""Unit tests of the device runner's pieces: the HTTP listener, the package shelf, the scripted
server's sessions and the Status-discipline check, with an in-process device (the protocol
core's ``ClientSession`` over ``MemoryTree``) POSTing to the runner over real HTTP."""

from __future__ import annotations

import asyncio
import dataclasses
import gzip
import socket
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest
from typer.testing import CliRunner

from omadm.cli import app
from omadm.conformance.device import DeviceContext, DeviceOptions, DeviceRunner, parse_listen
from omadm.conformance.device_http import HttpListener, Request, Response
from omadm.conformance.device_packages import PackageShelf
from omadm.conformance.device_steps import check_replies, get
from omadm.conformance.model import CATALOGUE, CaseFailed, Inconclusive, Role, cases_for, load_all
from omadm.package.signing import generate_key, private_key_pem
from omadm.protocol import codec
from omadm.protocol.auth import HMAC_HEADER
from omadm.protocol.codes import AuthType
from omadm.protocol.messages import Message, Results, Status
from omadm.protocol.session import ClientConfig, ClientSession, Credentials, Outgoing
from omadm.protocol.testing import MemoryTree

from .device_agent import free_port

DEVICE = "IMEI:001010000000017"
SERVER_ID, USER, PASSWORD, SERVER_PASSWORD = "srv", "dev", "dev-pw", "srv-pw"


# -- parsing and the catalogue --------------------------------------------------------------


def test_listen_addresses_are_parsed_and_bad_ones_named() -> None:
    assert parse_listen("127.0.0.1:8700") == ("127.0.0.1", 8700)
    assert parse_listen("[::1]:9000") == ("::1", 9000)
    assert parse_listen(":8000") == ("127.0.0.1", 8000)
    for bad in ("8700", "host:", "host:port", "host:70000"):
        with pytest.raises(ValueError, match="is not HOST:PORT"):
            parse_listen(bad)


def test_the_catalogue_has_at_least_80_documented_device_cases() -> None:
    load_all()
    device = cases_for(Role.DEVICE)
    assert len(device) >= 80
    prefixes = {c.id.rsplit("-", 2)[0] for c in device}
    assert {"DM-CLI", "MO-CLI", "SCOMO-DEV"} <= prefixes
    for c in device:
        assert c.rule and "§" in c.rule, c.id
        assert c.steps and c.pass_criteria, c.id
        assert c.executable, c.id
    assert CATALOGUE["DM-CLI-LIST-003"].capability == "tnds"
    assert CATALOGUE["DM-CLI-ENC-002"].encodings == ("wbxml",)


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        (["--listen", "nowhere"], "is not HOST:PORT"),
        (["--listen", "127.0.0.1:0", "--auth", "sha1"], "--auth 'sha1' is not one of md5, hmac, basic"),
        (["--listen", "127.0.0.1:0", "--encoding", "json"], "--encoding 'json' is not xml or wbxml"),
        (["--listen", "127.0.0.1:0", "--notify", "ftp://x"], "must be an http(s) URL or udp://HOST:PORT"),
        (["--listen", "127.0.0.1:0", "--only", "NOPE-*"], "matches no device case"),
        (["--listen", "127.0.0.1:0", "--signing-key", "/no/such/key.pem"], "no such file"),
    ],
)
def test_bad_command_lines_exit_2_naming_the_problem(arguments: list[str], message: str) -> None:
    result = CliRunner().invoke(app, ["conformance", "device", *arguments])
    assert result.exit_code == 2, result.output
    assert message in result.output


def test_an_address_in_use_is_an_error_naming_it_not_a_traceback() -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = CliRunner().invoke(app, ["conformance", "device", "--listen", f"127.0.0.1:{port}"])
    assert result.exit_code == 2, result.output
    assert f"cannot listen on 127.0.0.1:{port}" in result.output


def test_a_signing_key_that_is_not_a_key_is_an_error_naming_it(tmp_path: Path) -> None:
    bad = tmp_path / "not-a-key.pem"
    bad.write_text("hello")
    result = CliRunner().invoke(
        app, ["conformance", "device", "--listen", f"127.0.0.1:{free_port()}", "--signing-key", str(bad)]
    )
    assert result.exit_code == 2, result.output
    assert "cannot build the SCOMO test packages" in result.output


def test_an_ics_naming_the_device_capabilities_is_read_and_wbxml_needs_its_claim(tmp_path: Path) -> None:
    ics = tmp_path / "client.ics.toml"
    ics.write_text(
        '[implementation]\nname = "x"\n[capabilities]\ntnds = false\nwbxml = false\nscomo-dlota = true\n'
    )
    arguments = ["conformance", "device", "--listen", "127.0.0.1:0", "--ics", str(ics), "--encoding", "wbxml"]
    result = CliRunner().invoke(app, arguments)
    assert result.exit_code == 2, result.output
    assert "does not claim wbxml" in result.output
    ics.write_text("[capabilities]\nno-such-feature = true\n")
    result = CliRunner().invoke(app, arguments)
    assert result.exit_code == 2 and "unknown capabilities no-such-feature" in result.output


# -- the HTTP listener ----------------------------------------------------------------------


def test_the_listener_answers_posts_with_keep_alive_and_refuses_what_dm_never_sends() -> None:
    async def scenario() -> None:
        seen: list[Request] = []

        async def handler(request: Request) -> None:
            seen.append(request)
            request.reply.set_result(Response(200, request.body[::-1], {"X-Echo": "1"}))

        listener = HttpListener(handler)
        host, port = await listener.start("127.0.0.1", 0)
        try:
            async with httpx.AsyncClient() as client:
                for body in (b"abc", b"defg"):
                    response = await client.post(f"http://{host}:{port}/dm?s=1", content=body)
                    assert response.status_code == 200 and response.content == body[::-1]
                    assert response.headers["x-echo"] == "1"
            assert [r.path for r in seen] == ["/dm?s=1", "/dm?s=1"]
            reader, writer = await asyncio.open_connection(host, port)
            writer.write(b"POST /dm HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n")
            await writer.drain()
            assert (await reader.read(200)).startswith(b"HTTP/1.1 400")
            writer.close()
            reader, writer = await asyncio.open_connection(host, port)
            writer.write(b"POST /dm HTTP/1.1\r\nContent-Length: 999999999\r\n\r\n")
            await writer.drain()
            assert (await reader.read(200)).startswith(b"HTTP/1.1 413")
            writer.close()
        finally:
            await listener.close()

    asyncio.run(scenario())


def test_an_unanswered_request_gets_503_not_a_hang() -> None:
    async def scenario() -> None:
        async def handler(request: Request) -> None:
            return None  # never answers

        listener = HttpListener(handler, reply_timeout=0.2)
        host, port = await listener.start("127.0.0.1", 0)
        try:
            async with httpx.AsyncClient() as client:
                response = await client.post(f"http://{host}:{port}/dm", content=b"x")
            assert response.status_code == 503
        finally:
            await listener.close()

    asyncio.run(scenario())


# -- the package shelf ------------------------------------------------------------------------


def test_the_shelf_builds_signed_packages_and_serves_them_with_ranges(tmp_path: Path) -> None:
    key = tmp_path / "signer.pem"
    key.write_bytes(private_key_pem(generate_key()))
    shelf = PackageShelf("http://127.0.0.1:1", key, tmp_path / "work")
    shelf.build()
    assert set(shelf.files) == set(PackageShelf.NAMES)
    whole = shelf.serve("/packages/probe-1.omp", None)
    assert whole.status == 200 and whole.body == shelf.bytes_of("probe-1")
    part = shelf.serve("/packages/probe-1.omp", "bytes=10-")
    assert part.status == 206 and part.body == whole.body[10:]
    assert part.headers["Content-Range"] == f"bytes 10-{len(whole.body) - 1}/{len(whole.body)}"
    assert shelf.serve("/packages/nothing.omp", None).status == 404
    tampered = gzip.decompress(shelf.bytes_of("probe-tampered"))
    assert b"CONFORMANCE-PAYLOAD-AS-SIGNED" in tampered
    assert shelf.url("probe-2") == "http://127.0.0.1:1/packages/probe-2.omp"
    assert shelf.serve("/packages/auth/probe-1.omp", None).status == 401
    assert shelf.serve("/packages/error/probe-1.omp", None).status == 500
    descriptor = shelf.serve("/packages/dd/probe-1.dd", None)
    assert descriptor.headers["Content-Type"] == "application/vnd.oma.dd+xml"
    text = descriptor.body.decode()
    assert f"<size>{len(whole.body)}</size>" in text
    assert "<objectURI>http://127.0.0.1:1/packages/probe-1.omp</objectURI>" in text
    assert shelf.serve("/packages/notify/probe-1", None, "POST", b"900 Success\n").status == 200
    assert shelf.notifications == [("probe-1", "900 Success")]


# -- scripted sessions with an in-process device ---------------------------------------------

Doctor = Callable[[Message], Message]


async def _device(
    url: str, tree: MemoryTree, doctor: Doctor | None = None, auth: AuthType = AuthType.MD5
) -> None:
    """One client-initiated session of the protocol core's client, POSTed over HTTP."""
    client = ClientSession(
        ClientConfig(
            device_id=DEVICE,
            server_uri=url,
            credentials=Credentials(auth, USER, PASSWORD),
            server_credentials=Credentials(auth, SERVER_ID, SERVER_PASSWORD),
            require_server_auth=True,
            devinfo=(("./DevInfo/DevId", DEVICE), ("./DevInfo/Man", "acme")),
        ),
        tree,
    )
    out: Outgoing | None = client.start()
    async with httpx.AsyncClient() as http:
        while out is not None:
            body = out.body
            if doctor is not None and out.message.header.msg_id != "1":
                body = codec.encode(doctor(out.message))
            response = await http.post(
                out.url or url, content=body, headers={"Content-Type": out.content_type, **out.headers}
            )
            if response.status_code != 200:
                return
            client.receive(
                response.content,
                content_type=response.headers.get("content-type"),
                hmac_header=response.headers.get(HMAC_HEADER),
            )
            out = client.reply()


def _tree() -> MemoryTree:
    tree = MemoryTree()
    for path, value in (("./DevInfo", None), ("./DevInfo/Man", "acme"), ("./DevInfo/Mod", "rocket")):
        tree.nodes[path] = value
    return tree


async def _with_device(
    case_id: str, script: Callable[[DeviceContext], object], doctor: Doctor | None = None, **options: object
) -> DeviceContext:
    port = free_port()
    runner = DeviceRunner(
        dataclasses.replace(
            DeviceOptions(
                listen=("127.0.0.1", port),
                server_id=SERVER_ID,
                username=USER,
                password=PASSWORD,
                server_password=SERVER_PASSWORD,
                session_timeout=10.0,
                message_timeout=5.0,
            ),
            **options,  # type: ignore[arg-type]
        )
    )
    await runner.start()
    try:
        context = await runner.make_context(CATALOGUE[case_id], "xml")
        device = asyncio.create_task(_device(runner.url, _tree(), doctor))
        await script(context)  # type: ignore[misc]
        await runner.close_context(context)
        await asyncio.wait_for(device, 10)
        return context
    finally:
        await runner.close()


def test_a_session_runs_commands_collects_statuses_and_results_and_records_every_message() -> None:
    async def script(ctx: DeviceContext) -> None:
        session = await ctx.session()
        assert session.authenticated and session.first.header.source.loc_uri == DEVICE
        statuses = await session.run(get("./DevInfo/Man"), get("./DevInfo/Nothing"))
        assert [s.code if s else None for s in statuses] == [200, 404]
        status, results = await session.get("./DevInfo/Mod")
        assert status is not None and status.code == 200
        assert results is not None and results.items[0].data == "rocket"
        check_replies(session)
        await session.close()
        assert session.ended

    context = asyncio.run(_with_device("DM-CLI-IDS-001", script))
    directions = [e.direction for e in context.exchanges]
    assert directions[0] == "received" and "sent" in directions
    assert all(e.at >= 0 for e in context.exchanges)


def test_the_status_check_catches_results_sent_before_their_status() -> None:
    def results_first(message: Message) -> Message:
        results = [c for c in message.commands if isinstance(c, Results)]
        others = [c for c in message.commands if not isinstance(c, Results)]
        return dataclasses.replace(message, commands=(others[0], *results, *others[1:]))

    async def script(ctx: DeviceContext) -> None:
        session = await ctx.session()
        await session.run(get("./DevInfo/Man"))
        with pytest.raises(CaseFailed) as failed:
            check_replies(session)
        assert "before its Results" in failed.value.expected
        await session.close()

    asyncio.run(_with_device("DM-CLI-IDS-003", script, results_first))


def test_the_status_check_catches_a_missing_status() -> None:
    def drop_get_status(message: Message) -> Message:
        kept = tuple(c for c in message.commands if not (isinstance(c, Status) and c.cmd == "Get"))
        return dataclasses.replace(message, commands=kept)

    async def script(ctx: DeviceContext) -> None:
        session = await ctx.session()
        await session.run(get("./DevInfo/Man"), timeout=1.0)
        with pytest.raises(CaseFailed) as failed:
            check_replies(session)
        assert "one Status for Get" in failed.value.expected
        assert failed.value.seen == "0 Statuses"

    asyncio.run(_with_device("DM-CLI-IDS-001", script, drop_get_status))


def test_a_device_that_never_comes_is_inconclusive_not_failed() -> None:
    async def scenario() -> None:
        runner = DeviceRunner(DeviceOptions(listen=("127.0.0.1", free_port()), session_timeout=0.3))
        await runner.start()
        try:
            context = await runner.make_context(CATALOGUE["DM-CLI-SESS-001"], "xml")
            with pytest.raises(Inconclusive, match=r"opened no session within 0\.3 s"):
                await context.session()
        finally:
            await runner.close()

    asyncio.run(scenario())


def test_a_device_in_the_other_encoding_is_inconclusive() -> None:
    async def script(ctx: DeviceContext) -> None:
        with pytest.raises(Inconclusive, match="sent XML in a run for WBXML"):
            await ctx.session()

    async def scenario() -> None:
        port = free_port()
        runner = DeviceRunner(
            DeviceOptions(
                listen=("127.0.0.1", port),
                server_id=SERVER_ID,
                username=USER,
                password=PASSWORD,
                server_password=SERVER_PASSWORD,
                session_timeout=10.0,
                message_timeout=2.0,
            )
        )
        await runner.start()
        try:
            context = await runner.make_context(CATALOGUE["DM-CLI-SESS-001"], "wbxml")
            device = asyncio.create_task(_device(runner.url, _tree()))
            await script(context)
            await runner.close_context(context)
            await asyncio.wait_for(device, 10)
        finally:
            await runner.close()

    asyncio.run(scenario())
