"""DM-CLI-*: the DM 1.2 protocol as a client (a device) must speak it; omadm plays the server.

Every case opens its own session(s) with the device (:class:`~omadm.conformance.device.DeviceContext`),
works below its own scratch node (``--scratch``, default ``./Vendor/Conformance``) and checks
what the device sent against one rule of the digest. Optional features are gated by a
capability of the ICS; a case about an account scheme the run does not use (``--auth``) is
not applicable rather than failed.
"""

from __future__ import annotations

import asyncio
import base64
import dataclasses
import secrets

from omadm.protocol import auth, codec
from omadm.protocol.codec import Encoding
from omadm.protocol.codes import AlertCode, AuthType
from omadm.protocol.messages import (
    Add,
    Alert,
    Atomic,
    Get,
    Item,
    Meta,
    Replace,
    Results,
    Sequence,
    Status,
    Target,
)
from omadm.protocol.session import NonceReceived

from .. import ics
from ..device import DeviceContext, send_package0
from ..device_session import DeviceSession
from ..device_steps import (
    add,
    check_code,
    check_replies,
    code_of,
    copy,
    delete,
    ensure_node,
    execute,
    get,
    node,
    replace,
    result_value,
)
from ..model import CaseFailed, NotApplicable, Role, case, check

DM = "oma-dm-1.2.md"
HMAC = ics.declare("hmac", "the client authenticates with HMAC (x-syncml-hmac) and checks the server's")
BASIC = ics.declare("basic", "the client can use basic authentication")
MD5 = ics.declare("md5", "the client authenticates with syncml:auth-md5 and checks the server's")
WBXML = ics.declare("wbxml", "the client speaks WBXML")
LARGE = ics.declare(
    "large-objects", "the client sends and receives large objects (MoreData, DevDetail/LrgObj)"
)
MULTI = ics.declare(
    "multi-message", "the client splits and joins packages over several messages (Alert 1222)"
)
ATOMIC = ics.declare("atomic", "the client executes Atomic")
SEQUENCE = ics.declare("sequence", "the client executes Sequence")
COPY = ics.declare("copy", "the client executes Copy")
STRUCT = ics.declare("list-struct", "the client answers Get ?list=Struct and ?list=StructData")
TNDS = ics.declare("tnds", "the client answers Get ?list=TNDS")
PROPS = ics.declare("properties", "the client answers Get and Replace with ?prop=")
NOTIFY = ics.declare(
    "package0", "the device can be woken with a Package #0 (the runner has its notification address)"
)

_ROLE = Role.DEVICE


_SCHEME_NAMES = {AuthType.MD5: "md5", AuthType.HMAC: "hmac", AuthType.BASIC: "basic"}


def _scheme(ctx: DeviceContext, wanted: AuthType) -> None:
    if ctx.target.auth is not wanted:
        used, needed = _SCHEME_NAMES[ctx.target.auth], _SCHEME_NAMES[wanted]
        raise NotApplicable(f"the run uses --auth {used}, not {needed}")


def _digest_scheme(ctx: DeviceContext) -> None:
    if ctx.target.auth is AuthType.BASIC:
        raise NotApplicable("basic authentication has no nonce")


async def _scratch(ctx: DeviceContext, session: DeviceSession) -> str:
    base = ctx.scratch()
    await ensure_node(session, base)
    return base


async def _fresh(ctx: DeviceContext, session: DeviceSession, name: str) -> str:
    """A scratch leaf path that does not exist yet (deleted first if an earlier run left it)."""
    base = await _scratch(ctx, session)
    path = f"{base}/{name}"
    await session.run(delete(path))
    return path


# -- session set-up and end ----------------------------------------------------------------


@case(
    "DM-CLI-SESS-001",
    "Package #1 carries the session Alert and the DevInfo Replace",
    rule=f"{DM} §2.1",
    role=_ROLE,
    steps=("Wait for (or wake) a session of the device.", "Read its first message."),
    pass_criteria=(
        "An Alert 1200 or 1201 opens the package.",
        "A Replace carries ./DevInfo/DevId, Man, Mod, DmV and Lang.",
    ),
)
async def sess_package1(ctx: DeviceContext) -> None:
    session = await ctx.session()
    first = session.first
    alerts = [c for c in first.commands if isinstance(c, Alert)]
    codes = [a.code for a in alerts]
    check(
        any(c in (AlertCode.SERVER_INITIATED_MGMT, AlertCode.CLIENT_INITIATED_MGMT) for c in codes),
        "Alert 1200 or 1201 in Package #1",
        f"alerts {codes}",
    )
    sent = {
        item.source.loc_uri if item.source else (item.target.loc_uri if item.target else "")
        for c in first.commands
        if isinstance(c, Replace)
        for item in c.items
    }
    missing = [
        f"./DevInfo/{leaf}"
        for leaf in ("DevId", "Man", "Mod", "DmV", "Lang")
        if f"./DevInfo/{leaf}" not in sent
    ]
    check(not missing, "the five DevInfo leaves in a Replace of Package #1", f"missing {missing}")
    await session.close()


@case(
    "DM-CLI-SESS-002",
    "SyncHdr: VerDTD 1.2, VerProto DM/1.2, Source is the DevId, Target the server",
    rule=f"{DM} §3.1",
    role=_ROLE,
    steps=("Open a session.", "Check the SyncHdr of every device message."),
    pass_criteria=(
        "VerDTD 1.2 and VerProto DM/1.2.",
        "Source LocURI = DevInfo/DevId.",
        "Target LocURI = the server URI.",
    ),
)
async def sess_header(ctx: DeviceContext) -> None:
    session = await ctx.session()
    status, results = await session.get("./DevInfo/DevId")
    check_code(status, 200, "Get ./DevInfo/DevId")
    value = result_value(results, "./DevInfo/DevId")
    devid = value.decode() if isinstance(value, bytes) else value
    for received in session.received:
        header = received.message.header
        check(header.ver_dtd == "1.2", "VerDTD 1.2", header.ver_dtd)
        check(header.ver_proto == "DM/1.2", "VerProto DM/1.2", header.ver_proto)
        check(header.source.loc_uri == devid, f"Source LocURI {devid}", header.source.loc_uri)
        check(
            header.target.loc_uri.split("?", 1)[0] == ctx.runner.url,
            f"Target LocURI {ctx.runner.url}",
            header.target.loc_uri,
        )
    await session.close()


@case(
    "DM-CLI-SESS-003",
    "After a Package #0 the device opens with Alert 1200 and the notified SessionID",
    rule=f"{DM} §11.4",
    role=_ROLE,
    capability=NOTIFY,
    steps=("Send a Package #0 with a fresh session id.", "Read Package #1."),
    pass_criteria=("Package #1 has Alert 1200.", "Its SessionID is the session id of the Package #0 in hex."),
)
async def sess_after_package0(ctx: DeviceContext) -> None:
    ctx.require_wake()
    session = await ctx.session()
    codes = [c.code for c in session.first.commands if isinstance(c, Alert)]
    check(AlertCode.SERVER_INITIATED_MGMT in codes, "Alert 1200 in Package #1", f"alerts {codes}")
    woken = ctx.woken_session_id or ""
    seen = session.first.header.session_id
    check(seen.lstrip("0").upper() == woken.upper(), f"SessionID {woken}", seen)
    await session.close()


@case(
    "DM-CLI-SESS-004",
    "SessionID stays the same and MsgID counts up from 1",
    rule=f"{DM} §2.3",
    role=_ROLE,
    steps=("Open a session and run three exchanges.",),
    pass_criteria=(
        "Every device message has the SessionID of Package #1.",
        "MsgIDs are 1, 2, 3, ... in order.",
    ),
)
async def sess_ids(ctx: DeviceContext) -> None:
    session = await ctx.session()
    for leaf in ("Man", "Mod", "Lang"):
        await session.run(get(f"./DevInfo/{leaf}"))
    ids = [r.message.header.msg_id for r in session.received]
    check(ids == [str(n) for n in range(1, len(ids) + 1)], "MsgIDs 1, 2, 3, ...", ids)
    sessions = {r.message.header.session_id for r in session.received}
    check(len(sessions) == 1, "one SessionID for the whole session", sorted(sessions))
    await session.close()


