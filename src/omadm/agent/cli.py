"""``omadm agent``: set up, run and inspect the device agent. Glue only; logic lives in ``runner``.

Exit codes of ``connect``: 0 the session succeeded; 1 configuration or usage problem;
3 authentication failed (the server refused our credentials, even when it says so by
aborting with Alert 1223, or it did not prove itself); 4 the server could not be reached;
5 the server broke the protocol or aborted the session for another reason; 7 TLS: the
server's certificate is not trusted (unknown CA, expired, another host name, a key that is
not pinned) or the server refused our client certificate (``run`` stops with 7 too). The local
software commands (``install``, ``activate``, ``deactivate``, ``remove``) exit 6 when the
operation ran and failed (the SCOMO result says why). ``account set`` changes an account's
address or credentials in the tree, which wins over ``omadm.toml``.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, NoReturn

import typer

from omadm.protocol.codec import Encoding
from omadm.protocol.codes import ScomoResult
from omadm.protocol.errors import ProtocolError
from omadm.tree.errors import TreeError
from omadm.tree.store import TreeStoreError
from omadm.tree.uri import parse_uri

from .config import (
    AUTH_SCHEMES,
    AccountConfig,
    AgentConfig,
    ConfigError,
    DeviceConfig,
    TLSConfig,
    load_config,
    save_account,
    save_config,
)
from .daemon import CONFIG_ENV, DEFAULT_CONFIG, configure_logging
from .runner import Agent, Outcome, SessionRequest
from .scomo.journal import Job, Primitive

if TYPE_CHECKING:
    from .scomo.local import LocalOperations

__all__ = [
    "EXIT_AUTH",
    "EXIT_CONFIG",
    "EXIT_OK",
    "EXIT_OPERATION",
    "EXIT_PROTOCOL",
    "EXIT_TLS",
    "EXIT_UNREACHABLE",
    "agent_app",
]

EXIT_OK = 0
EXIT_CONFIG = 1
EXIT_AUTH = 3
EXIT_UNREACHABLE = 4
EXIT_PROTOCOL = 5
EXIT_OPERATION = 6
EXIT_TLS = 7

_EXIT_FOR = {
    Outcome.OK: EXIT_OK,
    Outcome.AUTH_FAILED: EXIT_AUTH,
    Outcome.TRANSPORT_ERROR: EXIT_UNREACHABLE,
    Outcome.TLS_ERROR: EXIT_TLS,
    Outcome.PROTOCOL_ERROR: EXIT_PROTOCOL,
    Outcome.ABORTED: EXIT_PROTOCOL,
}


agent_app = typer.Typer(
    help="The device agent: a standard OMA DM 1.2 client with a persistent DM tree.",
    no_args_is_help=True,
    rich_markup_mode=None,
    context_settings={"help_option_names": ["-h", "--help"]},
)
tree_app = typer.Typer(
    help="Inspect the device's own DM tree (no server involved).", no_args_is_help=True, rich_markup_mode=None
)
agent_app.add_typer(tree_app, name="tree")

ConfigOption = Annotated[
    Path,
    typer.Option("--config", "-c", help="The agent's omadm.toml.", envvar=CONFIG_ENV),
]


def _fail(code: int, message: str) -> NoReturn:
    typer.echo(f"error: {message}", err=True)
    raise typer.Exit(code)


def _logging(verbose: bool, *, quiet: bool = False) -> None:
    configure_logging(verbose, quiet=quiet)


def _open(config_path: Path, *, inspect_only: bool = False) -> Agent:
    try:
        return Agent(load_config(config_path), inspect_only=inspect_only)
    except (ConfigError, TreeStoreError, OSError) as exc:
        _fail(EXIT_CONFIG, str(exc))


@agent_app.command("init")
def init_command(
    device_id: Annotated[str, typer.Option(help="DevInfo/DevId, e.g. IMEI:490154203237518.")],
    server: Annotated[
        str | None, typer.Option(help="The DM server URL, e.g. http://dm.example.com/dm.")
    ] = None,
    username: Annotated[
        str | None, typer.Option(help="The device's user name at the server (CLCRED).")
    ] = None,
    password: Annotated[
        str | None, typer.Option(help="The device's password at the server (CLCRED).")
    ] = None,
    data_dir: Annotated[Path, typer.Option(help="Where the tree and the queue live.")] = Path("omadm-data"),
    server_id: Annotated[str, typer.Option(help="The server's ServerID (the ACL principal).")] = "omadm",
    server_password: Annotated[
        str,
        typer.Option(
            help="SRVCRED secret: the server proves itself with it (and signs Package #0); "
            "register the same secret on the server."
        ),
    ] = "",
    auth: Annotated[str, typer.Option(help=f"Credential scheme: {', '.join(AUTH_SCHEMES)}.")] = "md5",
    require_server_auth: Annotated[
        bool,
        typer.Option(
            help="Run a server's commands only once it has authenticated (the default; "
            "--no-require-server-auth trusts whoever answers at --server: insecure)."
        ),
    ] = True,
    poll_interval: Annotated[float, typer.Option(help="Seconds between sessions; 0 = never poll.")] = 3600.0,
    bootstrap: Annotated[
        Path | None, typer.Option(help="A bootstrap TNDS document (XML or WBXML) with the DMAcc account(s).")
    ] = None,
    listen_udp: Annotated[
        str,
        typer.Option(
            "--listen-udp",
            help="HOST:PORT where 'agent run' waits for Package #0 (server-initiated sessions), "
            "e.g. 0.0.0.0:2948; without it the device only polls.",
        ),
    ] = "",
    encoding: Annotated[str, typer.Option(help="How messages go on the wire: xml or wbxml.")] = "xml",
    trust_key: Annotated[
        list[Path] | None,
        typer.Option(
            "--trust-key",
            help="A package publisher's public key (.pub.pem) to trust, copied into <data-dir>/trust; "
            "repeatable.",
        ),
    ] = None,
    ca_file: Annotated[
        Path | None,
        typer.Option("--ca-file", help="Trust a server certificate only if this CA bundle (PEM) signed it."),
    ] = None,
    pin_sha256: Annotated[
        list[str] | None,
        typer.Option(
            "--pin-sha256",
            help="Accept only a server key with this SHA-256 SubjectPublicKeyInfo digest (base64 or hex); "
            "repeatable (a backup key).",
        ),
    ] = None,
    client_cert: Annotated[
        Path | None, typer.Option("--client-cert", help="Our client certificate (PEM) for mutual TLS.")
    ] = None,
    client_key: Annotated[
        Path | None, typer.Option("--client-key", help="Its private key (PEM) [in --client-cert].")
    ] = None,
    config: ConfigOption = DEFAULT_CONFIG,
    force: Annotated[
        bool,
        typer.Option(help="Overwrite an existing configuration, and rewrite the account in the tree."),
    ] = False,
) -> None:
    """Write omadm.toml and build the device's tree (DevInfo, DevDetail, DMAcc).

    The server account comes from --server/--username/--password, or from --bootstrap.
    """
    if config.exists() and not force:
        _fail(EXIT_CONFIG, f"{config} exists; use --force to overwrite it")
    if auth not in AUTH_SCHEMES:
        _fail(EXIT_CONFIG, f"--auth must be one of {', '.join(AUTH_SCHEMES)}")
    wire = _encoding_option(encoding)
    if listen_udp:
        from .listener import parse_address  # noqa: PLC0415 - the listeners are for 'run'

        try:
            parse_address(listen_udp)
        except ValueError as exc:
            _fail(EXIT_CONFIG, f"--listen-udp: {exc}")
    keys = [(path, _public_key_bytes(path)) for path in trust_key or ()]
    accounts: tuple[AccountConfig, ...] = ()
    if server or username or password:
        if not (server and username and password):
            _fail(EXIT_CONFIG, "--server, --username and --password go together")
        if require_server_auth and not server_password:
            _fail(
                EXIT_CONFIG,
                "give --server-password: the agent runs a server's commands only once the server has "
                "proved itself with that secret (register the same one on the server, e.g. 'omadm ctl "
                "devices add DEVID --password ... --server-password ...'); or pass "
                "--no-require-server-auth to trust an unauthenticated server (insecure)",
            )
        accounts = (
            AccountConfig(
                server_id=server_id,
                url=server,
                username=username,
                password=password,
                auth=auth,
                server_password=server_password,
                require_server_auth=require_server_auth,
            ),
        )
    elif bootstrap is None:
        _fail(EXIT_CONFIG, "give the server account (--server, --username, --password) or --bootstrap FILE")
    try:
        agent_config = AgentConfig(
            device=DeviceConfig(id=device_id),
            data_dir=data_dir.resolve(),
            accounts=accounts,
            poll_interval=poll_interval,
            encoding=wire,
            listen_udp=listen_udp,
            tls=_tls_options(ca_file, pin_sha256, client_cert, client_key),
        )
        save_config(agent_config, config)
        agent = Agent(load_config(config))
    except (ConfigError, TreeStoreError, OSError) as exc:
        _fail(EXIT_CONFIG, str(exc))
    try:
        if force:
            # The tree is the truth once it exists and the file only adds accounts it lacks;
            # re-initialising is the owner saying "this is the account now", so say it there.
            for account in accounts:
                agent.set_account(account)
        _install_trust_keys(agent.config.trust_dir, keys, replace=force)
        if bootstrap is not None:
            _apply_bootstrap(agent, bootstrap)
    except (TreeError, LookupError, OSError) as exc:
        _fail(EXIT_CONFIG, str(exc))
    finally:
        agent.close()
    typer.echo(f"wrote {config}; tree in {agent_config.tree_path}")
    for path, _ in keys:
        typer.echo(f"trusting packages signed with {path} ({agent.config.trust_dir / _key_name(path)})")
    if listen_udp:
        typer.echo(
            f"'omadm agent run' answers Package #0 on udp {listen_udp}: register that address with the "
            "server (e.g. --notify udp://HOST:PORT) so it can wake this device"
        )
    elif poll_interval:
        typer.echo(
            f"without --listen-udp the device only polls (every {poll_interval:g} s): the server "
            "cannot wake it for a new job"
        )
    for account in accounts:
        if account.require_server_auth:
            typer.echo(
                f"server {account.server_id!r} must authenticate with the server password you gave: on the "
                f"server, register {device_id} with the same --server-password, and the ServerID "
                f"{account.server_id!r}"
            )
        else:
            typer.echo(
                f"WARNING: server {account.server_id!r} is trusted without authentication: whoever "
                f"answers at {account.url} can manage this device",
                err=True,
            )


def _tls_options(
    ca_file: Path | None, pins: list[str] | None, client_cert: Path | None, client_key: Path | None
) -> TLSConfig:
    """``[tls]`` from init's options (absolute paths: the agent may run from another directory)."""
    if client_key and not client_cert:
        _fail(EXIT_CONFIG, "--client-key needs --client-cert")
    from .tls import parse_pin  # noqa: PLC0415

    for pin in pins or ():
        try:
            parse_pin(pin)
        except ValueError as exc:
            _fail(EXIT_CONFIG, f"--pin-sha256: {exc}")
    files = (("--ca-file", ca_file), ("--client-cert", client_cert), ("--client-key", client_key))
    for option, path in files:
        if path is not None and not path.is_file():
            _fail(EXIT_CONFIG, f"{option}: no such file {path}")
    return TLSConfig(
        ca_file=str(ca_file.resolve()) if ca_file else "",
        client_cert=str(client_cert.resolve()) if client_cert else "",
        client_key=str(client_key.resolve()) if client_key else "",
        pin_sha256=tuple(pins or ()),
    )


