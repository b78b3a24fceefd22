"""DM-SRV-*: the DM 1.2 protocol rules a DM server must keep, checked with omadm playing the device.

Each case drives the server with the simulated device (a whole, well-behaved session) or with
raw messages (:class:`~omadm.conformance.server_harness.RawSession`) where the rule is about
what the server does with an odd message: no or wrong credentials, a stale or replayed nonce,
a package split over messages, a chunked object, an abort.
"""

from __future__ import annotations

import base64
import itertools

from omadm.protocol import auth
from omadm.protocol.codec import Encoding
from omadm.protocol.codes import AlertCode, AuthType
from omadm.protocol.messages import Alert, Get, Item, Message, Meta, Results, Source, Status

from ..ics import declare
from ..model import CaseFailed, Inconclusive, NotApplicable, Role, case, check
from ..server_harness import RawSession, Reply, ServerCaseContext, Transcript

DM = "oma-dm-1.2.md"
SERVER_AUTH = declare("server-auth", "The server authenticates itself to the device (SRVCRED) when asked")
AUTH_HMAC = declare("auth-hmac", "HMAC (x-syncml-hmac) authentication of the device")
AUTH_BASIC = declare("auth-basic", "Basic authentication of the device")
#: What every DM-SRV case needs of the server before it runs.
REGISTERED = ("The server knows the device (--device-id) with the runner's credentials and --auth scheme",)
AUTH_MD5 = declare("auth-md5", "MD5 digest authentication of the device")


def _note_item(text: str) -> Item:
    """A Generic Alert item of a type no server acts on (the alert only has to be answered)."""
    return Item(
        source=Source("./DevDetail/Ext"), meta=Meta(type="urn:example:conformance", format="chr"), data=text
    )


def _need_scheme(ctx: ServerCaseContext, scheme: AuthType) -> None:
    if ctx.auth_type is not scheme:
        wanted = {AuthType.MD5: "md5", AuthType.HMAC: "hmac", AuthType.BASIC: "basic"}[scheme]
        raise NotApplicable(f"runs with --auth {wanted}; this run uses --auth {ctx.target.auth_name}")


def _reply_ok(reply: Reply, what: str = "a DM message") -> Message:
    check(reply.status == 200 and reply.message is not None, f"HTTP 200 with {what}", reply.describe())
    assert reply.message is not None
    return reply.message


def _first(transcript: Transcript) -> Reply:
    check(bool(transcript.turns), "at least one server reply", "none")
    return transcript.turns[0].reply


def _auth_turn(transcript: Transcript) -> tuple[Message, Reply]:
    """The first message the server accepted the credentials of, and its reply."""
    for turn in transcript.turns:
        status = turn.reply.header_status
        if status is not None and status.code in (200, 212):
            return turn.sent, turn.reply
    raise CaseFailed(
        "a reply accepting the device's credentials (200 or 212)",
        "; ".join(t.reply.describe() for t in transcript.turns),
    )


# ---------------------------------------------------------------------------------------- headers


@case(
    "DM-SRV-HDR-001",
    "Status for the SyncHdr is the first element of every server message",
    rule=f"{DM} §2.3",
    role=Role.SERVER,
    preconditions=REGISTERED,
    steps=("Run a whole device session (Package #1 with DevInfo, then Results and Statuses)",),
    pass_criteria=(
        "In every server message the first element of SyncBody is Status with CmdRef 0 and Cmd SyncHdr",
    ),
)
async def hdr_status_first(ctx: ServerCaseContext) -> None:
    transcript = await ctx.session()
    for turn in transcript.turns:
        message = _reply_ok(turn.reply)
        head = message.commands[0] if message.commands else None
        check(
            isinstance(head, Status) and head.cmd_ref == "0" and head.cmd == "SyncHdr",
            "Status(CmdRef 0, Cmd SyncHdr) first",
            f"MsgID {message.header.msg_id}: {turn.reply.describe()}",
        )


@case(
    "DM-SRV-HDR-002",
    "The SyncHdr Status references the device's message (MsgRef, TargetRef, SourceRef)",
    rule=f"{DM} §2.3",
    role=Role.SERVER,
    preconditions=REGISTERED,
    steps=("Run a whole device session",),
    pass_criteria=(
        "The SyncHdr Status's MsgRef is the MsgID of the message it answers",
        "Its TargetRef is the device message's Target and its SourceRef the device's Source",
    ),
)
async def hdr_status_refs(ctx: ServerCaseContext) -> None:
    transcript = await ctx.session()
    for turn in transcript.turns:
        status = turn.reply.header_status
        check(status is not None, "a SyncHdr Status", turn.reply.describe())
        assert status is not None
        check(status.msg_ref == turn.sent.header.msg_id, f"MsgRef {turn.sent.header.msg_id}", status.msg_ref)
        if status.target_refs:
            check(
                status.target_refs[0] == turn.sent.header.target.loc_uri,
                f"TargetRef {turn.sent.header.target.loc_uri}",
                status.target_refs[0],
            )
        if status.source_refs:
            check(
                status.source_refs[0] == turn.sent.header.source.loc_uri,
                f"SourceRef {turn.sent.header.source.loc_uri}",
                status.source_refs[0],
            )


@case(
    "DM-SRV-HDR-003",
    "The server echoes the SessionID and speaks DM 1.2",
    rule=f"{DM} §2.1, §2.3",
    role=Role.SERVER,
    preconditions=REGISTERED,
    steps=("Run a whole device session with a fresh SessionID",),
    pass_criteria=("Every reply carries the device's SessionID, VerDTD 1.2 and VerProto DM/1.2",),
)
async def hdr_session_id(ctx: ServerCaseContext) -> None:
    transcript = await ctx.session()
    for turn in transcript.turns:
        header = _reply_ok(turn.reply).header
        check(
            header.session_id == turn.sent.header.session_id,
            f"SessionID {turn.sent.header.session_id}",
            header.session_id,
        )
        check(
            header.ver_dtd == "1.2" and header.ver_proto == "DM/1.2",
            "VerDTD 1.2, VerProto DM/1.2",
            f"{header.ver_dtd}, {header.ver_proto}",
        )


@case(
    "DM-SRV-HDR-004",
    "The server addresses its replies to the device",
    rule=f"{DM} §2.1, §3.1",
    role=Role.SERVER,
    preconditions=REGISTERED,
    steps=("Run a whole device session",),
    pass_criteria=("Every reply's Target/LocURI is the device's DevId; its Source/LocURI is not empty",),
)
async def hdr_addressing(ctx: ServerCaseContext) -> None:
    transcript = await ctx.session()
    for turn in transcript.turns:
        header = _reply_ok(turn.reply).header
        check(
            header.target.loc_uri == ctx.target.device_id,
            f"Target {ctx.target.device_id}",
            header.target.loc_uri,
        )
        check(bool(header.source.loc_uri), "a Source/LocURI (the server's URI)", "an empty one")


