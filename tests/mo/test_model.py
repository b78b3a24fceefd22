"""The declaration types: occurrence, access, node look-up, value checks and the validator's rules."""

from __future__ import annotations

import dataclasses

import pytest

from omadm.mo import DMACC, Access, Format, InvalidModelError, MODef, NodeDef, Occurrence, Scope
from omadm.mo.model import acl_error, validate, value_error

URN = "urn:oma:mo:example:1.0"

# ---------------------------------------------------------------------------------------
# Occurrence and Access


@pytest.mark.parametrize(
    ("occurrence", "tag", "count"),
    [
        (Occurrence.ONE, "One", None),
        (Occurrence.ZERO_OR_ONE, "ZeroOrOne", None),
        (Occurrence.ZERO_OR_MORE, "ZeroOrMore", None),
        (Occurrence.ONE_OR_MORE, "OneOrMore", None),
        (Occurrence.zero_or_n(5), "ZeroOrN", 5),
        (Occurrence.one_or_n(5), "OneOrN", 5),
        (Occurrence.zero_or_n(1), "ZeroOrOne", None),
        (Occurrence.one_or_n(1), "One", None),
    ],
)
def test_occurrence_ddf_tags(occurrence: Occurrence, tag: str, count: int | None) -> None:
    assert occurrence.ddf_tag == tag
    assert occurrence.ddf_count == count


def test_occurrence_constants_are_plain_values() -> None:
    assert Occurrence(1, 1) == Occurrence.ONE
    assert Occurrence(0, None) == Occurrence.ZERO_OR_MORE
    assert Occurrence.ONE_OR_MORE.allows_many and not Occurrence.ONE.allows_many
    assert Occurrence.ZERO_OR_ONE.optional and not Occurrence.ONE_OR_MORE.optional
    assert str(Occurrence.one_or_n(3)) == "OneOrN(3)"


@pytest.mark.parametrize(("minimum", "maximum"), [(2, None), (-1, 1), (0, 0), (1, 0)])
def test_occurrences_the_ddf_cannot_express_are_refused(minimum: int, maximum: int | None) -> None:
    with pytest.raises(InvalidModelError, match="occurrence"):
        Occurrence(minimum, maximum)


def test_access_tags_come_in_dtd_order() -> None:
    assert Access.ALL.ddf_tags == ("Add", "Copy", "Delete", "Exec", "Get", "Replace")
    assert (Access.REPLACE | Access.ADD | Access.GET).ddf_tags == ("Add", "Get", "Replace")
    assert Access.READ_ONLY.ddf_tags == ("Get",)
    assert Access.NONE.ddf_tags == ()


# ---------------------------------------------------------------------------------------
# NodeDef


def leaf(name: str, **kw: object) -> NodeDef:
    return NodeDef(name, kw.pop("format", Format.CHR), kw.pop("access", Access.GET), **kw)  # type: ignore[arg-type]


def interior(name: str, *children: NodeDef, **kw: object) -> NodeDef:
    return NodeDef(name, Format.NODE, kw.pop("access", Access.GET), children=children, **kw)  # type: ignore[arg-type]


def test_leaves_default_to_text_plain_and_interior_nodes_have_no_mime() -> None:
    assert leaf("A").mime == "text/plain"
    assert leaf("A", mime="application/octet-stream").mime == "application/octet-stream"
    assert interior("I").mime is None
    assert leaf("A") == leaf("A", mime="text/plain")


def test_a_leaf_nobody_may_get_is_secret() -> None:
    assert leaf("S", access=Access.REPLACE).secret
    assert not leaf("S").secret
    assert not interior("I", access=Access.NONE).secret


def test_kinds_of_node() -> None:
    x = interior("<X>", title="x", scope=Scope.DYNAMIC)
    assert x.is_placeholder and x.is_interior and not x.is_leaf and x.is_open
    assert leaf("A").is_leaf and not leaf("A").is_placeholder
    assert not interior("I", leaf("A")).is_open