@case(
    "DM-CLI-SESS-005",
    "The device sends its next message to the RespURI the server gave",
    rule=f"{DM} §12",
    role=_ROLE,
    steps=("Open a session; the runner's replies carry a RespURI with a session token.", "Run one exchange."),
    pass_criteria=("Every device message after the first is POSTed to the RespURI.",),
)
async def sess_resp_uri(ctx: DeviceContext) -> None:
    session = await ctx.session()
    await session.run(get("./DevInfo/Man"))
    for received in session.received[1:]:
        check(session.token in received.path, f"a POST to {session.resp_uri}", f"a POST to {received.path}")
    await session.close()


@case(
    "DM-CLI-SESS-006",
    "A server package without commands ends the session: the device sends nothing more",
    rule=f"{DM} §2.2",
    role=_ROLE,
    steps=("Open a session, run one Get.", "Answer with Status only and Final.", "Wait one second."),
    pass_criteria=("The device sends no further message in that session.",),
)
async def sess_end(ctx: DeviceContext) -> None:
    session = await ctx.session()
    await session.run(get("./DevInfo/Man"))
    count = len(session.received)
    await session.turn()  # nothing queued: the final, command-less package
    check(session.ended, "the session over after a command-less package", "the session still open")
    await asyncio.sleep(1.0)
    check(
        len(session.received) == count,
        "no message after the last package",
        f"{len(session.received) - count} more",
    )


@case(
    "DM-CLI-SESS-007",
    "Package #1 declares the device's MaxMsgSize",
    rule=f"{DM} §8",
    role=_ROLE,
    steps=("Read the SyncHdr Meta of Package #1.",),
    pass_criteria=("SyncHdr/Meta/MaxMsgSize is present and at least 1024.",),
)
async def sess_max_msg_size(ctx: DeviceContext) -> None:
    session = await ctx.session()
    meta = session.first.header.meta
    size = meta.max_msg_size if meta is not None else None
    check(size is not None and size >= 1024, "MaxMsgSize >= 1024 in the SyncHdr Meta", size)
    await session.close()


@case(
    "DM-CLI-SESS-008",
    "A Package #0 with a wrong digest is ignored",
    rule=f"{DM} §11.2",
    role=_ROLE,
    capability=NOTIFY,
    steps=("Send a Package #0 signed with a wrong server password.", "Wait for a session."),
    pass_criteria=("The device opens no session for it.",),
)
async def sess_bad_package0(ctx: DeviceContext) -> None:
    ctx.require_wake()
    runner = ctx.runner
    session_id = runner._new_session_id()
    await runner.send_package0(
        session_id, ctx.target.server_nonce or auth.RESYNC_NONCE, server_password="wrong-secret"
    )
    await runner.send_package0(runner._new_session_id(), auth.RESYNC_NONCE, server_password="wrong-secret")
    try:
        stray = await asyncio.wait_for(runner.server.incoming.get(), 1.5)
    except TimeoutError:
        return
    ctx.sessions.append(stray)
    raise CaseFailed(
        "no session after a forged Package #0", f"session {stray.first.header.session_id} opened"
    )


@case(
    "DM-CLI-SESS-009",
    "A replayed Package #0 does not open a second session",
    rule=f"{DM} §11.2",
    role=_ROLE,
    capability=NOTIFY,
    steps=("Wake the device with a Package #0 and finish that session.", "Send the same bytes again."),
    pass_criteria=("No session answers the replayed Package #0.",),
)
async def sess_replayed_package0(ctx: DeviceContext) -> None:
    ctx.require_wake()
    runner = ctx.runner
    packages = await runner.wake(runner._new_session_id())
    session = await ctx.session(wake=False)
    await session.close()
    for package in packages:
        await send_package0(ctx.options.notify or "", package)
    try:
        stray = await asyncio.wait_for(runner.server.incoming.get(), 1.5)
    except TimeoutError:
        return
    ctx.sessions.append(stray)
    raise CaseFailed(
        "no session for a replayed Package #0", f"session {stray.first.header.session_id} opened"
    )


# -- authentication ------------------------------------------------------------------------


@case(
    "DM-CLI-AUTH-001",
    "MD5: the device's credential verifies (syncml:auth-md5, b64)",
    rule=f"{DM} §6.2",
    role=_ROLE,
    capability=MD5,
    steps=("Open a session with an md5 account.",),
    pass_criteria=("The device's Cred has Type syncml:auth-md5 and Format b64 and verifies.",),
)
async def auth_md5(ctx: DeviceContext) -> None:
    _scheme(ctx, AuthType.MD5)
    session = await ctx.session()
    creds = [r.message.header.cred for r in session.received if r.message.header.cred is not None]
    check(bool(creds), "a Cred in the device's messages", "none")
    meta = creds[-1].meta
    check(meta is not None and meta.type == "syncml:auth-md5", "Meta/Type syncml:auth-md5", meta)
    check(meta is not None and (meta.format or "b64") == "b64", "Meta/Format b64", meta)
    check(session.authenticated, "a credential that verifies", "it did not")
    await session.close()


@case(
    "DM-CLI-AUTH-002",
    "HMAC: every device message carries a valid x-syncml-hmac header",
    rule=f"{DM} §6.3",
    role=_ROLE,
    capability=HMAC,
    steps=("Open a session with an HMAC account and run two exchanges.",),
    pass_criteria=("Each device message has x-syncml-hmac with algorithm MD5, username and mac.",),
)
async def auth_hmac(ctx: DeviceContext) -> None:
    _scheme(ctx, AuthType.HMAC)
    session = await ctx.session()
    await session.run(get("./DevInfo/Man"))
    for received in session.received:
        header = received.headers.get(auth.HMAC_HEADER)
        check(header is not None, "an x-syncml-hmac header on every message", "a message without")
        assert header is not None
        parsed = auth.parse_hmac_header(header)
        check(parsed.username == ctx.target.username, f"username={ctx.target.username}", parsed.username)
    await session.close()


@case(
    "DM-CLI-AUTH-003",
    "Basic: the credential is B64(username:password)",
    rule=f"{DM} §6.2",
    role=_ROLE,
    capability=BASIC,
    steps=("Open a session with a basic account.",),
    pass_criteria=("The Cred has Type syncml:auth-basic and decodes to username:password.",),
)
async def auth_basic(ctx: DeviceContext) -> None:
    _scheme(ctx, AuthType.BASIC)
    session = await ctx.session()
    creds = [r.message.header.cred for r in session.received if r.message.header.cred is not None]
    check(bool(creds), "a Cred", "none")
    user, password = auth.parse_basic(creds[-1].data)
    check(
        (user, password) == (ctx.target.username, ctx.target.password),
        "the account's name and password",
        user,
    )
    await session.close()


@case(
    "DM-CLI-AUTH-004",
    "A challenge (401 with a new nonce) is answered with credentials for that nonce",
    rule=f"{DM} §6.3",
    role=_ROLE,
    steps=(
        "Forget the nonce the device holds: issue a new one in a 401 challenge.",
        "Read the device's next message.",
    ),
    pass_criteria=("The device repeats its package with credentials that verify with the new nonce.",),
)
async def auth_challenge(ctx: DeviceContext) -> None:
    _digest_scheme(ctx)
    ctx.target.client_nonce = secrets.token_bytes(16)  # not the nonce the device holds
    session = await ctx.session(authenticate=False)
    while not session.authenticated and not session.ended:
        await session.turn()
    check(bool(session.auth_failures()), "a first credential that fails (stale nonce)", "it verified")
    check(
        session.authenticated,
        "credentials for the challenge's nonce",
        "no valid credentials after the challenge",
    )
    check(len(session.received) >= 2, "a repeated Package #1", f"{len(session.received)} messages")
    await session.close()


@case(
    "DM-CLI-AUTH-005",
    "The nonce from the server's NextNonce is used in the next session (nonce rotation)",
    rule=f"{DM} §6.3",
    role=_ROLE,
    steps=(
        "Session 1: authenticate; the runner issues a NextNonce.",
        "Session 2: read the first credential.",
    ),
    pass_criteria=("Session 2 authenticates at once with the nonce issued in session 1.",),
)
async def auth_rotation(ctx: DeviceContext) -> None:
    _digest_scheme(ctx)
    first = await ctx.session()
    await first.run(get("./DevInfo/Man"))
    await first.close()
    issued = ctx.target.client_nonce
    second = await ctx.session(authenticate=False)
    while not second.authenticated and not second.ended:
        await second.turn()
    check(
        not second.auth_failures(),
        "session 2 authenticated without a challenge",
        [e.reason for e in second.auth_failures()],
    )
    check(
        ctx.target.client_nonce != issued or ctx.target.auth is AuthType.HMAC,
        "a new nonce issued",
        "the same",
    )
    await second.close()