@case(
    "DM-SRV-HDR-005",
    "The server's MsgIDs count up by one within a session",
    rule=f"{DM} §2.3",
    role=Role.SERVER,
    preconditions=REGISTERED,
    steps=("Run a whole device session of several messages",),
    pass_criteria=("The replies' MsgIDs are consecutive integers, each message a new one",),
)
async def hdr_msg_ids(ctx: ServerCaseContext) -> None:
    transcript = await ctx.session()
    ids = [_reply_ok(t.reply).header.msg_id for t in transcript.turns]
    check(all(i.isdigit() for i in ids), "numeric MsgIDs", ids)
    numbers = [int(i) for i in ids]
    check(
        all(b == a + 1 for a, b in itertools.pairwise(numbers)),
        "consecutive MsgIDs",
        ids,
    )


# ---------------------------------------------------------------------------------------- statuses


@case(
    "DM-SRV-STS-001",
    "One Status per command of the device's Package #1",
    rule=f"{DM} §2.1 (Pkg#2)",
    role=Role.SERVER,
    preconditions=REGISTERED,
    steps=("Send Package #1 (Alert 1201, Replace DevInfo) with valid credentials",),
    pass_criteria=(
        "The reply has exactly one Status for the Alert and one for the Replace, each with the right Cmd",
    ),
)
async def one_status_per_command(ctx: ServerCaseContext) -> None:
    raw = ctx.raw()
    reply = await raw.open()
    sent_ids = {"1": "Alert", "2": "Replace"}
    msg_ref = str(raw.msg_id)
    for cmd_id, name in sent_ids.items():
        found = reply.status_for(msg_ref, cmd_id)
        check(
            len(found) == 1, f"one Status for {name} (CmdRef {cmd_id})", f"{len(found)}: {reply.describe()}"
        )
        check(found[0].cmd == name, f"Cmd {name}", found[0].cmd)
    await raw.abort()


@case(
    "DM-SRV-STS-002",
    "Statuses reference the right message and command (MsgRef, CmdRef, Cmd) all session long",
    rule=f"{DM} §2.3",
    role=Role.SERVER,
    preconditions=REGISTERED,
    steps=(
        "Run a whole device session",
        "For each server message, match its Statuses to the device's message they answer",
    ),
    pass_criteria=(
        "Every Status's MsgRef is the MsgID of the device message just sent",
        "Every device command (Status excepted) has exactly one Status, CmdRef = its CmdID, Cmd = its name",
    ),
)
async def status_refs(ctx: ServerCaseContext) -> None:
    transcript = await ctx.session()
    for turn in transcript.turns:
        reply = turn.reply
        msg_id = turn.sent.header.msg_id
        for status in reply.statuses:
            check(
                status.msg_ref == msg_id,
                f"MsgRef {msg_id}",
                f"Status CmdRef {status.cmd_ref} MsgRef {status.msg_ref}",
            )
        for command in turn.sent.commands:
            if isinstance(command, Status | Results):
                continue
            found = reply.status_for(msg_id, command.cmd_id)
            check(len(found) == 1, f"one Status for {command.name} CmdID {command.cmd_id}", reply.describe())
            check(found[0].cmd == command.name, f"Cmd {command.name}", found[0].cmd)


@case(
    "DM-SRV-STS-003",
    "Statuses follow the order of the commands they answer",
    rule=f"{DM} §2.3",
    role=Role.SERVER,
    preconditions=REGISTERED,
    steps=("Send Package #1 with Alert 1201, Replace DevInfo and a Generic Alert",),
    pass_criteria=(
        "The Statuses' CmdRefs come in the order of the device's CmdIDs, after the SyncHdr Status",
    ),
)
async def status_order(ctx: ServerCaseContext) -> None:
    raw = ctx.raw()
    generic = Alert(
        "3", data=str(int(AlertCode.GENERIC_ALERT)),
        items=(_note_item("ping"),),
    )  # fmt: skip
    reply = await raw.open(generic)
    refs = [s.cmd_ref for s in reply.statuses if s.msg_ref == str(raw.msg_id)]
    check(refs[:4] == ["0", "1", "2", "3"], "Status CmdRefs 0, 1, 2, 3 in that order", refs)
    await raw.abort()


@case(
    "DM-SRV-STS-004",
    "The server answers 200 to the session's Alert 1201 and to the DevInfo Replace",
    rule=f"{DM} §2.1",
    role=Role.SERVER,
    preconditions=REGISTERED,
    steps=("Send Package #1 with valid credentials",),
    pass_criteria=("Status 200 for the Alert 1201 and Status 200 for the Replace",),
)
async def status_codes_pkg1(ctx: ServerCaseContext) -> None:
    raw = ctx.raw()
    reply = await raw.open()
    for cmd_id, name in (("1", "Alert"), ("2", "Replace")):
        found = reply.status_for(str(raw.msg_id), cmd_id)
        check(
            bool(found) and found[0].code == 200,
            f"200 for the {name}",
            [s.data for s in found] or reply.describe(),
        )
    await raw.abort()


@case(
    "DM-SRV-STS-005",
    "The server's CmdIDs are unique within each message",
    rule=f"{DM} §2.3",
    role=Role.SERVER,
    preconditions=REGISTERED,
    steps=("Run a whole device session",),
    pass_criteria=("No two elements of one server message share a CmdID",),
)
async def unique_cmd_ids(ctx: ServerCaseContext) -> None:
    transcript = await ctx.session()
    for turn in transcript.turns:
        ids = [c.cmd_id for c in _reply_ok(turn.reply).commands]
        check(len(ids) == len(set(ids)), "unique CmdIDs", ids)


@case(
    "DM-SRV-STS-006",
    "The server sends Status for the device's Alerts but none for Results",
    rule=f"{DM} §2.4",
    role=Role.SERVER,
    preconditions=REGISTERED,
    steps=("Run a whole device session in which the device answers the server's Gets with Results",),
    pass_criteria=("No Status in a server message names Cmd Results with code other than 200",),
)
async def no_bad_status_for_results(ctx: ServerCaseContext) -> None:
    transcript = await ctx.session()
    for turn in transcript.turns:
        for status in turn.reply.statuses:
            if status.cmd == "Results":
                check(status.code == 200, "200 (if any) for Results", status.data)


