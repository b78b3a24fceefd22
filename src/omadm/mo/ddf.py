"""DDF 1.2 documents (OMA DM Device Description Framework) to and from :class:`~omadm.mo.model.MODef`.

Writing is strict: elements in the order of the DDF 1.2 DTD, namespace ``syncml:dmddf1.2``,
the public DOCTYPE, every DFProperties child our model knows stated explicitly (Occurrence,
Scope and CaseSense included, though the DTD makes them optional). Reading is lenient, so
vendor DDFs can be imported: no namespace or another one, omitted optional elements (with
the defaults stated below), the flat ``Path`` form of the DTD, MIME types on interior nodes
(Windows CSP DDFs put the MO identifier there).

What the model holds beyond DFProperties travels in places the DTD provides, so a document
parsed back equals the declaration it was written from:

* the MO's default ACL: ``RTProperties/ACL`` of the top node, the DTD's way to give a
  run-time property its default value (``Format``, ``Name`` and ``Type`` come along, as the
  DTD requires all mandatory run-time properties once ``RTProperties`` is present);
* the mount point: ``Path`` on the top node, only when it is not ``./<root name>``, and
  ``RTProperties/Name`` when the root is a placeholder;
* a chr leaf's allowed values: the last sentence of its ``Description``,
  ``Allowed values: `A`, `B`.`` (DDF 1.2 has no element for them);
* placeholders: an empty ``NodeName``; they read back as ``<X>`` (the letter is only a
  label in the declaration).

Defaults for omitted elements when reading (the DTD leaves them implicit): Occurrence
``One``, Scope ``Permanent``, CaseSense ``CS``, leaf DFType ``text/plain``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from lxml import etree

from omadm.protocol.errors import ProtocolError
from omadm.protocol.xml_codec import parse_element

from .model import Access, Format, InvalidModelError, MODef, NodeDef, Occurrence, Scope

__all__ = [
    "DDF_DTD_URL",
    "DDF_NS",
    "DDF_PUBLIC_ID",
    "DDFError",
    "parse_ddf",
    "parse_ddf_all",
    "to_ddf",
]

DDF_NS = "syncml:dmddf1.2"
DDF_PUBLIC_ID = "-//OMA//DTD-DM-DDF 1.2//EN"
DDF_DTD_URL = "http://www.openmobilealliance.org/tech/DTD/dm_ddf-v1_2.dtd"
_XML_DECL = b'<?xml version="1.0" encoding="UTF-8"?>\n'
_DOCTYPE = f'<!DOCTYPE MgmtTree PUBLIC "{DDF_PUBLIC_ID}" "{DDF_DTD_URL}">\n'.encode("ascii")
_PLACEHOLDER_NAME = "<X>"
_VALUES_SENTENCE = re.compile(r"(?:^|\s+)Allowed values: ((?:`[^`]+`)(?:, `[^`]+`)*)\.\Z")
_E = etree._Element


class DDFError(InvalidModelError):
    """The bytes are not a DDF document this reader can turn into a management object."""


# ---------------------------------------------------------------------------------------
# Writing


def to_ddf(mo: MODef, *, man: str | None = None, mod: str | None = None) -> bytes:
    """Serialize ``mo`` as a DDF 1.2 document (see the module docstring for the mapping)."""
    tree = etree.Element(f"{{{DDF_NS}}}MgmtTree", nsmap={None: DDF_NS})  # type: ignore[dict-item]
    _sub(tree, "VerDTD", "1.2")
    if man is not None:
        _sub(tree, "Man", man)
    if mod is not None:
        _sub(tree, "Mod", mod)
    root = mo.root
    parent_path, _, mount_name = mo.default_path.rpartition("/")
    top = _sub(tree, "Node")
    _sub(top, "NodeName", "" if root.is_placeholder else root.name)
    if root.is_placeholder or mo.default_path != f"./{root.name}":
        _sub(top, "Path", parent_path)
    if mo.default_acl is not None or root.is_placeholder:
        rt = _sub(top, "RTProperties")
        if mo.default_acl is not None:
            _sub(rt, "ACL", mo.default_acl)
        _sub(_sub(rt, "Format"), Format.NODE.value)
        _sub(rt, "Name", mount_name)
        _sub(_sub(rt, "Type"), "DDFName", mo.urn)
    _put_properties(top, root)
    for child in root.children:
        _put_node(top, child)
    body = etree.tostring(tree, encoding="UTF-8", xml_declaration=False, pretty_print=True)
    return _XML_DECL + _DOCTYPE + body


def _sub(parent: _E, tag: str, text: str | None = None) -> _E:
    el = etree.SubElement(parent, f"{{{DDF_NS}}}{tag}")
    if text:  # "" stays an empty element: <NodeName/> for a placeholder
        el.text = text
    return el


def _put_node(parent: _E, node: NodeDef) -> None:
    el = _sub(parent, "Node")
    _sub(el, "NodeName", "" if node.is_placeholder else node.name)
    _put_properties(el, node)
    for child in node.children:
        _put_node(el, child)


def _put_properties(parent: _E, node: NodeDef) -> None:
    # DFProperties(AccessType, DefaultValue?, Description?, DFFormat, Occurrence?, Scope?,
    #              DFTitle?, DFType, CaseSense?)
    props = _sub(parent, "DFProperties")
    access = _sub(props, "AccessType")
    for tag in node.access.ddf_tags:
        _sub(access, tag)
    if node.default is not None:
        _sub(props, "DefaultValue", node.default)
    description = node.description
    if node.values:
        listed = ", ".join(f"`{v}`" for v in node.values)
        sentence = f"Allowed values: {listed}."
        description = f"{description} {sentence}" if description else sentence
    if description:
        _sub(props, "Description", description)
    _sub(_sub(props, "DFFormat"), node.format.value)
    occurrence = _sub(props, "Occurrence")
    _sub(occurrence, node.occurrence.ddf_tag, _optional_str(node.occurrence.ddf_count))
    _sub(_sub(props, "Scope"), node.scope.value)
    if node.title is not None:
        _sub(props, "DFTitle", node.title)
    df_type = _sub(props, "DFType")
    if node.is_interior:
        _sub(df_type, "DDFName", node.ddf_name or None)
    elif node.ddf_name is not None:  # not valid, but say what the declaration says
        _sub(df_type, "DDFName", node.ddf_name)
    else:
        _sub(df_type, "MIME", node.mime)
    _sub(_sub(props, "CaseSense"), "CS" if node.case_sensitive else "CIS")


def _optional_str(n: int | None) -> str | None:
    return None if n is None else str(n)


# ---------------------------------------------------------------------------------------
# Reading


@dataclass
class _Draft:
    """A node read from the document, still mutable so that flat ``Path`` nodes can be attached."""

    name: str
    props: dict[str, object]
    children: list[_Draft] = field(default_factory=list)

    def freeze(self) -> NodeDef:
        return NodeDef(name=self.name, children=tuple(c.freeze() for c in self.children), **self.props)  # type: ignore[arg-type]


@dataclass
class _Top:
    """A Node element directly under MgmtTree, with what only a top node carries."""

    draft: _Draft
    path: str | None
    acl: str | None
    rt_name: str | None
    urn: str | None


def parse_ddf(data: bytes, *, name: str | None = None, default_path: str | None = None) -> MODef:
    """Read the management object a DDF document describes.

    Args:
        data: the document (UTF-8 XML; a DOCTYPE is fine, an internal DTD subset is refused).
        name: which MO to take when the document describes several: the top node's name or
            its MO identifier (case-insensitive). Not needed when there is one.
        default_path: where the MO is mounted, when the document does not say (a placeholder
            root without ``RTProperties/Name``, or to override what it says).

    The result is not validated: call :func:`~omadm.mo.model.validate` to judge it.

    Raises:
        DDFError: not a DDF document, or not one that describes a management object.
    """
    candidates = parse_ddf_all(data, default_path=default_path)
    if name is None:
        if len(candidates) != 1:
            raise DDFError(
                f"the document describes {len(candidates)} management objects "
                f"({', '.join(m.name for m in candidates)}); pick one with name="
            )
        return candidates[0]
    wanted = name.casefold()
    for mo in candidates:
        if wanted in (mo.name.casefold(), mo.urn.casefold()):
            return mo
    raise DDFError(f"no management object {name!r} in the document ({', '.join(m.name for m in candidates)})")


def parse_ddf_all(data: bytes, *, default_path: str | None = None) -> tuple[MODef, ...]:
    """Every management object a DDF document describes, in document order (see :func:`parse_ddf`)."""
    try:
        root = parse_element(data)
    except ProtocolError as exc:
        raise DDFError(f"not a DDF document: {exc}") from None
    if _local(root) != "MgmtTree":
        raise DDFError(f"not a DDF document: the root element is <{_local(root)}>, not <MgmtTree>")
    tops = [_read_top(el) for el in root if _local(el) == "Node"]
    if not tops:
        raise DDFError("the DDF document describes no node")
    tops = _attach_flat_nodes(tops)
    return tuple(_to_mo(top, default_path) for top in tops)


def _read_top(el: _E) -> _Top:
    path = _child_text(el, "Path")
    acl = rt_name = urn = None
    rt = _child(el, "RTProperties")
    if rt is not None:
        acl = _child_text(rt, "ACL")
        rt_name = _child_text(rt, "Name")
        rt_type = _child(rt, "Type")
        if rt_type is not None:
            urn = _child_text(rt_type, "DDFName") or _child_text(rt_type, "MIME") or None
    return _Top(_read_node(el, "MgmtTree/Node"), path, acl, rt_name, urn)


def _read_node(el: _E, where: str) -> _Draft:
    raw_name = _child_text(el, "NodeName")
    if raw_name is None:
        raise DDFError(f"{where}: a Node without NodeName")
    name = raw_name.strip() or _PLACEHOLDER_NAME
    here = f"{where}[{name}]"
    props_el = _child(el, "DFProperties")
    if props_el is None:
        raise DDFError(f"{here}: a Node without DFProperties")
    props = _read_properties(props_el, here)
    if props.get("default") is None and (value := _child_text(el, "Value")) is not None:
        props["default"] = value
    children = [_read_node(c, here) for c in el if _local(c) == "Node"]
    return _Draft(name, props, children)


def _read_properties(el: _E, where: str) -> dict[str, object]:
    props: dict[str, object] = {}
    access = Access.NONE
    access_el = _child(el, "AccessType")
    if access_el is not None:
        for c in access_el:
            flag = _ACCESS_BY_TAG.get(_local(c))
            if flag is None:
                raise DDFError(f"{where}: unknown AccessType <{_local(c)}>")
            access |= flag
    props["access"] = access
    fmt = _choice(el, "DFFormat", where)
    if fmt is None:
        raise DDFError(f"{where}: no DFFormat")
    try:
        props["format"] = Format(_local(fmt))
    except ValueError:
        raise DDFError(f"{where}: unknown DFFormat <{_local(fmt)}>") from None
    interior = props["format"] is Format.NODE
    props["occurrence"] = _read_occurrence(el, where)
    scope = _choice(el, "Scope", where)
    if scope is not None:
        try:
            props["scope"] = Scope(_local(scope))
        except ValueError:
            raise DDFError(f"{where}: unknown Scope <{_local(scope)}>") from None
    props["default"] = _child_text(el, "DefaultValue")
    description = (_child_text(el, "Description") or "").strip()
    if not interior and props["format"] is Format.CHR and (m := _VALUES_SENTENCE.search(description)):
        props["values"] = tuple(v.strip("`") for v in m[1].split(", "))
        description = description[: m.start()]
    props["description"] = description
    props["title"] = _child_text(el, "DFTitle")
    df_type = _child(el, "DFType")
    if df_type is not None:
        mime = _child_text(df_type, "MIME")
        ddf_name = _child_text(df_type, "DDFName")
        if interior:
            # An interior node has no MIME type; Windows CSP DDFs put the MO identifier there.
            props["ddf_name"] = (ddf_name or mime or "").strip() or None
        else:
            props["mime"] = (mime or "").strip() or None
            props["ddf_name"] = (ddf_name or "").strip() or None
    case = _choice(el, "CaseSense", where)
    if case is not None:
        if _local(case) not in ("CS", "CIS"):
            raise DDFError(f"{where}: unknown CaseSense <{_local(case)}>")
        props["case_sensitive"] = _local(case) == "CS"
    return props


_ACCESS_BY_TAG = {
    "Add": Access.ADD,
    "Copy": Access.COPY,
    "Delete": Access.DELETE,
    "Exec": Access.EXEC,
    "Get": Access.GET,
    "Replace": Access.REPLACE,
}


def _read_occurrence(el: _E, where: str) -> Occurrence:
    choice = _choice(el, "Occurrence", where)
    if choice is None:
        return Occurrence.ONE
    tag = _local(choice)
    fixed = {
        "One": Occurrence.ONE,
        "ZeroOrOne": Occurrence.ZERO_OR_ONE,
        "ZeroOrMore": Occurrence.ZERO_OR_MORE,
        "OneOrMore": Occurrence.ONE_OR_MORE,
    }
    if tag in fixed:
        return fixed[tag]
    if tag in ("ZeroOrN", "OneOrN"):
        text = (choice.text or "").strip()
        if not text.isdigit() or int(text) < 1:
            raise DDFError(f"{where}: <{tag}> needs a positive count, got {text!r}")
        return Occurrence(0 if tag == "ZeroOrN" else 1, int(text))
    raise DDFError(f"{where}: unknown Occurrence <{tag}>")


def _attach_flat_nodes(tops: list[_Top]) -> list[_Top]:
    """Hang top nodes whose ``Path`` points inside another top node's sub-tree under that node.

    The DTD's flat form (each node a MgmtTree child with the Path of its parent) describes
    the same tree as the nested form; a Path that leads nowhere in the document is a mount
    point instead (``./Vendor/MSFT`` in Windows DDFs).
    """
    roots: list[_Top] = []
    for top in tops:
        target = _find_parent(roots, top.path) if top.path else None
        if target is None:
            roots.append(top)
        else:
            target.children.append(top.draft)
    return roots


def _segments(path: str | None) -> list[str]:
    """The node names of a DDF Path, however it is written (``./A/B``, ``A/B/``, ``/A``, ``.``)."""
    return [s for s in (path or "").split("/") if s and s != "."]


def _find_parent(roots: list[_Top], path: str | None) -> _Draft | None:
    segments = _segments(path)
    for top in roots:
        base = _segments(top.path)
        if segments[: len(base)] != base or len(segments) <= len(base):
            continue
        rest = segments[len(base) :]
        if rest[0] != top.draft.name:
            continue
        node: _Draft | None = top.draft
        for segment in rest[1:]:
            assert node is not None
            node = next((c for c in node.children if c.name == segment), None)
            if node is None:
                break
        if node is not None:
            return node
    return None


def _to_mo(top: _Top, default_path: str | None) -> MODef:
    draft = top.draft
    urn = draft.props.get("ddf_name") or top.urn
    where = f"MgmtTree/Node[{draft.name}]"
    if not isinstance(urn, str) or not urn:
        raise DDFError(f"{where}: the top node names no MO identifier (DFType/DDFName)")
    if draft.props.get("ddf_name") is None:
        draft.props["ddf_name"] = urn
    root = draft.freeze()
    if default_path is None:
        mount = top.rt_name if root.is_placeholder else root.name
        if not mount or mount == _PLACEHOLDER_NAME:
            raise DDFError(f"{where}: a placeholder root without RTProperties/Name; pass default_path=")
        default_path = "/".join([".", *_segments(top.path), mount])
    name = root.name if not root.is_placeholder else default_path.rpartition("/")[2]
    return MODef(name=name, urn=urn, root=root, default_path=default_path, default_acl=top.acl)


def _local(el: _E) -> str:
    tag: object = el.tag  # a function for comments and PIs (the parser drops them anyway)
    return tag.rpartition("}")[2] if isinstance(tag, str) else ""


def _child(el: _E, name: str) -> _E | None:
    return next((c for c in el if _local(c) == name), None)


def _child_text(el: _E, name: str) -> str | None:
    c = _child(el, name)
    if c is None:
        return None
    return c.text or ""


def _choice(el: _E, name: str, where: str) -> _E | None:
    """The single element inside ``el/name`` (DFFormat, Occurrence, Scope, CaseSense)."""
    container = _child(el, name)
    if container is None:
        return None
    inner = [c for c in container if isinstance(c.tag, str)]
    if len(inner) != 1:
        raise DDFError(f"{where}: <{name}> must hold exactly one element, found {len(inner)}")
    return inner[0]