@case(
    "DM-CLI-AUTH-006",
    "The device issues the server a fresh nonce each session",
    rule=f"{DM} §6.3",
    role=_ROLE,
    steps=("Run two sessions.", "Read the Chal/NextNonce in the device's SyncHdr Status each time."),
    pass_criteria=("Each session gives the server a NextNonce.", "The two nonces differ."),
)
async def auth_server_nonce(ctx: DeviceContext) -> None:
    _digest_scheme(ctx)
    nonces = []
    for _ in range(2):
        session = await ctx.session()
        await session.run(get("./DevInfo/Man"))
        await session.close()
        received = [e.nonce for e in session.events if isinstance(e, NonceReceived)]
        check(bool(received), "a NextNonce for the server in the session", "none")
        nonces.append(received[-1])
    check(nonces[0] != nonces[1], "a different nonce in each session", "the same nonce twice")


@case(
    "DM-CLI-AUTH-007",
    "The device answers the authenticated server with 212 (md5, basic) or 200 (HMAC)",
    rule=f"{DM} §6.3",
    role=_ROLE,
    steps=("Open a session; send a command with the runner's credentials.",),
    pass_criteria=("The device's Status for the server's SyncHdr is 212, or 200 with HMAC.",),
)
async def auth_212(ctx: DeviceContext) -> None:
    session = await ctx.session()
    await session.run(get("./DevInfo/Man"))
    last = session.received[-1].message
    status = next((c for c in last.commands if isinstance(c, Status) and c.cmd_ref == "0"), None)
    wanted = {200} if ctx.target.auth is AuthType.HMAC else {212, 200}
    check_code(status, wanted, "the server's SyncHdr once the server is authenticated")
    await session.close()


async def _refused(ctx: DeviceContext, forge: str) -> None:
    session = await ctx.session()
    base = await _scratch(ctx, session)  # a first, authenticated exchange
    target = ctx.target
    probe = f"{base}/forged"
    await session.run(delete(probe))
    await session.close()
    session = await ctx.session(authenticate=False)
    # The device opened the session: answer Package #1 with a command and a bad or no credential.
    message = session.compose([add(probe, "forged")], cred=forge != "none")
    if forge == "wrong" and target.auth is not AuthType.HMAC:
        bad = auth.make_cred(target.auth, target.server_id, "not-the-secret", target.server_nonce or b"")
        message = dataclasses.replace(message, header=dataclasses.replace(message.header, cred=bad))
    if forge == "replay" and target.auth is not AuthType.HMAC:
        old = auth.make_cred(
            target.auth, target.server_id, target.server_password, ctx.target.previous_server_nonce
        )
        message = dataclasses.replace(message, header=dataclasses.replace(message.header, cred=old))
    body = codec.encode(message, session.encoding)
    headers = {}
    if target.auth is AuthType.HMAC and forge != "none":
        nonce = ctx.target.previous_server_nonce if forge == "replay" else target.server_nonce or b""
        secret = "not-the-secret" if forge == "wrong" else target.server_password
        mac = auth.hmac_mac(target.server_id, secret, nonce, body)
        headers = {auth.HMAC_HEADER: auth.build_hmac_header(target.server_id, mac)}
    reply = await session.reply_raw(body, headers=headers, timeout=10.0)
    if reply is not None:
        statuses = [c for c in reply.message.commands if isinstance(c, Status)]
        header_status = next((s for s in statuses if s.cmd_ref == "0"), None)
        check_code(header_status, {401, 407}, "the SyncHdr of an unauthenticated server message")
        for refused in statuses:
            if refused.cmd == "Add":
                check(
                    refused.code in (401, 407),
                    "401/407 for the Add of an unauthenticated server",
                    refused.data,
                )
        await session.reply_raw(session.compose([], cred=False), timeout=1.0)
    check_session = await ctx.session()
    status, _ = await check_session.get(probe)
    check(code_of(status) == 404, "the forged Add not executed (Get 404)", f"Get {code_of(status)}")
    await check_session.close()


@case(
    "DM-CLI-AUTH-008",
    "A server message without credentials is refused (401/407) and not executed",
    rule=f"{DM} §6.1",
    role=_ROLE,
    steps=("Answer Package #1 with an Add and no Cred (no MAC).", "Check the device's answer and the tree."),
    pass_criteria=("The SyncHdr Status is 401 or 407.", "The Add gets 401/407 and its node does not exist."),
)
async def auth_no_server_cred(ctx: DeviceContext) -> None:
    await _refused(ctx, "none")


@case(
    "DM-CLI-AUTH-009",
    "A server message with a wrong credential is refused and not executed",
    rule=f"{DM} §6.1",
    role=_ROLE,
    steps=("Answer Package #1 with an Add and a Cred (MAC) computed with a wrong secret.",),
    pass_criteria=("The SyncHdr Status is 401 or 407.", "The Add is not executed."),
)
async def auth_wrong_server_cred(ctx: DeviceContext) -> None:
    await _refused(ctx, "wrong")


@case(
    "DM-CLI-AUTH-010",
    "A replayed server credential (computed with an old nonce) is refused",
    rule=f"{DM} §6.3",
    role=_ROLE,
    steps=(
        "Run a session (the device issues the server a new nonce).",
        "Answer the next Package #1 with a credential computed with the previous nonce.",
    ),
    pass_criteria=("The device refuses it (401/407) and does not execute the command.",),
)
async def auth_replay(ctx: DeviceContext) -> None:
    _digest_scheme(ctx)
    await _refused(ctx, "replay")


# -- identifiers and references ------------------------------------------------------------


@case(
    "DM-CLI-IDS-001",
    "One Status per command, the SyncHdr's first, with MsgRef, CmdRef and Cmd right",
    rule=f"{DM} §3.5",
    role=_ROLE,
    steps=("Send three Gets, a Replace and an Add in one message.",),
    pass_criteria=(
        "The reply starts with the Status for the SyncHdr.",
        "Each command has exactly one Status whose MsgRef/CmdRef/Cmd name it.",
    ),
)
async def ids_status_per_command(ctx: DeviceContext) -> None:
    session = await ctx.session()
    path = await _fresh(ctx, session, "ids")
    await session.run(
        get("./DevInfo/Man"), get("./DevInfo/Mod"), get("./DevInfo/Lang"), add(path, "1"), replace(path, "2")
    )
    check_replies(session)
    await session.close()


@case(
    "DM-CLI-IDS-002",
    "CmdIDs are unique and non-empty within each device message",
    rule=f"{DM} §2.3",
    role=_ROLE,
    steps=("Run an exchange with several commands.",),
    pass_criteria=("No two elements of one device message share a CmdID.",),
)
async def ids_unique(ctx: DeviceContext) -> None:
    session = await ctx.session()
    await session.run(get("./DevInfo/Man"), get("./DevInfo/Mod"), get("./DevInfo/DmV"))
    for received in session.received:
        ids = [c.cmd_id for c in received.message.commands]
        check(all(ids), "a CmdID on every element", ids)
        check(len(ids) == len(set(ids)), "unique CmdIDs in a message", ids)
    await session.close()


@case(
    "DM-CLI-IDS-003",
    "Results come after the Status of their Get and reference it",
    rule=f"{DM} §3.4",
    role=_ROLE,
    steps=("Send two Gets.",),
    pass_criteria=("Each Results follows its Get's Status and has its MsgRef and CmdRef.",),
)
async def ids_results_after_status(ctx: DeviceContext) -> None:
    session = await ctx.session()
    await session.run(get("./DevInfo/Man"), get("./DevInfo/Lang"))
    check_replies(session)
    reply = session.received[-1].message
    results = [c for c in reply.commands if c.name == "Results"]
    check(len(results) >= 2, "two Results", len(results))
    await session.close()


@case(
    "DM-CLI-IDS-004",
    "A Status for a command with several Items names each Item (TargetRef) or covers it once",
    rule=f"{DM} §3.5",
    role=_ROLE,
    steps=("Send one Get with two Items.",),
    pass_criteria=("One or two Statuses for the Get; with two, each has the TargetRef of its Item.",),
)
async def ids_items(ctx: DeviceContext) -> None:
    session = await ctx.session()
    command = Get("0", (Item(target=Target("./DevInfo/Man")), Item(target=Target("./DevInfo/Mod"))))
    await session.run(command)
    check_replies(session)
    sent = session.sent[-1]
    get_id = next(c.cmd_id for c in sent.commands if isinstance(c, Get))
    statuses = [
        c
        for c in session.received[-1].message.commands
        if isinstance(c, Status) and c.cmd_ref == get_id and c.msg_ref == sent.header.msg_id
    ]
    if len(statuses) == 2:
        refs = sorted(t for s in statuses for t in s.target_refs)
        check(refs == ["./DevInfo/Man", "./DevInfo/Mod"], "the TargetRef of each Item", refs)
    await session.close()


