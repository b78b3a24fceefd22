"""The agent's configuration: one ``omadm.toml`` file, environment overrides, sane defaults.

The file says who the device is (DevInfo/DevDetail values), where its data lives, how it
talks (poll interval, XML or WBXML, message limits, TLS) and which management servers it
has accounts with. Accounts in the file *bootstrap* the tree's DMAcc: once the tree
exists, DMAcc is the truth (servers may change their own account), and the file only adds
accounts the tree does not have yet.

Environment overrides (for containers and tests): ``OMADM_AGENT_DATA_DIR``,
``OMADM_AGENT_POLL_INTERVAL``, ``OMADM_AGENT_ENCODING``.
"""

from __future__ import annotations

import os
import tomllib
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

from omadm.protocol.codec import Encoding
from omadm.protocol.codes import AuthType

__all__ = [
    "AUTH_SCHEMES",
    "AccountConfig",
    "AgentConfig",
    "ConfigError",
    "DeviceConfig",
    "ScomoConfig",
    "TLSConfig",
    "load_config",
    "save_account",
    "save_config",
]

#: Names used in ``omadm.toml`` for the DM credential schemes.
AUTH_SCHEMES: dict[str, AuthType] = {"basic": AuthType.BASIC, "md5": AuthType.MD5, "hmac": AuthType.HMAC}


class ConfigError(Exception):
    """The configuration file is missing, unreadable or says something impossible."""


@dataclass(frozen=True)
class DeviceConfig:
    """What the device says about itself in DevInfo and DevDetail."""

    id: str
    manufacturer: str = "omadm"
    model: str = "omadm-agent"
    language: str = "en-US"
    device_type: str = "gateway"
    oem: str = "omadm"
    firmware_version: str = "unknown"
    software_version: str = "0.1.0"
    hardware_version: str = "unknown"


@dataclass(frozen=True)
class AccountConfig:
    """One management server: a DMAcc account (AppAddr, CLCRED, SRVCRED)."""

    server_id: str
    url: str
    username: str
    password: str
    auth: str = "md5"  # the scheme the device uses towards the server: basic, md5, hmac
    server_password: str = ""  # SRVCRED secret: verifies the server and Package #0
    #: The server must prove itself (SRVCRED, MD5 or HMAC) before any of its commands runs.
    #: ``false`` trusts whoever answers at ``url`` (logged as a warning every session): only
    #: for a server that cannot authenticate itself, over TLS or on a trusted network.
    require_server_auth: bool = True
    name: str = ""

    @property
    def auth_type(self) -> AuthType:
        return AUTH_SCHEMES[self.auth]


@dataclass(frozen=True)
class TLSConfig:
    """How the agent checks the server over HTTPS."""

    verify: bool = True
    ca_file: str = ""  # a PEM bundle to trust instead of the system's
    client_cert: str = ""  # PEM certificate (with the key, or see client_key) for mutual TLS
    client_key: str = ""
    #: SHA-256 digests of the server keys' SubjectPublicKeyInfo (base64 or hex) the agent
    #: accepts, besides the CA check (omadm.agent.tls); empty: no pinning. A string or a list.
    pin_sha256: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        pins: Any = self.pin_sha256  # TOML gives a string or a list
        object.__setattr__(self, "pin_sha256", (pins,) if isinstance(pins, str) else tuple(pins))

    @property
    def pins(self) -> tuple[bytes, ...]:
        """The pins as digests (``_validate`` has checked that each one parses)."""
        from .tls import parse_pin  # noqa: PLC0415

        return tuple(parse_pin(pin) for pin in self.pin_sha256)


