"""Hypothesis strategies that generate valid DM messages, shared by codec and session tests."""

from __future__ import annotations

import random

from hypothesis import strategies as st

from omadm.protocol.messages import (
    Add,
    Alert,
    Atomic,
    Chal,
    Command,
    Copy,
    Cred,
    Delete,
    Exec,
    Get,
    Item,
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

# Text that survives XML 1.0 and WBXML STR_I: no control characters, no NUL, no surrogates.
_CHARS = st.characters(
    blacklist_categories=("Cs", "Cc", "Cn"),
    blacklist_characters="\x00",
)
text = st.text(_CHARS, max_size=40)
word = st.text("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_.:", min_size=1, max_size=16)
ident = st.integers(min_value=1, max_value=99999).map(str)
# Identifiers and URIs are whitespace-trimmed by the parser: generate them without edge spaces.
uri = st.lists(word, min_size=1, max_size=5).map(lambda parts: "./" + "/".join(parts))
formats = st.sampled_from(
    ["chr", "int", "bool", "b64", "bin", "node", "null", "xml", "date", "time", "float"]
)

metas = st.builds(
    Meta,
    format=st.none() | formats,
    type=st.none() | st.sampled_from(["text/plain", "application/octet-stream", "syncml:auth-md5"]),
    mark=st.none() | st.sampled_from(["critical", "informational"]),
    size=st.none() | st.integers(min_value=0, max_value=2**31),
    next_nonce=st.none() | st.sampled_from(["AAECAw==", "LG3iZQhhdmKNHg=="]),
    max_msg_size=st.none() | st.integers(min_value=0, max_value=2**31),
    max_obj_size=st.none() | st.integers(min_value=0, max_value=2**31),
    emi=st.lists(word, max_size=2).map(tuple),
)
targets = st.builds(Target, loc_uri=uri, loc_name=st.none() | word)
sources = st.builds(Source, loc_uri=uri, loc_name=st.none() | word)


def items(binary: bool = False) -> st.SearchStrategy[Item]:
    data = st.none() | text
    if binary:
        data = data | st.binary(min_size=1, max_size=64)
    return st.builds(
        Item,
        target=st.none() | targets,
        source=st.none() | sources,
        meta=st.none() | metas,
        data=data,
        more_data=st.booleans(),
    )


def _item_tuple(binary: bool) -> st.SearchStrategy[tuple[Item, ...]]:
    return st.lists(items(binary), min_size=1, max_size=3).map(tuple)


def commands(binary: bool = False) -> st.SearchStrategy[Command]:
    it = _item_tuple(binary)
    plain = st.one_of(
        st.builds(Add, cmd_id=ident, items=it, meta=st.none() | metas),
        st.builds(Replace, cmd_id=ident, items=it, meta=st.none() | metas),
        st.builds(Copy, cmd_id=ident, items=it),
        st.builds(Delete, cmd_id=ident, items=it),
        st.builds(Get, cmd_id=ident, items=it),
        st.builds(Exec, cmd_id=ident, items=it, correlator=st.none() | word),
        st.builds(
            Alert,
            cmd_id=ident,
            data=st.sampled_from(["1201", "1222", "1226"]),
            items=st.lists(items(binary), max_size=2).map(tuple),
            correlator=st.none() | word,
        ),
        st.builds(
            Status,
            cmd_id=ident,
            msg_ref=ident,
            cmd_ref=ident,
            cmd=st.sampled_from(["SyncHdr", "Get", "Add", "Exec"]),
            data=st.sampled_from(["200", "212", "401", "0"]),
            target_refs=st.lists(uri, max_size=2).map(tuple),
            source_refs=st.lists(uri, max_size=2).map(tuple),
            chal=st.none() | st.builds(Chal, meta=metas),
        ),
        st.builds(
            Results, cmd_id=ident, cmd_ref=ident, msg_ref=st.none() | ident, items=it, meta=st.none() | metas
        ),
    )
    containers = st.one_of(
        st.builds(Atomic, cmd_id=ident, commands=st.lists(plain, max_size=3).map(tuple)),
        st.builds(Sequence, cmd_id=ident, commands=st.lists(plain, max_size=3).map(tuple)),
    )
    return plain | containers


def messages(binary: bool = False) -> st.SearchStrategy[Message]:
    headers = st.builds(
        SyncHdr,
        session_id=ident,
        msg_id=ident,
        target=targets,
        source=sources,
        resp_uri=st.none() | st.just("http://127.0.0.1:8080/dm?s=abc"),
        cred=st.none() | st.builds(Cred, data=word, meta=st.none() | metas),
        meta=st.none() | metas,
    )
    return st.builds(
        Message,
        header=headers,
        commands=st.lists(commands(binary), max_size=6).map(tuple),
        final=st.booleans(),
    )


def mutations(base: bytes, count: int, seed: int) -> list[bytes]:
    """``count`` damaged copies of ``base``: bytes flipped, cut out or inserted (seeded)."""
    rng = random.Random(seed)
    out = []
    for _ in range(count):
        doc = bytearray(base)
        for _ in range(rng.randint(1, 6)):
            pos = rng.randrange(len(doc)) if doc else 0
            action = rng.randrange(4)
            if action == 0 and doc:
                doc[pos] = rng.randrange(256)
            elif action == 1:
                del doc[pos : pos + rng.randint(1, 20)]
            elif action == 2:
                doc[pos:pos] = bytes(rng.randrange(256) for _ in range(rng.randint(1, 5)))
            else:
                del doc[rng.randrange(len(doc) + 1) :]  # truncation
        out.append(bytes(doc))
    return out
