"""The server's log lines: text for a terminal, or one JSON object per line for a collector.

``--log-format json`` (``[server] log_format = "json"``) makes every line a JSON object
(``ts``, ``level``, ``logger``, ``message``, ``pid``, ``exc`` when there is a traceback)
that a log pipeline (journald, Loki, Elasticsearch) can index without parsing prose.

A line also names the **device**, **session** and **job** it is about when they are known:
the DM endpoint sets :data:`DEVICE` and :data:`SESSION` when a message names its device and
its session is found, and the job code sets :data:`JOB` while it sends or settles a job.
They are context variables: each request runs in its own asyncio task, whose context is a
copy, so what one message sets is never seen by another message's lines. The text format
shows them too (``[device=... session=... job=...]``), so both formats say the same.
"""

from __future__ import annotations

import json
import logging
import os
import sys
from contextvars import ContextVar
from datetime import UTC, datetime

__all__ = ["DEVICE", "FORMATS", "JOB", "SESSION", "JsonFormatter", "TextFormatter", "configure"]

#: The DM device (its DevID, the SyncHdr's Source) the current message comes from.
DEVICE: ContextVar[str | None] = ContextVar("omadm_device", default=None)
#: The DM session's token (the ``s=`` of its RespURI) of the current message.
SESSION: ContextVar[str | None] = ContextVar("omadm_session", default=None)
#: The job being sent or settled.
JOB: ContextVar[int | None] = ContextVar("omadm_job", default=None)

FORMATS = ("text", "json")
_HANDLER = "omadm-server"  # the name of the handler configure() installs
_TEXT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


def _context() -> dict[str, str | int]:
    found: dict[str, str | int] = {}
    device, session, job = DEVICE.get(), SESSION.get(), JOB.get()
    if device is not None:
        found["device"] = device
    if session is not None:
        found["session"] = session
    if job is not None:
        found["job"] = job
    return found


class JsonFormatter(logging.Formatter):
    """One JSON object per record, on one line (a traceback goes into ``exc``, escaped)."""

    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, object] = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
            "pid": record.process or os.getpid(),
        }
        line.update(_context())
        if record.exc_info:
            line["exc"] = self.formatException(record.exc_info)
        elif record.exc_text:
            line["exc"] = record.exc_text
        if record.stack_info:
            line["stack"] = self.formatStack(record.stack_info)
        return json.dumps(line, ensure_ascii=False, default=str)


class TextFormatter(logging.Formatter):
    """The terminal's format, with ``[device=... session=... job=...]`` when known."""

    def __init__(self) -> None:
        super().__init__(_TEXT)

    def format(self, record: logging.LogRecord) -> str:
        text = super().format(record)
        context = _context()
        if not context:
            return text
        head, sep, tail = text.partition("\n")  # after the first line: not inside a traceback
        tags = " ".join(f"{k}={v}" for k, v in context.items())
        return f"{head} [{tags}]{sep}{tail}"


def configure(log_format: str = "text", level: int = logging.INFO) -> None:
    """Send the root logger's lines to stderr in ``log_format``; replaces earlier handlers.

    Replacing (not adding) matters: the serving process configures logging before uvicorn
    starts, and each worker again when it builds its app; lines must not come out twice.
    Only the handler this function installed is replaced: others (a test runner's capture,
    an embedding program's) stay.
    """
    if log_format not in FORMATS:
        raise ValueError(f"log format must be one of {', '.join(FORMATS)}, not {log_format!r}")
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter() if log_format == "json" else TextFormatter())
    handler.set_name(_HANDLER)
    root = logging.getLogger()
    for old in list(root.handlers):
        if old.get_name() == _HANDLER:
            root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level)
    # Alembic narrates every start (its plug-ins, the DDL mode, each step); the server says in
    # one line what it did to the schema instead. Its warnings and errors still show.
    logging.getLogger("alembic").setLevel(max(level, logging.WARNING))
    # httpx narrates every request at INFO (Package #0 over HTTP, the S3 probe): the server's
    # own lines say what was sent and why; httpx's warnings still show.
    logging.getLogger("httpx").setLevel(max(level, logging.WARNING))