@case(
    "DM-SRV-STS-007",
    "A command a client may not send is refused with a Status, not a broken session",
    rule=f"{DM} §2.1 (a client sends only Alert, Replace, Results, Status)",
    role=Role.SERVER,
    preconditions=REGISTERED,
    steps=("After authenticating, send a Get from the device",),
    pass_criteria=(
        "The server answers HTTP 200 with a Status for the Get whose code is 4xx (405 or 406 expected)",
    ),
)
async def client_get_refused(ctx: ServerCaseContext) -> None:
    from omadm.protocol.messages import Target  # noqa: PLC0415

    raw = ctx.raw()
    await raw.open()
    get = Get(raw.cmd_id(), (Item(target=Target("./Anything")),))
    reply = await raw.send([*raw.answer_commands(), get])
    _reply_ok(reply)
    found = reply.status_for(str(raw.msg_id), get.cmd_id)
    check(
        len(found) == 1 and 400 <= found[0].code < 500,
        "a 4xx Status for the Get",
        [s.data for s in found] or reply.describe(),
    )
    await raw.abort()


# ---------------------------------------------------------------------------------------- authentication


async def _challenged(ctx: ServerCaseContext, reply: Reply, codes: tuple[int, ...]) -> Status:
    _reply_ok(reply)
    status = reply.header_status
    check(
        status is not None and status.code in codes,
        f"SyncHdr Status {'/'.join(map(str, codes))}",
        reply.describe(),
    )
    assert status is not None
    check(status.chal is not None, "a Chal in the challenge", "no Chal")
    return status


@case(
    "DM-SRV-AUTH-001",
    "No credentials: challenged with 407 (or 401) and a Chal",
    rule=f"{DM} §6.3",
    role=Role.SERVER,
    preconditions=REGISTERED,
    steps=("Send Package #1 without Cred (and without the HMAC header)",),
    pass_criteria=(
        "SyncHdr Status 407 or 401 with a Chal naming the device's scheme",
        "For md5 and HMAC the Chal carries a NextNonce (b64)",
    ),
)
async def auth_missing(ctx: ServerCaseContext) -> None:
    raw = ctx.raw()
    reply = await raw.send(raw.package1(), cred=None, header_status=False, headers={})
    status = await _challenged(ctx, reply, (401, 407))
    assert status.chal is not None
    scheme = auth.auth_type_of(status.chal)
    check(scheme is ctx.auth_type, f"Chal type {ctx.auth_type.value}", scheme.value)
    if ctx.auth_type is not AuthType.BASIC:
        check(reply.next_nonce() is not None, "a NextNonce in the Chal", "none")


@case(
    "DM-SRV-AUTH-002",
    "An unauthenticated message gets only Statuses, no management commands",
    rule=f"{DM} §6.3",
    role=Role.SERVER,
    preconditions=REGISTERED,
    steps=("Send Package #1 without credentials",),
    pass_criteria=("The reply holds Status elements only (an abort Alert 1223 aside)",),
)
async def auth_only_statuses(ctx: ServerCaseContext) -> None:
    raw = ctx.raw()
    reply = await raw.send(raw.package1(), cred=None, header_status=False, headers={})
    _reply_ok(reply)
    others = [
        c.name for c in reply.commands if not (isinstance(c, Alert) and c.code == AlertCode.SESSION_ABORT)
    ]
    check(not others, "Status elements only", others)


@case(
    "DM-SRV-AUTH-003",
    "Wrong password: challenged with 401 and a Chal, and the right one then succeeds",
    rule=f"{DM} §6.3",
    role=Role.SERVER,
    preconditions=REGISTERED,
    steps=(
        "Send Package #1 with credentials computed from a wrong password",
        "Send it again with the right password and the Chal's nonce",
    ),
    pass_criteria=("First: SyncHdr Status 401 with a Chal", "Then: 212 or 200"),
)
async def auth_wrong_password(ctx: ServerCaseContext) -> None:
    raw = ctx.raw()
    wrong = "not-" + ctx.target.password
    reply = await raw.send(raw.package1(), header_status=False, password=wrong)
    await _challenged(ctx, reply, (401, 407) if ctx.auth_type is AuthType.HMAC else (401,))
    reply = await raw.send(raw.package1(), header_status=False)
    status = reply.header_status
    check(
        status is not None and status.code in (200, 212),
        "200 or 212 with the right password",
        reply.describe(),
    )
    await raw.abort()


@case(
    "DM-SRV-AUTH-004",
    "Valid MD5 credentials are accepted with 212 and a NextNonce for the next session",
    rule=f"{DM} §6.3 (212; nonce rules)",
    role=Role.SERVER,
    preconditions=REGISTERED,
    capability=AUTH_MD5,
    steps=("Send Package #1 with MD5 credentials computed with the nonce the server issued last",),
    pass_criteria=("SyncHdr Status 212", "A Chal with a NextNonce different from the nonce just used"),
)
async def auth_md5_ok(ctx: ServerCaseContext) -> None:
    _need_scheme(ctx, AuthType.MD5)
    raw = ctx.raw()
    reply = await raw.open()
    used = raw.device_nonce_used
    status = reply.header_status
    assert status is not None
    check(status.code == 212, "212 authentication accepted", status.data)
    nonce = reply.next_nonce()
    check(
        nonce is not None and nonce != used, "a NextNonce for the next session, not the one just used", nonce
    )
    await raw.abort()


@case(
    "DM-SRV-AUTH-005",
    "Nonce rotation: each session's successful MD5 authentication issues a new nonce",
    rule=f"{DM} §6.3 (new nonce per session)",
    role=Role.SERVER,
    preconditions=REGISTERED,
    capability=AUTH_MD5,
    steps=("Run two sessions one after the other", "Note the NextNonce each 212 carries"),
    pass_criteria=(
        "The nonce issued after each success differs from the one the device used in it, and the two differ",
    ),
)
async def auth_nonce_rotation(ctx: ServerCaseContext) -> None:
    _need_scheme(ctx, AuthType.MD5)
    issued: list[bytes] = []
    used: list[bytes] = []
    for _ in range(2):
        raw = ctx.raw()
        reply = await raw.open()
        used.append(raw.device_nonce_used)
        nonce = reply.next_nonce()
        check(nonce is not None, "a NextNonce with 212", reply.describe())
        assert nonce is not None
        issued.append(nonce)
        await raw.abort()
    check(
        issued[0] != used[0] and issued[1] != used[1],
        "a nonce that differs from the one just used",
        f"used {used}, issued {issued}",
    )
    check(issued[0] != issued[1], "a different nonce in each session", issued)