# -- commands ------------------------------------------------------------------------------


@case(
    "DM-CLI-CMD-001",
    "Add creates a leaf; Get reads the value back",
    rule=f"{DM} §3.4",
    role=_ROLE,
    steps=("Add a chr leaf below the scratch node.", "Get it."),
    pass_criteria=("Add gets 200.", "Get gets 200 and Results with the value."),
)
async def cmd_add(ctx: DeviceContext) -> None:
    session = await ctx.session()
    path = await _fresh(ctx, session, "added")
    (status,) = await session.run(add(path, "hello", fmt="chr", type="text/plain"))
    check_code(status, 200, f"Add {path}")
    status, results = await session.get(path)
    check_code(status, 200, f"Get {path}")
    check(result_value(results, path) == "hello", "the value added", result_value(results, path))
    await session.close()


@case(
    "DM-CLI-CMD-002",
    "Add of a node that exists is refused with 418",
    rule=f"{DM} §3.4",
    role=_ROLE,
    steps=("Add a leaf.", "Add it again."),
    pass_criteria=("The second Add gets 418 (already exists).",),
)
async def cmd_add_exists(ctx: DeviceContext) -> None:
    session = await ctx.session()
    path = await _fresh(ctx, session, "twice")
    await session.run(add(path, "a"))
    (status,) = await session.run(add(path, "b"))
    check_code(status, 418, f"a second Add {path}")
    await session.close()


@case(
    "DM-CLI-CMD-003",
    "Replace overwrites a leaf's value",
    rule=f"{DM} §3.4",
    role=_ROLE,
    steps=("Add a leaf.", "Replace its value.", "Get it."),
    pass_criteria=("Replace gets 200; Get returns the new value.",),
)
async def cmd_replace(ctx: DeviceContext) -> None:
    session = await ctx.session()
    path = await _fresh(ctx, session, "replaced")
    await session.run(add(path, "old"))
    (status,) = await session.run(replace(path, "new"))
    check_code(status, 200, f"Replace {path}")
    _, results = await session.get(path)
    check(result_value(results, path) == "new", "the new value", result_value(results, path))
    await session.close()


@case(
    "DM-CLI-CMD-004",
    "Replace of a missing node is 404 and creates nothing",
    rule=f"{DM} §3.4",
    role=_ROLE,
    steps=("Replace a leaf that does not exist.", "Get it."),
    pass_criteria=("Replace gets 404.", "Get gets 404."),
)
async def cmd_replace_missing(ctx: DeviceContext) -> None:
    session = await ctx.session()
    path = await _fresh(ctx, session, "never")
    (status,) = await session.run(replace(path, "x"))
    check_code(status, 404, f"Replace of the missing {path}")
    status, _ = await session.get(path)
    check_code(status, 404, f"Get {path} after the refused Replace")
    await session.close()


@case(
    "DM-CLI-CMD-005",
    "Delete removes a node and its sub-tree",
    rule=f"{DM} §3.4",
    role=_ROLE,
    steps=("Add an interior node with a leaf.", "Delete the interior node.", "Get the leaf."),
    pass_criteria=("Delete gets 200.", "The leaf is gone (404)."),
)
async def cmd_delete(ctx: DeviceContext) -> None:
    session = await ctx.session()
    base = await _scratch(ctx, session)
    tree = f"{base}/subtree"
    await session.run(delete(tree))
    await session.run(node(tree), add(f"{tree}/leaf", "v"))
    (status,) = await session.run(delete(tree))
    check_code(status, 200, f"Delete {tree}")
    status, _ = await session.get(f"{tree}/leaf")
    check_code(status, 404, "Get of a leaf of the deleted node")
    await session.close()


@case(
    "DM-CLI-CMD-006",
    "Get and Delete of an unknown node are 404",
    rule=f"{DM} §5",
    role=_ROLE,
    steps=("Get a node that does not exist.", "Delete it."),
    pass_criteria=("Both get 404.",),
)
async def cmd_unknown(ctx: DeviceContext) -> None:
    session = await ctx.session()
    missing = f"{ctx.options.scratch}/no-such-node-{secrets.token_hex(3)}"
    status, results = await session.get(missing)
    check_code(status, 404, f"Get of the unknown {missing}")
    check(results is None, "no Results for a 404", "Results")
    (status,) = await session.run(delete(missing))
    check_code(status, 404, f"Delete of the unknown {missing}")
    await session.close()


@case(
    "DM-CLI-CMD-007",
    "Get of an interior node lists its children",
    rule=f"{DM} §7.2",
    role=_ROLE,
    steps=("Add an interior node with two leaves.", "Get the interior node."),
    pass_criteria=("Results with Format node and the child names separated by '/'.",),
)
async def cmd_interior(ctx: DeviceContext) -> None:
    session = await ctx.session()
    base = await _scratch(ctx, session)
    tree = f"{base}/kids"
    await session.run(delete(tree))
    await session.run(node(tree), add(f"{tree}/a", "1"), add(f"{tree}/b", "2"))
    status, results = await session.get(tree)
    check_code(status, 200, f"Get {tree}")
    value = result_value(results, tree)
    names = sorted(str(value or "").split("/"))
    check(names == ["a", "b"], "children a/b", value)
    assert results is not None
    meta = results.items[0].meta or results.meta
    check(meta is not None and meta.format == "node", "Meta/Format node", meta)
    await session.close()


@case(
    "DM-CLI-CMD-008",
    "Format and Type given on Add come back on Get",
    rule=f"{DM} §7.3",
    role=_ROLE,
    steps=("Add an int leaf with Type text/plain.", "Get it."),
    pass_criteria=("Results carry Format int and the value.",),
)
async def cmd_format(ctx: DeviceContext) -> None:
    session = await ctx.session()
    path = await _fresh(ctx, session, "number")
    (status,) = await session.run(add(path, "42", fmt="int", type="text/plain"))
    check_code(status, 200, f"Add {path}")
    _, results = await session.get(path)
    assert results is not None or result_value(results, path)
    item = results.items[0] if results else None
    meta = (item.meta if item else None) or (results.meta if results else None)
    check(meta is not None and meta.format == "int", "Meta/Format int", meta)
    check(item is not None and item.data == "42", "the value 42", item.data if item else None)
    await session.close()


@case(
    "DM-CLI-CMD-009",
    "Binary data (Format b64 over XML, opaque over WBXML) keeps every byte",
    rule=f"{DM} §7.3",
    role=_ROLE,
    steps=("Add a bin leaf with 256 bytes 0..255.", "Get it."),
    pass_criteria=("The bytes read back are the bytes written.",),
)
async def cmd_binary(ctx: DeviceContext) -> None:
    session = await ctx.session()
    path = await _fresh(ctx, session, "blob")
    data = bytes(range(256))
    value: str | bytes = base64.b64encode(data).decode() if session.encoding is Encoding.XML else data
    fmt = "b64" if session.encoding is Encoding.XML else "bin"
    (status,) = await session.run(add(path, value, fmt=fmt, type="application/octet-stream"))
    check_code(status, 200, f"Add {path}")
    _, results = await session.get(path)
    got = result_value(results, path)
    assert results is not None
    item_meta = results.items[0].meta or results.meta
    if isinstance(got, str) and (item_meta is None or item_meta.format == "b64"):
        got = base64.b64decode(got)
    check(got == data, "the 256 bytes written", repr(got)[:80])
    await session.close()


@case(
    "DM-CLI-CMD-010",
    "Copy copies a leaf's value",
    rule=f"{DM} §3.4",
    role=_ROLE,
    capability=COPY,
    steps=("Add a leaf.", "Copy it to a new leaf.", "Get the copy."),
    pass_criteria=("Copy gets 200; the copy has the value.",),
)
async def cmd_copy(ctx: DeviceContext) -> None:
    session = await ctx.session()
    source = await _fresh(ctx, session, "original")
    target = await _fresh(ctx, session, "copied")
    await session.run(add(source, "same"))
    (status,) = await session.run(copy(source, target))
    check_code(status, 200, f"Copy {source} to {target}")
    _, results = await session.get(target)
    check(result_value(results, target) == "same", "the copied value", result_value(results, target))
    await session.close()


