"""The world of the SCOMO end-to-end tests: packages, a package server, a DM server, an agent.

* :class:`PackageSet` builds every test package once per module (signed with a publisher key
  the device trusts, except where a test needs otherwise) and serves them with the real test
  package server (``tests/agent/scomo/pkgserver.py``: Range, faults, install-notify).
* :class:`World` is one device: its ``omadm.toml``, its data directory (trusting the
  publisher) and a test DM server (``tests/e2e/dmserver.py``) it has an account with.
  :meth:`World.connect` runs ``omadm agent connect`` as a real process: one DM session in
  which the server sends the given commands, then the accepted jobs, then the session that
  delivers the Generic Alerts. The :class:`Run` it returns holds what the server saw.

Test components come from :func:`write_source`: each hook logs ``<action> <version>
[<InstallParams>]`` to ``hooks.log`` in the component's state directory, and fails (exit 7)
while a file ``fail-<action>`` exists there, so a test makes any hook fail for real by
creating that file, the way a broken service would.
"""

from __future__ import annotations

import base64
import gzip
import os
import shutil
import socket
import subprocess
import sys
import tarfile
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

import tomli_w

from omadm.agent.config import AccountConfig, AgentConfig, DeviceConfig, ScomoConfig, save_config
from omadm.package.build import build_package
from omadm.package.signing import generate_key, save_public_key
from omadm.protocol.codes import AuthType
from omadm.protocol.messages import Add, Alert, Command, Exec, Get, Item, Meta, Target
from omadm.protocol.session import (
    AlertReceived,
    Credentials,
    Event,
    ResultsReceived,
    ServerSession,
    StatusReceived,
)
from omadm.tree.store import TreeStore
from tests.agent.scomo.pkgserver import PackageServer

from .dmserver import DeviceAccount, TestDMServer

REPO = Path(__file__).resolve().parents[2]
EXAMPLES = REPO / "examples"
DEVICE_ID = "IMEI:490154203237518"
SERVER_ID = "omadm-test"
USER, PASSWORD = "dev-user", "dev-secret"
SERVER_PASSWORD = "srv-secret"
ROOT = "./SCOMO"
DOWNLOAD = f"{ROOT}/Download"
DELIVERED = f"{ROOT}/Inventory/Delivered"
DEPLOYED = f"{ROOT}/Inventory/Deployed"
PLUGINS = ("tests.e2e.scomo_plugins:unfinished", "tests.e2e.scomo_plugins:crashing")
#: Installer data under the install root: the archive installer's component directories.
ARCHIVE = Path("components") / "archive"


# --- test packages ----------------------------------------------------------------------


@dataclass(frozen=True)
class Component:
    """One component of a generated test package."""

    id: str
    version: str
    env_type: str = "archive"
    #: (id, min_version, max_version) of components it needs.
    depends: tuple[tuple[str, str | None, str | None], ...] = ()
    #: Extra bytes shipped as ``share/payload`` (random bytes make the package big).
    payload: bytes = b""


_HOOK = """#!/bin/sh
# Test hook: logs the step to hooks.log; fails while the test leaves fail-<action> beside it.
# With OMADM_TEST_PROBE set (World.watch), it first records what the tree says meanwhile.
set -eu
if [ -n "${OMADM_TEST_PROBE:-}" ]; then "$OMADM_TEST_PYTHON" -c "$OMADM_TEST_PROBE" "$OMADM_ACTION"; fi
log="$OMADM_COMPONENT_STATE_DIR/hooks.log"
if [ -e "$OMADM_COMPONENT_STATE_DIR/fail-$OMADM_ACTION" ]; then
    echo "$OMADM_ACTION $OMADM_COMPONENT_VERSION failed" >> "$log"
    echo "the $OMADM_ACTION hook was told to fail" >&2
    exit 7
fi
echo "$OMADM_ACTION $OMADM_COMPONENT_VERSION${OMADM_INSTALL_PARAMS:+ $OMADM_INSTALL_PARAMS}" >> "$log"
"""