def test_child_prefers_the_fixed_name_then_the_placeholder() -> None:
    fixed = leaf("Fixed")
    loose = leaf("Loose", case_sensitive=False)
    x = interior("<X>", title="x", scope=Scope.DYNAMIC)
    parent = interior("P", x, fixed, loose)
    assert parent.child("Fixed") is fixed
    assert parent.child("fixed") is x  # case-sensitive name: another name, so the placeholder
    assert parent.child("LOOSE") is loose  # declared CIS
    assert parent.child("anything") is x
    assert parent.placeholder_child is x
    assert interior("Q", fixed).child("other") is None
    assert fixed.child("x") is None


def test_resolve_follows_placeholders() -> None:
    assert DMACC.resolve("") is DMACC.root
    addr = DMACC.resolve("acct1/AppAddr/1/Addr")
    assert addr is not None and addr.name == "Addr" and addr.format is Format.CHR
    port = DMACC.resolve("srv/AppAddr/primary/Port/p0/PortNbr")
    assert port is not None and port.name == "PortNbr"
    secret = DMACC.resolve("a/AppAuth/b/AAuthSecret")
    assert secret is not None and secret.secret
    assert DMACC.resolve("a").is_placeholder  # type: ignore[union-attr]


@pytest.mark.parametrize(
    "relative",
    ["a/Nope", "a/AppID/below", "a/Ext/Vendor", "a//AppID", "a/AppAddr/", "/a"],
)
def test_resolve_returns_none_outside_the_declaration(relative: str) -> None:
    assert DMACC.resolve(relative) is None


def test_walk_lists_every_declared_node_with_its_path() -> None:
    paths = [path for path, _ in DMACC.walk()]
    assert paths[0] == ""
    assert "<X>/AppAddr/<X>/Port/<X>/PortNbr" in paths
    assert len(paths) == len(set(paths))
    assert next(DMACC.root.walk())[0] == "DMAcc"


def test_mo_description_defaults_to_the_root_description() -> None:
    root = interior("R", ddf_name=URN, description="About R.")
    assert MODef("R", URN, root, "./R").description == "About R."
    assert MODef("R", URN, root, "./R", description="Other.").description == "Other."


# ---------------------------------------------------------------------------------------
# Values and ACLs


@pytest.mark.parametrize(
    ("fmt", "value"),
    [
        (Format.CHR, "anything at all"),
        (Format.INT, "-2147483648"),
        (Format.INT, "+42"),
        (Format.BOOL, "true"),
        (Format.BOOL, "false"),
        (Format.FLOAT, "-64.55E12"),
        (Format.FLOAT, "INF"),
        (Format.FLOAT, ".5"),
        (Format.DATE, "2005-11-23"),
        (Format.DATE, "20051123"),
        (Format.DATE, "2005-W47-3"),
        (Format.DATE, "2005-327"),
        (Format.DATE, "2005327"),
        (Format.TIME, "16:38:17"),
        (Format.TIME, "163817"),
        (Format.TIME, "16:38:17Z"),
        (Format.TIME, "16:38:17.25+02:00"),
        (Format.B64, "AAAAAA=="),
        (Format.BIN, "AAAA AA=="),
        (Format.NULL, ""),
        (Format.XML, "<a><b/></a>"),
    ],
)
def test_values_that_fit_their_format(fmt: Format, value: str) -> None:
    assert value_error(fmt, value) is None


@pytest.mark.parametrize(
    ("fmt", "value", "reason"),
    [
        (Format.INT, "2147483648", "32-bit"),
        (Format.INT, "1.0", "decimal integer"),
        (Format.INT, "", "decimal integer"),
        (Format.BOOL, "True", "'true' or 'false'"),
        (Format.BOOL, "1", "'true' or 'false'"),
        (Format.FLOAT, "1,5", "float"),
        (Format.DATE, "2005-13-01", "date"),
        (Format.DATE, "2005-367", "date"),
        (Format.DATE, "23.11.2005", "date"),
        (Format.TIME, "25:00", "time"),
        (Format.TIME, "T16:38", "time"),
        (Format.B64, "not base64!", "base64"),
        (Format.NULL, "x", "null"),
        (Format.NODE, "", "interior"),
        (Format.XML, "<a>", "XML"),
        (Format.XML, '<!DOCTYPE a [<!ENTITY e "x">]><a>&e;</a>', "XML"),
    ],
)
def test_values_that_do_not_fit_their_format(fmt: Format, value: str, reason: str) -> None:
    problem = value_error(fmt, value)
    assert problem is not None and reason in problem


