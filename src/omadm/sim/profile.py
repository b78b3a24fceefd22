"""How a simulated fleet behaves, in one TOML file: arrival, polling, latencies, failures, faults.

A profile says *how* the devices of a fleet file behave (the fleet file says *who* they are)::

    seed = 1                      # the same seed gives the same run (arrival, draws, faults)

    [arrival]                     # when each device's first session starts
    mode = "spread"               # "all-at-once" | "spread" (evenly over `over` s) | "poisson" (`rate`/s)
    over = 60

    [poll]                        # client-initiated sessions after the first
    interval = 300                # seconds; 0 = none (after arrival, only to deliver reports)
    jitter = 0.1                  # each wait is interval * (1 +- jitter), uniformly

    [encoding]
    wbxml = 0.25                  # the share of devices speaking WBXML; the rest speak XML

    [latency.download]            # per SCOMO phase: download, install, activate, deactivate, remove
    dist = "lognormal"            # "fixed" (value) | "uniform" (min, max) | "lognormal" (median, sigma)
    median = 8.0
    sigma = 0.6

    [failures]                    # per SCOMO result code: the chance an operation ends with it
    1405 = 0.02

    [faults]
    drop = 0.01                   # chance per message that the connection drops before its reply
    silent = 0.05                 # share of devices that go silent ...
    silent_after = 0              # ... after this many seconds (0: never heard from at all)
    duplicate_alerts = 0.0        # chance a Generic Alert the server answered is sent once more
    power_cut = 0.0               # chance per SCOMO operation of a power cut in its download/install
    power_off_seconds = 30        # how long a device stays off after a power cut
    clock_skew = 0                # refused unless 0 (see below)

    [packages]                    # --downloads real only: how a fetched package is verified
    trusted_keys = ["publisher.pub.pem"]  # PEM Ed25519 public keys (relative to the profile's directory)
    require_signature = false     # true: an unsigned package fails with 1407 (the agent's default)

    [http]                        # the agent's defaults (omadm.agent.config), and its rules
    timeout = 30                  # seconds per HTTP exchange
    retries = 3                   # per message: timeouts, connection errors, 5xx without Retry-After
    retry_backoff = 2.0           # seconds before the first of those retries; doubled each time
    busy_retries = 10             # per message: 503/429 with Retry-After, each waited out
    max_retry_after = 600         # a longer Retry-After is cut to this (and counted)

Why the checks are strict: a profile drives thousands of devices for minutes; a misspelt key
silently ignored would turn a failure-rate run into a clean one and nobody would know.
Every unknown key, wrong type and out-of-range value is a :class:`ProfileError` that names the
file and the key. A field the runner cannot honour yet is refused the same way (today:
``faults.clock_skew`` other than 0: DM 1.2 messages carry no device time, so a skewed clock
would only change the tree's TStamp properties, which the simulator does not model).

Failure codes: :data:`omadm.sim.scomo.PHASE_FAILURES` says which phase can end with which
code (1402-1404, 1407, 1500, 1501 while downloading; 1405, 1406, 1413 while installing; 1408,
1409, 1410 for remove, activate, deactivate); 1401, 1411 and 1412 can end any operation and are
drawn in its first phase. A rate is the chance per operation that has such a phase.

Power cuts (``faults.power_cut``) are drawn per SCOMO operation that has a download or an
install phase; what a device does when the power comes back is described in
:mod:`omadm.sim.run`. ``[packages]`` is read only for ``--downloads real`` (a profile that has
one is refused with ``skip``, and one with ``latency.download`` is refused with ``real``:
see ``RunOptions.check``).
"""

from __future__ import annotations

import math
import random
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from omadm.package.errors import PackageError
from omadm.package.signing import load_public_key
from omadm.protocol.codes import ScomoResult

from .scomo import GENERIC_FAILURES, PHASE_FAILURES, Phase

__all__ = [
    "ARRIVAL_MODES",
    "FAILURE_CODES",
    "Arrival",
    "Faults",
    "HttpSettings",
    "Latency",
    "Packages",
    "Poll",
    "Profile",
    "ProfileError",
    "load_profile",
    "parse_profile",
]

ARRIVAL_MODES = ("all-at-once", "spread", "poisson")
#: The result codes a profile may give a failure rate (SCOMO digest 5: 1401-1413, 1500, 1501).
FAILURE_CODES: tuple[int, ...] = tuple(
    sorted({int(c) for codes in PHASE_FAILURES.values() for c in codes} | {int(c) for c in GENERIC_FAILURES})
)
_FAULT_KEYS = (
    "drop",
    "silent",
    "silent_after",
    "duplicate_alerts",
    "power_cut",
    "power_off_seconds",
    "clock_skew",
)
_DISTRIBUTIONS = {"fixed": ("value",), "uniform": ("min", "max"), "lognormal": ("median", "sigma")}


