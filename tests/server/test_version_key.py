"""The version key sorts and compares exactly as PEP 440 (packaging) does."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st
from packaging.version import Version

from omadm.server.version_key import version_key

_numbers = st.integers(min_value=0, max_value=10**12)
_local_segment = st.one_of(_numbers.map(str), st.from_regex(r"[a-z][a-z0-9]{0,5}", fullmatch=True))


@st.composite
def versions(draw: st.DrawFn) -> str:
    text = ""
    if draw(st.booleans()) and draw(st.booleans()):
        text += f"{draw(st.integers(0, 3))}!"
    text += ".".join(str(n) for n in draw(st.lists(st.integers(0, 12), min_size=1, max_size=4)))
    if draw(st.booleans()):
        text += draw(st.sampled_from(["a", "b", "rc", "alpha", "c", "pre"])) + str(draw(st.integers(0, 11)))
    if draw(st.booleans()):
        text += f".post{draw(st.integers(0, 11))}"
    if draw(st.booleans()):
        text += f".dev{draw(st.integers(0, 11))}"
    if draw(st.booleans()):
        text += "+" + ".".join(draw(st.lists(_local_segment, min_size=1, max_size=3)))
    return text


@given(versions(), versions())
def test_keys_order_as_pep440(a: str, b: str) -> None:
    ka, kb = version_key(a), version_key(b)
    assert ka is not None and kb is not None
    va, vb = Version(a), Version(b)
    assert (ka < kb) == (va < vb)
    assert (ka == kb) == (va == vb)


def test_known_orders() -> None:
    ordered = [
        "1.0.dev1",
        "1.0a1",
        "1.0a2.dev3",
        "1.0a2",
        "1.0b1",
        "1.0rc1",
        "1.0",
        "1.0+abc",
        "1.0+5",
        "1.0.post1.dev1",
        "1.0.post1",
        "1.0.1",
        "1.2",
        "1.10",
        "2",
        "9.0",
        "10.0",
        "1!0.1",
    ]
    keys = [version_key(v) for v in ordered]
    assert all(k is not None for k in keys)
    assert keys == sorted(keys)  # type: ignore[type-var]
    assert len(set(keys)) == len(keys)
    assert version_key("1.0") == version_key("1.0.0") == version_key("v1.0")


def test_unparsable_has_no_key() -> None:
    assert version_key("") is None
    assert version_key("not a version") is None
    assert version_key("1." + "9" * 120) is None