def test_node_value_error_checks_allowed_values() -> None:
    node = leaf("T", values=("URI", "IPv4"))
    assert node.value_error("URI") is None
    assert "not one of the allowed values (URI, IPv4)" in (node.value_error("uri") or "")
    assert interior("I").value_error("x") == "an interior node has no value"


@pytest.mark.parametrize(
    "acl",
    ["", "Get=*", "Add=*&Get=*", "Add=www.sonera.fi-8765&Replace=www.sonera.fi-8765+321_ibm.com&Get=*"],
)
def test_well_formed_acls(acl: str) -> None:
    assert acl_error(acl) is None


@pytest.mark.parametrize(
    ("acl", "reason"),
    [
        ("Get=", "grants to no server"),
        ("Get", "no '='"),
        ("Copy=*", "unknown command"),
        ("Get=*&Get=a", "twice"),
        ("Get=a b", "not a server identifier"),
        ("Get=a++b", "not a server identifier"),
    ],
)
def test_malformed_acls(acl: str, reason: str) -> None:
    assert reason in (acl_error(acl) or "")


# ---------------------------------------------------------------------------------------
# validate()


def mo_with(*children: NodeDef, **kw: object) -> MODef:
    root = interior("Ex", *children, ddf_name=URN, description="Example.")
    fields: dict[str, object] = {"name": "Ex", "urn": URN, "root": root, "default_path": "./Ex"}
    fields.update(kw)
    return MODef(**fields)  # type: ignore[arg-type]


def problems_of(mo: MODef) -> tuple[str, ...]:
    with pytest.raises(InvalidModelError) as info:
        validate(mo)
    return info.value.problems


def test_a_valid_model_passes() -> None:
    validate(
        mo_with(
            leaf("A"),
            interior("<X>", leaf("B"), title="x", scope=Scope.DYNAMIC, occurrence=Occurrence.ZERO_OR_MORE),
        )
    )


@pytest.mark.parametrize(
    ("child", "expected"),
    [
        (leaf(""), "Ex/: empty node name"),
        (leaf("a/b"), "Ex/a/b: node name 'a/b' contains '/'"),
        (leaf("a?b"), "contains '/', '?' or a control character"),
        (leaf(".."), "reserved in URIs"),
        (leaf("a<b"), "'<' and '>' are only for placeholders"),
        (
            NodeDef("<1>", Format.NODE, Access.GET, Occurrence.ZERO_OR_MORE, Scope.DYNAMIC, title="t"),
            "Ex/<1>: placeholder '<1>' must look like <X>",
        ),
        (leaf("A", children=(leaf("B"),)), "Ex/A: a leaf (Format chr) cannot have children"),
        (interior("I", mime="text/plain"), "Ex/I: an interior node has no MIME type"),
        (interior("I", default="x"), "Ex/I: an interior node has no value, so no default value"),
        (interior("I", values=("a",)), "allowed values apply to chr leaves only"),
        (interior("I", secret=True), "only a leaf can be secret"),
        (leaf("A", ddf_name=URN), "a DDFName (MO identifier) belongs on an interior node"),
        (leaf("A", mime="plain"), "'plain' is not a MIME type"),
        (interior("I", ddf_name="not an id"), "'not an id' is not an MO identifier"),
        (leaf("S", secret=True), "Ex/S: a secret leaf must allow neither Get nor Copy"),
        (leaf("S", access=Access.COPY | Access.REPLACE), "a secret leaf must allow neither Get nor Copy"),
        (
            leaf("I", format=Format.INT, values=("1",)),
            "allowed values apply to chr leaves only (this one is int)",
        ),
        (leaf("V", values=("a", "a")), "allowed values repeat"),
        (leaf("V", values=("",)), "allowed values must be non-empty"),
        (leaf("V", values=("a`b",)), "contain no backquote"),
        (
            leaf("D", values=("a", "b"), default="c"),
            "Ex/D: default value: 'c' is not one of the allowed values",
        ),
        (leaf("N", format=Format.INT, default="ten"), "Ex/N: default value: 'ten' is not a decimal integer"),
        (leaf("B", format=Format.BOOL, default="yes"), "default value: 'yes' is not 'true' or 'false'"),
        (leaf("Many", occurrence=Occurrence.ZERO_OR_MORE), "Ex/Many: a fixed-name node occurs at most once"),
        (interior("<X>", title="x"), "Ex/<X>: a placeholder must be Dynamic or allow several instances"),
        (interior("<X>", scope=Scope.DYNAMIC), "Ex/<X>: a placeholder needs a title (DFTitle)"),
        (
            leaf("P", access=Access.GET | Access.DELETE),
            "Ex/P: a permanent node can be neither added nor deleted",
        ),
        (leaf("P", access=Access.ADD | Access.GET), "a permanent node can be neither added nor deleted"),
    ],
)
def test_each_rule_names_the_node_and_the_problem(child: NodeDef, expected: str) -> None:
    found = problems_of(mo_with(child))
    assert any(expected in p for p in found), found


