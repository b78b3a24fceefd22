"""``omadm server`` settings: one TOML file (``[server]``), environment overrides, sane defaults.

Nothing is required: ``omadm server`` alone serves on 127.0.0.1:8700 with SQLite in
``./omadm-server-data``. The server secret (it signs package URLs and session snapshots)
is generated once and kept in the data directory with mode 0600, so that every worker of one
installation shares it; give ``secret`` explicitly when workers do not share a disk.
"""

from __future__ import annotations

import os
import secrets
import tomllib
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

__all__ = ["ArtifactsConfig", "ConfigError", "EnrolConfig", "ServerConfig", "load_server_config"]

UNKNOWN_DEVICE_POLICIES = ("reject", "pending", "accept")
ARTIFACT_BACKENDS = ("local", "s3")
AUTH_SCHEMES = ("md5", "hmac", "basic")
LOG_FORMATS = ("text", "json")


class ConfigError(ValueError):
    """The configuration cannot be used; the message says which setting and why."""


@dataclass(frozen=True)
class EnrolConfig:
    """Credentials unknown devices may present when ``unknown_devices = "accept"``.

    A device that authenticates with these is registered and managed with them (a fleet
    credential, as in a lab or the demo). Empty: unknown devices are accepted without
    DM-level authentication, which only makes sense on a closed network.
    """

    username: str = ""
    password: str = ""


@dataclass(frozen=True)
class ArtifactsConfig:
    """Where package bytes are kept: the ``[artifacts]`` table (issue 17, point 7).

    ``backend = "local"`` (the default) keeps them under ``[server] artifacts_dir`` and serves
    them from ``/artifacts``. ``backend = "s3"`` puts them in an S3-compatible bucket and hands
    devices presigned GET URLs that expire ``presign_expiry`` seconds after the job is sent, so
    package bytes bypass the server (see :mod:`omadm.server.artifacts.s3`). Empty credentials
    mean boto3's usual chain (``AWS_ACCESS_KEY_ID``..., ``AWS_PROFILE``, ``~/.aws``, a role).
    """

    backend: str = "local"
    bucket: str = ""
    prefix: str = ""  # S3 key prefix, e.g. "omadm/": objects are {prefix}blobs/{sha256}
    endpoint_url: str = ""  # empty: AWS; e.g. http://minio:9000 for another S3-compatible store
    region: str = ""
    profile: str = ""  # a profile of ~/.aws/config and ~/.aws/credentials
    access_key_id: str = ""
    secret_access_key: str = ""
    session_token: str = ""
    addressing_style: str = "auto"  # auto | path | virtual
    presign_expiry: int = 86400  # seconds a device's download URL lasts (at most 604800)
    multipart_threshold: int = 8 * 1024 * 1024  # bytes from which uploads are multipart
    multipart_chunksize: int = 8 * 1024 * 1024  # bytes per part

    def problems(self) -> list[str]:
        """What is wrong, each naming its setting (the S3 checks live beside the backend)."""
        if self.backend not in ARTIFACT_BACKENDS:
            return [f"backend must be one of {', '.join(ARTIFACT_BACKENDS)}, not {self.backend!r}"]
        if self.backend == "local":
            return []
        from .artifacts.backends import s3_settings  # noqa: PLC0415 - the S3 checks, without boto3

        return s3_settings(self).problems()