@case(
    "DM-CLI-CMD-011",
    "Exec on a node that is not executable is refused (405 or 406)",
    rule=f"{DM} §9",
    role=_ROLE,
    capability=PROPS,
    steps=("Add a plain leaf and grant the server Exec on it (?prop=ACL).", "Exec it."),
    pass_criteria=("Exec gets 405 or 406, not 200 or 202.",),
)
async def cmd_exec_refused(ctx: DeviceContext) -> None:
    session = await ctx.session()
    path = await _fresh(ctx, session, "not-executable")
    await session.run(add(path, "x"))
    me = ctx.target.server_id
    rights = f"Get={me}&Replace={me}&Delete={me}&Exec={me}"  # the ACL allows it: only the node refuses
    (granted,) = await session.run(Replace("0", (Item(target=Target(f"{path}?prop=ACL"), data=rights),)))
    check_code(granted, 200, f"Replace {path}?prop=ACL granting Exec")
    (status,) = await session.run(execute(path))
    check_code(status, {405, 406}, f"Exec {path}")
    await session.close()


@case(
    "DM-CLI-CMD-012",
    "Replace of a read-only standard leaf is refused (405 or 425)",
    rule=f"{DM} §7.8",
    role=_ROLE,
    steps=("Replace ./DevInfo/DevId.", "Get it."),
    pass_criteria=("Replace gets 405 or 425.", "The DevId is unchanged."),
)
async def cmd_replace_read_only(ctx: DeviceContext) -> None:
    session = await ctx.session()
    _, before = await session.get("./DevInfo/DevId")
    (status,) = await session.run(replace("./DevInfo/DevId", "IMEI:000000000000000"))
    check_code(status, {405, 425}, "Replace ./DevInfo/DevId")
    _, after = await session.get("./DevInfo/DevId")
    check(
        result_value(after, "./DevInfo/DevId") == result_value(before, "./DevInfo/DevId"),
        "DevId unchanged",
        result_value(after, "./DevInfo/DevId"),
    )
    await session.close()


@case(
    "DM-CLI-CMD-013",
    "Delete of a permanent node is refused (405 or 425)",
    rule=f"{DM} §3.4",
    role=_ROLE,
    steps=("Delete ./DevInfo.",),
    pass_criteria=("Delete gets 405 or 425 and ./DevInfo/Man still exists.",),
)
async def cmd_delete_permanent(ctx: DeviceContext) -> None:
    session = await ctx.session()
    (status,) = await session.run(delete("./DevInfo"))
    check_code(status, {405, 425}, "Delete ./DevInfo")
    status, _ = await session.get("./DevInfo/Man")
    check_code(status, 200, "Get ./DevInfo/Man after the refused Delete")
    await session.close()


@case(
    "DM-CLI-CMD-014",
    "Add below a missing parent creates the parent or is refused, never half-done",
    rule=f"{DM} §3.4",
    role=_ROLE,
    steps=("Add a leaf two levels below a missing interior node.", "Get the leaf."),
    pass_criteria=("Either Add is 200 and the leaf reads back, or Add fails (4xx) and the leaf is 404.",),
)
async def cmd_add_implicit_parent(ctx: DeviceContext) -> None:
    session = await ctx.session()
    base = await _scratch(ctx, session)
    parent = f"{base}/implicit"
    await session.run(delete(parent))
    leaf = f"{parent}/deeper/leaf"
    (status,) = await session.run(add(leaf, "v"))
    read, results = await session.get(leaf)
    if code_of(status) == 200:
        check(result_value(results, leaf) == "v", "the leaf readable after Add 200", code_of(read))
    else:
        check(
            code_of(status) is not None and 400 <= (code_of(status) or 0) < 600,
            "200 or an error",
            code_of(status),
        )
        check(code_of(read) == 404, "no leaf after a failed Add", code_of(read))
    await session.close()


# -- ACL -----------------------------------------------------------------------------------


async def _locked(ctx: DeviceContext, session: DeviceSession, acl: str) -> str:
    base = await _scratch(ctx, session)
    locked = f"{base}/locked"
    await session.run(
        Replace(
            "0",
            (
                Item(
                    target=Target(f"{locked}?prop=ACL"),
                    data=f"Add={ctx.target.server_id}&Delete={ctx.target.server_id}&Get={ctx.target.server_id}&Replace={ctx.target.server_id}",
                ),
            ),
        )
    )
    await session.run(delete(locked))
    await session.run(node(locked), add(f"{locked}/leaf", "secret-ish"))
    (status,) = await session.run(Replace("0", (Item(target=Target(f"{locked}?prop=ACL"), data=acl),)))
    check_code(status, 200, f"Replace {locked}?prop=ACL")
    return locked


@case(
    "DM-CLI-ACL-001",
    "Get of a node whose ACL does not grant Get to the server is refused with 425",
    rule=f"{DM} §7.5",
    role=_ROLE,
    capability=PROPS,
    steps=("Add a node and set its ACL to Get=another-server.", "Get its leaf (inheriting the ACL)."),
    pass_criteria=("Get gets 425 and no Results.",),
)
async def acl_get(ctx: DeviceContext) -> None:
    session = await ctx.session()
    locked = await _locked(ctx, session, f"Get=someone-else&Replace={ctx.target.server_id}")
    status, results = await session.get(f"{locked}/leaf")
    check_code(status, 425, f"Get {locked}/leaf without the Get right")
    check(results is None, "no Results", "Results")
    await session.close()


@case(
    "DM-CLI-ACL-002",
    "Replace of a node whose ACL does not grant Replace is refused with 425 and changes nothing",
    rule=f"{DM} §7.5",
    role=_ROLE,
    capability=PROPS,
    steps=("Set a node's ACL to Get=the server only.", "Replace its leaf.", "Get the leaf."),
    pass_criteria=("Replace gets 425.", "The value is unchanged."),
)
async def acl_replace(ctx: DeviceContext) -> None:
    session = await ctx.session()
    locked = await _locked(ctx, session, f"Get={ctx.target.server_id}")
    (status,) = await session.run(replace(f"{locked}/leaf", "changed"))
    check_code(status, 425, f"Replace {locked}/leaf without the Replace right")
    _, results = await session.get(f"{locked}/leaf")
    check(
        result_value(results, "the leaf") == "secret-ish", "the old value", result_value(results, "the leaf")
    )
    await session.close()


@case(
    "DM-CLI-ACL-003",
    "Add below a node whose ACL does not grant Add is refused with 425",
    rule=f"{DM} §7.5",
    role=_ROLE,
    capability=PROPS,
    steps=("Set a node's ACL to Get=the server only.", "Add a leaf below it."),
    pass_criteria=("Add gets 425; the leaf does not exist.",),
)
async def acl_add(ctx: DeviceContext) -> None:
    session = await ctx.session()
    locked = await _locked(ctx, session, f"Get={ctx.target.server_id}")
    (status,) = await session.run(add(f"{locked}/new", "x"))
    check_code(status, 425, f"Add below {locked} without the Add right")
    status, _ = await session.get(f"{locked}/new")
    check_code(status, 404, "Get of the refused leaf")
    await session.close()


@case(
    "DM-CLI-ACL-004",
    "Get ?prop=ACL returns the ACL that was set",
    rule=f"{DM} §7.4",
    role=_ROLE,
    capability=PROPS,
    steps=("Set a node's ACL.", "Get ?prop=ACL."),
    pass_criteria=("The ACL read back grants the same rights.",),
)
async def acl_read(ctx: DeviceContext) -> None:
    session = await ctx.session()
    acl = f"Get={ctx.target.server_id}&Replace={ctx.target.server_id}"
    locked = await _locked(ctx, session, acl)
    status, results = await session.get(f"{locked}?prop=ACL")
    check_code(status, 200, f"Get {locked}?prop=ACL")
    value = str(result_value(results, "the ACL"))
    check(sorted(value.split("&")) == sorted(acl.split("&")), acl, value)
    await session.close()


# -- properties and tree exchange ----------------------------------------------------------


async def _prop(ctx: DeviceContext, prop: str, expected: str) -> None:
    session = await ctx.session()
    path = await _fresh(ctx, session, f"prop{prop.lower()}")
    await session.run(add(path, "abc", fmt="chr", type="text/plain"))
    status, results = await session.get(f"{path}?prop={prop}")
    check_code(status, 200, f"Get {path}?prop={prop}")
    value = result_value(results, f"?prop={prop}")
    check(str(value) == expected, f"{prop} {expected}", value)
    await session.close()


