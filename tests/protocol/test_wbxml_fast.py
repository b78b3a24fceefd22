"""The fast WBXML paths give exactly what the element-tree paths give.

* Encoding: ``wbxml_writer.direct_bytes`` (message objects straight to bytes) against
  ``wbxml_writer.tree_bytes`` (``message_to_element`` + ``wbxml.encode``), byte for byte, and
  ``to_bytes`` (what ``codec.encode`` uses) against the tree path for inputs the direct writer
  hands over: text lxml refuses, deep nesting.
* Decoding: ``wbxml.decode`` (which tries ``_decode_via_xml`` first) against the node-by-node
  reference ``_decode_tree``: the same serialized tree, or the same exception type *and*
  message, over generated documents, string-table documents, hand-made vectors, random bytes
  and mutated documents.
* Reading: ``wbxml_reader.to_message`` gives ``message_from_element`` of the reference tree,
  or declines (never raises), and ``codec.decode`` gives what the tree path gave: the same
  message, or the same exception type and message.
"""

from __future__ import annotations

import base64
from collections.abc import Callable

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from lxml import etree

from omadm.protocol import codec, wbxml, wbxml_reader, wbxml_writer, xml_codec
from omadm.protocol.codec import Encoding
from omadm.protocol.messages import (
    Add,
    Alert,
    Anchor,
    Atomic,
    Chal,
    Command,
    Copy,
    Cred,
    Delete,
    Exec,
    Get,
    Item,
    Mem,
    Message,
    Meta,
    Replace,
    Results,
    Sequence,
    Source,
    Status,
    SyncHdr,
    Target,
)
from tests.protocol.test_wbxml import HEADER_12, VALID_DOCUMENTS, mutated_document, opaque, syncml_tree
from tests.strategies import messages, mutations

# --------------------------------------------------------------------------------------
# Messages that use every field the writer writes, including the empty and odd values
# --------------------------------------------------------------------------------------

# Any text without lone surrogates (lxml refuses control characters with a ValueError).
any_text = st.text(st.characters(blacklist_categories=("Cs",)), max_size=12)
# Text both paths accept, with the characters the writer must keep as they are.
plain_text = st.text(
    st.characters(blacklist_categories=("Cs", "Cc"), blacklist_characters="\ufffe\uffff")
    | st.sampled_from("\t\n\r &<>]\u00e9\U0001f600"),
    max_size=12,
)
small = st.integers(min_value=0, max_value=2**40)


def _metas(text: st.SearchStrategy[str]) -> st.SearchStrategy[Meta]:
    return st.builds(
        Meta,
        format=st.none() | text,
        type=st.none() | text,
        mark=st.none() | text,
        size=st.none() | small,
        anchor=st.none() | st.builds(Anchor, last=st.none() | text, next=st.none() | text),
        version=st.none() | text,
        next_nonce=st.none() | text,
        max_msg_size=st.none() | small,
        max_obj_size=st.none() | small,
        emi=st.lists(text, max_size=2).map(tuple),
        mem=st.none()
        | st.builds(Mem, shared_mem=st.booleans(), free_mem=st.none() | small, free_id=st.none() | small),
        field_level=st.booleans(),
    )


