"""Codec micro-benchmark: encode and decode time of realistic DM messages, XML vs WBXML.

Run ``python bench/codec.py`` (about 5 s) or ``python bench/codec.py --quick`` (under a
second, for a smoke run). It is a script, not a test: figures depend on the
machine, so it prints them with the Python, lxml and CPU it ran on and asserts nothing
but correctness (every message must survive an encode/decode round trip, or the timing
would be of a broken codec).

The three messages are the shapes that dominate a DM server's and a device's work:

* Pkg#1, the client's session opener (MD5 Cred, MaxMsgSize/MaxObjSize, Alert 1201 and
  the DevInfo Replace): small, one per session;
* a 20-command server Pkg#2 in the style of a SCOMO deployment: the typical management
  message;
* one 64 KB large-object chunk (Replace, MoreData, Meta/Size): where the cost is the
  bulk data, not the element count.

Each figure is the median of N single-message timings (``time.perf_counter_ns``) after
a warm-up, N chosen so that one measurement takes about ``--seconds`` (0.3 s by default).
"""

from __future__ import annotations

import argparse
import base64
import gc
import math
import os
import platform
import random
import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from lxml import etree

from omadm.protocol import codec
from omadm.protocol.auth import make_chal, make_cred
from omadm.protocol.codec import Encoding
from omadm.protocol.codes import AlertCode, AuthType
from omadm.protocol.messages import (
    Add,
    Alert,
    Atomic,
    Command,
    Delete,
    Exec,
    Get,
    Item,
    Message,
    Meta,
    Replace,
    Sequence,
    Source,
    Status,
    SyncHdr,
    Target,
)

SERVER_URL = "https://dm.example.com/omadm/v1"
DEVICE_ID = "IMEI:493005100592800"
CHUNK_BYTES = 64 * 1024  # the large-object chunk: 64 KB of base64 text
DEFAULT_SECONDS = 0.3
QUICK_SECONDS = 0.03


# ------------------------------------------------------------------------------ messages


def client_pkg1() -> Message:
    """Pkg#1: the device opens a client-initiated session and reports DevInfo."""
    header = SyncHdr(
        session_id="1A2B",
        msg_id="1",
        target=Target(SERVER_URL),
        source=Source(DEVICE_ID, "device-user"),
        cred=make_cred(AuthType.MD5, "device-user", "s3cret-pw", b"server-nonce-0001"),
        meta=Meta(max_msg_size=65536, max_obj_size=1048576),
    )

    def leaf(uri: str, value: str) -> Item:
        return Item(source=Source(uri), meta=Meta(format="chr", type="text/plain"), data=value)

    return Message(
        header,
        (
            Alert("1", data=str(int(AlertCode.CLIENT_INITIATED_MGMT))),
            Replace(
                "2",
                (
                    leaf("./DevInfo/DevId", DEVICE_ID),
                    leaf("./DevInfo/Man", "Acme Devices Ltd"),
                    leaf("./DevInfo/Mod", "AX-200"),
                    leaf("./DevInfo/DmV", "1.2"),
                    leaf("./DevInfo/Lang", "en-US"),
                    leaf("./DevDetail/SwV", "4.2.1-build.1733"),
                    leaf("./DevDetail/FwV", "BL-2.0.7"),
                ),
            ),
        ),
        final=True,
    )


