"""DM URIs and command targets: TND 1.2 rules (digest 7.1, 7.4, 7.6) with their status codes."""

from __future__ import annotations

import string
import unicodedata

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from omadm.tree import uri as uri_module
from omadm.tree.errors import TreeError
from omadm.tree.uri import (
    PROPERTY_NAMES,
    ROOT,
    TNDS_PROPERTIES,
    UNLIMITED,
    URI,
    InvalidURI,
    ListMode,
    Target,
    URILimits,
    escape_segment,
    join,
    normalize_property,
    parse_target,
    parse_uri,
    unescape_segment,
)

# ---------------------------------------------------------------------------------------
# Parsing node URIs

VALID = [
    (".", (), "."),
    ("./", (), "."),  # tolerated: the root is "." but "./" can mean nothing else
    ("./A/B", ("A", "B"), "./A/B"),
    ("A/B", ("A", "B"), "./A/B"),  # digest 7.1: "./A/B and A/B address the same node"
    ("./DMAcc/xyz", ("DMAcc", "xyz"), "./DMAcc/xyz"),
    ("./%41", ("A",), "./A"),  # an escaped safe character is written plainly
    ("./A%20B", ("A B",), "./A%20B"),
    ("./A B", ("A B",), "./A%20B"),  # lenient: raw space accepted, escaped on output
    ("./é", ("é",), "./%C3%A9"),
    ("./%c3%a9", ("é",), "./%C3%A9"),  # lower-case hex accepted, upper-case written
    ("./.hidden", (".hidden",), "./.hidden"),  # names may contain "."
    ("./...", ("...",), "./..."),
    ("./x#y", ("x#y",), "./x%23y"),
    ("./%25", ("%",), "./%25"),
    ("./%3F", ("?",), "./%3F"),  # an escaped "?" is an ordinary character of a name
    ("./Foo/foo", ("Foo", "foo"), "./Foo/foo"),  # case preserved
    ("IMEI:493005100592800", ("IMEI:493005100592800",), "./IMEI:493005100592800"),
    ("./a-_.!~*'():@&=+$,b", ("a-_.!~*'():@&=+$,b",), "./a-_.!~*'():@&=+$,b"),
    ("./*", ("*",), "./*"),
]


@pytest.mark.parametrize(("text", "segments", "canonical"), VALID, ids=[v[0] or "empty" for v in VALID])
def test_valid_uris_parse_to_decoded_names_and_canonical_text(
    text: str, segments: tuple[str, ...], canonical: str
) -> None:
    parsed = parse_uri(text)
    assert parsed.segments == segments
    assert parsed.path == canonical == str(parsed)
    assert parse_uri(canonical) == parsed  # the canonical form is a fixed point


INVALID = [
    ("", "empty URI"),
    ("/A", "starts with '/'"),
    ("A/", "ends with '/'"),  # digest 7.1: "MUST NOT end with /"
    ("./A/", "ends with '/'"),
    ("A//B", "empty segment"),
    (".//A", "empty segment"),
    ("./../A", "'..' segment"),  # digest 7.1: "MUST NOT contain ../"
    ("A/./B", "'.' segment"),  # digest 7.1: "./ only as prefix"
    ("./.", "'.' segment"),
    ("..", "'..' segment"),
    ("A/%2E%2E", "'..' is not a node name"),
    ("A/%2e", "'.' is not a node name"),
    ("A/%2F", "contains '/'"),  # digest 7.1: "a node name never contains /"
    ("A/b%2Fc", "contains '/'"),
    ("A/%G1", "bad %-escape"),
    ("A/%4", "bad %-escape"),
    ("A/x%", "bad %-escape"),
    ("A/%FF", "not UTF-8"),
    ("A/%C3", "not UTF-8"),
    ("A/%00", "control character U+0000"),
    ("A/b\x01", "control character U+0001"),
    ("A/b\x7f", "control character U+007F"),
    ("A?prop=ACL", "only a command target"),
]


@pytest.mark.parametrize(("text", "message"), INVALID, ids=[repr(v[0]) for v in INVALID])
def test_invalid_uris_are_refused_with_400_naming_the_problem(text: str, message: str) -> None:
    with pytest.raises(InvalidURI, match=None) as info:
        parse_uri(text)
    assert info.value.status == 400
    assert message in str(info.value)
    assert isinstance(info.value, TreeError)