def wide_messages(text: st.SearchStrategy[str]) -> st.SearchStrategy[Message]:
    """Every element and flag of the model, empty strings and empty bytes included."""
    ident = st.text("0123456789", min_size=1, max_size=3)
    meta = st.none() | _metas(text)
    target = st.builds(Target, loc_uri=text, loc_name=st.none() | text)
    source = st.builds(Source, loc_uri=text, loc_name=st.none() | text)
    cred = st.none() | st.builds(Cred, data=text, meta=meta)
    item = st.builds(
        Item,
        target=st.none() | target,
        source=st.none() | source,
        meta=meta,
        data=st.none() | text | st.binary(max_size=20),
        more_data=st.booleans(),
    )
    items = st.lists(item, max_size=2).map(tuple)

    def item_command(kind: type[Add | Replace | Copy]) -> st.SearchStrategy[Command]:
        return st.builds(kind, cmd_id=ident, items=items, meta=meta, cred=cred, no_resp=st.booleans())

    plain: st.SearchStrategy[Command] = st.one_of(
        item_command(Add),
        item_command(Replace),
        item_command(Copy),
        st.builds(
            Delete,
            cmd_id=ident,
            items=items,
            meta=meta,
            no_resp=st.booleans(),
            archive=st.booleans(),
            sft_del=st.booleans(),
        ),
        st.builds(Get, cmd_id=ident, items=items, meta=meta, cred=cred, lang=st.none() | text),
        st.builds(Exec, cmd_id=ident, items=items, meta=meta, correlator=st.none() | text),
        st.builds(
            Alert,
            cmd_id=ident,
            data=st.none() | text,
            items=items,
            correlator=st.none() | text,
            cred=cred,
            no_resp=st.booleans(),
        ),
        st.builds(
            Status,
            cmd_id=ident,
            msg_ref=text,
            cmd_ref=text,
            cmd=text,
            data=text,
            target_refs=st.lists(text, max_size=2).map(tuple),
            source_refs=st.lists(text, max_size=2).map(tuple),
            cred=cred,
            chal=st.none() | st.builds(Chal, meta=_metas(text)),
            items=items,
        ),
        st.builds(
            Results,
            cmd_id=ident,
            cmd_ref=text,
            msg_ref=st.none() | text,
            items=items,
            meta=meta,
            target_ref=st.none() | text,
            source_ref=st.none() | text,
        ),
    )
    commands = st.recursive(
        plain,
        lambda inner: st.one_of(
            st.builds(
                kind,
                cmd_id=ident,
                commands=st.lists(inner, max_size=3).map(tuple),
                meta=meta,
                no_resp=st.booleans(),
            )
            for kind in (Atomic, Sequence)
        ),
        max_leaves=6,
    )
    header = st.builds(
        SyncHdr,
        session_id=ident,
        msg_id=ident,
        target=target,
        source=source,
        ver_dtd=text,
        ver_proto=text,
        resp_uri=st.none() | text,
        no_resp=st.booleans(),
        cred=cred,
        meta=meta,
    )
    return st.builds(
        Message, header=header, commands=st.lists(commands, max_size=4).map(tuple), final=st.booleans()
    )


def outcome(func: Callable[[], object]) -> tuple[object, ...]:
    """What a call gives: its value, or its exception's type and message."""
    try:
        return ("value", func())
    except Exception as exc:  # the point is to compare any exception
        return (type(exc), str(exc))


# --------------------------------------------------------------------------------------
# Encoding
# --------------------------------------------------------------------------------------


@given(messages(binary=True))
@settings(max_examples=300, deadline=None)
def test_the_direct_writer_writes_the_tree_path_s_bytes(msg: Message) -> None:
    assert wbxml_writer.direct_bytes(msg) == wbxml_writer.tree_bytes(msg)


@given(wide_messages(plain_text))
@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
def test_the_direct_writer_writes_every_field_as_the_tree_path_does(msg: Message) -> None:
    expected = wbxml_writer.tree_bytes(msg)
    assert wbxml_writer.direct_bytes(msg) == expected
    assert codec.encode(msg, Encoding.WBXML) == expected


@given(wide_messages(any_text))
@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
def test_encode_accepts_and_refuses_any_text_as_the_tree_path_does(msg: Message) -> None:
    assert outcome(lambda: codec.encode(msg, Encoding.WBXML)) == outcome(lambda: wbxml_writer.tree_bytes(msg))


@pytest.mark.parametrize("text", ["a\x00b", "\x0b", "x\ufffe", "\uffff", "bell\x07", "\ud800", "ok\udfff"])
def test_text_xml_cannot_carry_is_refused_as_the_tree_path_refuses_it(text: str) -> None:
    msg = Message(SyncHdr("1", "1", Target("http://s/dm"), Source("IMEI:1")), (Alert("1", data=text),))
    with pytest.raises(ValueError) as by_tree:  # UnicodeEncodeError is a ValueError
        wbxml_writer.tree_bytes(msg)
    with pytest.raises(ValueError) as by_codec:
        codec.encode(msg, Encoding.WBXML)
    assert type(by_codec.value) is type(by_tree.value)
    assert str(by_codec.value) == str(by_tree.value)