@case(
    "DM-CLI-PROP-001",
    "Get ?prop=Format returns the leaf's Format",
    rule=f"{DM} §7.4",
    role=_ROLE,
    capability=PROPS,
    steps=("Add a chr leaf.", "Get ?prop=Format."),
    pass_criteria=("The value is chr.",),
)
async def prop_format(ctx: DeviceContext) -> None:
    await _prop(ctx, "Format", "chr")


@case(
    "DM-CLI-PROP-002",
    "Get ?prop=Type returns the leaf's MIME type",
    rule=f"{DM} §7.4",
    role=_ROLE,
    capability=PROPS,
    steps=("Add a text/plain leaf.", "Get ?prop=Type."),
    pass_criteria=("The value is text/plain.",),
)
async def prop_type(ctx: DeviceContext) -> None:
    await _prop(ctx, "Type", "text/plain")


@case(
    "DM-CLI-PROP-003",
    "Get ?prop=Size returns the value's size in bytes",
    rule=f"{DM} §7.4",
    role=_ROLE,
    capability=PROPS,
    steps=("Add a leaf of three characters.", "Get ?prop=Size."),
    pass_criteria=("The value is 3.",),
)
async def prop_size(ctx: DeviceContext) -> None:
    await _prop(ctx, "Size", "3")


@case(
    "DM-CLI-PROP-004",
    "Get ?prop=Name returns the node's name",
    rule=f"{DM} §7.4",
    role=_ROLE,
    capability=PROPS,
    steps=("Add a leaf.", "Get ?prop=Name."),
    pass_criteria=("The value is the last segment of the URI.",),
)
async def prop_name(ctx: DeviceContext) -> None:
    await _prop(ctx, "Name", "propname")


@case(
    "DM-CLI-PROP-005",
    "An unknown property is refused (not 200)",
    rule=f"{DM} §7.4",
    role=_ROLE,
    capability=PROPS,
    steps=("Get ?prop=NoSuchProperty of a leaf.",),
    pass_criteria=("The Status is an error (4xx).",),
)
async def prop_unknown(ctx: DeviceContext) -> None:
    session = await ctx.session()
    status, _ = await session.get("./DevInfo/Man?prop=NoSuchProperty")
    check(status is not None and 400 <= status.code < 500, "a 4xx Status", code_of(status))
    await session.close()


async def _listed(ctx: DeviceContext, kind: str) -> tuple[DeviceSession, str, Results | None]:
    session = await ctx.session()
    base = await _scratch(ctx, session)
    tree = f"{base}/listed"
    await session.run(delete(tree))
    await session.run(node(tree), add(f"{tree}/one", "1"), add(f"{tree}/two", "2"))
    status, results = await session.get(f"{tree}?list={kind}")
    check_code(status, 200, f"Get {tree}?list={kind}")
    return session, tree, results


@case(
    "DM-CLI-LIST-001",
    "Get ?list=Struct returns the sub-tree's nodes without data",
    rule=f"{DM} §7.6",
    role=_ROLE,
    capability=STRUCT,
    steps=("Add an interior node with two leaves.", "Get ?list=Struct."),
    pass_criteria=("One Item per node (the node and both leaves), none carrying Data.",),
)
async def list_struct(ctx: DeviceContext) -> None:
    session, tree, results = await _listed(ctx, "Struct")
    items = results.items if results is not None else ()
    uris = sorted(i.source.loc_uri for i in items if i.source is not None)
    check(uris == sorted([tree, f"{tree}/one", f"{tree}/two"]), "the node and its two leaves", uris)
    check(
        all(i.data in (None, "") for i in items if i.source and i.source.loc_uri != tree), "no Data", "Data"
    )
    await session.close()


@case(
    "DM-CLI-LIST-002",
    "Get ?list=StructData returns the sub-tree's nodes with their values",
    rule=f"{DM} §7.6",
    role=_ROLE,
    capability=STRUCT,
    steps=("Add an interior node with two leaves.", "Get ?list=StructData."),
    pass_criteria=("The leaves' Items carry their values.",),
)
async def list_struct_data(ctx: DeviceContext) -> None:
    session, tree, results = await _listed(ctx, "StructData")
    values = {i.source.loc_uri: i.data for i in (results.items if results else ()) if i.source is not None}
    check(values.get(f"{tree}/one") == "1" and values.get(f"{tree}/two") == "2", "values 1 and 2", values)
    await session.close()


@case(
    "DM-CLI-LIST-003",
    "Get ?list=TNDS+Format+Type returns a TNDS document of the sub-tree",
    rule=f"{DM} §7.7",
    role=_ROLE,
    capability=TNDS,
    steps=("Add an interior node with two leaves.", "Get ?list=TNDS+Format+Type."),
    pass_criteria=("Results with Type application/vnd.syncml.dmtnds+xml naming both leaves.",),
)
async def list_tnds(ctx: DeviceContext) -> None:
    session, _tree, results = await _listed(ctx, "TNDS+Format+Type")
    check(results is not None and bool(results.items), "an Item", "none")
    assert results is not None
    item = results.items[0]
    meta = item.meta or results.meta
    check(
        meta is not None and (meta.type or "").startswith("application/vnd.syncml.dmtnds"),
        "the TNDS type",
        meta,
    )
    text = item.data.decode("utf-8", "replace") if isinstance(item.data, bytes) else str(item.data)
    check("MgmtTree" in text and "one" in text and "two" in text, "a MgmtTree with both leaves", text[:200])
    await session.close()


# -- Atomic and Sequence -------------------------------------------------------------------


@case(
    "DM-CLI-ATOM-001",
    "Atomic whose commands all succeed: 200 for the Atomic and each command",
    rule=f"{DM} §3.4",
    role=_ROLE,
    capability=ATOMIC,
    steps=("Send Atomic with two Adds.",),
    pass_criteria=("The Atomic gets 200; both Adds get 200 and both leaves exist.",),
)
async def atomic_ok(ctx: DeviceContext) -> None:
    session = await ctx.session()
    a, b = await _fresh(ctx, session, "atom-a"), await _fresh(ctx, session, "atom-b")
    (status,) = await session.run(Atomic("0", (add(a, "1"), add(b, "2"))))
    check_code(status, 200, "the Atomic")
    check_replies(session)
    for path in (a, b):
        status, _ = await session.get(path)
        check_code(status, 200, f"Get {path} after the Atomic")
    await session.close()


@case(
    "DM-CLI-ATOM-002",
    "Atomic with a failing command: 507, nothing applied",
    rule=f"{DM} §3.4",
    role=_ROLE,
    capability=ATOMIC,
    steps=(
        "Send Atomic with an Add that would succeed and a Replace of a missing node.",
        "Get the added leaf.",
    ),
    pass_criteria=("The Atomic gets 507.", "The leaf of the first Add does not exist (rolled back)."),
)
async def atomic_rollback(ctx: DeviceContext) -> None:
    session = await ctx.session()
    a = await _fresh(ctx, session, "atom-rollback")
    missing = await _fresh(ctx, session, "atom-missing")
    (status,) = await session.run(Atomic("0", (add(a, "1"), replace(missing, "2"))))
    check_code(status, 507, "an Atomic with a failing command")
    check_replies(session)
    status, _ = await session.get(a)
    check_code(status, 404, f"Get {a} (rolled back)")
    await session.close()


@case(
    "DM-CLI-ATOM-003",
    "A Get inside Atomic is refused and fails the Atomic",
    rule=f"{DM} §3.4",
    role=_ROLE,
    capability=ATOMIC,
    steps=("Send Atomic with an Add and a Get.",),
    pass_criteria=("The Atomic gets 507 (or 500); the Add is not applied.",),
)
async def atomic_get(ctx: DeviceContext) -> None:
    session = await ctx.session()
    a = await _fresh(ctx, session, "atom-with-get")
    (status,) = await session.run(Atomic("0", (add(a, "1"), get("./DevInfo/Man"))))
    check_code(status, {507, 500}, "an Atomic holding a Get")
    status, _ = await session.get(a)
    check_code(status, 404, f"Get {a} after the refused Atomic")
    await session.close()


