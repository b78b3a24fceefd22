"""Run Debian's libwbxml tools (an independent WBXML codec) on bytes, for cross-checks."""

from __future__ import annotations

import shutil
import subprocess
import tempfile
from pathlib import Path

import pytest

HAVE_LIBWBXML = shutil.which("wbxml2xml") is not None and shutil.which("xml2wbxml") is not None
needs_libwbxml = pytest.mark.skipif(
    not HAVE_LIBWBXML, reason="libwbxml2-utils (wbxml2xml, xml2wbxml) is not installed; .ci/run installs it"
)

#: The interop material lives beside the project (../shared/interop), not inside it.
INTEROP = Path(__file__).resolve().parents[1].parent / "shared" / "interop"
needs_interop = pytest.mark.skipif(
    not INTEROP.is_dir(), reason=f"interop material not found at {INTEROP} (a plain clone has none)"
)


def wbxml2xml(data: bytes) -> bytes:
    """libwbxml's XML for WBXML ``data`` (compact generation)."""
    with tempfile.TemporaryDirectory() as tmp:
        source, target = Path(tmp) / "in.wbxml", Path(tmp) / "out.xml"
        source.write_bytes(data)
        result = subprocess.run(
            ["wbxml2xml", "-m", "0", "-o", str(target), str(source)],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        if result.returncode != 0 or not target.is_file():
            raise AssertionError(f"wbxml2xml refused our WBXML: {result.stdout}{result.stderr}")
        return target.read_bytes()


def xml2wbxml(xml: bytes, *, string_table: bool = False) -> bytes:
    """libwbxml's WBXML 1.2 for XML ``xml``."""
    with tempfile.TemporaryDirectory() as tmp:
        source, target = Path(tmp) / "in.xml", Path(tmp) / "out.wbxml"
        source.write_bytes(xml)
        args = ["xml2wbxml", "-v", "1.2", "-o", str(target), str(source)]
        if not string_table:
            args.insert(1, "-n")
        result = subprocess.run(args, capture_output=True, text=True, timeout=60, check=False)
        if result.returncode != 0 or not target.is_file():
            raise AssertionError(f"xml2wbxml refused the XML: {result.stdout}{result.stderr}")
        return target.read_bytes()