def server_pkg2() -> Message:
    """Pkg#2: statuses, then a SCOMO download-and-install with inventory and DevDetail reads."""
    header = SyncHdr(
        session_id="1A2B",
        msg_id="1",
        target=Target(DEVICE_ID),
        source=Source(SERVER_URL),
        meta=Meta(max_msg_size=65536, max_obj_size=1048576),
    )
    ids = iter(range(1, 1000))

    def cid() -> str:
        return str(next(ids))

    download = "./SCOMO/Download/App1"
    chr_meta = Meta(format="chr", type="text/plain")

    def leaf(uri: str, value: str) -> Item:
        return Item(target=Target(uri), meta=chr_meta, data=value)

    def get(uri: str) -> Get:
        return Get(cid(), (Item(target=Target(uri)),))

    commands: list[Command] = [
        Status(
            cid(),
            msg_ref="1",
            cmd_ref="0",
            cmd="SyncHdr",
            data="212",
            target_refs=(SERVER_URL,),
            source_refs=(DEVICE_ID,),
            chal=make_chal(AuthType.MD5, b"server-nonce-0002"),
        ),
        Status(cid(), msg_ref="1", cmd_ref="1", cmd="Alert", data="200"),
        Status(cid(), msg_ref="1", cmd_ref="2", cmd="Replace", data="200"),
        Add(cid(), (Item(target=Target(download), meta=Meta(format="node")),)),
        Replace(
            cid(),
            (
                leaf(f"{download}/PkgID", "com.acme.telemetry-3.1.0"),
                leaf(f"{download}/Name", "Acme Telemetry Agent"),
                leaf(f"{download}/PkgURL", "https://dl.example.com/pkg/com.acme.telemetry-3.1.0.dp"),
            ),
        ),
        Exec(
            cid(),
            (Item(target=Target(f"{download}/Operations/DownloadInstall")),),
            correlator="corr-8f2c41d0-3b7e-4f6a-9a51-2c0d6e7f9b13",
        ),
        Get(cid(), (Item(target=Target("./SCOMO/Inventory/Deployed?list=StructData")),)),
        *(
            get(f"./DevDetail/{leaf_name}")
            for leaf_name in ("SwV", "FwV", "HwV", "DevTyp", "OEM", "LrgObj", "URI/MaxDepth")
        ),
        Replace(cid(), (leaf("./DevDetail/Ext/Conf/LogLevel", "warning"),)),
        Replace(cid(), (leaf("./DevDetail/Ext/Conf/ReportInterval", "3600"),)),
        Replace(cid(), (leaf("./DevDetail/Ext/Conf/Region", "eu-west"),)),
    ]
    commands.append(
        Atomic(
            cid(),
            (
                Replace(cid(), (leaf("./DMAcc/acme/AppAddr/srv/Addr", SERVER_URL),)),
                Replace(cid(), (leaf("./DMAcc/acme/AppAuth/cli/AAuthName", "device-user"),)),
            ),
        )
    )
    commands.append(
        Sequence(
            cid(),
            (
                Delete(cid(), (Item(target=Target("./SCOMO/Download/Old1")),)),
                get("./SCOMO/Inventory/Deployed/App0/State"),
            ),
        )
    )
    commands.append(get("./DevInfo/Ext/Battery"))
    assert len(commands) == 20, len(commands)
    return Message(header, tuple(commands), final=True)