#: Run by a hook (``python -c``) while the agent works: appends ``<action> <path>=<value> ...``
#: for the watched tree paths to the probe log, reading the tree as a polling server would.
_PROBE = """
import os, sqlite3, sys
db = sqlite3.connect("file:" + os.environ["OMADM_TEST_TREE"] + "?mode=ro", uri=True, timeout=30)
seen = []
for path in os.environ["OMADM_TEST_WATCH"].split():
    row = db.execute("SELECT value FROM nodes WHERE path = ?", (path,)).fetchone()
    seen.append(path + "=" + ("-" if row is None or row[0] is None else bytes(row[0]).decode()))
with open(os.environ["OMADM_TEST_PROBE_LOG"], "a") as log:
    log.write(" ".join([sys.argv[1], *seen]) + "\\n")
"""


def write_source(
    directory: Path,
    package_id: str,
    version: str,
    components: Sequence[Component],
    *,
    allow_downgrade: bool = False,
) -> Path:
    """A package source (``omadm-package.toml`` and one directory per component)."""
    directory.mkdir(parents=True)
    tables = []
    for component in components:
        base = directory / component.id
        (base / "bin").mkdir(parents=True)
        (base / "hooks").mkdir()
        app = base / "bin" / "app"
        app.write_text(f"#!/bin/sh\necho '{component.id} {component.version}'\n")
        app.chmod(0o755)
        hooks = {}
        for action in ("install", "activate", "deactivate", "remove"):
            hook = base / "hooks" / action
            hook.write_text(_HOOK)
            hook.chmod(0o755)
            hooks[action] = f"hooks/{action}"
        if component.payload:
            (base / "share").mkdir()
            (base / "share" / "payload").write_bytes(component.payload)
        table: dict[str, object] = {
            "id": component.id,
            "name": component.id.rsplit(".", 1)[-1].title(),
            "version": component.version,
            "env_type": component.env_type,
            "hooks": hooks,
        }
        if component.depends:
            table["depends"] = [
                {k: v for k, v in (("id", d), ("min_version", lo), ("max_version", hi)) if v is not None}
                for d, lo, hi in component.depends
            ]
        tables.append(table)
    package: dict[str, object] = {"id": package_id, "name": package_id, "version": version}
    if allow_downgrade:
        package["allow_downgrade"] = True
    (directory / "omadm-package.toml").write_text(tomli_w.dumps({"package": package, "component": tables}))
    return directory


def _hello_variant(directory: Path, version: str, *, base: str, allow_downgrade: bool = False) -> Path:
    """A copy of an example hello package at another version (its program prints that version)."""
    shutil.copytree(EXAMPLES / base, directory)
    toml = directory / "omadm-package.toml"
    text = toml.read_text()
    old = "1.0.0" if base == "hello-package" else "2.0.0"
    text = text.replace(f'version = "{old}"', f'version = "{version}"')
    if allow_downgrade:
        text = text.replace("[package]\n", "[package]\nallow_downgrade = true\n", 1)
    toml.write_text(text)
    program = directory / "com.example.hello" / "bin" / "hello"
    program.write_text(program.read_text().replace(f"(version {old})", f"(version {version})"))
    return directory


TAMPER_MARK = b"payload-bytes-as-the-publisher-signed-them"


def _tamper(package: Path) -> None:
    """Change bytes of a payload file inside a signed package; the manifest (and signature) stay."""
    raw = gzip.decompress(package.read_bytes())
    assert raw.count(TAMPER_MARK) == 1
    package.write_bytes(gzip.compress(raw.replace(TAMPER_MARK, TAMPER_MARK.upper())))
    with tarfile.open(package) as tar:  # still a well-formed archive: only the content lies
        assert tar.getnames()[0] == "manifest.json"