@case(
    "DM-CLI-SEQ-001",
    "Sequence runs its commands in order",
    rule=f"{DM} §3.4",
    role=_ROLE,
    capability=SEQUENCE,
    steps=("Send Sequence: Add a leaf, Replace it, Get it.",),
    pass_criteria=("The Sequence gets 200; the Get's Results show the replaced value.",),
)
async def sequence_order(ctx: DeviceContext) -> None:
    session = await ctx.session()
    path = await _fresh(ctx, session, "seq")
    (status,) = await session.run(Sequence("0", (add(path, "first"), replace(path, "second"), get(path))))
    check_code(status, 200, "the Sequence")
    check_replies(session)
    results = [c for m in session.received for c in m.message.commands if isinstance(c, Results)]
    values = [i.data for r in results for i in r.items if i.source and i.source.loc_uri == path]
    check(values == ["second"], "the Get inside the Sequence to read 'second'", values)
    await session.close()


@case(
    "DM-CLI-SEQ-002",
    "Exec is allowed inside Sequence and gets its own Status",
    rule=f"{DM} §9",
    role=_ROLE,
    capability=SEQUENCE,
    steps=("Send Sequence: Add a leaf, Exec it.",),
    pass_criteria=("The Sequence gets 200; the Exec has its own Status (an error for a plain leaf).",),
)
async def sequence_exec(ctx: DeviceContext) -> None:
    session = await ctx.session()
    path = await _fresh(ctx, session, "seq-exec")
    (status,) = await session.run(Sequence("0", (add(path, "x"), execute(path))))
    check_code(status, 200, "the Sequence")
    check_replies(session)
    await session.close()


# -- large objects, message sizes, multi-message packages ----------------------------------