def test_parse_uri_refuses_non_strings() -> None:
    with pytest.raises(TypeError):
        parse_uri(b"./A")  # type: ignore[arg-type]


# ---------------------------------------------------------------------------------------
# The URI value


def test_uri_navigation() -> None:
    u = parse_uri("./A/B%20C")
    assert u.name == "B C"
    assert u.depth == 2
    assert u.parent == parse_uri("A")
    assert u.parent is not None and u.parent.parent == ROOT
    assert ROOT.parent is None and ROOT.name == "." and ROOT.depth == 0 and ROOT.is_root
    assert ROOT.child("A").child("B C") == u == join(join(ROOT, "A"), "B C")
    assert repr(u) == "URI('./A/B%20C')"


def test_ancestry_and_relative_paths() -> None:
    a, ab, abc, ax = parse_uri("A"), parse_uri("A/B"), parse_uri("A/B/C"), parse_uri("AX")
    assert a.is_ancestor_of(abc) and ab.is_ancestor_of(abc) and ROOT.is_ancestor_of(a)
    assert not a.is_ancestor_of(a)  # strict
    assert not a.is_ancestor_of(ax)  # by segment, not by string prefix
    assert not abc.is_ancestor_of(a)
    assert a.contains(a) and a.contains(abc) and not a.contains(ax)
    assert abc.relative_to(a) == "B/C" and a.relative_to(a) == "" and a.relative_to(ROOT) == "A"
    with pytest.raises(ValueError, match="is not under"):
        ax.relative_to(a)


def test_resolve_appends_a_relative_uri_text() -> None:
    base = parse_uri("./OperatorX")
    assert base.resolve("E-Mail/POP3") == parse_uri("./OperatorX/E-Mail/POP3")
    assert base.resolve("./E-Mail") == parse_uri("./OperatorX/E-Mail")
    assert base.resolve("") == base and base.resolve(".") == base
    assert base.resolve("A%20B").name == "A B"


def test_spellings_of_one_node_are_equal_and_hash_alike() -> None:
    spellings = ["./A/B", "A/B", "./%41/B", "./A/%42"]
    parsed = {parse_uri(s) for s in spellings}
    assert len(parsed) == 1


def test_uri_construction_checks_every_name() -> None:
    assert URI(["A", "B"]).segments == ("A", "B")  # type: ignore[arg-type]
    for bad in ("", ".", "..", "a/b", "x\x00"):
        with pytest.raises(InvalidURI):
            URI(("A", bad))
    with pytest.raises(InvalidURI):
        ROOT.child("a/b")


# ---------------------------------------------------------------------------------------
# Escaping

SAFE = set(string.ascii_letters + string.digits + "-_.!~*'():@&=+$,")


def _name_ok(name: str) -> bool:
    return (
        name not in ("", ".", "..")
        and "/" not in name
        and all(unicodedata.category(c) not in ("Cc", "Cs") for c in name)
    )


names = st.text(min_size=1, max_size=12).filter(_name_ok)


def test_escape_examples() -> None:
    assert escape_segment("Default_ring") == "Default_ring"
    assert escape_segment("a b/c".replace("/", "")) == "a%20bc"
    assert escape_segment("100%") == "100%25"
    assert escape_segment("日本") == "%E6%97%A5%E6%9C%AC"
    assert escape_segment("x?y#z") == "x%3Fy%23z"
    assert unescape_segment("%E6%97%A5%E6%9C%AC") == "日本"
    assert unescape_segment("raw é") == "raw é"
    for bad in ("", ".", "a/b"):
        with pytest.raises(InvalidURI):
            escape_segment(bad)
    with pytest.raises(InvalidURI, match="contains '\\?'"):
        unescape_segment("a?b")


@settings(max_examples=300, deadline=None)
@given(names)
def test_escaping_round_trips_and_uses_only_safe_characters(name: str) -> None:
    escaped = escape_segment(name)
    assert unescape_segment(escaped) == name
    assert escape_segment(unescape_segment(escaped)) == escaped
    i = 0
    while i < len(escaped):
        if escaped[i] == "%":
            assert all(c in "0123456789ABCDEF" for c in escaped[i + 1 : i + 3])
            i += 3
        else:
            assert escaped[i] in SAFE
            i += 1


@settings(max_examples=200, deadline=None)
@given(st.lists(names, max_size=6))
def test_canonical_text_parses_back_to_the_same_names(segments: list[str]) -> None:
    u = URI(tuple(segments))
    assert parse_uri(u.path) == u
    assert parse_target(u.path).uri == u
    if segments:
        assert parse_uri(u.path[2:]) == u  # without the "./" prefix


