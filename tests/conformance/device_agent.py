"""A real ``omadm agent run`` process for the device runner's tests, and the runner's options for it.

The agent is made the way an operator would (``omadm agent init`` with the runner's URL, the
account the runner plays, the runner's package signing key as a trusted publisher), then
``listen_http`` is set so that the runner wakes it with Package #0 over HTTP and
``poll_interval`` is 0 so that nothing but the runner starts a session. ``wrapper`` lets a
test start the agent through a script that plants a fault first (test_planted_faults_device).
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path

from omadm.agent.config import load_config, save_config
from omadm.conformance.device import DeviceOptions
from omadm.package.signing import generate_key, private_key_pem, public_key_pem
from omadm.protocol.codec import Encoding
from omadm.protocol.codes import AuthType

DEVICE_ID = "IMEI:356938035643809"
SERVER_ID = "omadm-conformance"
USER, PASSWORD, SERVER_PASSWORD = "conf-device", "conf-device-secret", "conf-server-secret"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class AgentUnderTest:
    """One agent data directory and the runner settings that match it."""

    def __init__(self, root: Path, *, auth: str = "md5") -> None:
        self.root = root
        self.runner_port = free_port()
        self.notify_port = free_port()
        self.auth = auth
        self.config = root / "agent" / "omadm.toml"
        key = generate_key()
        self.signing_key = root / "signer.pem"
        self.signing_key.write_bytes(private_key_pem(key))
        public = root / "signer.pub.pem"
        public.write_bytes(public_key_pem(key))
        url = f"http://127.0.0.1:{self.runner_port}/dm"
        subprocess.run(
            [
                sys.executable,
                "-m",
                "omadm",
                "agent",
                "init",
                "--config",
                str(self.config),
                "--device-id",
                DEVICE_ID,
                "--server",
                url,
                "--server-id",
                SERVER_ID,
                "--username",
                USER,
                "--password",
                PASSWORD,
                "--server-password",
                SERVER_PASSWORD,
                "--auth",
                auth,
                "--poll-interval",
                "0",
                "--data-dir",
                str(root / "agent" / "data"),
                "--trust-key",
                str(public),
            ],
            check=True,
            capture_output=True,
            text=True,
        )
        config = load_config(self.config)
        save_config(
            replace(
                config,
                listen_http=f"127.0.0.1:{self.notify_port}",
                retries=1,
                retry_backoff=0.05,
                timeout=20.0,
            ),
            self.config,
        )

    def options(self, encoding: Encoding, **changes: object) -> DeviceOptions:
        options = DeviceOptions(
            listen=("127.0.0.1", self.runner_port),
            server_id=SERVER_ID,
            username=USER,
            password=PASSWORD,
            server_password=SERVER_PASSWORD,
            auth={"md5": AuthType.MD5, "hmac": AuthType.HMAC, "basic": AuthType.BASIC}[self.auth],
            device_id=DEVICE_ID,
            notify=f"http://127.0.0.1:{self.notify_port}/",
            encoding=encoding,
            signing_key=self.signing_key,
            session_timeout=15.0,
            message_timeout=20.0,
            case_timeout=90.0,
            work_dir=self.root / "runner",
        )
        return replace(options, **changes)  # type: ignore[arg-type]

    @contextmanager
    def running(
        self, encoding: Encoding, *, wrapper: Path | None = None, env: dict[str, str] | None = None
    ) -> Iterator[subprocess.Popen[str]]:
        """``omadm agent run`` in ``encoding`` until the block ends (its log in ``agent-<encoding>.log``)."""
        environment = {**os.environ, "OMADM_AGENT_ENCODING": encoding.value, **(env or {})}
        program = [sys.executable, str(wrapper)] if wrapper else [sys.executable, "-m", "omadm"]
        log = (self.root / f"agent-{encoding.value}.log").open("w")
        process = subprocess.Popen(
            [*program, "agent", "run", "--config", str(self.config), "-v"],
            env=environment,
            stdout=log,
            stderr=subprocess.STDOUT,
            text=True,
        )
        try:
            _wait_listening(self.notify_port, process)
            yield process
        finally:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
            log.close()

    def log(self, encoding: Encoding) -> str:
        return (self.root / f"agent-{encoding.value}.log").read_text()


def _wait_listening(port: int, process: subprocess.Popen[str]) -> None:
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"the agent exited with {process.returncode} before listening")
        with socket.socket() as sock:
            if sock.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.05)
    raise RuntimeError("the agent's Package #0 listener did not come up within 20 s")