def _encoding_option(value: str) -> Encoding:
    try:
        return Encoding(value.lower())
    except ValueError:
        _fail(EXIT_CONFIG, f"--encoding must be xml or wbxml, not {value!r}")


def _public_key_bytes(path: Path) -> bytes:
    """The file at ``path`` if it is a PEM Ed25519 public key (checked before anything is written)."""
    from omadm.package.errors import PackageError  # noqa: PLC0415 - only --trust-key needs it
    from omadm.package.signing import load_public_key  # noqa: PLC0415

    try:
        load_public_key(path)
        return path.read_bytes()
    except (PackageError, OSError) as exc:
        _fail(EXIT_CONFIG, f"--trust-key: {exc}")


def _key_name(path: Path) -> str:
    """The key's name in the trust directory, which reads only ``*.pem`` files."""
    return path.name if path.name.endswith(".pem") else path.name + ".pem"


def _install_trust_keys(trust_dir: Path, keys: list[tuple[Path, bytes]], *, replace: bool) -> None:
    """Copy publisher keys into ``trust_dir``; another key under the same name needs --force."""
    if not keys:
        return
    from omadm.tree.files import private_opener  # noqa: PLC0415

    trust_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    for path, data in keys:
        target = trust_dir / _key_name(path)
        if target.exists() and target.read_bytes() != data and not replace:
            _fail(EXIT_CONFIG, f"{target} holds another key; rename {path}, or use --force to replace it")
        with open(target, "wb", opener=private_opener) as out:
            out.write(data)


