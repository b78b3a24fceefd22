"""Profiles: the examples load, every mistake is refused with the file and the key, draws behave."""

from __future__ import annotations

import random
from pathlib import Path

import pytest

from omadm.protocol.codes import ScomoResult
from omadm.sim.profile import FAILURE_CODES, Latency, ProfileError, load_profile, parse_profile
from omadm.sim.scomo import Phase

EXAMPLES = Path(__file__).resolve().parents[2] / "examples" / "sim"


@pytest.mark.parametrize("name", ["storm", "steady", "campaign", "real-downloads"])
def test_the_examples_load(name: str) -> None:
    profile = load_profile(EXAMPLES / f"{name}.toml")
    assert profile.name == name and profile.seed is not None


def test_defaults_are_a_quiet_fleet() -> None:
    profile = parse_profile({})
    assert profile.arrival.mode == "all-at-once" and profile.poll.interval == 0
    assert profile.draw_result(Phase.DOWNLOAD, True, random.Random(1)) == ScomoResult.SUCCESSFUL
    assert profile.latency_of(Phase.INSTALL).sample(random.Random(1)) == 0.0


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ({"arival": {}}, "unknown key(s) arival"),
        ({"arrival": {"mode": "burst"}}, "arrival.mode must be one of"),
        ({"arrival": {"mode": "spread"}}, "needs arrival.over"),
        ({"arrival": {"mode": "poisson", "rate": 0}}, "needs arrival.rate"),
        ({"arrival": {"mode": "all-at-once", "over": 5}}, "arrival.over only applies to mode 'spread'"),
        ({"poll": {"interval": "5m"}}, "poll.interval must be a number"),
        ({"poll": {"jitter": 1.5}}, "poll.jitter must be at most 1.0"),
        ({"encoding": {"wbxml": -0.1}}, "encoding.wbxml must be at least 0.0"),
        ({"latency": {"flash": {"dist": "fixed", "value": 1}}}, "unknown key(s) latency.flash"),
        ({"latency": {"download": {"dist": "normal"}}}, "latency.download.dist must be one of"),
        ({"latency": {"download": {"dist": "uniform", "min": 1}}}, "needs latency.download.max"),
        ({"latency": {"install": {"dist": "uniform", "min": 3, "max": 1}}}, "is below"),
        ({"latency": {"install": {"dist": "lognormal", "median": 0, "sigma": 1}}}, "median must be above 0"),
        ({"latency": {"install": {"dist": "fixed", "value": 1, "sigma": 2}}}, "latency.install.sigma"),
        ({"failures": {"1200": 0.1}}, "failures.1200 is not a SCOMO failure result code"),
        ({"failures": {"1405": 2}}, "failures.1405 must be at most 1.0"),
        ({"faults": {"clock_skew": 30}}, "faults.clock_skew is not supported yet"),
        ({"faults": {"drops": 0.1}}, "unknown key(s) faults.drops"),
        ({"http": {"retries": 2.5}}, "http.retries must be an integer"),
        ({"seed": "abc"}, "seed must be an integer"),
        ({"poll": 5}, "poll must be a table"),
    ],
)
def test_mistakes_are_refused_by_name(data: dict[str, object], message: str) -> None:
    with pytest.raises(ProfileError, match=r"my\.toml") as info:
        parse_profile(data, "my.toml")
    assert message in str(info.value)


def test_http_defaults_are_the_agents() -> None:
    """A simulated device is as patient with a busy server as a real one (omadm.agent.config)."""
    from omadm.agent.config import AgentConfig  # noqa: PLC0415

    fields = AgentConfig.__dataclass_fields__
    http = parse_profile({}).http
    for name in ("timeout", "retries", "retry_backoff", "busy_retries", "max_retry_after"):
        assert getattr(http, name) == fields[name].default, name


def test_a_file_that_is_not_toml_or_missing(tmp_path: Path) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text("[arrival\n")
    with pytest.raises(ProfileError, match="is not valid TOML"):
        load_profile(bad)
    with pytest.raises(ProfileError, match="no profile at"):
        load_profile(tmp_path / "missing.toml")


def test_failure_rates_decide_the_result() -> None:
    rng = random.Random(7)
    always = parse_profile({"failures": {"1404": 1.0}})
    assert always.draw_result(Phase.DOWNLOAD, True, rng) == 1404
    assert always.draw_result(Phase.INSTALL, False, rng) == ScomoResult.SUCCESSFUL  # not an install code
    generic = parse_profile({"failures": {"1412": 1.0}})
    assert generic.draw_result(Phase.ACTIVATE, True, rng) == 1412
    assert generic.draw_result(Phase.INSTALL, False, rng) == ScomoResult.SUCCESSFUL  # drawn once, first phase
    some = parse_profile({"failures": {"1405": 0.2}})
    draws = [some.draw_result(Phase.INSTALL, False, rng) for _ in range(2000)]
    assert 300 < draws.count(1405) < 500
    assert set(FAILURE_CODES) == {*range(1401, 1414), 1500, 1501}


def test_arrival_and_latency_shapes() -> None:
    rng = random.Random(3)
    spread = parse_profile({"arrival": {"mode": "spread", "over": 10}}).arrival.offsets(5, rng)
    assert spread == [0.0, 2.0, 4.0, 6.0, 8.0]
    poisson = parse_profile({"arrival": {"mode": "poisson", "rate": 100}}).arrival.offsets(1000, rng)
    assert poisson == sorted(poisson) and 7 < poisson[-1] < 13
    lognormal = Latency("lognormal", 10.0, 0.5)
    samples = sorted(lognormal.sample(rng) for _ in range(1001))
    assert 8 < samples[500] < 12
    assert all(1 <= Latency("uniform", 1, 2).sample(rng) <= 2 for _ in range(100))
    waits = [
        parse_profile({"poll": {"interval": 100, "jitter": 0.1}}).poll.next_wait(rng) for _ in range(100)
    ]
    assert all(w is not None and 90 <= w <= 110 for w in waits)


def test_power_cuts_and_trusted_keys(tmp_path: Path) -> None:
    from omadm.package.signing import generate_key, public_key_pem  # noqa: PLC0415

    (tmp_path / "pub.pem").write_bytes(public_key_pem(generate_key()))
    profile = parse_profile(
        {
            "faults": {"power_cut": 0.5, "power_off_seconds": 2},
            "packages": {"trusted_keys": ["pub.pem"], "require_signature": True},
        },
        base=tmp_path,
    )
    assert profile.faults.power_cut == 0.5 and profile.faults.power_off_seconds == 2.0
    assert len(profile.packages.trusted_keys) == 1 and profile.packages.require_signature
    assert parse_profile({}).faults.power_off_seconds == 30.0
    with pytest.raises(ProfileError, match="power_cut must be at most 1"):
        parse_profile({"faults": {"power_cut": 2}})
    with pytest.raises(ProfileError, match="cannot load"):
        parse_profile({"packages": {"trusted_keys": ["missing.pem"]}}, base=tmp_path)
    with pytest.raises(ProfileError, match="names no key"):
        parse_profile({"packages": {"require_signature": True}})
    with pytest.raises(ProfileError, match="unknown key"):
        parse_profile({"packages": {"keys": []}})