@settings(max_examples=300, deadline=None)
@given(st.text(alphabet="./%?A2Fé \x00#", max_size=12))
def test_arbitrary_text_parses_or_raises_invalid_uri_only(text: str) -> None:
    try:
        parsed = parse_uri(text)
    except InvalidURI as exc:
        assert exc.status == 400
    else:
        assert parse_uri(parsed.path) == parsed


# ---------------------------------------------------------------------------------------
# DevDetail/URI limits -> 414


LIMITS = [
    (URILimits(max_depth=2), "./A/B", None),
    (URILimits(max_depth=2), "./A/B/C", "MaxDepth 2"),
    (URILimits(max_depth=1), ".", None),  # the root has depth 0
    (URILimits(max_tot_len=5), "./A/B", None),
    (URILimits(max_tot_len=5), "./A/BC", "MaxTotLen 5"),
    (URILimits(max_tot_len=4), "A/BC", None),  # counted as received, not canonical ("./A/BC")
    (URILimits(max_seg_len=3), "./ABC/DEF", None),
    (URILimits(max_seg_len=3), "./ABC/DEFG", "MaxSegLen 3"),
    (URILimits(max_seg_len=3), "./%41%42", "MaxSegLen 3"),  # escapes count as written
    (URILimits(), "./" + "/".join(["x" * 300] * 50), None),  # 0 = unlimited
]


@pytest.mark.parametrize(("limits", "text", "message"), LIMITS)
def test_uri_limits_give_414_naming_the_limit(limits: URILimits, text: str, message: str | None) -> None:
    if message is None:
        parse_uri(text, limits=limits)
        parse_target(text, limits=limits)
        return
    for parse in (parse_uri, parse_target):
        with pytest.raises(InvalidURI) as info:
            parse(text, limits=limits)
        assert info.value.status == 414
        assert message in str(info.value)


def test_max_tot_len_counts_the_property_suffix() -> None:
    # Digest 7.1: "MaxTotLen (chars of whole URI incl. property suffix)".
    limits = URILimits(max_tot_len=12)
    assert parse_target("./A?prop=ACL", limits=limits).prop == "ACL"  # 12 characters
    with pytest.raises(InvalidURI) as info:
        parse_target("./AB?prop=ACL", limits=limits)
    assert info.value.status == 414


def test_check_applies_limits_to_canonical_text() -> None:
    limits = URILimits(max_depth=2, max_tot_len=20, max_seg_len=6)
    limits.check(parse_uri("./A/B"))
    with pytest.raises(InvalidURI, match="MaxSegLen"):
        limits.check(URI(("A", "é é")))  # "%C3%A9%20%C3%A9" is 15 characters
    with pytest.raises(InvalidURI, match="MaxDepth"):
        limits.check(parse_uri("./A/B/C"))
    with pytest.raises(InvalidURI, match="MaxTotLen"):
        limits.check(parse_target("./A/B?list=StructData"))


def test_limit_values_are_16_bit() -> None:
    assert URILimits.from_devdetail("0", "255", " 32 ") == URILimits(0, 255, 32)
    assert UNLIMITED.unlimited and not URILimits(max_depth=1).unlimited
    for bad in (-1, 0x10000, True, "5"):
        with pytest.raises(ValueError, match=r"0\.\.65535"):
            URILimits(max_depth=bad)  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        URILimits.from_devdetail("ten")


# ---------------------------------------------------------------------------------------
# Targets: ?prop= and ?list=

TARGETS = [
    ("./A", Target(parse_uri("A"))),
    ("./A?prop=ACL", Target(parse_uri("A"), prop="ACL")),
    ("./A?prop=acl", Target(parse_uri("A"), prop="ACL")),  # lenient case
    ("./A?PROP=tstamp", Target(parse_uri("A"), prop="TStamp")),
    ("./A?prop=Foo", Target(parse_uri("A"), prop="Foo")),  # unknown: the tree answers 406
    ("./DMAcc/xyz?prop=ACL", Target(parse_uri("DMAcc/xyz"), prop="ACL")),
    (".?list=Struct", Target(ROOT, list_mode=ListMode.STRUCT)),
    ("./A?list=structdata", Target(parse_uri("A"), list_mode=ListMode.STRUCT_DATA)),
    ("./A?list=TNDS", Target(parse_uri("A"), list_mode=ListMode.TNDS)),
    (
        "./A?list=TNDS+Value+ACL",
        Target(parse_uri("A"), list_mode=ListMode.TNDS, tnds_include=frozenset({"Value", "ACL"})),
    ),
    (
        "./A?list=TNDS-Format",
        Target(parse_uri("A"), list_mode=ListMode.TNDS, tnds_exclude=frozenset({"Format"})),
    ),
    (
        "./A?list=tnds+acl+ACL+tstamp",
        Target(parse_uri("A"), list_mode=ListMode.TNDS, tnds_include=frozenset({"ACL", "TStamp"})),
    ),
]


