"""Shared constants and small helpers for the artifact tests."""

from __future__ import annotations

from pathlib import Path

#: The link secret and the fixed "now" the test apps run at (links expire relative to it).
SECRET = b"artifact-test-secret-0123456789abcdef"
NOW = 1_750_000_000
LATER = NOW + 3600
BASE = "http://dm.test"

BIG_PACKAGE_FILE_SIZE = 1 << 20


def write_big_source(root: Path, payload: bytes) -> Path:
    """A one-component package source whose only file is ``payload`` (incompressible data)."""
    (root / "com.example.big" / "data").mkdir(parents=True)
    (root / "com.example.big" / "data" / "blob.bin").write_bytes(payload)
    (root / "omadm-package.toml").write_text(
        '[package]\nid = "com.example.big"\nname = "Big"\nversion = "1.0.0"\n'
        'description = "A package large enough to be sent in many chunks."\n\n'
        '[[component]]\nid = "com.example.big"\nname = "Big"\nversion = "1.0.0"\n'
    )
    return root


class NotifyRecorder:
    """An ``on_install_notify`` hook that remembers what it was called with."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, int, str]] = []

    async def __call__(self, correlator: str, code: int, text: str) -> None:
        self.calls.append((correlator, code, text))
