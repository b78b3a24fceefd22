"""The fast WBXML paths over the interop material: libwbxml's bytes and the spec's messages.

``wbxml.decode`` (XML text + lxml's parser, falling back to the node-by-node decoder) must
give the reference decoder's tree, serialized byte for byte, for every WBXML fixture and for
libwbxml's encoding of every full XML example, with and without a string table, and
``wbxml_reader`` the tree path's message (or decline); the direct WBXML writer must give the
tree path's bytes for every example that is a DM message.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
from lxml import etree

from omadm.protocol import wbxml, wbxml_reader, wbxml_writer, xml_codec
from omadm.protocol.errors import ProtocolError
from tests.interop.test_libwbxml_crosscheck import (
    FULL_DOCUMENTS,
    LIBWBXML,
    WBXML_FILES,
    _params,
    libwbxml_encode,
)

pytestmark = pytest.mark.interop


def outcome(func: Callable[[], bytes]) -> tuple[object, ...]:
    try:
        return ("value", func())
    except Exception as exc:  # the point is to compare any exception
        return (type(exc), str(exc))


def assert_reads_as_the_tree_path(data: bytes) -> None:
    """``wbxml_reader`` gives the tree path's message, or declines (and never raises)."""
    limits = {"max_size": wbxml.DEFAULT_MAX_SIZE, "max_depth": xml_codec.DEFAULT_MAX_DEPTH}
    message = wbxml_reader.to_message(data, **limits)
    if message is not None:
        assert message == xml_codec.message_from_element(wbxml._decode_tree(data, **limits))


def assert_decodes_as_the_reference(data: bytes) -> None:
    fast = outcome(lambda: etree.tostring(wbxml.decode(data)))
    reference = outcome(
        lambda: etree.tostring(
            wbxml._decode_tree(data, max_size=wbxml.DEFAULT_MAX_SIZE, max_depth=wbxml.DEFAULT_MAX_DEPTH)
        )
    )
    assert fast == reference


@pytest.mark.parametrize("path", _params(WBXML_FILES))
def test_fixture_decodes_as_the_reference_decoder_decodes_it(path: Path) -> None:
    assert_decodes_as_the_reference(path.read_bytes())
    assert_reads_as_the_tree_path(path.read_bytes())


@pytest.mark.parametrize("table", [False, True], ids=["xml2wbxml-n", "xml2wbxml"])
@pytest.mark.parametrize("path", _params(FULL_DOCUMENTS, LIBWBXML))
def test_libwbxml_encoding_decodes_as_the_reference_decoder_decodes_it(
    path: Path, table: bool, tmp_path: Path
) -> None:
    data = libwbxml_encode(path, tmp_path, string_table=table)
    if isinstance(data, str):
        pytest.skip(f"libwbxml cannot encode this document: {data}")
    assert_decodes_as_the_reference(data)
    assert_reads_as_the_tree_path(data)


@pytest.mark.parametrize("path", _params(FULL_DOCUMENTS))
def test_direct_writer_writes_the_tree_path_s_bytes_for_every_example_message(path: Path) -> None:
    try:
        message = xml_codec.parse(path.read_bytes())
    except ProtocolError:
        pytest.skip("not a DM message this codec accepts (a TNDS document, a DS message...)")
    assert wbxml_writer.direct_bytes(message) == wbxml_writer.tree_bytes(message)