class PackageSet:
    """Every package the SCOMO e2e tests install, built once, served by a real HTTP server."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.key = generate_key()
        self.publisher = root / "publisher.pem"
        save_public_key(self.key.public_key(), self.publisher)
        sources = root / "src"
        dist = root / "dist"
        dist.mkdir(parents=True)
        self.files: dict[str, Path] = {}

        def build(name: str, source: Path, *, key: object = self.key) -> Path:
            out = dist / f"{name}.omp"
            build_package(source, out, signing_key=key)  # type: ignore[arg-type]
            self.files[name] = out
            return out

        build("hello-1", EXAMPLES / "hello-package")
        build("hello-2", EXAMPLES / "hello-package-2")
        broken = _hello_variant(sources / "hello-3", "3.0.0", base="hello-package-2")
        (broken / "com.example.hello" / "hooks" / "install").write_text(
            "#!/bin/sh\necho 'hello 3.0.0 cannot install on this device' >&2\nexit 3\n"
        )
        build("hello-3-broken", broken)
        build(
            "hello-0.9",
            _hello_variant(sources / "hello-0.9", "0.9.0", base="hello-package", allow_downgrade=True),
        )
        build("hello-0.5", _hello_variant(sources / "hello-0.5", "0.5.0", base="hello-package"))
        build("hello-1-untrusted", EXAMPLES / "hello-package", key=generate_key())

        def generated(name: str, package_id: str, version: str, *components: Component, **kw: bool) -> None:
            build(name, write_source(sources / name, package_id, version, components, **kw))

        generated("ctl", "com.example.ctl-package", "1.0.0", Component("com.example.ctl", "1.0.0"))
        self.payload = os.urandom(12_000)  # incompressible: the package stays big
        generated(
            "big",
            "com.example.big-package",
            "1.0.0",
            Component("com.example.big", "1.0.0", payload=self.payload),
        )
        generated(
            "tampered",
            "com.example.tamper-package",
            "1.0.0",
            Component("com.example.tamper", "1.0.0", payload=TAMPER_MARK),
        )
        _tamper(self.files["tampered"])
        core, ui = "com.example.suite.core", "com.example.suite.ui"
        generated(
            "suite",
            "com.example.suite",
            "1.0.0",
            Component(core, "1.0.0"),
            Component(ui, "1.0.0", depends=((core, "1.0", "2"),)),
        )
        generated(
            "suite-ui-1.1",
            "com.example.suite-ui",
            "1.1.0",
            Component(ui, "1.1.0", depends=((core, "1.0", "2"),)),
        )
        generated(
            "needs-absent",
            "com.example.addon-package",
            "1.0.0",
            Component("com.example.addon", "1.0.0", depends=(("com.example.absent", "1.0", None),)),
        )
        generated(
            "flatpak",
            "com.example.flat-package",
            "1.0.0",
            Component("com.example.flat", "1.0.0", env_type="flatpak"),
        )
        generated(
            "stub",
            "com.example.stub-package",
            "1.0.0",
            Component("com.example.stubbed", "1.0.0", env_type="stub"),
        )
        generated(
            "crashy",
            "com.example.crashy-package",
            "1.0.0",
            Component("com.example.crashy", "1.0.0", env_type="crashy"),
        )

        self.server = PackageServer()
        for name, path in self.files.items():
            self.server.add(f"/{name}.omp", path.read_bytes())

    def bytes_of(self, name: str) -> bytes:
        return self.files[name].read_bytes()

    def url(self, name: str) -> str:
        """The plain URL of a package (no faults; shared by all tests)."""
        return self.server.url(f"/{name}.omp")

    def serve(self, name: str, path: str, **faults: object) -> str:
        """Serve a package at a test's own ``path`` (faults are counted per path)."""
        self.server.add(path, self.bytes_of(name), **faults)
        return self.server.url(path)

    def close(self) -> None:
        self.server.close()