class ProfileError(Exception):
    """A profile cannot be used; the message names the file, the key and what is wrong."""


@dataclass(frozen=True, slots=True)
class Latency:
    """How long a SCOMO phase takes, in seconds: fixed, uniform or lognormal."""

    dist: str = "fixed"
    a: float = 0.0  # fixed: the value; uniform: min; lognormal: the median
    b: float = 0.0  # uniform: max; lognormal: sigma

    def sample(self, rng: random.Random) -> float:
        if self.dist == "uniform":
            return rng.uniform(self.a, self.b)
        if self.dist == "lognormal":
            return rng.lognormvariate(math.log(self.a), self.b) if self.a > 0 else 0.0
        return self.a


@dataclass(frozen=True, slots=True)
class Arrival:
    """When each device's first session starts, relative to the start of the run."""

    mode: str = "all-at-once"
    over: float = 0.0  # spread: the window, seconds
    rate: float = 0.0  # poisson: devices per second

    def offsets(self, n: int, rng: random.Random) -> list[float]:
        """The start offsets (seconds) of ``n`` devices, in device order."""
        if self.mode == "spread":
            step = self.over / n if n else 0.0
            return [i * step for i in range(n)]
        if self.mode == "poisson":
            out, t = [], 0.0
            for _ in range(n):
                t += rng.expovariate(self.rate)
                out.append(t)
            return out
        return [0.0] * n


@dataclass(frozen=True, slots=True)
class Poll:
    """Client-initiated sessions after the first: every ``interval`` s, +- ``jitter`` of it."""

    interval: float = 0.0
    jitter: float = 0.0

    def next_wait(self, rng: random.Random) -> float | None:
        if self.interval <= 0:
            return None
        return self.interval * (1 + rng.uniform(-self.jitter, self.jitter))


@dataclass(frozen=True, slots=True)
class Faults:
    """Misbehaviour on purpose: lost connections, devices gone quiet, repeated reports."""

    drop: float = 0.0
    silent: float = 0.0
    silent_after: float = 0.0
    duplicate_alerts: float = 0.0
    power_cut: float = 0.0
    power_off_seconds: float = 30.0
    clock_skew: float = 0.0


@dataclass(frozen=True, slots=True)
class Packages:
    """How a device verifies a package it really downloaded (``--downloads real``).

    ``trusted_keys`` are the publishers' Ed25519 public keys (the agent's trust directory);
    ``require_signature`` refuses an unsigned package (1407), as the agent's
    ``scomo.require_signature`` does. ``given`` says whether the profile had a ``[packages]``
    table at all: with ``--downloads skip`` nothing is fetched, so one is refused there.
    """

    trusted_keys: tuple[Ed25519PublicKey, ...] = ()
    require_signature: bool = False
    given: bool = False


@dataclass(frozen=True, slots=True)
class HttpSettings:
    """Per-message HTTP patience: the timeout, how many retries, the longest Retry-After obeyed."""

    timeout: float = 30.0
    retries: int = 3
    retry_backoff: float = 2.0
    busy_retries: int = 10
    max_retry_after: float = 600.0


@dataclass(frozen=True, slots=True)
class Profile:
    """Everything a run needs besides the fleet file and its duration."""

    name: str = "default"
    seed: int | None = None
    arrival: Arrival = field(default_factory=Arrival)
    poll: Poll = field(default_factory=Poll)
    wbxml: float = 0.0
    latency: dict[Phase, Latency] = field(default_factory=dict)
    failures: dict[int, float] = field(default_factory=dict)
    faults: Faults = field(default_factory=Faults)
    http: HttpSettings = field(default_factory=HttpSettings)
    packages: Packages = field(default_factory=Packages)

    def latency_of(self, phase: Phase) -> Latency:
        return self.latency.get(phase, _NO_LATENCY)

    def draw_result(self, phase: Phase, first: bool, rng: random.Random) -> int:
        """The result code a phase ends with: a failure drawn from the rates, else 1200."""
        codes: tuple[int, ...] = (GENERIC_FAILURES if first else ()) + PHASE_FAILURES[phase]
        for code in codes:
            rate = self.failures.get(int(code), 0.0)
            if rate > 0 and rng.random() < rate:
                return int(code)
        return int(ScomoResult.SUCCESSFUL)


_NO_LATENCY = Latency()