def _nested(depth: int) -> Message:
    cmd: Command = Get("9", (Item(target=Target("./x")),))
    for level in range(depth):
        cmd = Sequence(str(level + 1), (cmd,)) if level % 2 else Atomic(str(level + 1), (cmd,))
    return Message(SyncHdr("1", "1", Target("t"), Source("s")), (cmd,), final=True)


@pytest.mark.parametrize("depth", [1, 31, 32, 33, 60, 300])
def test_deep_nesting_gives_what_the_tree_path_gives(depth: int) -> None:
    msg = _nested(depth)
    assert outcome(lambda: codec.encode(msg, Encoding.WBXML)) == outcome(lambda: wbxml_writer.tree_bytes(msg))


def test_the_worked_bench_messages_take_the_direct_path() -> None:
    binary = Item(target=Target("./bin"), data=b"\x00\xff\x10")
    empty = Item(target=Target("./empty"), data=b"")
    msg = Message(
        SyncHdr("1", "2", Target("t"), Source("s"), meta=Meta(max_msg_size=10)),
        (Results("3", cmd_ref="2", items=(binary, empty, Item())),),
    )
    assert wbxml_writer.direct_bytes(msg) == wbxml_writer.tree_bytes(msg)


# --------------------------------------------------------------------------------------
# Decoding
# --------------------------------------------------------------------------------------


def _reference(
    data: bytes, max_size: int = wbxml.DEFAULT_MAX_SIZE, max_depth: int = wbxml.DEFAULT_MAX_DEPTH
) -> bytes:
    return etree.tostring(wbxml._decode_tree(data, max_size=max_size, max_depth=max_depth))


def _decoded(
    data: bytes, max_size: int = wbxml.DEFAULT_MAX_SIZE, max_depth: int = wbxml.DEFAULT_MAX_DEPTH
) -> bytes:
    return etree.tostring(wbxml.decode(data, max_size=max_size, max_depth=max_depth))


def assert_decodes_as_the_reference(data: bytes, **limits: int) -> None:
    assert outcome(lambda: _decoded(data, **limits)) == outcome(lambda: _reference(data, **limits))


def fast_path_taken(data: bytes) -> bool:
    fast = wbxml._decode_via_xml(data, max_size=wbxml.DEFAULT_MAX_SIZE, max_depth=wbxml.DEFAULT_MAX_DEPTH)
    if fast is None:
        return False
    assert etree.tostring(fast) == _reference(data)
    return True


@given(messages(binary=False), st.booleans())
@settings(max_examples=200, deadline=None)
def test_messages_decode_through_the_fast_path_to_the_same_tree(msg: Message, table: bool) -> None:
    data = wbxml.encode(xml_codec.message_to_element(msg), use_string_table=table)
    assert fast_path_taken(data)
    assert codec.decode(data) == (msg, Encoding.WBXML)


@given(wide_messages(plain_text), st.booleans(), st.sampled_from([1, 2, 3]))
@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
def test_every_field_decodes_to_the_same_tree(msg: Message, table: bool, version: int) -> None:
    data = wbxml.encode(xml_codec.message_to_element(msg), version=version, use_string_table=table)
    assert_decodes_as_the_reference(data)


@given(tree=syncml_tree(), version=st.sampled_from([1, 2, 3]), table=st.booleans())
@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
def test_generated_trees_decode_to_the_same_tree(tree: etree._Element, version: int, table: bool) -> None:
    # Mixed content, binary OPAQUE, embedded DDF documents, SyncML 1.1: some take the fast
    # path, the rest the reference decoder; either way the same tree.
    assert_decodes_as_the_reference(wbxml.encode(tree, version=version, use_string_table=table))


def _str(text: str | bytes) -> bytes:
    """STR_I alone (``s`` of test_wbxml adds the END)."""
    return b"\x03" + (text.encode() if isinstance(text, str) else text) + b"\x00"


def _in_hdr(*pieces: bytes) -> bytes:
    """``<SyncML><SyncHdr>pieces</SyncHdr></SyncML>`` as a body."""
    return b"\x6d\x6c" + b"".join(pieces) + b"\x01\x01"


