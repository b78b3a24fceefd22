"""Nonces carried from one session to the next, as both ends persist them from events.

A device and a server each keep the nonce they issued to the other and the nonce they were
given (``NonceIssued`` / ``NonceReceived``). Consecutive sessions must then authenticate at the
first message, whatever the scheme and however the previous session ended. The case that
broke: the client issued a new nonce to the server while checking the server's last package,
reported it as issued, and sent no further message, so the server never learnt it (HMAC
rotates on every message; MD5 on the server's first credentials, here a one-message session).
"""

from __future__ import annotations

from dataclasses import dataclass

import pytest

from omadm.protocol.codes import AuthType
from omadm.protocol.messages import Get, Item, Target
from omadm.protocol.session import (
    AuthenticationFailed,
    ClientConfig,
    ClientSession,
    Credentials,
    NonceIssued,
    NonceReceived,
    ServerConfig,
    ServerSession,
)
from omadm.protocol.testing import MemoryTree, queue_when_started, run_in_memory

DEVICE = "IMEI:493005100592800"


@dataclass
class Nonces:
    """What each end has persisted, each end its own copy (they agree only if the protocol does)."""

    #: The device's SRVCRED nonce (it issued it; it checks the server's credentials with it).
    device_srv: bytes = b"initial-srv"
    #: The device's CLCRED nonce (the server issued it; the device signs with it).
    device_cli: bytes = b"initial-cli"
    #: The server's copy of the nonce the device issued to it (it signs with it).
    server_srv: bytes = b"initial-srv"
    #: The server's copy of the nonce it issued to the device (it checks the device with it).
    server_cli: bytes = b"initial-cli"


def one_session(scheme: AuthType, nonces: Nonces, session_id: str, *, with_command: bool) -> list[object]:
    client_creds = Credentials(scheme, "dev", "dev-secret")
    server_creds = Credentials(scheme, "srv", "srv-secret")
    client = ClientSession(
        ClientConfig(
            device_id=DEVICE,
            server_uri="http://dm.example/dm",
            credentials=client_creds,
            client_nonce=nonces.device_cli,
            server_credentials=server_creds,
            server_nonce=nonces.device_srv,
            require_server_auth=True,
            session_id=session_id,
        ),
        MemoryTree(),
    )
    server = ServerSession(
        ServerConfig(
            server_uri="http://dm.example/dm",
            client_credentials=client_creds,
            client_nonce=nonces.server_cli,
            server_credentials=server_creds,
            server_nonce=nonces.server_srv,
            send_server_cred=True,
        )
    )
    script = queue_when_started(Get("0", (Item(target=Target("./DevInfo/Mod")),))) if with_command else None
    transcript = run_in_memory(client, server, script)
    # Persist exactly as the agent and the server do.
    for event in transcript.client_events:
        if isinstance(event, NonceIssued):
            nonces.device_srv = event.nonce
        elif isinstance(event, NonceReceived):
            nonces.device_cli = event.nonce
    for event in transcript.server_events:
        if isinstance(event, NonceIssued):
            nonces.server_cli = event.nonce
        elif isinstance(event, NonceReceived):
            nonces.server_srv = event.nonce
    return [*transcript.client_events, *transcript.server_events]


@pytest.mark.parametrize("scheme", [AuthType.HMAC, AuthType.MD5])
@pytest.mark.parametrize("with_command", [True, False], ids=["get", "empty"])
def test_consecutive_sessions_authenticate_at_once(scheme: AuthType, with_command: bool) -> None:
    nonces = Nonces()
    one_session(scheme, nonces, "1", with_command=with_command)  # may be challenged: a first contact
    for n in range(2, 6):
        events = one_session(scheme, nonces, str(n), with_command=with_command)
        failures = [e for e in events if isinstance(e, AuthenticationFailed)]
        assert failures == [], f"session {n} ({scheme.value}): {failures}"
        assert nonces.device_srv == nonces.server_srv, f"after session {n}, the ends disagree"
        assert nonces.device_cli == nonces.server_cli, f"after session {n}, the ends disagree"


def test_a_nonce_for_the_server_is_announced_only_when_the_server_answers() -> None:
    """The message carrying our new nonce may be lost: ``NonceIssued`` waits for the server's answer."""
    creds = Credentials(AuthType.HMAC, "dev", "dev-secret")
    server_creds = Credentials(AuthType.HMAC, "srv", "srv-secret")
    client = ClientSession(
        ClientConfig(
            device_id=DEVICE,
            server_uri="http://dm.example/dm",
            credentials=creds,
            client_nonce=b"cli",
            server_credentials=server_creds,
            server_nonce=b"srv",
            require_server_auth=True,
        ),
        MemoryTree(),
    )
    server = ServerSession(
        ServerConfig(
            server_uri="http://dm.example/dm",
            client_credentials=creds,
            client_nonce=b"cli",
            server_credentials=server_creds,
            server_nonce=b"srv",
            send_server_cred=True,
        )
    )
    out = client.start()
    server.receive(out.body, hmac_header=out.headers.get("x-syncml-hmac"), content_type=out.content_type)
    server.queue(Get("0", (Item(target=Target("./DevInfo/Mod")),)))
    reply = server.reply()
    seen = client.receive(
        reply.body, hmac_header=reply.headers.get("x-syncml-hmac"), content_type=reply.content_type
    )
    answer = client.reply()
    assert answer is not None
    seen += client.events()
    assert not [e for e in seen if isinstance(e, NonceIssued)], "announced before the server had it"
    server.receive(
        answer.body, hmac_header=answer.headers.get("x-syncml-hmac"), content_type=answer.content_type
    )
    last = server.reply()
    after = client.receive(
        last.body, hmac_header=last.headers.get("x-syncml-hmac"), content_type=last.content_type
    )
    assert [e for e in after if isinstance(e, NonceIssued)], "not announced once the server answered"
