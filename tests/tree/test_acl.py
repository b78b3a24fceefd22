"""ACLs: the grammar of digest 7.5, canonical text, checks, inheritance, ServerID removal."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from omadm.tree import acl as acl_module
from omadm.tree.acl import (
    ACL,
    ANY,
    COMMANDS,
    ROOT_DEFAULT_ACL,
    InvalidACL,
    check_server_id,
    effective_acl,
    normalize_command,
    parse_acl,
)
from omadm.tree.errors import TreeError

SPEC_EXAMPLE = "Add=www.sonera.fi-8765&Delete=www.sonera.fi-8765&Replace=www.sonera.fi-8765+321_ibm.com&Get=*"

VALID = [
    ("", ""),
    ("   ", ""),
    ("\x00", ""),  # pitfall 35: tolerate a trailing NUL
    ("Get=*", "Get=*"),
    (
        SPEC_EXAMPLE,
        "Add=www.sonera.fi-8765&Delete=www.sonera.fi-8765&Get=*&Replace=321_ibm.com+www.sonera.fi-8765",
    ),
    ("get=*&ADD=srv", "Add=srv&Get=*"),  # commands in any case, written canonically
    ("Get=b+a", "Get=a+b"),  # ids sorted
    ("Get=a&Get=b", "Get=a+b"),  # a command listed twice is merged
    ("Get=a+*", "Get=*"),  # digest 7.5: "*" overrides the other ids
    ("Get=*&Get=a", "Get=*"),
    ("Replace=x&Add=y&Exec=z&Delete=w&Get=v", "Add=y&Delete=w&Exec=z&Get=v&Replace=x"),
    ("Get=*\x00", "Get=*"),
    (" Get=srv\n", "Get=srv"),  # white space around the whole text
    ("Get=https://dm.example.com:8443/dm", "Get=https://dm.example.com:8443/dm"),
    ("Exec=serveur-é", "Exec=serveur-é"),  # printable non-ASCII ids
]


@pytest.mark.parametrize(("text", "canonical"), VALID, ids=[repr(v[0]) for v in VALID])
def test_valid_acls_parse_to_canonical_text(text: str, canonical: str) -> None:
    acl = parse_acl(text)
    assert acl.format() == str(acl) == canonical
    assert parse_acl(canonical) == acl
    assert acl.is_empty == (canonical == "")


INVALID = [
    ("Get=", "grants Get to no server"),  # digest 7.5: "Get= is malformed"
    ("Foo=x", "'Foo' is not an ACL command"),
    ("Copy=x", "'Copy' is not an ACL command"),  # Copy has no ACL entry
    ("Get=a b", "contains ' '"),
    ("Get=a\tb", "contains '\\t'"),
    ("Get=* & Add=*", "server id '* '"),
    ("Get", "has no '='"),
    ("Get=*&", "empty entry"),
    ("&Get=*", "empty entry"),
    ("Get=*&&Add=*", "empty entry"),
    ("Get=a++b", "empty server id"),
    ("Get=a+", "empty server id"),
    ("Get=a=b", "contains '='"),
    ("Get=**", "contains '*'"),
    ("Get=a*", "contains '*'"),
    ("Get=\x01", "contains '\\x01'"),
    ("=x", "'' is not an ACL command"),
]


@pytest.mark.parametrize(("text", "message"), INVALID, ids=[repr(v[0]) for v in INVALID])
def test_malformed_acls_are_refused_with_400(text: str, message: str) -> None:
    with pytest.raises(InvalidACL) as info:
        parse_acl(text)
    assert info.value.status == 400
    assert message in str(info.value)
    assert isinstance(info.value, TreeError)


def test_parse_acl_refuses_non_strings() -> None:
    with pytest.raises(TypeError):
        parse_acl(None)  # type: ignore[arg-type]


def test_root_default_and_constants() -> None:
    # Digest 7.5: "Root ACL default Add=*&Get=*".
    assert str(ROOT_DEFAULT_ACL) == "Add=*&Get=*"
    assert COMMANDS == ("Add", "Delete", "Exec", "Get", "Replace")
    assert normalize_command("rEpLaCe") == "Replace"
    with pytest.raises(InvalidACL):
        normalize_command("Copy")


ALLOWS = [
    ("Get=*", "Get", "any-server", True),
    ("Get=a+b", "Get", "a", True),
    ("Get=a+b", "Get", "c", False),
    ("Get=a+b", "Replace", "a", False),
    ("Add=a&Replace=b", "Replace", "b", True),
    ("Add=a&Replace=b", "replace", "b", True),  # command case is lenient
    ("Get=A", "Get", "a", False),  # server ids are case-sensitive
    ("", "Get", "a", False),  # the empty ACL grants nothing by itself
]


@pytest.mark.parametrize(("text", "command", "server", "expected"), ALLOWS)
def test_allows(text: str, command: str, server: str, expected: bool) -> None:
    assert parse_acl(text).allows(command, server) is expected


def test_allows_refuses_unknown_commands() -> None:
    with pytest.raises(InvalidACL):
        ROOT_DEFAULT_ACL.allows("Copy", "a")


def test_servers_and_commands() -> None:
    acl = parse_acl("Replace=b+a&Get=*")
    assert acl.commands == ("Get", "Replace")
    assert acl.servers("Replace") == {"a", "b"}
    assert acl.servers("Get") == {ANY}
    assert acl.servers("Exec") == frozenset()


def test_inheritance_takes_the_first_non_empty_acl_without_merging() -> None:
    # Digest 7.5: "only when the node's ACL is completely empty ... No per-command merging."
    node, parent, root = ACL(), parse_acl("Get=s1"), parse_acl("Add=*&Get=*&Replace=*")
    assert effective_acl([node, parent, root]) == parent
    assert not effective_acl([node, parent, root]).allows("Replace", "s1")
    assert effective_acl([parse_acl("Exec=s1"), parent, root]) == parse_acl("Exec=s1")
    assert effective_acl([ACL(), ACL(), root]) == root
    assert effective_acl([ACL(), ACL()]) == ROOT_DEFAULT_ACL  # a broken store falls back
    assert effective_acl([]) == ROOT_DEFAULT_ACL


def test_with_granted_and_grant_all_to() -> None:
    acl = parse_acl("Get=a")
    assert str(acl.with_granted("Get", "b")) == "Get=a+b"
    assert str(acl.with_granted("replace", "b")) == "Get=a&Replace=b"
    assert str(acl.with_granted("Get", ANY)) == "Get=*"
    assert str(parse_acl("Get=*").with_granted("Get", "b")) == "Get=*"
    assert str(acl) == "Get=a"  # immutable
    # Digest 7.5: the automatic ACL of an interior node added without Replace on the parent.
    auto = ACL().grant_all_to("srv", ("Add", "Delete", "Replace"))
    assert str(auto) == "Add=srv&Delete=srv&Replace=srv"
    assert str(ACL().grant_all_to("srv")) == "Add=srv&Delete=srv&Exec=srv&Get=srv&Replace=srv"
    with pytest.raises(InvalidACL):
        acl.with_granted("Get", "bad id")
    with pytest.raises(InvalidACL):
        acl.with_granted("Copy", "b")


def test_without_server_drops_ids_and_empty_commands() -> None:
    # Digest 7.5: "remove it from every ACL; drop commands left without ids".
    acl = parse_acl("Add=a&Delete=a+b&Get=*&Replace=a")
    assert str(acl.without_server("a")) == "Delete=b&Get=*"
    assert str(acl.without_server("zzz")) == str(acl)
    assert parse_acl("Get=a").without_server("a").is_empty
    # "root commands left empty become *"
    root = parse_acl("Add=a&Get=*&Replace=a+b")
    assert str(root.without_server("a", fill_emptied_with_any=True)) == "Add=*&Get=*&Replace=b"
    assert str(parse_acl("Get=*").without_server(ANY)) == ""


def test_constructor_normalizes() -> None:
    acl = ACL({"get": frozenset({"a", "*"}), "Add": frozenset({"x"}), "Exec": frozenset()})
    assert acl == parse_acl("Add=x&Get=*")
    assert hash(acl) == hash(parse_acl("Get=*&Add=x"))
    assert ACL.from_entries({"Replace": ["b", "a"], "Get": ("c",)}) == parse_acl("Get=c&Replace=a+b")
    assert ACL() == parse_acl("") and ACL().is_empty
    assert repr(acl) == "ACL('Add=x&Get=*')"
    with pytest.raises(TypeError):
        ACL.from_entries({"Get": "abc"})
    with pytest.raises(InvalidACL):
        ACL({"Foo": frozenset({"a"})})
    with pytest.raises(InvalidACL):
        ACL({"Get": frozenset({"a b"})})
    with pytest.raises(TypeError):
        acl.entries["Get"] = frozenset({"x"})  # type: ignore[index]


def test_check_server_id() -> None:
    check_server_id("www.sonera.fi-8765")
    for bad in ("", "a b", "a=b", "a&b", "a+b", "*", "a\nb"):
        with pytest.raises(InvalidACL):
            check_server_id(bad)


server_ids = st.text(
    alphabet=st.characters(blacklist_categories=("Cc", "Cs", "Zs", "Zl", "Zp"), blacklist_characters="=&*+"),
    min_size=1,
    max_size=10,
).filter(lambda s: not any(c.isspace() or not c.isprintable() for c in s))
acls = st.dictionaries(
    st.sampled_from(COMMANDS), st.frozensets(server_ids | st.just(ANY), min_size=1, max_size=3), max_size=5
).map(ACL.from_entries)


@settings(max_examples=200, deadline=None)
@given(acls)
def test_canonical_text_round_trips(acl: ACL) -> None:
    text = acl.format()
    assert parse_acl(text) == acl
    assert parse_acl(text).format() == text
    for command, ids in acl.entries.items():
        assert ids == {ANY} or ANY not in ids
        for sid in ids:
            assert acl.allows(command, sid)


@settings(max_examples=200, deadline=None)
@given(acls, server_ids)
def test_without_server_never_leaves_the_server_or_empty_commands(acl: ACL, sid: str) -> None:
    reduced = acl.without_server(sid)
    for command, ids in reduced.entries.items():
        assert ids and sid not in ids
        assert ids <= acl.entries[command]


def test_module_exports() -> None:
    for name in acl_module.__all__:
        assert hasattr(acl_module, name)