@dataclass(frozen=True)
class ServerConfig:
    host: str = "127.0.0.1"
    port: int = 8700
    db: str = ""  # SQLAlchemy URL; empty: SQLite in data_dir
    data_dir: Path = Path("omadm-server-data")
    public_url: str = ""  # how devices reach us (RespURI, package URLs); default http://host:port
    server_id: str = "omadm"  # our ServerID (the principal in device ACLs)
    secret: str = ""  # signs URLs and session snapshots; empty: generated into data_dir/secret
    unknown_devices: str = "reject"  # reject | pending | accept
    enrol: EnrolConfig = field(default_factory=EnrolConfig)
    auth: str = "md5"  # default scheme for new devices
    max_msg_size: int = 65536  # what we announce as MaxMsgSize
    max_obj_size: int = 16 * 1024 * 1024
    max_body: int = 1024 * 1024  # larger request bodies get HTTP 413
    session_timeout: float = 600.0  # seconds an idle DM session is kept
    job_timeout: float = 86400.0  # seconds an accepted job waits for its report
    report_grace: float = 600.0  # seconds after which a missing report makes the server ask (Status)
    # Times a job is sent before it fails: a device that never answers it (one that crashes on
    # it, say) is not sent it again at every contact until its deadline.
    max_attempts: int = 3
    notify_interval: float = 60.0  # at most one Package #0 per device this often (seconds)
    sweep_interval: float = 5.0  # seconds between sweeps (notify, deadlines, idle sessions); 0 = none
    url_lifetime: float = 86400.0  # seconds a package URL stays valid
    workers: int = 1
    artifacts_dir: str = ""  # package files; default data_dir/artifacts
    # Where package bytes live: the [artifacts] table (this directory, or an S3 bucket).
    artifacts: ArtifactsConfig = field(default_factory=ArtifactsConfig)
    # Steady-state DM messages through the DM writer (one thread, group commit); false: every
    # message takes the general path (one ORM transaction each). See store/writer.py.
    group_commit: bool = True
    # DM messages served at once per worker (0: the default, admission.DEFAULT_LIMIT); the
    # rest are answered 503 with a Retry-After of at most max_retry_after seconds.
    dm_max_in_flight: int = 0
    max_retry_after: int = 60
    # Operator-given notification addresses and package URLs may point at link-local, cloud
    # metadata and other local addresses (a lab); see omadm.server.url_policy.
    allow_local_urls: bool = False
    # Log lines: "text" for a terminal, "json" (one object per line, with the device, session
    # and job when known) for a log pipeline; see omadm.server.logs.
    log_format: str = "text"
    # GET /metrics (Prometheus text format; omadm.server.metrics): served unless false. With
    # metrics_token set, a scrape must send "Authorization: Bearer <metrics_token>".
    metrics: bool = True
    metrics_token: str = ""

    # HTTPS (omadm.server.tls): the server's certificate (PEM) and key (empty: in tls_cert).
    tls_cert: str = ""
    tls_key: str = ""
    # A CA bundle (PEM): clients are asked for a certificate and one presented is verified.
    tls_client_ca: str = ""
    tls_require_client_cert: bool = False  # true: a handshake without a client certificate fails
    client_cert_auth: str = "map"  # off | map | require: what a verified certificate means to DM
    client_cert_identity: str = "cn"  # cn | san-uri | san-dns: the names that are device ids

    @property
    def base_url(self) -> str:
        scheme = "https" if self.tls_cert else "http"
        return (self.public_url or f"{scheme}://{self.host}:{self.port}").rstrip("/")

    @property
    def dm_url(self) -> str:
        return f"{self.base_url}/dm"

    @property
    def artifacts_path(self) -> Path:
        return Path(self.artifacts_dir) if self.artifacts_dir else self.data_dir / "artifacts"

    def secret_bytes(self) -> bytes:
        """The server secret, created on first use (0600) when not configured."""
        if self.secret:
            return self.secret.encode()
        path = self.data_dir / "secret"
        try:
            return path.read_bytes().strip()
        except FileNotFoundError:
            pass
        self.data_dir.mkdir(parents=True, exist_ok=True)
        value = secrets.token_hex(32).encode()
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except FileExistsError:  # another worker won the race: use its secret
            return path.read_bytes().strip()
        with os.fdopen(fd, "wb") as fh:
            fh.write(value)
        return value

    def validate(self) -> ServerConfig:
        if self.unknown_devices not in UNKNOWN_DEVICE_POLICIES:
            raise ConfigError(
                f"unknown_devices must be one of {', '.join(UNKNOWN_DEVICE_POLICIES)}, "
                f"not {self.unknown_devices!r}"
            )
        if self.auth not in AUTH_SCHEMES:
            raise ConfigError(f"auth must be one of {', '.join(AUTH_SCHEMES)}, not {self.auth!r}")
        if not 0 < self.port < 65536:
            raise ConfigError(f"port must be 1-65535, not {self.port}")
        if self.max_msg_size < 1024:
            raise ConfigError("max_msg_size must be at least 1024 bytes")
        if self.workers < 1:
            raise ConfigError("workers must be at least 1")
        for name in ("dm_max_in_flight", "max_retry_after"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise ConfigError(f"{name} must be a whole number, 0 or more, not {value!r}")
        attempts = self.max_attempts
        if isinstance(attempts, bool) or not isinstance(attempts, int) or attempts < 1:
            raise ConfigError(f"max_attempts must be a whole number, 1 or more, not {self.max_attempts!r}")
        if not isinstance(self.group_commit, bool):
            raise ConfigError(f"group_commit must be true or false, not {self.group_commit!r}")
        if self.log_format not in LOG_FORMATS:
            raise ConfigError(f"log_format must be one of {', '.join(LOG_FORMATS)}, not {self.log_format!r}")
        if not isinstance(self.metrics, bool):
            raise ConfigError(f"metrics must be true or false, not {self.metrics!r}")
        if not isinstance(self.metrics_token, str):
            raise ConfigError(f"metrics_token must be a string, not {self.metrics_token!r}")
        for name in ("notify_interval", "sweep_interval"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int | float) or value < 0:
                raise ConfigError(f"{name} must be a number of seconds, 0 or more, not {value!r}")
        if self.public_url and not self.public_url.startswith(("http://", "https://")):
            raise ConfigError("public_url must start with http:// or https://")
        _validate_tls(self)
        artifact_problems = self.artifacts.problems()
        if artifact_problems:
            raise ConfigError(f"[artifacts] {'; '.join(artifact_problems)}")
        return self


_ENV = {
    "OMADM_SERVER_DB": "db",
    "OMADM_SERVER_HOST": "host",
    "OMADM_SERVER_PORT": "port",
    "OMADM_SERVER_DATA_DIR": "data_dir",
    "OMADM_SERVER_PUBLIC_URL": "public_url",
    "OMADM_SERVER_SECRET": "secret",
    "OMADM_SERVER_UNKNOWN_DEVICES": "unknown_devices",
    "OMADM_SERVER_TLS_CERT": "tls_cert",
    "OMADM_SERVER_TLS_KEY": "tls_key",
    "OMADM_SERVER_TLS_CLIENT_CA": "tls_client_ca",
    "OMADM_SERVER_DM_MAX_IN_FLIGHT": "dm_max_in_flight",
    "OMADM_SERVER_LOG_FORMAT": "log_format",
}


def load_server_config(path: Path | None = None, **overrides: Any) -> ServerConfig:
    """Read ``path`` (if given), then the environment, then ``overrides`` (CLI flags, not None)."""
    values: dict[str, Any] = {}
    if path is not None:
        try:
            data = tomllib.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise ConfigError(f"no configuration at {path}") from None
        except (OSError, tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
            raise ConfigError(f"cannot read {path}: {exc}") from None
        section = data.get("server", {})
        if not isinstance(section, dict):
            raise ConfigError("[server] must be a table")
        values.update(section)
        enrol = section.get("enrol")
        if enrol is not None:
            if not isinstance(enrol, dict):
                raise ConfigError("[server.enrol] must be a table")
            values["enrol"] = _build(EnrolConfig, enrol, "[server.enrol]")
        if "artifacts" in section:
            raise ConfigError("[server] artifacts: the artifact store's settings go in an [artifacts] table")
        artifacts = data.get("artifacts")
        if artifacts is not None:
            if not isinstance(artifacts, dict):
                raise ConfigError("[artifacts] must be a table")
            values["artifacts"] = _build(ArtifactsConfig, artifacts, "[artifacts]")
        for name in ("tls_cert", "tls_key", "tls_client_ca"):  # relative to the file, as data_dir
            if values.get(name) and not Path(values[name]).is_absolute():
                values[name] = str(path.parent / values[name])
        if "data_dir" in values and not Path(values["data_dir"]).is_absolute():
            values["data_dir"] = path.parent / values["data_dir"]
    for name, key in _ENV.items():
        if os.environ.get(name):
            values[key] = os.environ[name]
    values.update({k: v for k, v in overrides.items() if v is not None})
    if "data_dir" in values:
        values["data_dir"] = Path(values["data_dir"])
    for name in ("port", "dm_max_in_flight"):  # from the environment they come as text
        if isinstance(values.get(name), str):
            try:
                values[name] = int(values[name])
            except ValueError:
                raise ConfigError(f"{name} must be a number, not {values[name]!r}") from None
    config: ServerConfig = _build(ServerConfig, values, "[server]")
    return config.validate()


def _validate_tls(config: ServerConfig) -> None:
    """The TLS settings (omadm.server.tls) must make sense together; the files are checked at start."""
    from .tls import CLIENT_CERT_AUTH, CLIENT_CERT_IDENTITIES  # noqa: PLC0415

    if config.tls_key and not config.tls_cert:
        raise ConfigError("tls_key needs tls_cert (the certificate the key belongs to)")
    if config.tls_client_ca and not config.tls_cert:
        raise ConfigError("tls_client_ca needs tls_cert: client certificates are asked for over HTTPS")
    if not isinstance(config.tls_require_client_cert, bool):
        raise ConfigError(
            f"tls_require_client_cert must be true or false, not {config.tls_require_client_cert!r}"
        )
    if config.tls_require_client_cert and not config.tls_client_ca:
        raise ConfigError("tls_require_client_cert needs tls_client_ca (the CA of the client certificates)")
    if config.client_cert_auth not in CLIENT_CERT_AUTH:
        raise ConfigError(
            f"client_cert_auth must be one of {', '.join(CLIENT_CERT_AUTH)}, not {config.client_cert_auth!r}"
        )
    if config.client_cert_auth == "require" and not config.tls_client_ca:
        raise ConfigError('client_cert_auth = "require" needs tls_client_ca (the CA of device certificates)')
    if config.client_cert_identity not in CLIENT_CERT_IDENTITIES:
        raise ConfigError(
            f"client_cert_identity must be one of {', '.join(CLIENT_CERT_IDENTITIES)}, "
            f"not {config.client_cert_identity!r}"
        )
    if config.tls_cert and config.public_url.startswith("http://"):
        raise ConfigError(
            "public_url is http:// but the server serves HTTPS (tls_cert): devices would be sent to an "
            "address that does not answer; make it https://"
        )


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


def with_changes(config: ServerConfig, **changes: Any) -> ServerConfig:
    return replace(config, **changes).validate()