@pytest.mark.parametrize(
    ("body", "fast"),
    [
        (_in_hdr(_str("a&b<c>d]]>e")), True),  # escapes
        (_in_hdr(_str("cr\r\nlf\rend")), True),  # CR kept, not turned into LF
        (_in_hdr(_str("  \t ")), True),  # whitespace-only text
        (b"\x6d\x6b" + _str("x") + b"\x01\x01", True),  # the fused leaf
        (b"\x6d\x2b\x6b" + _str("x") + b"\x01\x01", True),  # an empty element, then a leaf
        (_in_hdr(_str("")), False),  # empty STR_I: the reference keeps text ""
        (_in_hdr(b"\x5b" + _str("1") + b"\x01", _str("tail")), True),  # mixed content: a tail
        (_in_hdr(_str("a"), _str("b"), opaque(b"c")), True),  # text pieces joined
        (_in_hdr(opaque("é".encode())), True),  # OPAQUE text
        (_in_hdr(opaque(b"\xff\x00")), False),  # binary OPAQUE
        (_in_hdr(opaque(b"\xc3"), opaque(b"\xa9")), False),  # a character split in two OPAQUEs
        (_in_hdr(b"\x00\x01\x4e", _str("x"), b"\x01\x00\x00\x5b", _str("1"), b"\x01"), True),  # pages
        (_in_hdr(b"\x02\x81\x00"), False),  # ENTITY
        (_in_hdr(_str("\x01")), False),  # control character
        (_in_hdr(_str(b"\xef\xbf\xbe")), False),  # U+FFFE
        (_in_hdr(_str(b"\xff")), False),  # invalid UTF-8
        (b"\x6d\x6c" + _str("x") + b"\x01", False),  # unclosed root
        (_in_hdr(_str("x")) + b"\x6d", False),  # trailing data
        (_in_hdr(_str("x")) + b"\x00\x01", True),  # a trailing SWITCH_PAGE is fine
        (_in_hdr(_str("x")) + b"\x00", False),  # truncated SWITCH_PAGE
        (b"\x6d\x6c\x03x", False),  # unterminated string
        (b"\x6d\x6c\x45", False),  # a tag with content at the very end
        (b"\x6d\x6c\x45\x03", False),  # ... and a string marker after it
        (b"\x6d\x6c\x45\x03x\x00", False),  # ... and a string without its END
        (_str("x") + b"\x6d\x01", False),  # content before the root
        (b"\x6d\x30\x01", False),  # unknown tag
        (b"\x6d\xec\x01\x01", False),  # attributes
        (b"\x6d\x00\x09\x01", False),  # unknown page
        (b"\x6d\x01\x01", False),  # END too many
        (b"", False),  # no root
    ],
)
def test_hand_made_documents_decode_as_the_reference_decodes_them(body: bytes, fast: bool) -> None:
    assert_decodes_as_the_reference(HEADER_12 + body)
    assert fast_path_taken(HEADER_12 + body) is fast


def test_limits_are_the_reference_s_limits() -> None:
    deep = HEADER_12 + b"\x6d" + b"\x6b" * 70 + b"\x01" * 71
    for depth in (0, 1, 2, 5, 64, 80):
        assert_decodes_as_the_reference(deep, max_depth=depth)
    table = b"\x02\xa4\x01\x6a\x05hello\x00"  # a 6-byte string table (5 letters and NUL)
    many = table[:4] + b"\x06hello\x00" + b"\x6d\x6c" + b"\x83\x00" * 50 + b"\x01\x01"
    for size in (len(many), 200, 251, 10_000):
        assert_decodes_as_the_reference(many, max_size=size)


def test_the_hand_made_vectors_of_test_wbxml_decode_as_the_reference() -> None:
    for data in VALID_DOCUMENTS:
        assert_decodes_as_the_reference(data)


@given(st.binary(max_size=200))
@settings(max_examples=500, deadline=None)
def test_random_bodies_decode_as_the_reference(body: bytes) -> None:
    assert_decodes_as_the_reference(HEADER_12 + body)


@given(mutated_document())
@settings(max_examples=500, deadline=None)
def test_mutated_documents_decode_as_the_reference(data: bytes) -> None:
    assert_decodes_as_the_reference(data)