@case(
    "DM-SRV-AUTH-006",
    "A replayed MD5 digest is refused",
    rule=f"{DM} §6.3 (nonce rules), §6.2",
    role=Role.SERVER,
    preconditions=REGISTERED,
    capability=AUTH_MD5,
    steps=(
        "Authenticate a session with MD5 and keep its Cred",
        "In a new session, send Package #1 with that same Cred again",
    ),
    pass_criteria=("The replayed credentials are answered 401 with a Chal carrying a fresh NextNonce",),
)
async def auth_replay(ctx: ServerCaseContext) -> None:
    _need_scheme(ctx, AuthType.MD5)
    raw = ctx.raw()
    await raw.open()
    replayed = raw.cred(nonce=raw.device_nonce_used)
    await raw.abort()
    again = ctx.raw()
    reply = await again.send(again.package1(), cred=replayed, header_status=False)
    status = await _challenged(ctx, reply, (401,))
    nonce = reply.next_nonce()
    check(
        nonce is not None and nonce != raw.device_nonce_used, "a NextNonce other than the replayed one", nonce
    )
    del status
    await again.open(challenged=True)
    await again.abort()


@case(
    "DM-SRV-AUTH-007",
    "A stale nonce is answered with a challenge carrying a fresh nonce that then works",
    rule=f"{DM} §6.3 (a failed check must be answered with a fresh nonce)",
    role=Role.SERVER,
    preconditions=REGISTERED,
    steps=(
        "Send Package #1 with credentials computed with a nonce the server never issued",
        "Retry with the Chal's nonce",
    ),
    pass_criteria=("401 (or 407) with a NextNonce that differs from the stale one", "The retry is accepted"),
)
async def auth_stale_nonce(ctx: ServerCaseContext) -> None:
    if ctx.auth_type is AuthType.BASIC:
        raise NotApplicable("basic authentication uses no nonce")
    raw = ctx.raw()
    stale = b"stale-nonce-" + bytes(4)
    raw.nonce = stale
    reply = await raw.send(raw.package1(), header_status=False)
    await _challenged(ctx, reply, (401, 407))
    fresh = reply.next_nonce()
    check(fresh is not None and fresh != stale, "a fresh NextNonce", fresh)
    reply = await raw.send(raw.package1(), header_status=False)
    status = reply.header_status
    check(status is not None and status.code in (200, 212), "the retry accepted", reply.describe())
    await raw.abort()


@case(
    "DM-SRV-AUTH-008",
    "A credential of another scheme than the device's is refused",
    rule=f"{DM} §6.3; pitfall 10 (§14)",
    role=Role.SERVER,
    preconditions=REGISTERED,
    steps=("Send Package #1 with basic credentials (md5 if the device uses basic)",),
    pass_criteria=("SyncHdr Status 401 (or 407) with a Chal naming the device's scheme",),
)
async def auth_wrong_scheme(ctx: ServerCaseContext) -> None:
    raw = ctx.raw()
    other = AuthType.MD5 if ctx.auth_type is AuthType.BASIC else AuthType.BASIC
    reply = await raw.send(raw.package1(), cred=raw.cred(scheme=other), header_status=False, headers={})
    status = await _challenged(ctx, reply, (401, 407))
    assert status.chal is not None
    check(
        auth.auth_type_of(status.chal) is ctx.auth_type,
        f"Chal type {ctx.auth_type.value}",
        auth.auth_type_of(status.chal).value,
    )


@case(
    "DM-SRV-AUTH-009",
    "An unknown user name is refused",
    rule=f"{DM} §6.1, §6.3",
    role=Role.SERVER,
    preconditions=REGISTERED,
    steps=("Send Package #1 with credentials of a user name the device does not have",),
    pass_criteria=("No 200/212: a challenge (401/407) or a refusal at HTTP level (4xx)",),
)
async def auth_unknown_user(ctx: ServerCaseContext) -> None:
    raw = ctx.raw()
    wrong = "nobody-" + ctx.target.username
    if ctx.auth_type is AuthType.BASIC:
        cred = auth.make_cred(AuthType.BASIC, wrong, ctx.target.password)
    else:
        cred = auth.make_cred(AuthType.MD5, wrong, ctx.target.password, raw.nonce)
    reply = await raw.send(raw.package1(), cred=cred, header_status=False, headers={})
    if reply.message is None:
        check(400 <= reply.status < 500, "a 4xx refusal", reply.describe())
        return
    status = reply.header_status
    check(status is not None and status.code in (401, 407), "401 or 407", reply.describe())


@case(
    "DM-SRV-AUTH-010",
    "HMAC: a valid x-syncml-hmac is accepted with 200 and a new nonce with every message",
    rule=f"{DM} §6.3 (HMAC: 200, new NextNonce per message)",
    role=Role.SERVER,
    preconditions=REGISTERED,
    capability=AUTH_HMAC,
    steps=("Run a whole session with HMAC",),
    pass_criteria=("Each accepted message's SyncHdr Status is 200 with a Chal whose NextNonce is new",),
)
async def auth_hmac_ok(ctx: ServerCaseContext) -> None:
    _need_scheme(ctx, AuthType.HMAC)
    raw = ctx.raw()
    reply = await raw.open()
    nonces = []
    for _ in range(2):
        status = reply.header_status
        check(status is not None and status.code == 200, "200 for an HMAC message", reply.describe())
        nonce = reply.next_nonce()
        check(nonce is not None, "a NextNonce with each message", "none")
        nonces.append(nonce)
        reply = await raw.send(raw.answer_commands())
    check(nonces[0] != nonces[1], "a new nonce for each message", nonces)
    await raw.abort()


@case(
    "DM-SRV-AUTH-011",
    "HMAC: a message whose body does not match its MAC is refused",
    rule=f"{DM} §6.2, §6.3",
    role=Role.SERVER,
    preconditions=REGISTERED,
    capability=AUTH_HMAC,
    steps=("Compute the MAC over one body and send another (one byte changed in DevInfo)",),
    pass_criteria=("SyncHdr Status 401 with a Chal (syncml:auth-MAC)",),
)
async def auth_hmac_tampered(ctx: ServerCaseContext) -> None:
    _need_scheme(ctx, AuthType.HMAC)
    from omadm.protocol.codec import encode  # noqa: PLC0415

    raw = ctx.raw()
    raw.msg_id = 1
    message = Message(raw.header(cred=None), tuple(raw.package1()), final=True)
    body = encode(message, ctx.encoding)
    headers = raw.hmac_headers(body)
    tampered = body.replace(b"omadm", b"omadn", 1)
    check(tampered != body, "a body to tamper with", "no 'omadm' in it")
    reply = await ctx.post(tampered, url=raw.url, headers=headers)
    await _challenged(ctx, reply, (401, 407))