def _apply_bootstrap(agent: Agent, path: Path) -> None:
    try:
        written = agent.bootstrap_tnds(path.read_bytes())
    except OSError as exc:
        _fail(EXIT_CONFIG, f"cannot read {path}: {exc}")
    except (TreeError, ProtocolError) as exc:
        _fail(EXIT_CONFIG, f"{path} is not a usable bootstrap TNDS document: {exc}")
    accounts = ", ".join(a.server_id for a in agent.accounts()) or "none"
    typer.echo(f"bootstrapped {len(written)} nodes from {path}; accounts: {accounts}")
    for account in agent.accounts():
        if account.server is None and not agent.trusts_unauthenticated(account.server_id):
            typer.echo(
                f"WARNING: account {account.server_id!r} has no server credential (AppAuth with "
                "AAuthLevel SRVCRED): sessions with it will refuse to run its commands",
                err=True,
            )


@agent_app.command("bootstrap")
def bootstrap_command(
    document: Annotated[Path, typer.Argument(help="A bootstrap TNDS document (XML or WBXML).")],
    config: ConfigOption = DEFAULT_CONFIG,
) -> None:
    """Apply a bootstrap TNDS document (DMAcc accounts, settings) to the device's tree."""
    agent = _open(config)
    try:
        _apply_bootstrap(agent, document)
    finally:
        agent.close()