def closed_port() -> int:
    """A port on 127.0.0.1 nothing listens on (bound, then released): connections are refused."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


# --- DM commands ------------------------------------------------------------------------


def add(uri: str, data: str | None = None, *, fmt: str | None = None, type: str | None = None) -> Add:
    meta = Meta(format=fmt, type=type) if fmt or type else None
    return Add("0", (Item(target=Target(uri), meta=meta, data=data),))


def execute(uri: str, correlator: str) -> Exec:
    return Exec("0", (Item(target=Target(uri)),), correlator=correlator)


def get(uri: str) -> Get:
    return Get("0", (Item(target=Target(uri)),))


def download(
    name: str,
    pkg_id: str,
    url: str,
    primitive: str,
    correlator: str,
    *,
    install_params: str | None = None,
) -> list[Command]:
    """Add ``Download/<name>`` with PkgID, Name, PkgURL (and InstallParams), then Exec ``primitive``."""
    node = f"{DOWNLOAD}/{name}"
    commands: list[Command] = [
        add(node, fmt="node"),
        add(f"{node}/PkgID", pkg_id),
        add(f"{node}/Name", f"package {pkg_id}"),
        add(f"{node}/PkgURL", url),
    ]
    if install_params is not None:
        commands.append(add(f"{node}/InstallParams", install_params))
    commands += [
        add(f"{node}/Operations", fmt="node"),
        add(f"{node}/Operations/{primitive}"),
        execute(f"{node}/Operations/{primitive}", correlator),
    ]
    return commands


def deliver(name: str, pkg_id: str, package: bytes, primitive: str, correlator: str) -> list[Command]:
    """Direct delivery: Add ``Delivered/<name>`` with PkgID, Name and Data (b64), then Exec ``primitive``."""
    node = f"{DELIVERED}/{name}"
    return [
        add(node, fmt="node"),
        add(f"{node}/PkgID", pkg_id),
        add(f"{node}/Name", f"package {pkg_id}"),
        add(f"{node}/Data", base64.b64encode(package).decode(), fmt="b64", type="application/octet-stream"),
        add(f"{node}/Operations", fmt="node"),
        add(f"{node}/Operations/{primitive}"),
        execute(f"{node}/Operations/{primitive}", correlator),
    ]


# --- one run of the agent ---------------------------------------------------------------


@dataclass
class Run:
    """One ``omadm agent connect``: the process and what the DM server received meanwhile."""

    process: subprocess.CompletedProcess[str]
    events: list[Event]

    @property
    def output(self) -> str:
        return f"exit {self.process.returncode}\n{self.process.stdout}\n{self.process.stderr}"

    def status(self, uri: str, command: str = "Exec") -> int:
        """The device's Status for the (only) ``command`` on ``uri`` in this run."""
        codes = [
            e.status.code
            for e in self.events
            if isinstance(e, StatusReceived)
            and e.command.name == command
            and getattr(e.command, "items", ())
            and e.command.items[0].target is not None
            and e.command.items[0].target.loc_uri == uri
        ]
        assert len(codes) == 1, f"{command} {uri}: statuses {codes}\n{self.output}"
        return codes[0]

    def statuses(self) -> list[tuple[str, str, int]]:
        return [
            (
                e.command.name,
                e.command.items[0].target.loc_uri if e.command.items[0].target else "",
                e.status.code,
            )
            for e in self.events
            if isinstance(e, StatusReceived) and getattr(e.command, "items", ())
        ]

    @property
    def alerts(self) -> list[Alert]:
        return [e.alert for e in self.events if isinstance(e, AlertReceived) and e.alert.code == 1226]

    def alert(self, correlator: str) -> Alert:
        found = [a for a in self.alerts if a.correlator == correlator]
        assert len(found) == 1, f"alerts for {correlator}: {found}\n{self.output}"
        return found[0]

    def results(self) -> list[str | bytes | None]:
        return [i.data for e in self.events if isinstance(e, ResultsReceived) for i in e.results.items]