@case(
    "DM-SRV-AUTH-012",
    "HMAC: a message without the x-syncml-hmac header is challenged with syncml:auth-MAC",
    rule=f"{DM} §6.3",
    role=Role.SERVER,
    preconditions=REGISTERED,
    capability=AUTH_HMAC,
    steps=("Send Package #1 without x-syncml-hmac",),
    pass_criteria=("401/407 with Chal Type syncml:auth-MAC and a NextNonce",),
)
async def auth_hmac_missing(ctx: ServerCaseContext) -> None:
    _need_scheme(ctx, AuthType.HMAC)
    raw = ctx.raw()
    reply = await raw.send(raw.package1(), cred=None, header_status=False, headers={})
    status = await _challenged(ctx, reply, (401, 407))
    assert status.chal is not None
    check(auth.auth_type_of(status.chal) is AuthType.HMAC, "syncml:auth-MAC", status.chal.meta.type)
    check(reply.next_nonce() is not None, "a NextNonce", "none")


@case(
    "DM-SRV-AUTH-013",
    "Basic: valid credentials are accepted (212) and a wrong password is challenged",
    rule=f"{DM} §6.2, §6.3",
    role=Role.SERVER,
    preconditions=REGISTERED,
    capability=AUTH_BASIC,
    steps=("Send Package #1 with a wrong basic password, then with the right one",),
    pass_criteria=("401 with a basic Chal first, then 212 (or 200)",),
)
async def auth_basic(ctx: ServerCaseContext) -> None:
    _need_scheme(ctx, AuthType.BASIC)
    raw = ctx.raw()
    reply = await raw.send(
        raw.package1(), cred=raw.cred(password="wrong-" + ctx.target.password), header_status=False
    )
    status = await _challenged(ctx, reply, (401,))
    assert status.chal is not None
    check(auth.auth_type_of(status.chal) is AuthType.BASIC, "a syncml:auth-basic Chal", status.chal.meta.type)
    reply = await raw.send(raw.package1(), header_status=False)
    status2 = reply.header_status
    check(status2 is not None and status2.code in (200, 212), "212 with the right password", reply.describe())
    await raw.abort()


@case(
    "DM-SRV-AUTH-014",
    "The server authenticates itself when the device requires it",
    rule=f"{DM} §6.1, §6.3",
    role=Role.SERVER,
    capability=SERVER_AUTH,
    preconditions=(*REGISTERED, "The runner knows the server's password for this device (--server-password)"),
    steps=("Run a session in which the device requires the server's credentials (SRVCRED)",),
    pass_criteria=(
        "The server's messages carry credentials the device verifies; the session runs to its end",
    ),
)
async def server_authenticates(ctx: ServerCaseContext) -> None:
    if not ctx.target.server_password:
        raise NotApplicable("no --server-password given: the device cannot check the server's credentials")
    transcript = await ctx.session()
    check(transcript.server_authenticated, "the server proved its identity", "it did not")


@case(
    "DM-SRV-AUTH-015",
    "The server answers the device's challenge with new credentials",
    rule=f"{DM} §6.3",
    role=Role.SERVER,
    capability=SERVER_AUTH,
    preconditions=(*REGISTERED, "--server-password given"),
    steps=(
        "Forget the nonce the device issued to the server, so that its first credentials do not verify",
        "The device challenges the server (401 + Chal with a new nonce)",
    ),
    pass_criteria=(
        "The server's next message carries credentials computed with the new nonce; the session completes",
    ),
)
async def server_answers_challenge(ctx: ServerCaseContext) -> None:
    if not ctx.target.server_password:
        raise NotApplicable("no --server-password given")
    if ctx.auth_type is AuthType.BASIC:
        raise NotApplicable("basic server credentials use no nonce")
    ctx.device.server_nonce = b"forgotten-" + bytes(6)
    transcript = await ctx.session()
    check(
        transcript.server_authenticated,
        "the server authenticated after the device's challenge",
        transcript.reason or "not",
    )
    check(len(transcript.turns) >= 2, "a challenge round trip", len(transcript.turns))


# ------------------------------------------------------------------------------- RespURI, packages, end


@case(
    "DM-SRV-RESP-001",
    "The server's RespURI is followed and the session continues there",
    rule=f"{DM} §2.3 (RespURI)",
    role=Role.SERVER,
    preconditions=REGISTERED,
    steps=("Run a session; every device message after the first goes to the last RespURI",),
    pass_criteria=(
        "If the server gives a RespURI, it is an absolute http(s) URL",
        "Messages sent to it are answered in the same session (SessionID, MsgRef)",
    ),
)
async def resp_uri(ctx: ServerCaseContext) -> None:
    raw = ctx.raw()
    reply = await raw.open()
    resp = _reply_ok(reply).header.resp_uri
    if resp is not None:
        check(resp.startswith(("http://", "https://")), "an absolute http(s) RespURI", resp)
    reply = await raw.send(raw.answer_commands())
    message = _reply_ok(reply)
    check(
        message.header.session_id == raw.session_id, f"SessionID {raw.session_id}", message.header.session_id
    )
    status = reply.header_status
    check(
        status is not None and status.msg_ref == str(raw.msg_id),
        f"SyncHdr Status MsgRef {raw.msg_id}",
        reply.describe(),
    )
    await raw.abort()


@case(
    "DM-SRV-RESP-002",
    "The server gives a RespURI in its replies",
    rule=f"{DM} §2.3, §12 (a stateless server needs the session in the URL)",
    role=Role.SERVER,
    preconditions=REGISTERED,
    capability=declare("resp-uri", "The server names the URL of the session's next message (RespURI)"),
    steps=("Send Package #1",),
    pass_criteria=("The reply's SyncHdr has a RespURI",),
)
async def resp_uri_present(ctx: ServerCaseContext) -> None:
    raw = ctx.raw()
    reply = await raw.open()
    check(_reply_ok(reply).header.resp_uri is not None, "a RespURI in the SyncHdr", "none")
    await raw.abort()