account_app = typer.Typer(
    help="The device's DM server accounts (DMAcc in the tree).", no_args_is_help=True, rich_markup_mode=None
)
agent_app.add_typer(account_app, name="account")

_SCHEME_NAMES = {scheme: name for name, scheme in AUTH_SCHEMES.items()}


@account_app.command("set")
def account_set_command(
    server_id: Annotated[str, typer.Option("--server-id", help="Which account: the server's ServerID.")],
    server: Annotated[str | None, typer.Option(help="The DM server URL.")] = None,
    username: Annotated[str | None, typer.Option(help="The device's user name at the server.")] = None,
    password: Annotated[str | None, typer.Option(help="The device's password at the server.")] = None,
    server_password: Annotated[
        str | None, typer.Option(help="SRVCRED secret the server proves itself with.")
    ] = None,
    auth: Annotated[str | None, typer.Option(help=f"Credential scheme: {', '.join(AUTH_SCHEMES)}.")] = None,
    config: ConfigOption = DEFAULT_CONFIG,
) -> None:
    """Change an account's server URL or credentials in the tree (what sessions use) and omadm.toml.

    What is not given stays as the tree has it. An account the tree does not have is added
    (then --server, --username and --password are needed). Stop 'omadm agent run' first.
    """
    if auth is not None and auth not in AUTH_SCHEMES:
        _fail(EXIT_CONFIG, f"--auth must be one of {', '.join(AUTH_SCHEMES)}")
    if server is not None and not server.startswith(("http://", "https://")):
        _fail(EXIT_CONFIG, "--server must start with http:// or https://")
    agent = _open(config)
    try:
        account = _merged_account(agent, server_id, server, username, password, server_password, auth)
        configured = next((a for a in agent.config.accounts if a.server_id == server_id), None)
        in_file = configured is not None or server_id not in {a.server_id for a in agent.accounts()}
        if configured is not None:
            account = replace(
                account, require_server_auth=configured.require_server_auth, name=configured.name
            )
        if in_file and account.require_server_auth and not account.server_password:
            _fail(
                EXIT_CONFIG,
                f"account {server_id!r} needs --server-password: the agent runs a server's commands only "
                "once the server has proved itself with it",
            )
        node = agent.set_account(account)
        if in_file:
            save_account(account, config)
    except (LookupError, TreeError, ConfigError, OSError) as exc:
        _fail(EXIT_CONFIG, str(exc))
    finally:
        agent.close()
    where = f"{node} and {config}" if in_file else f"{node} (a bootstrapped account: not in {config})"
    typer.echo(
        f"account {server_id!r}: {account.url}, user {account.username!r} ({account.auth}); wrote {where}"
    )