@case(
    "DM-CLI-LO-001",
    "A large object sent in chunks: 213 for each chunk but the last, then 200; stored whole",
    rule=f"{DM} §8",
    role=_ROLE,
    capability=LARGE,
    steps=(
        "Replace a leaf with a value larger than the device's MaxMsgSize (the runner splits it).",
        "Get it back.",
    ),
    pass_criteria=("Non-last chunks get 213, the last 200.", "The value read back is complete."),
)
async def lo_receive(ctx: DeviceContext) -> None:
    session = await ctx.session()
    path = await _fresh(ctx, session, "large")
    limit = (session.first.header.meta.max_msg_size if session.first.header.meta else None) or 16384
    value = ("0123456789abcdef" * (limit // 8 + 64))[: limit * 2 + 100]
    (status,) = await session.run(add(path, value))
    check_code(status, 200, "the last chunk of the large Add")
    chunk_codes = [
        c.code
        for m in session.received
        for c in m.message.commands
        if isinstance(c, Status) and c.cmd == "Add"
    ]
    check(213 in chunk_codes, "213 for a non-last chunk", chunk_codes)
    await session.close()
    session = await ctx.session(max_msg_size=max(limit * 4, 65536))
    _, results = await session.get(path)
    check(
        result_value(results, path) == value,
        f"{len(value)} characters back",
        len(str(result_value(results, path))),
    )
    await session.close()


@case(
    "DM-CLI-LO-002",
    "The device splits a large Results over messages (MoreData, Meta/Size first)",
    rule=f"{DM} §8",
    role=_ROLE,
    capability=LARGE,
    steps=("Add a 6000-character leaf.", "In a session whose MaxMsgSize is 2048, Get it."),
    pass_criteria=(
        "The Results come in chunks, each but the last with MoreData, the first with Meta/Size.",
        "The reassembled value is complete.",
    ),
)
async def lo_send(ctx: DeviceContext) -> None:
    session = await ctx.session()
    path = await _fresh(ctx, session, "large-out")
    value = "x" * 6000
    await session.run(add(path, value))
    await session.close()
    session = await ctx.session(max_msg_size=2048)
    _, results = await session.get(path)
    chunks = [
        i
        for m in session.received
        for c in m.message.commands
        if c.name == "Results"
        for i in c.items  # type: ignore[attr-defined]
    ]
    check(len(chunks) >= 2, "the Results in two or more chunks", f"{len(chunks)} chunks")
    check(
        all(i.more_data for i in chunks[:-1]) and not chunks[-1].more_data,
        "MoreData on all but the last",
        [i.more_data for i in chunks],
    )
    first_meta = chunks[0].meta
    check(
        first_meta is not None and first_meta.size == len(value),
        f"Meta/Size {len(value)} on the first chunk",
        first_meta,
    )
    check(result_value(results, path) == value, "the whole value", len(str(result_value(results, path))))
    for received in session.received:
        check(len(received.body) <= 2048, "messages within MaxMsgSize 2048", len(received.body))
    await session.close()


async def _raw_chunks(
    ctx: DeviceContext, second: str
) -> tuple[DeviceSession, list[Status], list[Alert], str]:
    session = await ctx.session()
    path = await _fresh(ctx, session, "chunked")
    await session.run(get("./DevInfo/Man"))  # one more exchange: the device trusts the runner now
    chunk = Replace("0", (Item(target=Target(path), meta=Meta(size=100), data="a" * 50, more_data=True),))
    add_first = add(path, "seed")
    reply = await session.reply_raw(
        _mac(session, session.compose([add_first, chunk], final=False)), headers=None
    )
    check(reply is not None, "an answer to the first chunk", "none")
    if second == "short":
        follow = Replace("0", (Item(target=Target(path), data="b" * 20),))
        message = session.compose([follow])
    else:
        message = session.compose([get("./DevInfo/Mod")])
    reply = await session.reply_raw(_mac(session, message))
    check(reply is not None, "an answer to the second message", "none")
    assert reply is not None
    statuses = [c for c in reply.message.commands if isinstance(c, Status)]
    alerts = [c for c in reply.message.commands if isinstance(c, Alert)]
    await session.reply_raw(_mac(session, session.compose([])), timeout=1.0)
    return session, statuses, alerts, path


def _mac(session: DeviceSession, message: object) -> bytes:
    return codec.encode(message, session.encoding)  # type: ignore[arg-type]


@case(
    "DM-CLI-LO-003",
    "A large object whose size differs from Meta/Size is refused with 424",
    rule=f"{DM} §8",
    role=_ROLE,
    capability=LARGE,
    steps=("Send a chunk of 50 bytes announcing Meta/Size 100 (MoreData).", "Send a last chunk of 20 bytes."),
    pass_criteria=("The last chunk's Status is 424 (size mismatch); the value is not stored.",),
)
async def lo_size_mismatch(ctx: DeviceContext) -> None:
    if ctx.target.auth is AuthType.HMAC:
        raise NotApplicable("the raw chunks are sent without a MAC")
    _, statuses, _, _ = await _raw_chunks(ctx, "short")
    codes = [s.code for s in statuses if s.cmd == "Replace"]
    check(424 in codes, "Status 424 for the short last chunk", codes)


@case(
    "DM-CLI-LO-004",
    "A new command before the last chunk: Alert 1225 and the object is dropped",
    rule=f"{DM} §8",
    role=_ROLE,
    capability=LARGE,
    steps=("Send a first chunk (MoreData).", "Send a Get instead of the next chunk."),
    pass_criteria=("The device sends Alert 1225 for the interrupted object.",),
)
async def lo_interrupted(ctx: DeviceContext) -> None:
    if ctx.target.auth is AuthType.HMAC:
        raise NotApplicable("the raw chunks are sent without a MAC")
    _, _, alerts, _ = await _raw_chunks(ctx, "interrupt")
    codes = [a.code for a in alerts]
    check(AlertCode.NO_END_OF_DATA in codes, "Alert 1225", codes)


@case(
    "DM-CLI-LO-005",
    "An object larger than the device's MaxObjSize is refused with 413",
    rule=f"{DM} §8",
    role=_ROLE,
    capability=LARGE,
    steps=("Send the first chunk of an object announcing Meta/Size of 10^12 bytes.",),
    pass_criteria=("The Status is 413.",),
)
async def lo_max_obj_size(ctx: DeviceContext) -> None:
    if ctx.target.auth is AuthType.HMAC:
        raise NotApplicable("the raw chunks are sent without a MAC")
    session = await ctx.session()
    path = await _fresh(ctx, session, "huge")
    huge = Add("0", (Item(target=Target(path), meta=Meta(size=10**12), data="x" * 100, more_data=True),))
    reply = await session.reply_raw(_mac(session, session.compose([huge], final=False)))
    check(reply is not None, "an answer", "none")
    assert reply is not None
    codes = [c.code for c in reply.message.commands if isinstance(c, Status) and c.cmd == "Add"]
    check(413 in codes, "Status 413 for an object over MaxObjSize", codes)
    await session.reply_raw(_mac(session, session.compose([])), timeout=1.0)


@case(
    "DM-CLI-LO-006",
    "The device does not send an object over the server's MaxObjSize: 413 for the Get",
    rule=f"{DM} §8",
    role=_ROLE,
    capability=LARGE,
    steps=("Add a 3000-character leaf.", "In a session with MaxObjSize 1024, Get it."),
    pass_criteria=("The Get gets 413 and no Results.",),
)
async def lo_server_max_obj(ctx: DeviceContext) -> None:
    session = await ctx.session()
    path = await _fresh(ctx, session, "too-big")
    await session.run(add(path, "y" * 3000))
    await session.close()
    session = await ctx.session(max_obj_size=1024)
    status, results = await session.get(path)
    check_code(status, 413, "a Get of an object over the server's MaxObjSize")
    check(results is None, "no Results", "Results")
    await session.close()


@case(
    "DM-CLI-MSG-001",
    "Replies too big for one message are split; the device continues on Alert 1222",
    rule=f"{DM} §2.4",
    role=_ROLE,
    capability=MULTI,
    steps=("In a session with MaxMsgSize 2048, send 30 Gets.",),
    pass_criteria=(
        "The device's package spans messages (no Final on all but the last).",
        "Every Get gets its Status and Results; every message fits 2048 bytes.",
    ),
)
async def msg_multi_reply(ctx: DeviceContext) -> None:
    session = await ctx.session(max_msg_size=2048)
    leaves = ["Man", "Mod", "DmV", "Lang", "DevId"] * 6
    statuses = await session.run(*(get(f"./DevInfo/{leaf}") for leaf in leaves))
    check(all(code_of(s) == 200 for s in statuses), "200 for all 30 Gets", [code_of(s) for s in statuses])
    check(any(not r.message.final for r in session.received), "a device message without Final", "all Final")
    for received in session.received:
        check(len(received.body) <= 2048, "every message within 2048 bytes", len(received.body))
    await session.close()


@case(
    "DM-CLI-MSG-002",
    "A server package over several messages: the device asks for more with Alert 1222",
    rule=f"{DM} §2.4",
    role=_ROLE,
    capability=MULTI,
    steps=("Send 40 Adds of 600 characters each (more than the device's MaxMsgSize in one package).",),
    pass_criteria=("The device answers non-final messages with Alert 1222.", "All Adds get 200."),
)
async def msg_multi_request(ctx: DeviceContext) -> None:
    session = await ctx.session()
    base = await _scratch(ctx, session)
    tree = f"{base}/many"
    await session.run(delete(tree))
    await session.run(node(tree))
    statuses = await session.run(*(add(f"{tree}/n{i}", "z" * 600) for i in range(40)))
    check(all(code_of(s) == 200 for s in statuses), "200 for all 40 Adds", [code_of(s) for s in statuses])
    alerts = [c.code for m in session.received for c in m.message.commands if isinstance(c, Alert)]
    non_final = [m for m in session.sent if not m.final]
    check(bool(non_final), "the runner's package over several messages", "one message")
    check(AlertCode.NEXT_MESSAGE in alerts, "Alert 1222 from the device", alerts)
    await session.close()


@case(
    "DM-CLI-MSG-003",
    "Every device message respects the server's MaxMsgSize",
    rule=f"{DM} §8",
    role=_ROLE,
    steps=("In a session with MaxMsgSize 4096, Get DevInfo and DevDetail leaves.",),
    pass_criteria=("No device message after Package #1 exceeds 4096 bytes.",),
)
async def msg_size(ctx: DeviceContext) -> None:
    session = await ctx.session(max_msg_size=4096)
    await session.run(*(get(f"./DevInfo/{leaf}") for leaf in ("Man", "Mod", "DmV", "Lang", "DevId")))
    for received in session.received[1:]:
        check(len(received.body) <= 4096, "messages within 4096 bytes", len(received.body))
    await session.close()


# -- abort and encodings -------------------------------------------------------------------


@case(
    "DM-CLI-ABORT-001",
    "After the server's Alert 1223 the device sends nothing more",
    rule=f"{DM} §2.2",
    role=_ROLE,
    steps=("Open a session and run a Get.", "Answer with Alert 1223.", "Wait one second."),
    pass_criteria=("No further device message in that session.",),
)
async def abort_session(ctx: DeviceContext) -> None:
    session = await ctx.session()
    await session.run(get("./DevInfo/Man"))
    count = len(session.received)
    await session.abort()
    await asyncio.sleep(1.0)
    check(
        len(session.received) == count, "no message after Alert 1223", f"{len(session.received) - count} more"
    )


@case(
    "DM-CLI-ENC-001",
    "The Content-Type names the encoding the message is in",
    rule=f"{DM} §12",
    role=_ROLE,
    steps=("Open a session; read each POST's Content-Type.",),
    pass_criteria=("application/vnd.syncml.dm+xml for XML, application/vnd.syncml.dm+wbxml for WBXML.",),
)
async def enc_content_type(ctx: DeviceContext) -> None:
    session = await ctx.session()
    await session.run(get("./DevInfo/Man"))
    for received in session.received:
        content_type = (received.headers.get("content-type") or "").split(";")[0].strip().lower()
        check(content_type == received.encoding.content_type, received.encoding.content_type, content_type)
    await session.close()


@case(
    "DM-CLI-ENC-002",
    "WBXML: version 1.2, the SyncML 1.2 public identifier, UTF-8",
    rule=f"{DM} §10.1",
    role=_ROLE,
    capability=WBXML,
    encodings=("wbxml",),
    steps=("Open a session in WBXML; read the document header of each message.",),
    pass_criteria=("Version 0x02, public id 0x00 0x00 with the FPI string (or 0x1201), charset 106.",),
)
async def enc_wbxml_header(ctx: DeviceContext) -> None:
    session = await ctx.session()
    for received in session.received:
        body = received.body
        check(body[:1] == b"\x02", "WBXML version 1.2 (0x02)", body[:1].hex())
        public_id, at = _mb_uint32(body, 1)
        if public_id == 0:  # the FPI is a string in the string table: its index follows
            _, at = _mb_uint32(body, at)
        else:
            check(public_id == _SYNCML_DM_PUBLIC_ID, "public id 0x1201 (SyncML DM 1.2)", hex(public_id))
        charset, _ = _mb_uint32(body, at)
        check(charset == _UTF8_MIBENUM, "charset 106 (UTF-8)", charset)
    await session.close()


_SYNCML_DM_PUBLIC_ID = 0x1201
_UTF8_MIBENUM = 106


def _mb_uint32(data: bytes, at: int) -> tuple[int, int]:
    """A WBXML multi-byte integer at ``at``: its value and the offset after it."""
    value = 0
    for _ in range(5):
        if at >= len(data):
            raise CaseFailed("a complete WBXML header", "the message ends inside it")
        byte = data[at]
        at += 1
        value = (value << 7) | (byte & 0x7F)
        if not byte & 0x80:
            return value, at
    raise CaseFailed("a WBXML multi-byte integer of at most 5 bytes", "a longer one")


@case(
    "DM-CLI-ENC-003",
    "XML: the SyncML element is in the SYNCML:SYNCML1.2 namespace",
    rule=f"{DM} §3.2",
    role=_ROLE,
    encodings=("xml",),
    steps=("Open a session in XML; read each message's root element.",),
    pass_criteria=('The root is <SyncML xmlns="SYNCML:SYNCML1.2">.',),
)
async def enc_xml_namespace(ctx: DeviceContext) -> None:
    session = await ctx.session()
    for received in session.received:
        head = received.body[:400].decode("utf-8", "replace")
        check("SYNCML:SYNCML1.2" in head.upper(), "xmlns SYNCML:SYNCML1.2", head[:120])
    await session.close()


@case(
    "DM-CLI-ENC-004",
    "The device's replies keep the encoding of the session",
    rule=f"{DM} §12",
    role=_ROLE,
    steps=("Run three exchanges.",),
    pass_criteria=("Every message of the session is in the encoding of Package #1.",),
)
async def enc_same(ctx: DeviceContext) -> None:
    session = await ctx.session()
    await session.run(get("./DevInfo/Man"))
    await session.run(get("./DevInfo/Mod"))
    encodings = {r.encoding for r in session.received}
    check(len(encodings) == 1, "one encoding", sorted(e.value for e in encodings))
    await session.close()
