"""Debian's nginx for tests: unprivileged, its own prefix, pid file, logs and temp directories.

:class:`Nginx` writes a configuration into a temporary directory whose ``location /`` is
``deploy/omadm-proxy.conf`` itself (the proxy settings the example configuration ships), so
the test proves the shipped settings, not a copy of them. The access log is one JSON object
per request with the upstream(s) nginx tried (``"127.0.0.1:A, 127.0.0.1:B"`` when it failed
over) and their statuses.
"""

from __future__ import annotations

import json
import os
import pwd
import shutil
import signal
import socket
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

DEPLOY = Path(__file__).resolve().parents[2] / "deploy"
PROXY_CONF = DEPLOY / "omadm-proxy.conf"


def nginx_binary() -> str | None:
    """nginx on the PATH, or Debian's (``/usr/sbin`` is not on every user's PATH)."""
    found = shutil.which("nginx")
    if found:
        return found
    return "/usr/sbin/nginx" if os.access("/usr/sbin/nginx", os.X_OK) else None


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


_CONF = """\
{user}worker_processes 1;
pid {dir}/nginx.pid;
events {{ worker_connections 1024; }}
http {{
    client_body_temp_path {dir}/tmp/body;
    proxy_temp_path {dir}/tmp/proxy;
    fastcgi_temp_path {dir}/tmp/fastcgi;
    uwsgi_temp_path {dir}/tmp/uwsgi;
    scgi_temp_path {dir}/tmp/scgi;
    keepalive_timeout 75s;
    client_max_body_size 64m;
    log_format omadm_json escape=json '{{"method":"$request_method","uri":"$request_uri",'
        '"status":"$status","upstream":"$upstream_addr","upstream_status":"$upstream_status",'
        '"time":"$msec"}}';
    access_log {dir}/access.log omadm_json;
    upstream omadm {{
{servers}
        keepalive 16;
    }}
    server {{
        listen 127.0.0.1:{port};
        location / {{
            include {proxy_conf};
        }}
    }}
}}
"""


@dataclass
class Nginx:
    directory: Path
    backends: list[int]  # ports of the omadm workers on 127.0.0.1
    port: int = 0
    process: subprocess.Popen[bytes] | None = None

    def __post_init__(self) -> None:
        self.port = self.port or free_port()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, timeout: float = 15) -> Nginx:
        binary = nginx_binary()
        assert binary is not None, "nginx is not installed"
        (self.directory / "tmp").mkdir(parents=True, exist_ok=True)
        # As root, nginx's workers switch to the configured user; they must reach the temp
        # directories, which are the test's (root's, mode 0700). Unprivileged, "user" is moot.
        user = f"user {pwd.getpwuid(0).pw_name};\n" if os.geteuid() == 0 else ""
        servers = "\n".join(
            f"        server 127.0.0.1:{port} max_fails=1 fail_timeout=2s;" for port in self.backends
        )
        conf = self.directory / "nginx.conf"
        conf.write_text(
            _CONF.format(
                user=user, dir=self.directory, servers=servers, port=self.port, proxy_conf=PROXY_CONF
            )
        )
        args = [binary, "-p", str(self.directory), "-e", str(self.directory / "error.log"), "-c", str(conf)]
        checked = subprocess.run([*args, "-t"], capture_output=True, text=True, timeout=30, check=False)
        assert checked.returncode == 0, checked.stderr
        self.process = subprocess.Popen([*args, "-g", "daemon off;"], stderr=subprocess.PIPE)
        deadline = time.monotonic() + timeout
        while True:
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=1):
                    return self
            except OSError:
                pass
            if self.process.poll() is not None or time.monotonic() > deadline:
                raise AssertionError(f"nginx did not start: {self.error_log()}")
            time.sleep(0.05)

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGQUIT)  # graceful: finish the requests in flight
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=10)

    def error_log(self) -> str:
        path = self.directory / "error.log"
        return path.read_text() if path.exists() else ""

    def access(self) -> list[dict[str, Any]]:
        """Every request nginx logged, oldest first (see the module docstring)."""
        path = self.directory / "access.log"
        if not path.exists():
            return []
        return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