def test_mutated_messages_decode_as_the_reference() -> None:
    msg = Message(
        SyncHdr(
            "1A2B", "1", Target("https://dm.example.com"), Source("IMEI:1"), meta=Meta(max_msg_size=9000)
        ),
        (
            Alert("1", data="1201"),
            Replace(
                "2", (Item(source=Source("./DevInfo/Man"), meta=Meta(format="chr"), data="Acme & <Co>"),)
            ),
            Results("3", cmd_ref="2", items=(Item(data=base64.b64encode(b"x" * 40).decode()),)),
        ),
        final=True,
    )
    for table in (False, True):
        base = wbxml.encode(xml_codec.message_to_element(msg), use_string_table=table)
        for data in mutations(base, 1000, seed=7 + table):
            assert_decodes_as_the_reference(data)


@pytest.mark.parametrize(
    "odd",
    [
        Status("1", msg_ref="1", cmd_ref="0", cmd="SyncHdr", data="401", chal=Chal(meta=None)),  # type: ignore[arg-type]
        Get("1", (Item(target=Target("./a")),), cred=Cred(data=123)),  # type: ignore[arg-type]
        Replace("1", (Item(target=Target("./a"), meta=Meta(type=7)),)),  # type: ignore[arg-type]
    ],
)
def test_values_outside_the_model_s_types_give_what_the_tree_path_gives(odd: Command) -> None:
    msg = Message(SyncHdr("1", "1", Target("t"), Source("s")), (odd,))
    assert outcome(lambda: codec.encode(msg, Encoding.WBXML)) == outcome(lambda: wbxml_writer.tree_bytes(msg))


# --------------------------------------------------------------------------------------
# Decoding straight to messages (wbxml_reader), against the tree path's messages
# --------------------------------------------------------------------------------------


def _tree_path_message(data: bytes) -> Message:
    """``codec.decode`` before wbxml_reader: the reference tree, then ``message_from_element``."""
    root = wbxml._decode_tree(data, max_size=wbxml.DEFAULT_MAX_SIZE, max_depth=xml_codec.DEFAULT_MAX_DEPTH)
    return xml_codec.message_from_element(root)


def read_directly(data: bytes) -> Message | None:
    return wbxml_reader.to_message(
        data, max_size=wbxml.DEFAULT_MAX_SIZE, max_depth=xml_codec.DEFAULT_MAX_DEPTH
    )


def assert_reads_as_the_tree_path(data: bytes) -> None:
    """The reader gives the tree path's message or declines; ``codec.decode`` matches either way."""
    reference = outcome(lambda: _tree_path_message(data))
    direct = outcome(lambda: read_directly(data))
    assert direct[0] == "value", direct  # the reader never raises
    if direct[1] is not None:
        assert reference == direct
    if wbxml.is_wbxml(data):  # otherwise codec.decode tries XML
        assert outcome(lambda: codec.decode(data)[0]) == reference


@given(messages(binary=False), st.booleans())
@settings(max_examples=200, deadline=None)
def test_messages_are_read_directly_as_the_tree_path_reads_them(msg: Message, table: bool) -> None:
    data = wbxml.encode(xml_codec.message_to_element(msg), use_string_table=table)
    assert read_directly(data) == msg
    assert_reads_as_the_tree_path(data)


@given(wide_messages(plain_text), st.booleans(), st.sampled_from([1, 2, 3]))
@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
def test_every_field_is_read_as_the_tree_path_reads_it(msg: Message, table: bool, version: int) -> None:
    assert_reads_as_the_tree_path(
        wbxml.encode(xml_codec.message_to_element(msg), version=version, use_string_table=table)
    )


@given(messages(binary=True))
@settings(max_examples=100, deadline=None)
def test_binary_data_goes_to_the_tree_path(msg: Message) -> None:
    assert_reads_as_the_tree_path(wbxml_writer.to_bytes(msg))


def _doc(body: bytes) -> bytes:
    return HEADER_12 + b"\x6d\x6c" + b"".join(_leaf(t, v) for t, v in ((0x25, "1"), (0x1B, "1"))) + body


def _leaf(token: int, text: str) -> bytes:
    return bytes((token | 0x40,)) + _str(text) + b"\x01"