def _merged_account(
    agent: Agent,
    server_id: str,
    server: str | None,
    username: str | None,
    password: str | None,
    server_password: str | None,
    auth: str | None,
) -> AccountConfig:
    """The account as it will be: what was given, the rest as the tree has it now."""
    if not any(a.server_id == server_id for a in agent.accounts()):
        if not (server and username and password):
            _fail(
                EXIT_CONFIG,
                f"the tree has no account for server {server_id!r}: give --server, --username and "
                "--password to add one",
            )
        return AccountConfig(server_id, server, username, password, auth or "md5", server_password or "")
    current = agent.account(server_id)  # LookupError when two accounts name it
    client, srv = current.client, current.server
    return AccountConfig(
        server_id=server_id,
        url=server or current.url,
        username=username if username is not None else (client.username if client else ""),
        password=password if password is not None else (client.password if client else ""),
        auth=auth or (_SCHEME_NAMES.get(client.auth_type, "md5") if client else "md5"),
        server_password=server_password if server_password is not None else (srv.password if srv else ""),
    )


@agent_app.command("connect")
def connect_command(
    config: ConfigOption = DEFAULT_CONFIG,
    server_id: Annotated[str | None, typer.Option(help="Which account (default: the first).")] = None,
    verbose: Annotated[bool, typer.Option("--verbose", "-v")] = False,
) -> None:
    """Run one session now; exit code: how it ended (0 ok, 3 auth, 4 unreachable, 5 protocol, 7 TLS)."""
    _logging(verbose)
    agent = _open(config)
    try:
        report = agent.connect(SessionRequest(server_id, reason="omadm agent connect"))
        typer.echo(report.line())
        if report.ok and (agent.work() or agent.alerts.pending(report.server_id)):
            # Operations the server started are done (or a report is due again): report now.
            report = agent.connect(SessionRequest(server_id, reason="operation results"))
            typer.echo(report.line())
    except LookupError as exc:
        _fail(EXIT_CONFIG, str(exc))
    finally:
        agent.close()
    raise typer.Exit(_EXIT_FOR.get(report.outcome, EXIT_PROTOCOL))


@agent_app.command("run")
def run_command(
    config: ConfigOption = DEFAULT_CONFIG,
    verbose: Annotated[bool, typer.Option("--verbose", "-v")] = False,
) -> None:
    """Run until stopped (SIGINT/SIGTERM): poll, answer Package #0, deliver pending alerts."""
    # The body lives in omadm.agent.daemon: the `omadm` entry point runs the plain forms of
    # this command there without loading Typer (issue 17: the agent's idle RSS).
    from .daemon import run  # noqa: PLC0415

    code = run(config, verbose=verbose)
    if code != EXIT_OK:
        raise typer.Exit(code)