def large_object_chunk() -> Message:
    """A non-last chunk of a large object: Replace with Meta/Size, MoreData and 64 KB of b64."""
    rng = random.Random(1733)
    text = base64.b64encode(rng.randbytes(CHUNK_BYTES * 3 // 4)).decode("ascii")
    assert len(text) == CHUNK_BYTES
    header = SyncHdr(session_id="1A2B", msg_id="3", target=Target(DEVICE_ID), source=Source(SERVER_URL))
    item = Item(
        target=Target("./SCOMO/Inventory/Delivered/App1/Data"),
        meta=Meta(format="b64", type="application/vnd.oma.scomo.dp", size=5 * CHUNK_BYTES),
        data=text,
        more_data=True,
    )
    commands = (
        Status("1", msg_ref="2", cmd_ref="0", cmd="SyncHdr", data="200"),
        Replace("2", (item,)),
    )
    return Message(header, commands, final=False)  # a package split across messages has no Final yet


# ------------------------------------------------------------------------------- timing


@dataclass(frozen=True, slots=True)
class Row:
    """One message in one encoding: its size and the median encode/decode times.

    ``runs`` is the smaller of the two sample counts, to show what each median rests on.
    """

    name: str
    encoding: Encoding
    size: int
    encode_ns: float
    decode_ns: float
    runs: int


def median_ns(func: Callable[[], object], seconds: float) -> tuple[float, int]:
    """Median duration of one call, over as many calls as fit in ``seconds`` (at least 5).

    Single-call timings (not a loop divided by N) give a median that one GC pause or
    scheduler hiccup cannot move; every call here takes tens of microseconds or more,
    far above ``perf_counter_ns`` resolution.
    """
    # Warm up (caches, lxml parser per thread, branch predictors) and estimate one call.
    start = time.perf_counter_ns()
    warm = 0
    while warm < 3 or time.perf_counter_ns() - start < seconds * 1e9 / 10:
        func()
        warm += 1
    estimate = (time.perf_counter_ns() - start) / warm
    runs = max(5, min(200_000, math.ceil(seconds * 1e9 / estimate)))
    samples: list[int] = []
    gc.collect()
    for _ in range(runs):
        t0 = time.perf_counter_ns()
        func()
        samples.append(time.perf_counter_ns() - t0)
    return statistics.median(samples), runs


def measure(name: str, message: Message, encoding: Encoding, seconds: float) -> Row:
    data = codec.encode(message, encoding)
    decoded, found = codec.decode(data)
    if decoded != message or found is not encoding:
        raise SystemExit(f"{name} ({encoding}): the round trip changed the message; not benchmarking it")
    encode_ns, encode_runs = median_ns(lambda: codec.encode(message, encoding), seconds)
    decode_ns, decode_runs = median_ns(lambda: codec.decode(data), seconds)
    return Row(name, encoding, len(data), encode_ns, decode_ns, min(encode_runs, decode_runs))


# ------------------------------------------------------------------------------ report


def cpu_name() -> str:
    """``platform.processor()`` is often empty on Linux; /proc/cpuinfo names the model."""
    name = platform.processor()
    if name and name != platform.machine():
        return name
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.exists():
        for line in cpuinfo.read_text(errors="replace").splitlines():
            key, _, value = line.partition(":")
            if key.strip() in ("model name", "Hardware", "cpu model"):
                return value.strip()
    return name or "unknown CPU"


def cpu_count() -> int:
    """CPUs this process may run on (what ``nproc`` prints), not the machine's total."""
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1


def environment() -> list[str]:
    lxml_version = ".".join(map(str, etree.LXML_VERSION))
    libxml2 = ".".join(map(str, etree.LIBXML_VERSION))
    return [
        f"Python  {platform.python_implementation()} {platform.python_version()} ({sys.platform})",
        f"lxml    {lxml_version} (libxml2 {libxml2})",
        f"machine {platform.machine()}, {cpu_name()}, nproc {cpu_count()}",
    ]


def table(rows: list[Row]) -> list[str]:
    header = (
        "message",
        "encoding",
        "bytes",
        "encode µs",
        "decode µs",
        "encode msg/s",
        "decode msg/s",
        "runs",
    )
    cells = [
        (
            row.name,
            row.encoding.value.upper(),
            f"{row.size:,}",
            f"{row.encode_ns / 1e3:,.1f}",
            f"{row.decode_ns / 1e3:,.1f}",
            f"{1e9 / row.encode_ns:,.0f}",
            f"{1e9 / row.decode_ns:,.0f}",
            f"{row.runs:,}",
        )
        for row in rows
    ]
    widths = [max(len(line[i]) for line in (header, *cells)) for i in range(len(header))]

    def fmt(line: tuple[str, ...]) -> str:
        # Text columns left-aligned, numbers right-aligned.
        return "  ".join(
            v.ljust(w) if i < 2 else v.rjust(w) for i, (v, w) in enumerate(zip(line, widths, strict=True))
        )

    rule = "  ".join("-" * w for w in widths)
    return [fmt(header), rule, *(fmt(line) for line in cells)]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--quick", action="store_true", help=f"about {QUICK_SECONDS} s per measurement")
    parser.add_argument(
        "--seconds", type=float, default=None, help=f"target time per measurement (default {DEFAULT_SECONDS})"
    )
    args = parser.parse_args(argv)
    seconds: float = args.seconds or (QUICK_SECONDS if args.quick else DEFAULT_SECONDS)

    messages = {
        "Pkg#1 client init": client_pkg1(),
        "Pkg#2 20 commands": server_pkg2(),
        "64 KB LO chunk": large_object_chunk(),
    }
    for line in environment():
        print(line)
    print(f"median of N single-message timings, ~{seconds:g} s per measurement")
    print()
    rows = [
        measure(name, message, encoding, seconds)
        for name, message in messages.items()
        for encoding in (Encoding.XML, Encoding.WBXML)
    ]
    for line in table(rows):
        print(line)
    return 0


if __name__ == "__main__":
    sys.exit(main())