_LOC = b"\x6e" + _leaf(0x17, "t") + b"\x01\x67" + _leaf(0x17, "s") + b"\x01"  # Target, Source


@pytest.mark.parametrize(
    "body",
    [
        _LOC + b"\x01\x6b\x12\x01\x01",  # the smallest message
        _LOC + b"\x01\x6b\x46" + _leaf(0x0B, "1") + _leaf(0x0F, " 1201 ") + b"\x01\x12\x01\x01",  # Alert
        _LOC + b"\x01\x6b\x46" + _leaf(0x0B, "") + b"\x01\x01\x01",  # empty CmdID
        _LOC + b"\x01\x6b\x46" + _leaf(0x0B, "1") + b"\x5a\x01\x01\x01\x01",  # Meta in Alert: forbidden
        _LOC + b"\x01\x6b\x46" + _leaf(0x0B, "1") + _leaf(0x0B, "2") + b"\x01\x01\x01",  # two CmdIDs
        _LOC
        + b"\x01\x6b\x69"
        + _leaf(0x0B, "1")
        + _leaf(0x1C, "1")
        + _leaf(0x0A, "SyncHdr")
        + _leaf(0x0F, "200")
        + b"\x01\x01\x01",  # Status of the SyncHdr without CmdRef
        _LOC
        + b"\x01\x6b\x69"
        + _leaf(0x0B, "1")
        + _leaf(0x1C, "1")
        + _leaf(0x0A, "Get")
        + _leaf(0x0F, "200")
        + b"\x01\x01\x01",  # Status of a Get without CmdRef
        _LOC
        + b"\x5a\x00\x01\x47"
        + _str(" B64 ")
        + b"\x01\x52"
        + _str("+12")
        + b"\x01\x01\x00\x00\x01\x6b\x01\x01",
        _LOC + b"\x5a\x00\x01\x52" + _str("-1") + b"\x01\x01\x00\x00\x01\x6b\x01\x01",  # negative Size
        _LOC
        + b"\x5a\x00\x01\x4e\x47"
        + _str("chr")
        + b"\x01\x01\x01\x00\x00\x01\x6b\x01\x01",  # MetInf wrapper
        _LOC + b"\x01\x6b\x6a\x01\x01\x01",  # Sync: a DS element
        _LOC + b"\x01\x6b\x12\x12\x01\x01",  # two Finals
        _LOC + b"\x01\x6b" + _str(" ") + b"\x12\x01\x01",  # text between body elements
        _LOC + b"\x01",  # no body
    ],
)
def test_hand_made_messages_are_read_as_the_tree_path_reads_them(body: bytes) -> None:
    assert_reads_as_the_tree_path(_doc(body))


def test_hand_made_vectors_are_read_as_the_tree_path_reads_them() -> None:
    for data in VALID_DOCUMENTS:
        assert_reads_as_the_tree_path(data)


@given(mutated_document())
@settings(max_examples=300, deadline=None)
def test_mutated_documents_are_read_as_the_tree_path_reads_them(data: bytes) -> None:
    assert_reads_as_the_tree_path(data)


def test_mutated_messages_are_read_as_the_tree_path_reads_them() -> None:
    msg = Message(
        SyncHdr(
            "1A2B", "1", Target("https://dm.example.com"), Source("IMEI:1"), meta=Meta(max_msg_size=9000)
        ),
        (
            Alert("1", data="1201"),
            Status("2", msg_ref="1", cmd_ref="0", cmd="SyncHdr", data="212", chal=Chal(Meta(type="md5"))),
            Replace(
                "3", (Item(source=Source("./DevInfo/Man"), meta=Meta(format="chr"), data=" Acme & <Co> "),)
            ),
            Atomic("4", (Get("5", (Item(target=Target("./a")),)),)),
            Results("6", cmd_ref="2", items=(Item(data=base64.b64encode(b"x" * 40).decode()),)),
        ),
        final=True,
    )
    for table in (False, True):
        base = wbxml.encode(xml_codec.message_to_element(msg), use_string_table=table)
        assert read_directly(base) == msg
        for data in mutations(base, 1000, seed=11 + table):
            assert_reads_as_the_tree_path(data)