@dataclass
class World:
    """One device (config, data directory, agent runs) and the DM server it talks to."""

    root: Path
    packages: PackageSet
    scomo: ScomoConfig = field(
        default_factory=lambda: ScomoConfig(reserve_bytes=0, hook_timeout=20.0, installers=PLUGINS)
    )
    max_msg_size: int = 16384
    _batches: list[list[Command]] = field(default_factory=list)
    _watch: tuple[str, ...] = ()
    _probed: int = 0

    def __post_init__(self) -> None:
        self.data = self.root / "data"
        (self.data / "trust").mkdir(parents=True)
        shutil.copy(self.packages.publisher, self.data / "trust" / "publisher.pem")
        account = DeviceAccount(
            Credentials(AuthType.BASIC, USER, PASSWORD),
            server_credentials=Credentials(AuthType.BASIC, SERVER_ID, SERVER_PASSWORD),
            send_server_cred=True,
        )
        self.server = TestDMServer({DEVICE_ID: account}, self._script)
        self.config_path = self.root / "omadm.toml"
        self._write_config()

    def __enter__(self) -> World:
        self.server.__enter__()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.__exit__(*exc)

    def _write_config(self) -> None:
        config = AgentConfig(
            device=DeviceConfig(id=DEVICE_ID),
            data_dir=self.data,
            accounts=(
                AccountConfig(
                    SERVER_ID, self.server.url, USER, PASSWORD, auth="basic", server_password=SERVER_PASSWORD
                ),
            ),
            poll_interval=0,
            max_msg_size=self.max_msg_size,
            retries=1,
            retry_backoff=0.05,
            timeout=5.0,
            scomo=self.scomo,
        )
        save_config(config, self.config_path)

    def configure(self, *, max_msg_size: int | None = None, **scomo: object) -> None:
        """Change ``[scomo]`` settings (or MaxMsgSize) for the next runs."""
        self.scomo = replace(self.scomo, **scomo)  # type: ignore[arg-type]
        if max_msg_size is not None:
            self.max_msg_size = max_msg_size
        self._write_config()

    def _script(self, events: list[Event], session: ServerSession) -> None:
        if session.authenticated and session.pending == 0 and self._batches:
            for command in self._batches.pop(0):
                session.queue(command)

    def connect(self, *commands: Command | Iterable[Command], then: Sequence[Sequence[Command]] = ()) -> Run:
        """Run the agent once; the server sends ``commands`` (then each batch of ``then`` in turn)."""
        first: list[Command] = []
        for c in commands:
            first.extend([c] if isinstance(c, Command) else c)
        self._batches = [first, *(list(b) for b in then)] if first else []
        start = len(self.server.record.events)
        env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")])}
        if self._watch:
            env.update(
                OMADM_TEST_PROBE=_PROBE,
                OMADM_TEST_PYTHON=sys.executable,
                OMADM_TEST_TREE=str(self.data / "tree.sqlite"),
                OMADM_TEST_WATCH=" ".join(self._watch),
                OMADM_TEST_PROBE_LOG=str(self.root / "probe.log"),
            )
        process = subprocess.run(
            [sys.executable, "-m", "omadm", "agent", "connect", "--config", str(self.config_path)],
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
            env=env,
        )
        run = Run(process, self.server.record.events[start:])
        assert process.returncode == 0, run.output
        assert not self._batches, f"the session ended before the server sent everything\n{run.output}"
        return run

    def watch(self, *paths: str) -> None:
        """From the next run on, every test hook records these tree values as it starts."""
        self._watch = paths

    def probed(self) -> list[str]:
        """The probe lines written since the last call: ``<action> <path>=<value> ...``."""
        log = self.root / "probe.log"
        lines = log.read_text().splitlines() if log.exists() else []
        new, self._probed = lines[self._probed :], len(lines)
        return new

    # -- the device, seen from inside --------------------------------------------------------

    def value(self, path: str) -> str | None:
        """A node's value in the agent's tree (read after the agent ended), None if absent."""
        store = TreeStore(self.data / "tree.sqlite")
        try:
            record = store.get(path)
        finally:
            store.close()
        if record is None:
            return None
        return None if record.value is None else record.value.decode()

    def exists(self, path: str) -> bool:
        store = TreeStore(self.data / "tree.sqlite")
        try:
            return store.get(path) is not None
        finally:
            store.close()

    def children(self, path: str) -> list[str]:
        store = TreeStore(self.data / "tree.sqlite")
        try:
            return sorted(r.name for r in store.children(path))
        finally:
            store.close()

    def component_dir(self, component_id: str) -> Path:
        return self.data / ARCHIVE / component_id

    def hooks_log(self, component_id: str) -> list[str]:
        log = self.component_dir(component_id) / "state" / "hooks.log"
        return log.read_text().splitlines() if log.exists() else []

    def fail_hook(self, component_id: str, action: str, fail: bool = True) -> None:
        """Make the component's ``action`` hook fail (or work again) from the next run on."""
        marker = self.component_dir(component_id) / "state" / f"fail-{action}"
        if fail:
            marker.touch()
        else:
            marker.unlink()

    def run_program(self, component_id: str, program: str) -> str:
        """Run a program of the live version (``current/<program>``) and return what it printed."""
        path = self.component_dir(component_id) / "current" / program
        return subprocess.run(
            [str(path)], capture_output=True, text=True, check=True, timeout=10
        ).stdout.strip()