@agent_app.command("status")
def status_command(config: ConfigOption = DEFAULT_CONFIG) -> None:
    """Show the device, its accounts and what waits to be sent."""
    agent = _open(config, inspect_only=True)
    try:
        typer.echo(f"device   {agent.tree.system_value('./DevInfo/DevId')!s}")
        typer.echo(f"tree     {agent.config.tree_path} ({agent.store.count()} nodes)")
        for account in agent.accounts():
            scheme = account.client.auth_type.value if account.client else "none"
            typer.echo(f"account  {account.server_id}  {account.url}  ({scheme}; node {account.node})")
        pending = agent.alerts.pending()
        typer.echo(
            f"alerts   {len(pending)} waiting"
            + "".join(
                f"\n         #{q.id} to {q.server_id}: {q.alert.data} {q.alert.correlator or ''}"
                for q in pending
            )
        )
    finally:
        agent.close()


@tree_app.command("get")
def tree_get_command(
    uri: Annotated[str, typer.Argument(help="A node URI, e.g. ./DevInfo/Man.")],
    config: ConfigOption = DEFAULT_CONFIG,
) -> None:
    """Print one node: a leaf's value (secrets hidden) or an interior node's children."""
    agent = _open(config, inspect_only=True)
    try:
        path = parse_uri(uri).path
        record = agent.store.get(path)
        if record is None:
            _fail(EXIT_CONFIG, f"{path} does not exist")
        if record.is_interior:
            for child in agent.store.children(path):
                typer.echo(child.name + ("/" if child.is_interior else ""))
            return
        definition = agent.tree.definition(path)
        if definition is not None and definition.secret:
            typer.echo("(secret)")
            return
        value = agent.tree.system_value(path)
        typer.echo(value.hex() if isinstance(value, bytes) else (value or ""))
    except TreeError as exc:
        _fail(EXIT_CONFIG, str(exc))
    finally:
        agent.close()


@tree_app.command("show")
def tree_show_command(
    uri: Annotated[str, typer.Argument(help="Where to start.")] = ".", config: ConfigOption = DEFAULT_CONFIG
) -> None:
    """Print the tree below a node, one node a line, with format and ACL."""
    agent = _open(config, inspect_only=True)
    try:
        top = parse_uri(uri)
        for record in agent.store.subtree(top.path):
            depth = record.path.count("/") - top.path.count("/")
            label = record.name + ("/" if record.is_interior else "")
            definition = agent.tree.definition(record.path)
            if record.is_interior:
                value = ""
            elif definition is not None and definition.secret:
                value = " = (secret)"
            else:
                raw = agent.tree.system_value(record.path)
                value = f" = {raw.hex() if isinstance(raw, bytes) else raw}"
            acl = f"  [{record.acl}]" if record.acl else ""
            typer.echo(f"{'  ' * depth}{label}{value}  ({record.format}){acl}")
    except TreeError as exc:
        _fail(EXIT_CONFIG, str(exc))
    finally:
        agent.close()


# -- software on this device, without a server (same path as a server's Exec) ---------------


def _local(config: Path, verbose: bool) -> tuple[Agent, LocalOperations]:
    from .scomo.local import LocalOperations  # noqa: PLC0415 - heavy imports, only these commands need them

    _logging(verbose, quiet=not verbose)
    agent = _open(config)
    if agent.scomo is None:
        agent.close()
        _fail(EXIT_CONFIG, "software management is disabled ([scomo] enabled = false)")
    return agent, LocalOperations(agent.scomo)


def _report(agent: Agent, job: Job | None, what: str) -> NoReturn:
    if job is None:
        typer.echo(f"{what}: nothing to do")
        raise typer.Exit(EXIT_OK)
    assert job.result is not None
    try:
        meaning = ScomoResult(job.result).description
    except ValueError:
        meaning = "vendor-specific result"
    typer.echo(f"{what}: {job.result} {meaning}")
    _print_components(agent)
    raise typer.Exit(EXIT_OK if ScomoResult.is_success_code(job.result) else EXIT_OPERATION)


