"""A trusted publisher may replace only the components it may publish (issue 13, point 9).

Two publishers, A and B, both in the device's trust directory. Before the fix B's
``com.example.hello`` 2.0.0 replaced A's 1.0.0. Now a trust policy (``policy.toml``) ties
component ids to keys, and without one the key that signed a component first is pinned.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from omadm.agent.scomo.journal import Primitive
from omadm.agent.scomo.trust_policy import (
    Signer,
    TrustPolicy,
    TrustPolicyError,
    check_publisher,
    load_policy,
)
from omadm.package.signing import generate_key, key_id
from omadm.package.verify import key_fingerprint
from omadm.protocol.codes import ScomoResult
from tests.agent.scomo.test_install_params import (
    HELLO,
    component_package,
    device,
    install,
    installed_version,
    trust,
)

REFUSED = ScomoResult.FAILED_PACKAGE_VALIDATION


@pytest.fixture
def a() -> Ed25519PrivateKey:
    return generate_key()


@pytest.fixture
def b() -> Ed25519PrivateKey:
    return generate_key()


@pytest.fixture
def data(tmp_path: Path, a: Ed25519PrivateKey, b: Ed25519PrivateKey) -> Path:
    """A device that trusts both publishers: A as ``vendor-a.pem``, B as ``vendor-b.pem``."""
    data = tmp_path / "data"
    trust(data, a, "vendor-a.pem")
    trust(data, b, "vendor-b.pem")
    return data


def policy(data: Path, text: str) -> Path:
    path = data / "trust" / "policy.toml"
    path.write_text(text)
    return path


def test_without_a_policy_b_may_not_replace_the_component_a_installed_but_a_may_update_it(
    tmp_path: Path, data: Path, a: Ed25519PrivateKey, b: Ed25519PrivateKey, caplog: pytest.LogCaptureFixture
) -> None:
    with device(data) as ops:
        assert install(ops, component_package(tmp_path, a, "1.0.0")).result == ScomoResult.SUCCESSFUL
        assert install(ops, component_package(tmp_path, b, "2.0.0")).result == REFUSED
        assert installed_version(ops) == "1.0.0"
        assert install(ops, component_package(tmp_path, a, "2.0.0")).result == ScomoResult.SUCCESSFUL
        assert installed_version(ops) == "2.0.0"
    assert (
        f"{HELLO} is pinned to key {key_id(a)}, which signed it first; it may not be replaced by a package "
        f"signed by key {key_id(b)} (vendor-b.pem) unless a trust policy ({data / 'trust' / 'policy.toml'}) "
        "grants that"
    ) in caplog.text


def test_the_pin_outlives_a_removal_and_holds_for_the_first_signer_only(
    tmp_path: Path, data: Path, a: Ed25519PrivateKey, b: Ed25519PrivateKey
) -> None:
    with device(data) as ops:
        assert install(ops, component_package(tmp_path, a, "1.0.0")).result == ScomoResult.SUCCESSFUL
        job = ops.on_component(Primitive.REMOVE, HELLO)
        assert job is not None and job.result == ScomoResult.SUCCESSFUL
        assert install(ops, component_package(tmp_path, b, "1.0.0")).result == REFUSED
        assert installed_version(ops) is None
        # B's own component is B's: a component id nobody pinned goes to its first signer.
        other = component_package(tmp_path, b, "1.0.0", component="org.b.tool")
        assert install(ops, other).result == ScomoResult.SUCCESSFUL
        assert install(ops, component_package(tmp_path, a, "2.0.0", component="org.b.tool")).result == REFUSED
    with device(data) as ops:  # the pins are on disk, not in memory
        assert install(ops, component_package(tmp_path, b, "1.0.1")).result == REFUSED


def test_with_a_policy_b_is_refused_for_a_component_it_is_not_granted_and_a_is_accepted(
    tmp_path: Path, data: Path, a: Ed25519PrivateKey, b: Ed25519PrivateKey, caplog: pytest.LogCaptureFixture
) -> None:
    path = policy(
        data,
        '[[publisher]]\nkey = "vendor-a.pem"\ncomponents = ["com.example.*"]\n\n'
        '[[publisher]]\nkey = "vendor-b.pem"\ncomponents = ["org.b.*"]\n',
    )
    with device(data) as ops:
        # Refused even for a first install: with a policy, the policy alone decides.
        assert install(ops, component_package(tmp_path, b, "2.0.0")).result == REFUSED
        assert installed_version(ops) is None
        assert install(ops, component_package(tmp_path, a, "1.0.0")).result == ScomoResult.SUCCESSFUL
        assert install(ops, component_package(tmp_path, b, "2.0.0")).result == REFUSED
        assert install(ops, component_package(tmp_path, a, "1.1.0")).result == ScomoResult.SUCCESSFUL
        assert installed_version(ops) == "1.1.0"
    assert (
        f"key {key_id(b)} (vendor-b.pem) may not publish {HELLO}: "
        f"the trust policy {path} grants it only org.b.*"
    ) in caplog.text


def test_a_policy_granting_b_the_id_lets_b_replace_it_and_the_pin_follows(
    tmp_path: Path, data: Path, a: Ed25519PrivateKey, b: Ed25519PrivateKey
) -> None:
    with device(data) as ops:
        assert install(ops, component_package(tmp_path, a, "1.0.0")).result == ScomoResult.SUCCESSFUL
    path = policy(data, f'[[publisher]]\nkey = "{key_id(b)}"\ncomponents = ["com.example.hel?o"]\n')
    with device(data) as ops:
        assert install(ops, component_package(tmp_path, b, "2.0.0")).result == ScomoResult.SUCCESSFUL
        assert installed_version(ops) == "2.0.0"
        # The policy names only B now: A may no longer publish it.
        assert install(ops, component_package(tmp_path, a, "3.0.0")).result == REFUSED
    path.unlink()
    with device(data) as ops:  # back to pins: B signed what is installed
        assert install(ops, component_package(tmp_path, a, "3.0.0")).result == REFUSED
        assert install(ops, component_package(tmp_path, b, "3.0.0")).result == ScomoResult.SUCCESSFUL


def test_a_policy_at_the_configured_path_naming_the_full_fingerprint(
    tmp_path: Path, data: Path, a: Ed25519PrivateKey, b: Ed25519PrivateKey
) -> None:
    elsewhere = tmp_path / "etc" / "omadm-policy.toml"
    elsewhere.parent.mkdir()
    fingerprint = key_fingerprint(b.public_key())
    elsewhere.write_text(f'[[publisher]]\nkey = "{fingerprint.upper()}"\ncomponents = ["*"]\n')
    with device(data, trust_policy=str(elsewhere)) as ops:
        assert install(ops, component_package(tmp_path, a, "1.0.0")).result == REFUSED
        assert install(ops, component_package(tmp_path, b, "1.0.0")).result == ScomoResult.SUCCESSFUL


@pytest.mark.parametrize(
    "case",
    [
        (
            '[[publisher]]\nkey = "vendor-c.pem"\ncomponents = ["*"]\n',
            "'vendor-c.pem' is not a public key file",
        ),
        ('[[publisher]]\nkey = "vendor-a.pem"\ncomponent = ["*"]\n', "unknown fields component"),
        (
            '[[publisher]]\nkey = "vendor-a.pem"\ncomponents = "*"\n',
            "must be a list of component id patterns",
        ),
        ('[[publishers]]\nkey = "vendor-a.pem"\n', "unknown entries: publishers"),
        ("[[publisher]\n", "is not valid TOML"),
    ],
)
def test_a_broken_policy_refuses_every_install_until_it_is_fixed(
    tmp_path: Path, data: Path, a: Ed25519PrivateKey, case: tuple[str, str], caplog: pytest.LogCaptureFixture
) -> None:
    text, reason = case
    policy(data, text)
    with device(data) as ops:
        assert install(ops, component_package(tmp_path, a, "1.0.0")).result == REFUSED
    assert reason in caplog.text
    assert "no package is installed until it is fixed" in caplog.text


def test_an_unsigned_package_may_not_replace_a_pinned_component_nor_pass_a_policy(
    tmp_path: Path, data: Path, a: Ed25519PrivateKey
) -> None:
    with device(data, require_signature=False) as ops:
        assert install(ops, component_package(tmp_path, None, "0.9.0", component="org.free")).result == 1200
        assert install(ops, component_package(tmp_path, a, "1.0.0")).result == ScomoResult.SUCCESSFUL
        assert install(ops, component_package(tmp_path, None, "2.0.0")).result == REFUSED
        assert installed_version(ops) == "1.0.0"
    policy(data, '[[publisher]]\nkey = "vendor-a.pem"\ncomponents = ["*"]\n')
    with device(data, require_signature=False) as ops:
        assert (
            install(ops, component_package(tmp_path, None, "1.0.0", component="org.free")).result == REFUSED
        )


# -- the decision itself -----------------------------------------------------------------------


def test_the_policy_matches_ids_case_sensitively_and_adds_up_the_entries_of_one_key(tmp_path: Path) -> None:
    key = generate_key().public_key()
    fingerprint = key_fingerprint(key)
    (tmp_path / "trust").mkdir()
    path = tmp_path / "trust" / "policy.toml"
    path.write_text(
        f'[[publisher]]\nkey = "{fingerprint[:16]}"\ncomponents = ["com.a.*"]\n\n'
        f'[[publisher]]\nkey = "{fingerprint}"\ncomponents = ["org.b.[xy]"]\n'
    )
    loaded = load_policy(path, tmp_path / "trust")
    assert isinstance(loaded, TrustPolicy)
    signer = Signer(fingerprint)
    assert loaded.patterns_for(signer) == ("com.a.*", "org.b.[xy]")
    assert loaded.allows(signer, "com.a.app") and loaded.allows(signer, "org.b.x")
    assert not loaded.allows(signer, "COM.A.app") and not loaded.allows(signer, "org.b.z")
    assert not loaded.allows(Signer("0" * 64), "com.a.app")
    assert load_policy(tmp_path / "none.toml", tmp_path / "trust") is None


def test_check_publisher_without_a_policy_lets_the_pinned_key_and_unpinned_ids_through() -> None:
    pins = {"com.a.app": "a" * 64}
    where = Path("/trust/policy.toml")
    assert check_publisher(["com.a.app"], Signer("a" * 64), policy=None, pins=pins, policy_path=where) is None
    assert check_publisher(["com.new"], Signer("b" * 64), policy=None, pins=pins, policy_path=where) is None
    assert check_publisher(["com.new"], None, policy=None, pins=pins, policy_path=where) is None
    reason = check_publisher(
        ["com.new", "com.a.app"], Signer("b" * 64, ("b.pem",)), policy=None, pins=pins, policy_path=where
    )
    assert reason == (
        "com.a.app is pinned to key aaaaaaaaaaaaaaaa, which signed it first; it may not be replaced by a "
        "package signed by key bbbbbbbbbbbbbbbb (b.pem) unless a trust policy (/trust/policy.toml) "
        "grants that"
    )


def test_a_policy_entry_must_name_a_key(tmp_path: Path) -> None:
    path = tmp_path / "policy.toml"
    path.write_text('[[publisher]]\nkey = ""\ncomponents = ["*"]\n')
    with pytest.raises(TrustPolicyError, match="'key' must name a key file"):
        load_policy(path, tmp_path)