def test_siblings_must_differ_in_more_than_case() -> None:
    found = problems_of(mo_with(leaf("Name"), leaf("name")))
    assert found == ("Ex: sibling names 'Name' and 'name' are equal or differ only in case",)


def test_at_most_one_placeholder_child() -> None:
    x = interior("<X>", title="x", scope=Scope.DYNAMIC)
    y = interior("<Y>", title="y", scope=Scope.DYNAMIC)
    assert problems_of(mo_with(x, y)) == ("Ex: at most one placeholder child (<X>, <Y>)",)


def test_problems_deep_in_the_tree_carry_their_full_path() -> None:
    inner = interior("<X>", leaf("Bad", format=Format.INT, default="x"), title="x", scope=Scope.DYNAMIC)
    found = problems_of(mo_with(interior("Sub", inner)))
    assert found == ("Ex/Sub/<X>/Bad: default value: 'x' is not a decimal integer",)


@pytest.mark.parametrize(
    ("changes", "expected"),
    [
        ({"name": ""}, "<MO>: the MO has no name"),
        ({"urn": "nonsense"}, "Ex: 'nonsense' is not an MO identifier"),
        ({"default_path": "Ex"}, "default path 'Ex' must be an absolute URI such as './Ex'"),
        ({"default_path": "./Other"}, "default path './Other' must end with the root's name 'Ex'"),
        ({"default_path": "./A//Ex"}, "must be an absolute URI"),
        ({"default_acl": "Get="}, "Ex: default ACL: ACL entry 'Get=' grants to no server"),
    ],
)
def test_mo_level_rules(changes: dict[str, str], expected: str) -> None:
    mo = dataclasses.replace(mo_with(), **changes)  # type: ignore[arg-type]
    found = problems_of(mo)
    assert any(expected in p for p in found), found


def test_the_root_must_be_interior_and_carry_the_urn() -> None:
    mo = MODef("Ex", URN, interior("Ex"), "./Ex")
    assert problems_of(mo) == (f"Ex: the root's DDFName must be the MO identifier {URN!r}",)
    mo = MODef("Ex", URN, leaf("Ex", ddf_name=URN), "./Ex")
    assert "Ex: the MO root must be an interior node (Format node)" in problems_of(mo)


def test_reversed_domain_identifiers_are_mo_identifiers() -> None:
    root = interior("Ex", ddf_name="com.companyx/1.2/ProductY")
    validate(MODef("Ex", "com.companyx/1.2/ProductY", root, "./Vendor/Ex"))


def test_a_placeholder_root_is_mounted_anywhere() -> None:
    root = NodeDef(
        "<X>", Format.NODE, Access.GET, Occurrence.ZERO_OR_ONE, Scope.DYNAMIC, ddf_name=URN, title="Root"
    )
    validate(MODef("Ex", URN, root, "./Somewhere/Else"))


def test_all_problems_are_reported_at_once() -> None:
    with pytest.raises(InvalidModelError) as info:
        validate(mo_with(leaf(""), leaf("S", secret=True)))
    assert len(info.value.problems) == 2
    assert str(info.value).startswith("2 problems:\n  Ex/: empty node name\n  Ex/S: ")
    assert isinstance(info.value, ValueError)