def _print_components(agent: Agent) -> None:
    assert agent.scomo is not None
    root = agent.scomo.root
    for record in agent.store.children(f"{root}/Inventory/Deployed"):
        value = agent.tree.system_value
        state = {"10": "inactive", "20": "active"}.get(str(value(f"{record.path}/State")), "?")
        typer.echo(
            f"deployed   {value(f'{record.path}/ID')!s}  {value(f'{record.path}/Version')!s}  {state}"
            f"  (package {value(f'{record.path}/PkgIDRef')!s}; node {record.path})"
        )
    for record in agent.store.children(f"{root}/Inventory/Delivered"):
        value = agent.tree.system_value
        state = {"10": "delivered", "20": "installed"}.get(str(value(f"{record.path}/State")), "?")
        typer.echo(f"delivered  {value(f'{record.path}/PkgID')!s}  {state}  (node {record.path})")


VerboseOption = Annotated[bool, typer.Option("--verbose", "-v", help="Log every step.")]


@agent_app.command("install")
def install_command(
    source: Annotated[str, typer.Argument(help="A package: an http(s) URL or a file.")],
    config: ConfigOption = DEFAULT_CONFIG,
    inactive: Annotated[bool, typer.Option("--inactive", help="Install without activating.")] = False,
    pkg_id: Annotated[str | None, typer.Option("--pkg-id", help="The PkgID to record.")] = None,
    params: Annotated[str | None, typer.Option("--params", help="InstallParams for the hooks.")] = None,
    verbose: VerboseOption = False,
) -> None:
    """Verify and install a package here, as a server's DownloadInstall or Install would."""
    agent, local = _local(config, verbose)
    try:
        job = local.install(source, inactive=inactive, pkg_id=pkg_id, params=params)
        _report(agent, job, f"install {source}")
    except FileNotFoundError as exc:
        _fail(EXIT_CONFIG, str(exc))
    finally:
        agent.close()


def _component_command(primitive: Primitive, component_id: str, config: Path, verbose: bool) -> None:
    agent, local = _local(config, verbose)
    try:
        job = local.on_component(primitive, component_id)
        _report(agent, job, f"{primitive.value.lower()} {component_id}")
    except LookupError as exc:
        _fail(EXIT_CONFIG, str(exc))
    finally:
        agent.close()


ComponentArgument = Annotated[str, typer.Argument(help="The component's ID (Inventory/Deployed/<X>/ID).")]


@agent_app.command("activate")
def activate_command(
    component_id: ComponentArgument, config: ConfigOption = DEFAULT_CONFIG, verbose: VerboseOption = False
) -> None:
    """Activate an installed component (runs its activate hook)."""
    _component_command(Primitive.ACTIVATE, component_id, config, verbose)


@agent_app.command("deactivate")
def deactivate_command(
    component_id: ComponentArgument, config: ConfigOption = DEFAULT_CONFIG, verbose: VerboseOption = False
) -> None:
    """Deactivate an installed component (runs its deactivate hook)."""
    _component_command(Primitive.DEACTIVATE, component_id, config, verbose)


@agent_app.command("remove")
def remove_command(
    component_id: ComponentArgument, config: ConfigOption = DEFAULT_CONFIG, verbose: VerboseOption = False
) -> None:
    """Uninstall a component (runs its remove hook)."""
    _component_command(Primitive.REMOVE, component_id, config, verbose)


@agent_app.command("components")
def components_command(config: ConfigOption = DEFAULT_CONFIG) -> None:
    """List the software on this device: Inventory/Deployed and Inventory/Delivered."""
    agent = _open(config, inspect_only=True)
    try:
        if agent.scomo is None:
            _fail(EXIT_CONFIG, "software management is disabled ([scomo] enabled = false)")
        _print_components(agent)
    finally:
        agent.close()
