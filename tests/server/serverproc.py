"""Real ``omadm server`` processes for tests, and a round-robin proxy in front of several.

``ServerProcess`` starts ``python -m omadm server`` on a free port of 127.0.0.1 and waits for
``/health``; ``run(...)`` calls the admin sub-commands (``device add``, ``job add``...) on the
same database. ``RoundRobin`` forwards each request to the next backend in turn and records
which one served it, so a test can prove that the messages of one DM session were served by
different worker processes.
"""

from __future__ import annotations

import http.client
import itertools
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import urlsplit

import httpx

ENV = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class ServerProcess:
    db_url: str
    data_dir: Path
    log: Path
    port: int = field(default_factory=free_port)
    public_url: str = ""
    extra: tuple[str, ...] = ()
    process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def base(self) -> list[str]:
        return [
            sys.executable,
            "-m",
            "omadm",
            "server",
            "--db",
            self.db_url,
            "--data-dir",
            str(self.data_dir),
        ]

    def start(self, timeout: float = 30) -> ServerProcess:
        args = [*self.base, "--port", str(self.port), *self.extra]
        env = dict(ENV)
        if self.public_url:
            env["OMADM_SERVER_PUBLIC_URL"] = self.public_url
        with self.log.open("ab") as out:
            self.process = subprocess.Popen(args, stdout=out, stderr=subprocess.STDOUT, env=env)
        deadline = time.monotonic() + timeout
        while True:
            try:
                if httpx.get(f"{self.url}/health", timeout=1).status_code == 200:
                    return self
            except httpx.HTTPError:
                pass
            if self.process.poll() is not None or time.monotonic() > deadline:
                raise AssertionError(f"server did not start:\n{self.log.read_text()}")
            time.sleep(0.1)

    def kill(self) -> None:
        """SIGKILL, as a power cut or an OOM killer would."""
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGKILL)
            self.process.wait(timeout=10)

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.kill()

    def run(self, *args: str) -> str:
        done = subprocess.run(
            [*self.base, *args], capture_output=True, text=True, timeout=60, check=False, env=ENV
        )
        assert done.returncode == 0, f"{args}: {done.stderr}"
        return done.stdout

    def jobs(self, authority: str = "default") -> list[list[str]]:
        """``job list`` of ``authority``, a row of fields per job."""
        return [line.split("  ") for line in self.run("job", "list", "--authority", authority).splitlines()]


class RoundRobin:
    """An HTTP proxy on 127.0.0.1 that sends each request to the next backend in turn."""

    def __init__(self, backends: list[str]) -> None:
        self.backends = backends
        self.served: list[tuple[str, str]] = []  # (path with query, backend)
        # DM messages and other requests (package downloads) take turns separately, so that
        # consecutive DM messages always go to different backends.
        self._next = {True: itertools.cycle(backends), False: itertools.cycle(backends)}
        self._lock = threading.Lock()
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            def _forward(self, method: str) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else None
                with proxy._lock:
                    backend = next(proxy._next[self.path.startswith("/dm")])
                    proxy.served.append((self.path, backend))
                target = urlsplit(backend)
                connection = http.client.HTTPConnection(
                    target.hostname or "127.0.0.1", target.port, timeout=60
                )
                headers = {k: v for k, v in self.headers.items() if k.lower() not in ("host", "connection")}
                try:
                    connection.request(method, self.path, body=body, headers=headers)
                    response = connection.getresponse()
                    data = response.read()
                except OSError:
                    self.send_error(502, "backend unreachable")
                    return
                finally:
                    connection.close()
                self.send_response(response.status)
                for name, value in response.getheaders():
                    if name.lower() not in ("transfer-encoding", "connection", "content-length"):
                        self.send_header(name, value)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def do_POST(self) -> None:
                self._forward("POST")

            def do_GET(self) -> None:
                self._forward("GET")

            def log_message(self, format: str, *args: object) -> None:
                pass

        self._http = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self._http.server_address[1]}"
        self._thread = threading.Thread(target=self._http.serve_forever, daemon=True)

    def __enter__(self) -> RoundRobin:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._http.shutdown()
        self._http.server_close()


@contextmanager
def running_server(directory: Path) -> Iterator[tuple[ServerProcess, str]]:
    """A started ``omadm server`` on a fresh SQLite database in ``directory``, with an
    operator token; stopped on exit."""
    db = f"sqlite:///{directory / 'srv' / 'omadm-server.sqlite'}"
    proc = ServerProcess(db, directory / "srv", directory / "server.log")
    proc.run("migrate")
    operator = proc.run("token", "add", "ops", "--role", "operator").split()[-1]
    proc.start()
    try:
        yield proc, operator
    finally:
        proc.stop()


#: The SRVCRED secret the agents of these tests know their server by (register it with the device).
SERVER_PASSWORD = "srv-secret"


def agent_config(
    directory: Path,
    dm_url: str,
    device_id: str,
    trusted_key: Path,
    *,
    encoding: str = "xml",
    poll: float = 0,
    retries: int = 2,
) -> Path:
    """An agent for ``device_id`` (user ``dev``, password ``secret``; the server proves itself
    with ``SERVER_PASSWORD``) that trusts ``trusted_key``.

    ``retries`` (backoff from 0.2 s, doubled) bounds how long a download or a message waits
    for a server that is down: 2 is 0.6 s, 5 is 6.2 s (longer than a server's restart).
    """
    from omadm.agent.config import AccountConfig, AgentConfig, DeviceConfig, save_config  # noqa: PLC0415
    from omadm.protocol.codec import Encoding  # noqa: PLC0415

    data = directory / "agent"
    (data / "trust").mkdir(parents=True, exist_ok=True)
    (data / "trust" / "publisher.pub.pem").write_bytes(trusted_key.read_bytes())
    config = directory / "omadm.toml"
    save_config(
        AgentConfig(
            device=DeviceConfig(id=device_id),
            data_dir=data,
            accounts=(AccountConfig("omadm", dm_url, "dev", "secret", server_password=SERVER_PASSWORD),),
            poll_interval=poll,
            encoding=Encoding(encoding),
            max_msg_size=4096,
            retries=retries,
            retry_backoff=0.2,
            timeout=10,
        ),
        config,
    )
    return config


def agent_connect(
    config: Path, *, check: bool = True, server_id: str | None = None
) -> subprocess.CompletedProcess[str]:
    """``omadm agent connect``: one session with the first account, or with ``server_id``'s."""
    account = ["--server-id", server_id] if server_id is not None else []
    done = subprocess.run(
        [sys.executable, "-m", "omadm", "agent", "connect", "--config", str(config), *account],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        env=ENV,
    )
    if check:
        assert done.returncode == 0, done.stdout + done.stderr
    return done