@case(
    "DM-SRV-PKG-001",
    "A device package split over two messages: the server asks for the rest with Alert 1222",
    rule=f"{DM} §2.4",
    role=Role.SERVER,
    preconditions=REGISTERED,
    steps=(
        "Authenticate, then send a message without Final holding a Generic Alert",
        "Send the rest of the package (another Generic Alert) with Final",
    ),
    pass_criteria=(
        "The answer to the non-final message: no Final, no management commands; Statuses and Alert 1222",
        "The answer to the final message acknowledges the second alert",
    ),
)
async def multi_message_package(ctx: ServerCaseContext) -> None:
    raw = ctx.raw()
    first = await raw.open()

    def note(text: str) -> Alert:
        return Alert(raw.cmd_id(), data=str(int(AlertCode.GENERIC_ALERT)), items=(_note_item(text),))

    answers = raw.answer_commands()
    alert1 = note("part one")
    reply = await raw.send([*answers, alert1], final=False)
    message = _reply_ok(reply)
    check(not message.final, "no Final while the device's package is open", "Final")
    others = [
        c.name for c in reply.commands if not (isinstance(c, Alert) and c.code == AlertCode.NEXT_MESSAGE)
    ]
    check(not others, "only Statuses and Alert 1222", others)
    check(
        any(isinstance(c, Alert) and c.code == AlertCode.NEXT_MESSAGE for c in reply.commands),
        "Alert 1222 asking for the next message",
        reply.describe(),
    )
    alert2 = note("part two")
    answers = raw.answer_commands()
    reply = await raw.send([*answers, alert2], final=True)
    _reply_ok(reply)
    found = reply.status_for(str(raw.msg_id), alert2.cmd_id)
    check(
        len(found) == 1 and found[0].code == 200, "Status 200 for the second part's alert", reply.describe()
    )
    del first
    await raw.abort()


@case(
    "DM-SRV-PKG-002",
    "A server package that has only Statuses ends the session",
    rule=f"{DM} §2.2",
    role=Role.SERVER,
    preconditions=REGISTERED,
    steps=("Run a whole session and look at its last server message",),
    pass_criteria=("The last server message carries Final and no command other than Status",),
)
async def session_end(ctx: ServerCaseContext) -> None:
    transcript = await ctx.session()
    last = _reply_ok(transcript.replies[-1])
    check(last.final, "Final in the last message", "no Final")
    check(not transcript.replies[-1].commands, "only Statuses", transcript.replies[-1].describe())


@case(
    "DM-SRV-PKG-003",
    "Final in every server message outside multi-message replies",
    rule=f"{DM} §2.4",
    role=Role.SERVER,
    preconditions=REGISTERED,
    steps=("Run a whole session with a MaxMsgSize large enough for every reply",),
    pass_criteria=("Every server message carries Final",),
)
async def final_everywhere(ctx: ServerCaseContext) -> None:
    transcript = await ctx.session()
    for turn in transcript.turns:
        check(_reply_ok(turn.reply).final, "Final", turn.reply.describe())


@case(
    "DM-SRV-ABT-001",
    "Alert 1223 from the device: the server answers with Statuses only and ends the session",
    rule=f"{DM} §2.2",
    role=Role.SERVER,
    preconditions=REGISTERED,
    steps=("Run a session and abort it with Alert 1223 after the server's first reply",),
    pass_criteria=(
        "The answer to the abort holds only the SyncHdr Status and Statuses for the device's commands",
    ),
)
async def abort_from_device(ctx: ServerCaseContext) -> None:
    transcript = await ctx.session(abort_after=1)
    last = transcript.replies[-1]
    if last.status == 200 and not last.body:
        return  # nothing to say is also allowed
    _reply_ok(last)
    check(not last.commands, "Statuses only after Alert 1223", last.describe())


@case(
    "DM-SRV-ABT-002",
    "After an abort the device's next session works",
    rule=f"{DM} §2.2",
    role=Role.SERVER,
    preconditions=REGISTERED,
    steps=("Abort a session with Alert 1223", "Start a new session"),
    pass_criteria=("The new session authenticates and runs to its end",),
)
async def abort_then_new(ctx: ServerCaseContext) -> None:
    await ctx.session(abort_after=1)
    transcript = await ctx.session()
    _auth_turn(transcript)


# ------------------------------------------------------------------------------- large objects, sizes


def _chunks(data: str, size: int) -> list[str]:
    return [data[i : i + size] for i in range(0, len(data), size)]


_BLOB = base64.b64encode(bytes(range(256)) * 6).decode()  # 2048 characters


def _answer_with_results(raw: RawSession) -> tuple[list[Status], Get]:
    """Statuses for the server's last message, 200 for one of its Gets (the one to answer)."""
    assert raw.last is not None and raw.last.message is not None
    msg_ref = raw.last.message.header.msg_id
    gets = [c for c in raw.last.commands if isinstance(c, Get)]
    if not gets:
        raise Inconclusive(f"the server sent no Get to answer with a large Results: {raw.last.describe()}")
    chosen = gets[-1]
    statuses = [
        Status(
            raw.cmd_id(), msg_ref=msg_ref, cmd_ref=c.cmd_id, cmd=c.name, data="200" if c is chosen else "404"
        )
        for c in raw.last.commands
    ]
    return statuses, chosen