@pytest.mark.parametrize(("text", "expected"), TARGETS, ids=[t[0] for t in TARGETS])
def test_targets_parse(text: str, expected: Target) -> None:
    target = parse_target(text)
    assert target == expected
    assert parse_target(target.text) == target  # canonical text round trips


BAD_TARGETS = [
    ("./A?", 400, "is not ?prop="),
    ("./A?prop", 400, "is not ?prop="),
    ("./A?prop=", 400, "empty property name"),
    ("./A?list=", 400, "empty ?list="),
    ("./A?list=TNDS+", 400, "empty property name"),
    ("./A?list=TNDS+ACL-Format", 400, "cannot be combined"),  # digest 7.6: "not combinable"
    ("./A?prop=ACL&list=Struct", 400, "more than one parameter"),
    ("./A?prop=ACL?x", 400, "more than one parameter"),
    ("A/?prop=ACL", 400, "ends with '/'"),
    ("./A?list=Foo", 406, "unsupported ?list='Foo'"),  # digest 7.6: "Unsupported -> 406"
    ("./A?list=-ACL", 406, "unsupported ?list=''"),
    ("./A?list=TNDS+Foo", 406, "unknown TNDS property 'Foo'"),
    ("./A?list=Struct+ACL", 406, "only defined for ?list=TNDS"),
    ("./A?x=1", 406, "unsupported URI parameter 'x'"),
]


@pytest.mark.parametrize(("text", "status", "message"), BAD_TARGETS, ids=[t[0] for t in BAD_TARGETS])
def test_bad_targets_give_the_right_status(text: str, status: int, message: str) -> None:
    with pytest.raises(InvalidURI) as info:
        parse_target(text)
    assert info.value.status == status
    assert message in str(info.value)


def test_target_text_is_canonical() -> None:
    assert parse_target("A?list=tnds+value+acl").text == "./A?list=TNDS+ACL+Value"
    assert str(parse_target("A?prop=acl")) == "./A?prop=ACL"
    assert parse_target("A?list=TNDS-verno-Format").text == "./A?list=TNDS-Format-VerNo"


def test_tnds_selection() -> None:
    assert parse_target("A?list=TNDS+Value").tnds_selection() == {"Value"}
    assert parse_target("A?list=TNDS-Value-ACL").tnds_selection() == TNDS_PROPERTIES - {"Value", "ACL"}
    assert parse_target("A?list=TNDS").tnds_selection() == TNDS_PROPERTIES
    assert parse_target("A?list=TNDS").tnds_selection(frozenset({"Type"})) == {"Type"}
    assert {*PROPERTY_NAMES, "Value"} == TNDS_PROPERTIES


def test_target_construction_refuses_contradictions() -> None:
    a = parse_uri("A")
    with pytest.raises(ValueError, match="not both"):
        Target(a, prop="ACL", list_mode=ListMode.TNDS)
    with pytest.raises(ValueError, match="needs list_mode TNDS"):
        Target(a, list_mode=ListMode.STRUCT, tnds_include=frozenset({"ACL"}))
    with pytest.raises(ValueError, match="cannot be combined"):
        Target(a, list_mode=ListMode.TNDS, tnds_include=frozenset({"ACL"}), tnds_exclude=frozenset({"Type"}))
    with pytest.raises(ValueError, match="unknown TNDS properties"):
        Target(a, list_mode=ListMode.TNDS, tnds_include=frozenset({"Foo"}))


def test_normalize_property() -> None:
    assert normalize_property("verno") == "VerNo"
    assert normalize_property("VALUE") == "Value"
    assert normalize_property("Foo") is None


def test_module_exports() -> None:
    for name in uri_module.__all__:
        assert hasattr(uri_module, name)
