"""InstallParams are parsed, not searched (issue 13, point 7), and refuse_downgrades wins.

``"allow-downgrade" in params`` accepted ``no-allow-downgrade``. The property tests state the
grammar of :mod:`omadm.agent.scomo.install_params`; the device tests run real installs
through the SCOMO path (``LocalOperations``, the same journal, checks and installers as a
server's Exec). The package builders here are shared with ``test_trust_policy.py``.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from hypothesis import given
from hypothesis import strategies as st

from omadm.agent.config import AgentConfig, DeviceConfig, ScomoConfig
from omadm.agent.runner import Agent
from omadm.agent.scomo.install_params import InstallParamsError, parse_install_params
from omadm.agent.scomo.journal import Job
from omadm.agent.scomo.local import LocalOperations
from omadm.package.build import build_package
from omadm.package.signing import generate_key, save_public_key
from omadm.protocol.codes import ScomoResult
from tests.package.helpers import write_source

HELLO = "com.example.hello"

# -- the grammar -----------------------------------------------------------------------------

names = st.from_regex(r"[A-Za-z][A-Za-z0-9._-]{0,12}", fullmatch=True)
values = st.from_regex(r"[^;,\s=\x00-\x1f\x7f-\x9f]{1,12}", fullmatch=True)
separators = st.from_regex(r"[;, \t\r\n]{1,3}", fullmatch=True)
others = names.filter(lambda n: n.lower() != "allow-downgrade")


@st.composite
def params_text(
    draw: st.DrawFn, tokens: st.SearchStrategy[tuple[str, str | None]]
) -> tuple[str, list[tuple[str, str | None]]]:
    chosen = draw(st.lists(tokens, max_size=6))
    text = draw(st.sampled_from(["", " ", ";"]))
    for i, (name, value) in enumerate(chosen):
        if i:
            text += draw(separators)
        text += name if value is None else f"{name}={value}"
    text += draw(st.sampled_from(["", " ", ",", "\n"]))
    return text, chosen


@given(params_text(st.tuples(others, st.none() | values)))
def test_any_well_formed_list_parses_to_its_tokens_and_names_are_case_insensitive(
    case: tuple[str, list[tuple[str, str | None]]],
) -> None:
    text, chosen = case
    parsed = parse_install_params(text)
    assert parsed.raw == text
    assert parsed.tokens == tuple((name.lower(), value) for name, value in chosen)
    assert parsed.allow_downgrade is False


@given(
    st.text(alphabet="abcdefghijklmnopqrstuvwxyz-_.0123456789ALOWDGRNE", max_size=8),
    st.text(alphabet="abcdefghijklmnopqrstuvwxyz-_.0123456789ALOWDGRNE", max_size=8),
)
def test_a_name_that_merely_contains_allow_downgrade_never_allows_one(prefix: str, suffix: str) -> None:
    name = f"{prefix}allow-downgrade{suffix}"
    if name.lower() == "allow-downgrade":
        return
    try:
        parsed = parse_install_params(f"{name} {name}=true")
    except InstallParamsError:
        return  # not even a name ("-allow-downgrade"): refused, which allows nothing either
    assert parsed.allow_downgrade is False


@given(
    params_text(st.tuples(others, st.none() | values)),
    st.sampled_from(["allow-downgrade", "Allow-Downgrade", "ALLOW-DOWNGRADE"]),
    st.sampled_from([None, "true", "TRUE", "yes", "on", "1"]),
)
def test_allow_downgrade_bare_or_true_anywhere_in_the_list_allows_it(
    case: tuple[str, list[tuple[str, str | None]]], name: str, value: str | None
) -> None:
    text, _ = case
    token = name if value is None else f"{name}={value}"
    assert parse_install_params(f"{token};{text}").allow_downgrade is True
    assert parse_install_params(f"{text} {token}").allow_downgrade is True


@pytest.mark.parametrize("value", ["false", "no", "off", "0", "False"])
def test_allow_downgrade_false_does_not_allow_it(value: str) -> None:
    assert parse_install_params(f"allow-downgrade={value}").allow_downgrade is False


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ("=true", "is not a name"),
        ("allow-downgrade=", "has '=' but no value"),
        ("a=b=c", "more than one '='"),
        ("9lives", "is not a name"),
        ("mode=fast\x00", "control character"),
        ("allow-downgrade=maybe", "must be true or false"),
        ("allow-downgrade allow-downgrade=false", "twice, once true and once false"),
        ('{"allow-downgrade": true}', "is not a name"),
    ],
)
def test_a_malformed_list_is_refused_with_the_reason_and_1405(text: str, reason: str) -> None:
    with pytest.raises(InstallParamsError, match=reason) as caught:
        parse_install_params(text)
    assert caught.value.result == ScomoResult.INSTALL_FAILED


@given(st.text(max_size=40))
def test_any_text_either_parses_or_is_refused_with_install_params_error(text: str) -> None:
    try:
        parsed = parse_install_params(text)
    except InstallParamsError:
        return
    says_yes = [
        value is None or value.lower() in ("true", "yes", "on", "1")
        for value in parsed.get("allow-downgrade")
    ]
    assert parsed.allow_downgrade == (bool(says_yes) and all(says_yes))


def test_nothing_and_blank_are_no_parameters() -> None:
    assert parse_install_params(None).tokens == ()
    assert parse_install_params(" ;, \n").tokens == ()
    assert parse_install_params("Mode=Fast debug").get("MODE") == ("Fast",)
    assert parse_install_params("Mode=Fast debug").get("debug") == (None,)


# -- on the device ---------------------------------------------------------------------------


def component_package(
    tmp_path: Path,
    key: Ed25519PrivateKey | None,
    version: str,
    *,
    component: str = HELLO,
    allow_downgrade: bool = False,
    name: str = "",
) -> Path:
    """A one-component package (no hooks) of ``component`` at ``version``, signed by ``key``."""
    label = name or f"{component}-{version}-{id(key)}"
    source = write_source(
        tmp_path / "sources" / label,
        {
            "package": {
                "id": f"{component}-package",
                "name": "Hello",
                "version": version,
                "allow_downgrade": allow_downgrade,
            },
            "component": [{"id": component, "name": "Hello", "version": version}],
        },
        {f"{component}/VERSION": f"{version}\n".encode()},
    )
    output = tmp_path / "packages" / f"{label}.omp"
    output.parent.mkdir(parents=True, exist_ok=True)
    build_package(source, output, signing_key=key)
    return output


def trust(data_dir: Path, key: Ed25519PrivateKey, name: str) -> None:
    """Put ``key``'s public half in the device's trust directory as ``name``."""
    (data_dir / "trust").mkdir(parents=True, exist_ok=True)
    save_public_key(key.public_key(), data_dir / "trust" / name)


@contextmanager
def device(data_dir: Path, **scomo: object) -> Iterator[LocalOperations]:
    """An agent on ``data_dir`` (no server), for local SCOMO operations; closed afterwards."""
    config = AgentConfig(
        device=DeviceConfig(id="IMEI:13"),
        data_dir=data_dir,
        poll_interval=0,
        scomo=replace(ScomoConfig(), **scomo),  # type: ignore[arg-type]
    )
    agent = Agent(config)
    try:
        assert agent.scomo is not None
        yield LocalOperations(agent.scomo)
    finally:
        agent.close()


def installed_version(ops: LocalOperations, component: str = HELLO) -> str | None:
    node = ops.service.deployed_node_of(component)
    return None if node is None else str(ops.tree.system_value(f"{node}/Version"))


def install(ops: LocalOperations, package: Path, params: str | None = None) -> Job:
    return ops.install(str(package), params=params)


@pytest.fixture
def publisher() -> Ed25519PrivateKey:
    return generate_key()


@pytest.fixture
def at_2(tmp_path: Path, publisher: Ed25519PrivateKey) -> Path:
    """A data directory where hello 2.0.0 is installed; returns the data directory."""
    data = tmp_path / "data"
    trust(data, publisher, "publisher.pem")
    with device(data) as ops:
        assert install(ops, component_package(tmp_path, publisher, "2.0.0")).result == 1200
    return data


def test_no_allow_downgrade_does_not_allow_a_downgrade(
    tmp_path: Path, publisher: Ed25519PrivateKey, at_2: Path
) -> None:
    old = component_package(tmp_path, publisher, "1.0.0")
    with device(at_2) as ops:
        for params in ("no-allow-downgrade", "no-allow-downgrade=true", "allow-downgrade=false"):
            assert install(ops, old, params).result == ScomoResult.INSTALL_FAILED, params
            assert installed_version(ops) == "2.0.0"


def test_allow_downgrade_in_install_params_allows_a_downgrade(
    tmp_path: Path, publisher: Ed25519PrivateKey, at_2: Path
) -> None:
    with device(at_2) as ops:
        job = install(ops, component_package(tmp_path, publisher, "1.0.0"), "mode=quiet; Allow-Downgrade")
        assert job.result == ScomoResult.SUCCESSFUL
        assert installed_version(ops) == "1.0.0"


def test_malformed_install_params_refuse_the_install_with_1405(
    tmp_path: Path, publisher: Ed25519PrivateKey, at_2: Path, caplog: pytest.LogCaptureFixture
) -> None:
    with device(at_2) as ops:
        job = install(ops, component_package(tmp_path, publisher, "3.0.0"), "allow-downgrade=perhaps")
        assert job.result == ScomoResult.INSTALL_FAILED
        assert installed_version(ops) == "2.0.0"
    assert "allow-downgrade='perhaps': the value must be true or false" in caplog.text


def test_refuse_downgrades_refuses_even_when_the_package_and_the_params_allow_it(
    tmp_path: Path, publisher: Ed25519PrivateKey, at_2: Path, caplog: pytest.LogCaptureFixture
) -> None:
    old = component_package(tmp_path, publisher, "1.0.0", allow_downgrade=True)
    with device(at_2, refuse_downgrades=True) as ops:
        assert install(ops, old, "allow-downgrade").result == ScomoResult.INSTALL_FAILED
        assert installed_version(ops) == "2.0.0"
        assert install(ops, component_package(tmp_path, publisher, "2.1.0")).result == 1200  # upgrades go on
    assert "would downgrade 2.0.0; this device refuses every downgrade" in caplog.text
    with device(at_2) as ops:  # without the setting, the package's own allow_downgrade is enough
        assert install(ops, old).result == ScomoResult.SUCCESSFUL
        assert installed_version(ops) == "1.0.0"