async def _send_large(
    ctx: ServerCaseContext, *, declared: int | None = None, interrupt: bool = False, parts: int = 3
) -> tuple[list[Reply], RawSession]:
    """Authenticate, then answer one of the server's Gets with Results split over messages.

    The Results' Source is the Get's node itself (no leaf below it), so a server that reads
    the answer as an inventory finds nothing in it. ``interrupt``: after the first chunk send
    a Results item for another node instead of the next chunk.
    """
    raw = ctx.raw()
    await raw.open()
    statuses, get = _answer_with_results(raw)
    assert raw.last is not None and raw.last.message is not None
    msg_ref = raw.last.message.header.msg_id
    source = get.items[0].target.loc_uri.split("?", 1)[0] if get.items and get.items[0].target else "./"
    pieces = _chunks(_BLOB, -(-len(_BLOB) // parts))
    replies = []
    for index, part in enumerate(pieces):
        last = index == len(pieces) - 1
        size = declared if declared is not None else len(_BLOB)
        meta = Meta(format="chr", type="text/plain", size=size) if index == 0 else None
        results = Results(
            raw.cmd_id(), cmd_ref=get.cmd_id, msg_ref=msg_ref,
            items=(Item(source=Source(source), meta=meta, data=part, more_data=not last),),
        )  # fmt: skip
        answers = statuses if index == 0 else raw.answer_commands()
        if interrupt and index == 1:  # a new item (another Source) before the last chunk
            other = Results(
                raw.cmd_id(), cmd_ref=get.cmd_id, msg_ref=msg_ref,
                items=(Item(source=Source(source + "/Other"), data="interrupting item"),),
            )  # fmt: skip
            replies.append(await raw.send([*answers, other], final=True))
            break
        replies.append(await raw.send([*answers, results], final=last))
    return replies, raw


def _results_statuses(reply: Reply) -> list[Status]:
    return [s for s in reply.statuses if s.cmd == "Results"]


@case(
    "DM-SRV-LO-001",
    "A large object from the device: 213 for each chunk but the last",
    rule=f"{DM} §8",
    role=Role.SERVER,
    preconditions=REGISTERED,
    steps=(
        "Authenticate; answer the server's Get with Results split over three messages",
        "(Meta/Size on the first chunk, MoreData on all but the last, no Final until the last)",
    ),
    pass_criteria=("Status 213 for the first and the second chunk", "No failure Status for the last"),
)
async def large_object(ctx: ServerCaseContext) -> None:
    replies, raw = await _send_large(ctx)
    for index, reply in enumerate(replies[:-1]):
        found = _results_statuses(reply)
        check(
            bool(found) and found[0].code == 213,
            f"Status 213 for chunk {index + 1}",
            [s.data for s in found] or reply.describe(),
        )
    for status in _results_statuses(replies[-1]):
        check(status.code < 300, "no failure Status for the last chunk", status.data)
    await raw.abort()


@case(
    "DM-SRV-LO-002",
    "A large object whose size does not match Meta/Size is refused with 424",
    rule=f"{DM} §8",
    role=Role.SERVER,
    preconditions=REGISTERED,
    steps=("Answer a Get with chunked Results whose Meta/Size is 10 bytes more than the data",),
    pass_criteria=("Status 424 for the last chunk",),
)
async def large_object_size_mismatch(ctx: ServerCaseContext) -> None:
    replies, raw = await _send_large(ctx, declared=len(_BLOB) + 10)
    found = _results_statuses(replies[-1])
    check(
        bool(found) and found[0].code == 424,
        "424 size mismatch",
        [s.data for s in found] or replies[-1].describe(),
    )
    await raw.abort()


@case(
    "DM-SRV-LO-003",
    "Between the chunks of a large object the server sends no new commands",
    rule=f"{DM} §2.4, §8",
    role=Role.SERVER,
    preconditions=REGISTERED,
    steps=("Answer a Get with chunked Results",),
    pass_criteria=("The answers to the non-last chunks hold Statuses and at most Alert 1222, and no Final",),
)
async def large_object_no_commands(ctx: ServerCaseContext) -> None:
    replies, raw = await _send_large(ctx)
    for reply in replies[:-1]:
        message = _reply_ok(reply)
        others = [
            c.name for c in reply.commands if not (isinstance(c, Alert) and c.code == AlertCode.NEXT_MESSAGE)
        ]
        check(not others, "only Statuses (and Alert 1222) between chunks", others)
        check(not message.final, "no Final while the device's object is incomplete", "Final")
    await raw.abort()


@case(
    "DM-SRV-LO-004",
    "A large object interrupted by a new item is answered with Alert 1225",
    rule=f"{DM} §8 (item 5)",
    role=Role.SERVER,
    preconditions=REGISTERED,
    steps=("Send the first chunk of a Results", "Send a Results for another node instead of the next chunk"),
    pass_criteria=("The server sends Alert 1225 (end of data not received)",),
)
async def large_object_interrupted(ctx: ServerCaseContext) -> None:
    replies, raw = await _send_large(ctx, interrupt=True)
    codes = [c.code for c in replies[-1].commands if isinstance(c, Alert)]
    check(AlertCode.NO_END_OF_DATA in codes, "Alert 1225", replies[-1].describe())
    await raw.abort()


@case(
    "DM-SRV-LO-005",
    "An object larger than the server's MaxObjSize is refused",
    rule=f"{DM} §8 (MaxObjSize)",
    role=Role.SERVER,
    preconditions=REGISTERED,
    steps=("Read the server's MaxObjSize", "Answer a Get with a chunked Results whose Meta/Size exceeds it"),
    pass_criteria=("Status 413 for the first chunk",),
)
async def large_object_too_big(ctx: ServerCaseContext) -> None:
    raw = ctx.raw()
    reply = await raw.open()
    meta = _reply_ok(reply).header.meta
    limit = meta.max_obj_size if meta is not None else None
    await raw.abort()
    if not limit:
        raise NotApplicable("the server announces no MaxObjSize")
    replies, raw = await _send_large(ctx, declared=limit + 1, parts=2)
    found = _results_statuses(replies[0])
    check(
        bool(found) and found[0].code == 413,
        "413 for an object over MaxObjSize",
        [s.data for s in found] or replies[0].describe(),
    )
    await raw.abort()


@case(
    "DM-SRV-SIZE-001",
    "The server keeps its messages within the device's MaxMsgSize",
    rule=f"{DM} §8 (MaxMsgSize)",
    role=Role.SERVER,
    preconditions=REGISTERED,
    steps=("Run a session in which the device announces MaxMsgSize 1600",),
    pass_criteria=("No server message is larger than 1600 bytes; the session runs to its end",),
)
async def max_msg_size(ctx: ServerCaseContext) -> None:
    limit = 1600
    transcript = await ctx.session(max_msg_size=limit)
    sizes = [len(t.reply.body) for t in transcript.turns]
    check(max(sizes) <= limit, f"every message <= {limit} bytes", sizes)


@case(
    "DM-SRV-SIZE-002",
    "With a small MaxMsgSize the server splits its package and asks for more in between",
    rule=f"{DM} §2.4, §8",
    role=Role.SERVER,
    preconditions=REGISTERED,
    steps=("Run a session with MaxMsgSize 1200",),
    pass_criteria=(
        "Every server message fits in 1200 bytes",
        "A message without Final is followed by one that completes the package",
    ),
)
async def max_msg_size_small(ctx: ServerCaseContext) -> None:
    limit = 1200
    transcript = await ctx.session(max_msg_size=limit)
    sizes = [len(t.reply.body) for t in transcript.turns]
    check(max(sizes) <= limit, f"every message <= {limit} bytes", sizes)
    for index, turn in enumerate(transcript.turns[:-1]):
        message = _reply_ok(turn.reply)
        if message.final:
            continue
        # A package still open: the device's next message (a Status, or Alert 1222) is
        # answered with the rest of it, in the same session.
        following = _reply_ok(transcript.turns[index + 1].reply)
        check(
            following.header.session_id == message.header.session_id
            and int(following.header.msg_id) == int(message.header.msg_id) + 1,
            f"the package continued in MsgID {int(message.header.msg_id) + 1}",
            transcript.turns[index + 1].reply.describe(),
        )
    check(
        _reply_ok(transcript.replies[-1]).final,
        "the session's last message Final",
        transcript.replies[-1].describe(),
    )


# ------------------------------------------------------------------------------- encodings, robustness


@case(
    "DM-SRV-ENC-001",
    "The server answers in the encoding the device used",
    rule=f"{DM} §10, §12",
    role=Role.SERVER,
    preconditions=REGISTERED,
    steps=("Send Package #1 in the run's encoding",),
    pass_criteria=("The reply's Content-Type names the same encoding and its body is in it",),
)
async def same_encoding(ctx: ServerCaseContext) -> None:
    raw = ctx.raw()
    reply = await raw.open()
    kind = "wbxml" if ctx.encoding is Encoding.WBXML else "xml"
    check(kind in reply.content_type.lower(), f"a {kind} Content-Type", reply.content_type)
    first = reply.body[:1]
    check((first == b"<") == (ctx.encoding is Encoding.XML), f"a {kind} body", reply.body[:8])
    await raw.abort()


@case(
    "DM-SRV-NEG-001",
    "A body that is not a DM message is refused at HTTP level, not with a server error",
    rule=f"{DM} §12",
    role=Role.SERVER,
    preconditions=REGISTERED,
    steps=("POST 'this is not SyncML' with the DM content type",),
    pass_criteria=("An HTTP 4xx answer (never 5xx, never a DM session)",),
)
async def garbage(ctx: ServerCaseContext) -> None:
    reply = await ctx.post(b"this is not SyncML")
    check(400 <= reply.status < 500, "HTTP 4xx", reply.status)


@case(
    "DM-SRV-NEG-002",
    "A truncated message is refused without a server error",
    rule=f"{DM} §12",
    role=Role.SERVER,
    preconditions=REGISTERED,
    steps=("POST the first half of a valid Package #1",),
    pass_criteria=("An HTTP 4xx answer, or a DM reply refusing it; never 5xx",),
)
async def truncated(ctx: ServerCaseContext) -> None:
    from omadm.protocol.codec import encode  # noqa: PLC0415

    raw = ctx.raw()
    raw.msg_id = 1
    body = encode(Message(raw.header(cred=raw.cred()), tuple(raw.package1()), final=True), ctx.encoding)
    reply = await ctx.post(body[: len(body) // 2])
    check(reply.status < 500, "no 5xx", reply.status)
    check(reply.status != 200 or reply.message is not None, "a refusal or a DM reply", reply.describe())


@case(
    "DM-SRV-NEG-003",
    "A message of a session with another SessionID does not continue the session",
    rule=f"{DM} §2.3 (SessionID constant for the session)",
    role=Role.SERVER,
    preconditions=REGISTERED,
    steps=("Authenticate a session", "Send its next message (to the RespURI) with another SessionID"),
    pass_criteria=(
        "The server does not answer it as a message of the session: a refusal (4xx) or a new challenge",
    ),
)
async def wrong_session_id(ctx: ServerCaseContext) -> None:
    raw = ctx.raw()
    await raw.open()
    raw.session_id = ctx.target.new_session_id()
    reply = await raw.send(raw.answer_commands(), cred=None)
    if reply.message is None:
        check(400 <= reply.status < 500, "a 4xx refusal", reply.describe())
        return
    status = reply.header_status
    check(
        reply.message.header.session_id == raw.session_id
        and (status is None or status.code not in (200, 212) or not reply.commands),
        "no management commands for a message of an unknown session",
        reply.describe(),
    )


@case(
    "DM-SRV-NEG-004",
    "A repeated message (a lost reply) gets the same answer again, not a second execution",
    rule=f"{DM} §12 (HTTP retries)",
    role=Role.SERVER,
    preconditions=REGISTERED,
    steps=("Authenticate, then send the next message twice with the same MsgID",),
    pass_criteria=("Both answers are HTTP 200 DM messages with the same MsgID",),
)
async def repeated_message(ctx: ServerCaseContext) -> None:
    from omadm.protocol.codec import encode  # noqa: PLC0415

    raw = ctx.raw()
    await raw.open()
    raw.msg_id += 1
    commands = [*raw.status_for_last(), *raw.answer_commands()]
    body = encode(Message(raw.header(cred=None), tuple(commands), final=True), ctx.encoding)
    first = await ctx.post(body, url=raw.url, headers=raw.hmac_headers(body))
    second = await ctx.post(body, url=raw.url, headers=raw.hmac_headers(body))
    one, two = _reply_ok(first), _reply_ok(second)
    check(
        one.header.msg_id == two.header.msg_id,
        "the same reply MsgID",
        f"{one.header.msg_id} then {two.header.msg_id}",
    )
    raw.last = second
    await raw.abort()


@case(
    "DM-SRV-ALERT-001",
    "A Generic Alert of an unknown type is answered with a Status",
    rule=f"{DM} §4.2",
    role=Role.SERVER,
    preconditions=REGISTERED,
    steps=("Send Package #1 with a Generic Alert 1226 whose Meta/Type the server does not know",),
    pass_criteria=("A Status (2xx expected) for the alert in the same reply",),
)
async def unknown_generic_alert(ctx: ServerCaseContext) -> None:
    raw = ctx.raw()
    alert = Alert(
        "3", data=str(int(AlertCode.GENERIC_ALERT)),
        items=(
            Item(
                source=Source("./Vendor/x"),
                meta=Meta(type="urn:example:unknown:1.0", format="chr", mark="informational"),
                data="x",
            ),
        ),
    )  # fmt: skip
    reply = await raw.open(alert)
    found = reply.status_for(str(raw.msg_id), "3")
    check(
        len(found) == 1 and 200 <= found[0].code < 300,
        "a 2xx Status for the alert",
        [s.data for s in found] or reply.describe(),
    )
    await raw.abort()


@case(
    "DM-SRV-ALERT-002",
    "A session started by Alert 1200 (server-initiated) is accepted",
    rule=f"{DM} §2.1, §11.4",
    role=Role.SERVER,
    preconditions=REGISTERED,
    steps=("Run a session whose Package #1 carries Alert 1200",),
    pass_criteria=("Status 200 for the Alert 1200; the session runs to its end",),
)
async def server_initiated(ctx: ServerCaseContext) -> None:
    transcript = await ctx.session(alert_code=AlertCode.SERVER_INITIATED_MGMT)
    sent, reply = _auth_turn(transcript)
    alert = next(c for c in sent.commands if isinstance(c, Alert))
    found = reply.status_for(sent.header.msg_id, alert.cmd_id)
    check(bool(found) and found[0].code == 200, "200 for Alert 1200", reply.describe())