def load_profile(path: Path) -> Profile:
    """The profile at ``path``, checked; :class:`ProfileError` when it cannot be used."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ProfileError(f"no profile at {path} (examples/sim/ has some to start from)") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ProfileError(f"cannot read the profile {path}: {exc}") from None
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ProfileError(f"{path} is not valid TOML: {exc}") from None
    return parse_profile(data, str(path), name=path.stem, base=path.parent)


def parse_profile(
    data: dict[str, Any], source: str = "profile", *, name: str = "profile", base: Path | None = None
) -> Profile:
    """A profile from a parsed TOML document; :class:`ProfileError` names ``source`` and the key.

    ``base`` is the directory relative key paths (``packages.trusted_keys``) start from.
    """
    p = _Reader(source)
    p.keys(
        data, "", ("seed", "arrival", "poll", "encoding", "latency", "failures", "faults", "http", "packages")
    )
    seed = data.get("seed")
    if seed is not None and (not isinstance(seed, int) or isinstance(seed, bool)):
        raise ProfileError(f"{source}: seed must be an integer, not {seed!r}")

    arrival_t = p.table(data, "arrival")
    p.keys(arrival_t, "arrival.", ("mode", "over", "rate"))
    mode = arrival_t.get("mode", "all-at-once")
    if mode not in ARRIVAL_MODES:
        raise ProfileError(f"{source}: arrival.mode must be one of {', '.join(ARRIVAL_MODES)}, not {mode!r}")
    over = p.number(arrival_t, "over", "arrival.", 0.0, minimum=0.0)
    rate = p.number(arrival_t, "rate", "arrival.", 0.0, minimum=0.0)
    if mode == "spread" and over <= 0:
        raise ProfileError(f"{source}: arrival.mode 'spread' needs arrival.over, the window in seconds (> 0)")
    if mode == "poisson" and rate <= 0:
        raise ProfileError(f"{source}: arrival.mode 'poisson' needs arrival.rate, devices per second (> 0)")
    if mode != "spread" and "over" in arrival_t:
        raise ProfileError(f"{source}: arrival.over only applies to mode 'spread' (mode is {mode!r})")
    if mode != "poisson" and "rate" in arrival_t:
        raise ProfileError(f"{source}: arrival.rate only applies to mode 'poisson' (mode is {mode!r})")

    poll_t = p.table(data, "poll")
    p.keys(poll_t, "poll.", ("interval", "jitter"))
    poll = Poll(
        p.number(poll_t, "interval", "poll.", 0.0, minimum=0.0),
        p.number(poll_t, "jitter", "poll.", 0.0, minimum=0.0, maximum=1.0),
    )

    encoding_t = p.table(data, "encoding")
    p.keys(encoding_t, "encoding.", ("wbxml",))
    wbxml = p.number(encoding_t, "wbxml", "encoding.", 0.0, minimum=0.0, maximum=1.0)

    latency_t = p.table(data, "latency")
    phases = {ph.value: ph for ph in Phase}
    p.keys(latency_t, "latency.", tuple(phases))
    latency = {phases[key]: p.latency(latency_t, key) for key in latency_t}

    failures_t = p.table(data, "failures")
    failures: dict[int, float] = {}
    for key in failures_t:
        if not key.isdigit() or int(key) not in FAILURE_CODES:
            raise ProfileError(
                f"{source}: failures.{key} is not a SCOMO failure result code "
                f"(one of {', '.join(map(str, FAILURE_CODES))})"
            )
        failures[int(key)] = p.number(failures_t, key, "failures.", 0.0, minimum=0.0, maximum=1.0)

    faults_t = p.table(data, "faults")
    p.keys(
        faults_t,
        "faults.",
        _FAULT_KEYS,
    )
    faults = Faults(
        drop=p.number(faults_t, "drop", "faults.", 0.0, minimum=0.0, maximum=1.0),
        silent=p.number(faults_t, "silent", "faults.", 0.0, minimum=0.0, maximum=1.0),
        silent_after=p.number(faults_t, "silent_after", "faults.", 0.0, minimum=0.0),
        duplicate_alerts=p.number(faults_t, "duplicate_alerts", "faults.", 0.0, minimum=0.0, maximum=1.0),
        power_cut=p.number(faults_t, "power_cut", "faults.", 0.0, minimum=0.0, maximum=1.0),
        power_off_seconds=p.number(faults_t, "power_off_seconds", "faults.", 30.0, minimum=0.0),
        clock_skew=p.number(faults_t, "clock_skew", "faults.", 0.0),
    )
    if faults.clock_skew:
        raise ProfileError(
            f"{source}: faults.clock_skew is not supported yet: DM 1.2 messages carry no device time, so a "
            "skewed clock would only change TStamp properties, which the simulator does not model; "
            "set it to 0"
        )

    http_t = p.table(data, "http")
    p.keys(http_t, "http.", ("timeout", "retries", "retry_backoff", "busy_retries", "max_retry_after"))
    default = HttpSettings()
    http = HttpSettings(
        timeout=p.number(http_t, "timeout", "http.", default.timeout, minimum=0.1),
        retries=p.count(http_t, "retries", "http.", default.retries),
        retry_backoff=p.number(http_t, "retry_backoff", "http.", default.retry_backoff, minimum=0.0),
        busy_retries=p.count(http_t, "busy_retries", "http.", default.busy_retries),
        max_retry_after=p.number(http_t, "max_retry_after", "http.", default.max_retry_after, minimum=0.0),
    )
    packages = _packages(p, data, base or Path("."))
    return Profile(
        name, seed, Arrival(mode, over, rate), poll, wbxml, latency, failures, faults, http, packages
    )


def _packages(p: _Reader, data: dict[str, Any], base: Path) -> Packages:
    if "packages" not in data:
        return Packages()
    table = p.table(data, "packages")
    p.keys(table, "packages.", ("trusted_keys", "require_signature"))
    paths = table.get("trusted_keys", [])
    if not isinstance(paths, list) or not all(isinstance(x, str) for x in paths):
        raise ProfileError(f"{p.source}: packages.trusted_keys must be a list of file names, not {paths!r}")
    require = table.get("require_signature", False)
    if not isinstance(require, bool):
        raise ProfileError(f"{p.source}: packages.require_signature must be true or false, not {require!r}")
    keys = []
    for name in paths:
        path = base / name
        try:
            keys.append(load_public_key(path))
        except (OSError, PackageError, ValueError) as exc:
            raise ProfileError(f"{p.source}: packages.trusted_keys: cannot load {path}: {exc}") from None
    if require and not keys:
        raise ProfileError(
            f"{p.source}: packages.require_signature is true but packages.trusted_keys names no key: "
            "every package would fail with 1407"
        )
    return Packages(tuple(keys), require, given=True)


class _Reader:
    """Typed reads with errors that name the file and the key."""

    def __init__(self, source: str) -> None:
        self.source = source

    def keys(self, table: dict[str, Any], where: str, known: tuple[str, ...]) -> None:
        unknown = sorted(set(table) - set(known))
        if unknown:
            raise ProfileError(
                f"{self.source}: unknown key(s) {', '.join(where + k for k in unknown)} "
                f"(known here: {', '.join(known)})"
            )

    def table(self, data: dict[str, Any], key: str) -> dict[str, Any]:
        value = data.get(key, {})
        if not isinstance(value, dict):
            raise ProfileError(f"{self.source}: {key} must be a table ([{key}]), not {value!r}")
        return value

    def number(
        self,
        table: dict[str, Any],
        key: str,
        where: str,
        default: float,
        *,
        minimum: float | None = None,
        maximum: float | None = None,
    ) -> float:
        value = table.get(key, default)
        if isinstance(value, bool) or not isinstance(value, int | float) or math.isnan(value):
            raise ProfileError(f"{self.source}: {where}{key} must be a number, not {value!r}")
        if minimum is not None and value < minimum:
            raise ProfileError(f"{self.source}: {where}{key} must be at least {minimum}, not {value}")
        if maximum is not None and value > maximum:
            raise ProfileError(f"{self.source}: {where}{key} must be at most {maximum}, not {value}")
        return float(value)

    def count(self, table: dict[str, Any], key: str, where: str, default: int) -> int:
        value = table.get(key, default)
        if not isinstance(value, int) or isinstance(value, bool) or not 0 <= value <= 1000:
            raise ProfileError(
                f"{self.source}: {where}{key} must be an integer from 0 to 1000, not {value!r}"
            )
        return value

    def latency(self, table: dict[str, Any], key: str) -> Latency:
        where = f"latency.{key}."
        spec = table[key]
        if not isinstance(spec, dict):
            raise ProfileError(
                f"{self.source}: latency.{key} must be a table ([latency.{key}]), not {spec!r}"
            )
        dist = spec.get("dist")
        if dist not in _DISTRIBUTIONS:
            raise ProfileError(
                f"{self.source}: {where}dist must be one of {', '.join(_DISTRIBUTIONS)}, not {dist!r}"
            )
        params = _DISTRIBUTIONS[dist]
        self.keys(spec, where, ("dist", *params))
        missing = [k for k in params if k not in spec]
        if missing:
            raise ProfileError(
                f"{self.source}: {where}dist {dist!r} needs {', '.join(where + k for k in missing)}"
            )
        values = [self.number(spec, k, where, 0.0, minimum=0.0) for k in params]
        if dist == "uniform" and values[1] < values[0]:
            raise ProfileError(f"{self.source}: {where}max ({values[1]}) is below {where}min ({values[0]})")
        if dist == "lognormal" and values[0] <= 0:
            raise ProfileError(f"{self.source}: {where}median must be above 0 for a lognormal")
        return Latency(dist, values[0], values[1] if len(values) > 1 else 0.0)
