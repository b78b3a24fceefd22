"""Which event loop and HTTP parser uvicorn serves with, said once at start-up.

uvicorn's ``loop="auto"`` and ``http="auto"`` (what ``omadm server`` passes) pick uvloop and
httptools when they import, and asyncio and h11 otherwise. The server extra installs both,
and they matter at fleet rates: the HTTP layer's CPU per request falls by more than half
(``bench/server.py``, bare echo; docs/benchmarks.md, "HTTP layer (issue 17)"). A server
running without them, say from a venv made by hand, works, but slower: the start-up log says
which it got, so an operator can tell.

The choice is made the way uvicorn makes it (an import that works), not from the package
list: a broken build of uvloop is as good as none.
"""

from __future__ import annotations

import importlib
import importlib.metadata
from dataclasses import dataclass

__all__ = ["HttpLayer", "http_layer"]


@dataclass(frozen=True, slots=True)
class HttpLayer:
    """The event loop and HTTP/1.1 parser uvicorn's "auto" settings choose here."""

    loop: str  # "uvloop" or "asyncio"
    http: str  # "httptools" or "h11"

    @property
    def fast(self) -> bool:
        """Both of the server extra's accelerators are in use."""
        return self.loop == "uvloop" and self.http == "httptools"

    def describe(self) -> str:
        """One log line's worth: names and versions, and what to install when one is missing."""
        text = f"event loop {_named(self.loop)}, HTTP parser {_named(self.http)}"
        if not self.fast:
            text += ' (pip install "omadm[server]" adds uvloop and httptools: less CPU per request)'
        return text


def _importable(module: str) -> bool:
    try:
        importlib.import_module(module)
    except ImportError:
        return False
    return True


def _named(name: str) -> str:
    try:
        return f"{name} {importlib.metadata.version(name)}"
    except importlib.metadata.PackageNotFoundError:  # asyncio: part of Python
        return name


def http_layer() -> HttpLayer:
    """What ``uvicorn.run(loop="auto", http="auto")`` serves with in this environment."""
    return HttpLayer(
        loop="uvloop" if _importable("uvloop") else "asyncio",
        http="httptools" if _importable("httptools") else "h11",
    )