@dataclass(frozen=True)
class ScomoConfig:
    """Software component management on this device (the SCOMO MO and its installers)."""

    enabled: bool = True
    path: str = "./SCOMO"  # where the MO is mounted
    version: str = "1.0"  # SCOMO 1.0 or 1.1
    trust_dir: str = ""  # PEM public keys of trusted publishers (default: <data_dir>/trust)
    require_signature: bool = True
    install_root: str = ""  # where the archive installer keeps components (default: <data_dir>/components)
    hook_timeout: float = 300.0
    #: Bytes that must stay free on disk after a download (else 1404) or an install (else 1406).
    reserve_bytes: int = 16 * 1024 * 1024
    #: Asked before each operation starts, with OMADM_* variables; a non-zero exit is the user
    #: saying no (result 1401). Empty: never ask (a headless device).
    confirm_command: str = ""
    #: Extra installer plug-ins as "module:factory" (besides the omadm.installers entry points).
    installers: tuple[str, ...] = ()
    #: The ServerIDs that may use SCOMO (its root's ACL, set at every start). Empty: the ACL is
    #: left as it is, every server with an account at first (``Add=*&...``). On a device shared
    #: by several management authorities this says which of them manages its software.
    servers: tuple[str, ...] = ()
    #: A package download stops (result 1402) past this many bytes, whatever the server
    #: or the descriptor declared; it also stops (1404) when the disk would keep less than
    #: ``reserve_bytes`` free.
    max_package_bytes: int = 2 * 1024 * 1024 * 1024
    #: Refuse every downgrade (an older version over a newer one, result 1405), even when the
    #: package or its InstallParams allow it.
    refuse_downgrades: bool = False
    #: Which publisher keys may sign which component ids (TOML; default: <trust_dir>/policy.toml).
    trust_policy: str = ""
    #: Follow download redirects to loopback, link-local and other local addresses (lab use).
    allow_local_redirects: bool = False

    def __post_init__(self) -> None:
        object.__setattr__(self, "installers", tuple(self.installers))  # TOML gives a list
        object.__setattr__(self, "servers", tuple(self.servers))


@dataclass(frozen=True)
class AgentConfig:
    """Everything ``omadm agent`` needs; ``path`` is where it was read from."""

    device: DeviceConfig
    data_dir: Path
    accounts: tuple[AccountConfig, ...] = ()
    poll_interval: float = 3600.0  # seconds between client-initiated sessions; 0 = never
    encoding: Encoding = Encoding.XML
    max_msg_size: int = 16384
    max_obj_size: int = 4 * 1024 * 1024
    listen_udp: str = ""  # host:port for Package #0 over UDP (WDP port 2948 is the standard one)
    listen_http: str = ""  # host:port for Package #0 over HTTP POST
    retries: int = 3  # per session, on transport failures
    retry_backoff: float = 2.0  # seconds, doubled after each failure
    # A server that answers 503/429 with Retry-After is busy, not broken: come back after
    # that long (plus a little, at random), at most this many times per message.
    busy_retries: int = 10
    max_retry_after: float = 600.0  # seconds: a longer Retry-After is cut to this
    timeout: float = 30.0  # HTTP request timeout, seconds
    tls: TLSConfig = field(default_factory=TLSConfig)
    scomo: ScomoConfig = field(default_factory=ScomoConfig)
    path: Path | None = None

    @property
    def tree_path(self) -> Path:
        return self.data_dir / "tree.sqlite"

    @property
    def trust_dir(self) -> Path:
        return Path(self.scomo.trust_dir) if self.scomo.trust_dir else self.data_dir / "trust"

    @property
    def install_root(self) -> Path:
        return Path(self.scomo.install_root) if self.scomo.install_root else self.data_dir / "components"

    def account(self, server_id: str | None = None) -> AccountConfig:
        """The account for ``server_id`` (the first one when None)."""
        if not self.accounts:
            raise ConfigError("no server account is configured (add one with 'omadm agent init')")
        if server_id is None:
            return self.accounts[0]
        for account in self.accounts:
            if account.server_id == server_id:
                return account
        known = ", ".join(a.server_id for a in self.accounts)
        raise ConfigError(f"no account for server {server_id!r}; known: {known}")


def _section(data: dict[str, Any], key: str) -> dict[str, Any]:
    value = data.get(key, {})
    if not isinstance(value, dict):
        raise ConfigError(f"[{key}] must be a table")
    return value


def _build(cls: type[Any], values: dict[str, Any], where: str) -> Any:
    known = set(cls.__dataclass_fields__)
    unknown = sorted(set(values) - known)
    if unknown:
        raise ConfigError(
            f"unknown setting(s) in {where}: {', '.join(unknown)} (known: {', '.join(sorted(known))})"
        )
    try:
        return cls(**values)
    except TypeError as exc:
        raise ConfigError(f"{where}: {exc}") from None


def load_config(path: str | Path) -> AgentConfig:
    """Read ``omadm.toml``; apply the environment overrides; check what must hold."""
    path = Path(path)
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(f"no configuration at {path} (create one with 'omadm agent init')") from None
    except (OSError, tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise ConfigError(f"cannot read {path}: {exc}") from None
    device = _build(DeviceConfig, _section(data, "device"), "[device]")
    agent = dict(_section(data, "agent"))
    tls = _build(TLSConfig, _section(data, "tls"), "[tls]")
    scomo = _build(ScomoConfig, _section(data, "scomo"), "[scomo]")
    servers = data.get("server", [])
    if not isinstance(servers, list):
        raise ConfigError("[[server]] must be an array of tables")
    accounts = tuple(_build(AccountConfig, dict(s), f"[[server]] #{i + 1}") for i, s in enumerate(servers))
    data_dir = agent.pop("data_dir", None) or str(path.parent)
    if "encoding" in agent:
        agent["encoding"] = _encoding(agent["encoding"])
    config = _build(
        AgentConfig,
        {
            **agent,
            "device": device,
            "data_dir": Path(data_dir),
            "accounts": accounts,
            "tls": tls,
            "scomo": scomo,
            "path": path,
        },
        "[agent]",
    )
    config = _with_environment(config)
    if not config.data_dir.is_absolute():
        config = replace(config, data_dir=(path.parent / config.data_dir).resolve())
    _validate(config)
    return config


def _encoding(value: object) -> Encoding:
    try:
        return Encoding(str(value).lower())
    except ValueError:
        raise ConfigError(f"encoding must be 'xml' or 'wbxml', not {value!r}") from None


def _with_environment(config: AgentConfig) -> AgentConfig:
    env = os.environ
    if env.get("OMADM_AGENT_DATA_DIR"):
        config = replace(config, data_dir=Path(env["OMADM_AGENT_DATA_DIR"]))
    if env.get("OMADM_AGENT_POLL_INTERVAL"):
        try:
            config = replace(config, poll_interval=float(env["OMADM_AGENT_POLL_INTERVAL"]))
        except ValueError:
            raise ConfigError("OMADM_AGENT_POLL_INTERVAL must be a number of seconds") from None
    if env.get("OMADM_AGENT_ENCODING"):
        config = replace(config, encoding=_encoding(env["OMADM_AGENT_ENCODING"]))
    return config


def _validate(config: AgentConfig) -> None:
    if not config.device.id:
        raise ConfigError("[device] id must not be empty")
    if config.poll_interval < 0:
        raise ConfigError("poll_interval must be 0 (never) or a positive number of seconds")
    if config.busy_retries < 0 or config.max_retry_after < 0:
        raise ConfigError("busy_retries and max_retry_after must not be negative")
    if config.scomo.version not in ("1.0", "1.1"):
        raise ConfigError("[scomo] version must be '1.0' or '1.1'")
    if config.scomo.reserve_bytes < 0:
        raise ConfigError("[scomo] reserve_bytes must not be negative")
    if config.scomo.max_package_bytes <= 0:
        raise ConfigError("[scomo] max_package_bytes must be a positive number of bytes")
    if config.scomo.hook_timeout <= 0:
        raise ConfigError("[scomo] hook_timeout must be a positive number of seconds")
    for spec in config.scomo.installers:
        if not isinstance(spec, str) or spec.count(":") != 1:
            raise ConfigError(f"[scomo] installers: {spec!r} is not 'module:factory'")
    for server in config.scomo.servers:
        if not isinstance(server, str) or not server or any(c in server for c in "+&= \t"):
            raise ConfigError(f"[scomo] servers: {server!r} is not a ServerID (no +, &, = or spaces)")
    _validate_tls(config.tls)
    if config.max_msg_size < 1024:
        raise ConfigError("max_msg_size must be at least 1024 bytes")
    seen: set[str] = set()
    for account in config.accounts:
        if account.auth not in AUTH_SCHEMES:
            raise ConfigError(f"server {account.server_id!r}: auth must be one of {', '.join(AUTH_SCHEMES)}")
        if not account.url.startswith(("http://", "https://")):
            raise ConfigError(f"server {account.server_id!r}: url must start with http:// or https://")
        if account.server_id in seen:
            raise ConfigError(f"server {account.server_id!r} is configured twice")
        if account.require_server_auth and not account.server_password:
            raise ConfigError(
                f"server {account.server_id!r} has no server_password: the agent runs a server's "
                "commands only once the server has proved itself with it (SRVCRED). Set server_password "
                "here and the same secret on the server (omadm ctl devices add --server-password), or "
                "set require_server_auth = false to trust an unauthenticated server (insecure)"
            )
        seen.add(account.server_id)


def _validate_tls(tls: TLSConfig) -> None:
    from .tls import parse_pin  # noqa: PLC0415

    for pin in tls.pin_sha256:
        if not isinstance(pin, str):
            raise ConfigError(f"[tls] pin_sha256: {pin!r} is not a string")
        try:
            parse_pin(pin)
        except ValueError as exc:
            raise ConfigError(f"[tls] pin_sha256: {exc}") from None
    if tls.client_key and not tls.client_cert:
        raise ConfigError("[tls] client_key needs client_cert (the certificate the key belongs to)")


def save_config(config: AgentConfig, path: str | Path) -> None:
    """Write ``config`` as ``omadm.toml`` (mode 0600: it holds passwords)."""
    path = Path(path)
    agent = {
        "data_dir": str(config.data_dir),
        "poll_interval": config.poll_interval,
        "encoding": config.encoding.value,
        "max_msg_size": config.max_msg_size,
        "max_obj_size": config.max_obj_size,
        "listen_udp": config.listen_udp,
        "listen_http": config.listen_http,
        "retries": config.retries,
        "retry_backoff": config.retry_backoff,
        "busy_retries": config.busy_retries,
        "max_retry_after": config.max_retry_after,
        "timeout": config.timeout,
    }
    document = {
        "device": asdict(config.device),
        "agent": agent,
        "tls": {**asdict(config.tls), "pin_sha256": list(config.tls.pin_sha256)},
        "scomo": {
            **asdict(config.scomo),
            "installers": list(config.scomo.installers),
            "servers": list(config.scomo.servers),
        },
        "server": [asdict(a) for a in config.accounts],
    }
    _write_toml(document, path)


def save_account(account: AccountConfig, path: str | Path) -> None:
    """Put ``account`` in the ``[[server]]`` list of the file at ``path`` (replacing its ServerID's).

    Only that table changes: the rest of the file is written back as it was read, without
    the environment overrides ``load_config`` applies (they must not become settings).
    """
    path = Path(path)
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(f"no configuration at {path} (create one with 'omadm agent init')") from None
    except (OSError, tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise ConfigError(f"cannot read {path}: {exc}") from None
    servers = data.get("server", [])
    if not isinstance(servers, list):
        raise ConfigError("[[server]] must be an array of tables")
    table = asdict(account)
    for index, server in enumerate(servers):
        if isinstance(server, dict) and server.get("server_id") == account.server_id:
            servers[index] = table
            break
    else:
        servers.append(table)
    data["server"] = servers
    _write_toml(data, path)


def _write_toml(document: dict[str, Any], path: Path) -> None:
    """Write ``document`` atomically (fsync, rename), mode 0600: the file holds passwords."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    import tomli_w  # noqa: PLC0415 - writing only (init, account set): not kept by a running agent

    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as fh:
        tomli_w.dump(document, fh)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)
