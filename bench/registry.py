"""Registry at fleet size: the device list and campaigns over a million devices on PostgreSQL.

Run ``python bench/registry.py`` (1,000,000 devices: the fill takes 30-80 s, the timings as
long as the server needs) or ``python bench/registry.py --quick`` (100,000 devices, 5 repeats,
a campaign of ~12,700 devices with a first wave of 1,000: about two minutes).
``--source DIR`` measures another checkout (its server, migrations and CLI run with
``PYTHONPATH=DIR/src``), e.g. the "before" of a change::

    git worktree add /tmp/omadm-before <commit>
    python bench/registry.py --source /tmp/omadm-before

It is a script, not a test: it prints figures (``--json FILE`` writes them too).

1. **Fill**: a fresh PostgreSQL database (``--db-url``, dropped and created), migrated by the
   measured checkout's ``omadm server migrate``, filled by SQL (``generate_series``):
   ``--devices`` devices (99 % accepted, DevIds ``IMEI:35`` + 12 digits), tags
   ``{"ring": alpha|beta|gamma, "site": "site-<n % 50>"}`` on 60 % of them, DevInfo
   ``{"Man": "Acme", "Mod": "M100".."M500", "DmV": "1.2", "Lang": "en-US"}``, and 2.2 deployed
   components per device on average (``com.example.hello`` on 60 %, half 1.0.0 and half
   2.0.0; ``com.example.lib<k>`` for the rest). Whatever the schema adds is filled too when
   present: ``device_attributes`` (by one ``INSERT ... SELECT`` from the JSON columns, the
   devices inserted with their triggers disabled: through the triggers the fill was quadratic
   in a fresh database; ``--attributes trigger`` to use them anyway), and
   ``inventory.version_key`` (the measured checkout's ``version_key()``). Indexes and
   constraints of the bulk-filled tables are dropped and made again after. Then VACUUM
   ANALYZE and a CHECKPOINT, so that neither runs during the timings.
2. **Server**: ``omadm server`` as in production (one uvicorn worker) on a free port, an
   operator token (``omadm server token add``).
3. **Device list** (``GET /api/v1/devices``), each query once untimed then ``--repeat`` times
   (p50, p99 in ms): the first page, pages at offsets N/2 and 0.99 N, a page in the middle and
   the last page reached by following ``next_cursor``, a tag filter that matches 20 % of the
   fleet and one that matches nothing, a DevInfo filter, a component older than a version, a
   DevId prefix, and the first page with ``count=exact`` and ``count=none``. Each answer's
   ``total`` is checked against the database: a filter the server ignores (an older API)
   gives "n/a", as do 404, 405 and 422.
4. **Campaigns**: ``POST /api/v1/campaigns/preview`` (timed as the list is), then
   ``--campaign-rounds`` times create (deactivate ``com.example.hello`` on ring=beta,
   Man=Acme: 12 % of the fleet, waves ``[10000, "100%"]``), start (the first wave's jobs are
   made) and cancel.
5. **Server memory**: VmRSS of the worker every 0.2 s, its peak per phase and at the end.

Each request may take up to ``--timeout`` seconds (120): past that it is "timeout" (and the
bench waits for the server to be responsive again before it goes on); a 5xx shows its code and
the first line of the problem's detail. A query that is slow is repeated fewer times: it
stops once ``--budget`` seconds (60) are spent on it. The database is kept: ``--reuse`` times
it again without the fill (same checkout), ``--fill-only`` only fills it. The work directory
(the server's log) is removed unless a request answered 5xx or ``--keep`` is given.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import psycopg
from psycopg import sql

sys.path.insert(0, str(Path(__file__).resolve().parent))

from fleet import BenchError, Server, process_rss  # the same server process and /proc readings

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_DB_URL = "postgresql://postgres@127.0.0.1:5432/omadm_registry_bench"
HELLO = "com.example.hello"
#: The campaign's target: ring=beta (20 % of the fleet) and hello deployed (60 %) = 12 %.
TARGET: dict[str, Any] = {"tags": {"ring": "beta"}, "devinfo": {"Man": "Acme"}, "has_component": HELLO}
#: A DevId prefix: IMEI:35000000012340 .. 49, ten devices.
PREFIX = "IMEI:3500000001234"


# ============================================================================ the measured checkout


@dataclass
class Checkout:
    """Where ``omadm`` comes from: this tree (``source`` None) or ``source``/src."""

    source: Path | None

    def env(self) -> dict[str, str]:
        env = dict(os.environ)
        if self.source is not None:
            src = str(self.source / "src")
            env["PYTHONPATH"] = src + os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else src
        return env

    def python(self, *args: str, timeout: float = 600) -> str:
        """Run ``python ARGS`` with this checkout's omadm; its standard output (BenchError on failure)."""
        done = subprocess.run(
            [sys.executable, *args],
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
            env=self.env(),
        )
        if done.returncode != 0:
            raise BenchError(
                f"python {' '.join(args[:4])} ... failed ({done.returncode}):\n{done.stderr[-3000:]}"
            )
        return done.stdout

    def omadm(self, *args: str, timeout: float = 600) -> str:
        return self.python("-m", "omadm", *args, timeout=timeout)

    def describe(self) -> str:
        """Which omadm package and commit (with "+ changes" when its tree has uncommitted ones)."""
        where = self.python("-c", "import omadm, os; print(os.path.dirname(omadm.__file__))").strip()
        tree = self.source or ROOT
        try:
            commit = subprocess.run(
                ["git", "-C", str(tree), "rev-parse", "--short", "HEAD"],
                capture_output=True, text=True, check=True,
            ).stdout.strip()  # fmt: skip
            dirty = subprocess.run(
                ["git", "-C", str(tree), "status", "--porcelain", "--", "src"],
                capture_output=True, text=True, check=True,
            ).stdout.strip()  # fmt: skip
        except (OSError, subprocess.CalledProcessError):
            return where
        return f"{where} (commit {commit}{' + uncommitted changes in src/' if dirty else ''})"

    def version_keys(self, versions: Sequence[str]) -> dict[str, bytes | None] | None:
        """``version_key(v)`` of the checkout for each version, or None when it has none."""
        code = (
            "import json, sys\n"
            "try:\n"
            "    from omadm.server.version_key import version_key\n"
            "except ImportError:\n"
            "    print('null'); sys.exit()\n"
            "keys = {v: version_key(v) for v in json.loads(sys.argv[1])}\n"
            "print(json.dumps({v: None if k is None else k.hex() for v, k in keys.items()}))\n"
        )
        found = json.loads(self.python("-c", code, json.dumps(list(versions))))
        if found is None:
            return None
        return {v: None if k is None else bytes.fromhex(k) for v, k in found.items()}


# ============================================================================ the database


def conninfo(url: str, database: str | None = None) -> str:
    """A libpq URL for ``url`` (any ``+driver`` dropped), of ``database`` when given."""
    scheme, sep, rest = url.partition("://")
    if not sep:
        raise BenchError(f"--db-url must be postgresql://USER@HOST:PORT/DATABASE, not {url!r}")
    plain = "postgresql://" + rest if scheme.split("+")[0] in ("postgresql", "postgres") else url
    if database is not None:
        plain = plain.rsplit("/", 1)[0] + "/" + database
    return plain


def database_name(url: str) -> str:
    name = url.rsplit("/", 1)[1].split("?", maxsplit=1)[0]
    if not name:
        raise BenchError(f"--db-url names no database: {url!r}")
    return name


def recreate(url: str) -> None:
    name = database_name(url)
    with psycopg.connect(conninfo(url, "postgres"), autocommit=True) as admin:
        admin.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))
        admin.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))


def columns(db: psycopg.Connection[Any], table: str) -> set[str]:
    rows = db.execute(
        "SELECT column_name FROM information_schema.columns "
        "WHERE table_schema = 'public' AND table_name = %s",
        (table,),
    ).fetchall()
    return {r[0] for r in rows}


#: How the fill makes each device (``n`` from 1): one expression per column.
DEVICE_ROW = {
    "id": "n",
    "authority_pk": "1",
    "device_id": "'IMEI:35' || lpad(n::text, 12, '0')",
    "state": "CASE WHEN n % 100 = 99 THEN 'pending' ELSE 'accepted' END",
    "auth_type": "'syncml:auth-md5'",
    "username": "'dev' || n",
    "password": "'secret-' || n",
    "server_password": "'server-' || n",
    "client_nonce": "''::bytea",
    "server_nonce": "''::bytea",
    "auth_failures": "0",
    "notify_address": "''",
    "devinfo": (
        "json_build_object('Man', 'Acme', 'Mod', 'M' || (100 * (1 + (n / 7) % 5)), "
        "'DmV', '1.2', 'Lang', 'en-US')"
    ),
    "devdetail": "'{}'::json",
    "tags": (
        "CASE WHEN n % 5 < 3 THEN json_build_object("
        "'ring', (ARRAY['alpha', 'beta', 'gamma'])[1 + (n / 5) % 3], 'site', 'site-' || (n % 50)) "
        "ELSE '{}'::json END"
    ),
    "scomo_root": "'./SCOMO'",
    "created": "now() - make_interval(secs => 30 * 86400 - n * 0.5)",
    "last_contact": "now() - make_interval(secs => n % 86400)",
    "inventory_updated": "now() - make_interval(secs => n % 86400)",
    "inventory_digest": "''",
    "has_open_jobs": "false",
    "row_version": "0",
}

#: Each device's deployed components: hello on 60 % (half 1.0.0, half 2.0.0), then one or two
#: of eight libraries (1.6 on average): 2.2 rows per device.
COMPONENTS = """
    SELECT 'hello' AS node, 'com.example.hello' AS ident,
           CASE WHEN (n / 55) % 2 = 0 THEN '1.0.0' ELSE '2.0.0' END AS version
    WHERE (n / 11) % 5 < 3
    UNION ALL
    SELECT 'lib' || k, 'com.example.lib' || k, '1.' || ((n / 13 + k) % 4) || '.0'
    FROM (SELECT 1 + (n + 3 * j) % 8 AS k
          FROM generate_series(0, CASE WHEN (n / 3) % 5 IN (0, 3) THEN 0 ELSE 1 END) j) libs
"""
VERSIONS = ("1.0.0", "2.0.0", "1.1.0", "1.2.0", "1.3.0")


@contextmanager
def without_indexes(db: psycopg.Connection[Any], table: str) -> Iterator[None]:
    """Drop ``table``'s indexes, unique and foreign-key constraints (not its primary key) for a
    bulk insert, and make them again after it: one sort each instead of a million inserts."""
    constraints = db.execute(
        "SELECT conname, pg_get_constraintdef(oid) FROM pg_constraint "
        "WHERE conrelid = %s::regclass AND contype IN ('u', 'f')",
        (table,),
    ).fetchall()
    indexes = db.execute(
        "SELECT indexrelid::regclass::text, pg_get_indexdef(indexrelid) FROM pg_index "
        "WHERE indrelid = %s::regclass AND NOT indisprimary "
        "AND indexrelid NOT IN (SELECT conindid FROM pg_constraint WHERE conrelid = %s::regclass)",
        (table, table),
    ).fetchall()
    for name, _ in constraints:
        db.execute(
            sql.SQL("ALTER TABLE {} DROP CONSTRAINT {}").format(sql.Identifier(table), sql.Identifier(name))
        )
    for name, _ in indexes:
        db.execute(sql.SQL("DROP INDEX {}").format(sql.Identifier(name)))
    yield
    for _, definition in indexes:
        db.execute(definition)
    for name, definition in constraints:
        db.execute(
            sql.SQL("ALTER TABLE {} ADD CONSTRAINT {} ").format(sql.Identifier(table), sql.Identifier(name))
            + sql.SQL(definition)
        )


def bytea(value: bytes | None) -> str:
    """A bytea literal (or NULL)."""
    return "NULL" if value is None else f"'\\x{value.hex()}'::bytea"


def fill(url: str, devices: int, checkout: Checkout, attributes: str) -> dict[str, Any]:
    """Fill the migrated database by SQL; the seconds each step took."""
    took: dict[str, Any] = {}
    with psycopg.connect(conninfo(url)) as db:
        db.execute("SET synchronous_commit = off")
        db.execute("SET maintenance_work_mem = '512MB'")
        db.execute("SET work_mem = '64MB'")
        device_columns = columns(db, "devices")
        has_attributes = bool(columns(db, "device_attributes"))
        with_keys = "version_key" in columns(db, "inventory")
        required = db.execute(
            "SELECT column_name FROM information_schema.columns WHERE table_schema = 'public' "
            "AND table_name = 'devices' AND is_nullable = 'NO' AND column_default IS NULL"
        ).fetchall()
        missing = sorted(r[0] for r in required if r[0] not in DEVICE_ROW)
        if missing:
            raise BenchError(f"the devices table has columns this bench does not fill: {missing}")
        names = [c for c in DEVICE_ROW if c in device_columns]

        started = time.perf_counter()
        if has_attributes and attributes == "sql":
            db.execute("ALTER TABLE devices DISABLE TRIGGER USER")
        db.execute(
            f"INSERT INTO devices ({', '.join(names)}) "
            f"SELECT {', '.join(DEVICE_ROW[c] for c in names)} FROM generate_series(1, {int(devices)}) n"
        )
        if has_attributes and attributes == "sql":
            db.execute("ALTER TABLE devices ENABLE TRIGGER USER")
        db.execute("SELECT setval(pg_get_serial_sequence('devices', 'id'), %s)", (devices,))
        db.commit()
        took["devices_s"] = round(time.perf_counter() - started, 1)

        if has_attributes:
            started = time.perf_counter()
            row = db.execute("SELECT EXISTS (SELECT 1 FROM device_attributes)").fetchone()
            if row is not None and not row[0]:
                with without_indexes(db, "device_attributes"):
                    db.execute(
                        "INSERT INTO device_attributes (device_pk, kind, name, value) "
                        "SELECT d.id, a.kind, left(a.key, 255), left(a.value, 255) FROM devices d "
                        "CROSS JOIN LATERAL (SELECT 'tag' AS kind, key, value "
                        "FROM jsonb_each_text(d.tags::jsonb) "
                        "UNION ALL SELECT 'devinfo', key, value FROM jsonb_each_text(d.devinfo::jsonb)) a "
                        "WHERE a.value IS NOT NULL"
                    )
                took["attributes"] = "by SQL"
            else:
                took["attributes"] = "by the triggers"
            db.commit()
            took["attributes_s"] = round(time.perf_counter() - started, 1)

        started = time.perf_counter()
        key_column, key_value = "", ""
        if with_keys:
            keys = checkout.version_keys(VERSIONS)
            if keys is not None:
                key_column = ", version_key"
                cases = " ".join(f"WHEN '{v}' THEN {bytea(k)}" for v, k in keys.items())
                key_value = f", CASE c.version {cases} END"
        with without_indexes(db, "inventory"):
            db.execute(
                "INSERT INTO inventory (device_pk, kind, node, ident, name, version, state, status, "
                f"env_type, pkg_id_ref, description, updated{key_column}) "
                "SELECT n, 'deployed', c.node, c.ident, c.node, c.version, 20, 10, '', '', '', "
                f"now() - make_interval(secs => n % 86400){key_value} "
                f"FROM generate_series(1, {int(devices)}) n CROSS JOIN LATERAL ({COMPONENTS}) c"
            )
        db.commit()
        took["inventory_s"] = round(time.perf_counter() - started, 1)
        took["version_key"] = bool(key_column)

    started = time.perf_counter()
    with psycopg.connect(conninfo(url), autocommit=True) as db:
        db.execute("VACUUM (ANALYZE)")
        with suppress(psycopg.Error):  # needs a superuser: without it, PostgreSQL's own schedule
            db.execute("CHECKPOINT")
    took["vacuum_analyze_s"] = round(time.perf_counter() - started, 1)
    return took


def facts(url: str) -> dict[str, int]:
    """What the database holds, and what each timed query must find (counted by SQL)."""
    queries = {
        "devices": "SELECT count(*) FROM devices",
        "inventory": "SELECT count(*) FROM inventory",
        "ring_beta": "SELECT count(*) FROM devices WHERE tags->>'ring' = 'beta'",
        "mod_m300": "SELECT count(*) FROM devices WHERE devinfo->>'Mod' = 'M300'",
        "hello": (
            f"SELECT count(DISTINCT device_pk) FROM inventory WHERE ident = '{HELLO}' AND kind = 'deployed'"
        ),
        "hello_below_2": (
            f"SELECT count(DISTINCT device_pk) FROM inventory "
            f"WHERE ident = '{HELLO}' AND kind = 'deployed' AND version = '1.0.0'"
        ),
        "prefix": f"SELECT count(*) FROM devices WHERE device_id LIKE '{PREFIX}%'",
        "target": (
            "SELECT count(*) FROM devices d WHERE d.state = 'accepted' AND d.tags->>'ring' = 'beta' "
            "AND d.devinfo->>'Man' = 'Acme' AND EXISTS (SELECT 1 FROM inventory i "
            f"WHERE i.device_pk = d.id AND i.ident = '{HELLO}' AND i.kind = 'deployed')"
        ),
    }
    with psycopg.connect(conninfo(url)) as db:
        out = {}
        for name, query in queries.items():
            row = db.execute(query).fetchone()
            out[name] = int(row[0]) if row is not None else 0
        if columns(db, "device_attributes"):
            row = db.execute("SELECT count(*) FROM device_attributes").fetchone()
            out["device_attributes"] = int(row[0]) if row is not None else 0
        return out


# ============================================================================ the server


class Memory(threading.Thread):
    """The server's VmRSS every 0.2 s: the peak of each phase, and the last sample."""

    def __init__(self, pid: int) -> None:
        super().__init__(daemon=True)
        self.pid = pid
        self.phase = "start"
        self.peaks: dict[str, int] = {}
        self.first = process_rss(pid)
        self.last = self.first
        self._done = threading.Event()

    def run(self) -> None:
        while not self._done.wait(0.2):
            rss = process_rss(self.pid)
            if rss:
                self.last = rss
                self.peaks[self.phase] = max(self.peaks.get(self.phase, 0), rss)

    def stop(self) -> None:
        self._done.set()
        self.join(timeout=2)

    def figures(self) -> dict[str, Any]:
        mb = 2**20
        peak = max(self.peaks.values(), default=self.last)
        return {
            "start_mb": round(self.first / mb, 1),
            "peak_mb": round(peak / mb, 1),
            "final_mb": round(self.last / mb, 1),
            "peak_by_phase_mb": {k: round(v / mb, 1) for k, v in self.peaks.items()},
        }


# ============================================================================ timing


@dataclass
class Row:
    """One timed request: its samples (ms), or why there are none; a note on what it answered."""

    section: str
    label: str
    samples: list[float] = field(default_factory=list)
    outcome: str = ""  # "", "n/a (...)", "timeout", "500: ..."
    note: str = ""

    def quantile(self, q: float) -> float | None:
        if not self.samples:
            return None
        ordered = sorted(self.samples)
        return ordered[max(0, math.ceil(q * len(ordered)) - 1)]

    def figures(self) -> dict[str, Any]:
        p50, p99 = self.quantile(0.5), self.quantile(0.99)
        return {
            "section": self.section,
            "query": self.label,
            "n": len(self.samples),
            "p50_ms": None if p50 is None else round(p50, 1),
            "p99_ms": None if p99 is None else round(p99, 1),
            "outcome": self.outcome or "ok",
            "note": self.note,
            "samples_ms": [round(s, 1) for s in self.samples],
        }


class Refused(Exception):
    """The server answered something other than what was asked: why, as the table shows it."""


def first_line(response: httpx.Response) -> str:
    try:
        body = response.json()
    except ValueError:
        return response.text.strip().splitlines()[0][:150] if response.text.strip() else ""
    if isinstance(body, dict):
        detail = body.get("detail") or body.get("title") or ""
        if isinstance(detail, list):  # FastAPI's own validation errors
            detail = "; ".join(str(d.get("msg", d)) if isinstance(d, dict) else str(d) for d in detail)
        return str(detail).strip().splitlines()[0][:150] if str(detail).strip() else ""
    return str(body)[:150]


def verdict(response: httpx.Response, ms: float) -> str:
    """'' for a success, else what the table shows for it (answered after ``ms``)."""
    code = response.status_code
    if code in (200, 201):
        return ""
    if code in (400, 404, 405, 422):
        return f"n/a ({code}: {first_line(response)})"
    return f"{code} after {ms / 1000:.1f} s: {first_line(response)}"


class Bench:
    """The timings against one running server."""

    def __init__(
        self, args: argparse.Namespace, server: Server, token: str, memory: Memory, rows: list[Row]
    ) -> None:
        self.args = args
        self.server = server
        self.memory = memory
        self.api = httpx.Client(
            base_url=f"{server.url}/api/v1",
            headers={"Authorization": f"Bearer {token}"},
            timeout=httpx.Timeout(args.timeout, connect=10),
        )
        self.rows = rows
        self.extra: dict[str, Any] = {}

    def call(self, method: str, path: str, **kwargs: Any) -> tuple[httpx.Response, float]:
        started = time.perf_counter()
        response = self.api.request(method, path, **kwargs)
        return response, 1000 * (time.perf_counter() - started)

    def after_timeout(self, row: Row) -> None:
        """The server still works on what timed out: wait until it answers /health at once."""
        started = time.monotonic()
        if self.server.responsive(600):
            row.note = (row.note + "; " if row.note else "") + (
                f"server responsive again {time.monotonic() - started:.0f} s later"
            )
        else:
            row.note = (row.note + "; " if row.note else "") + "server unresponsive 10 min later"

    def timed(
        self,
        section: str,
        label: str,
        method: str,
        path: str,
        check: Callable[[Any], str] | None = None,
        **kwargs: Any,
    ) -> Row:
        """Once untimed (checked by ``check``: a note, or Refused), then up to --repeat timed requests."""
        row = Row(section, label)
        self.rows.append(row)
        spent = 0.0
        try:
            for attempt in range(self.args.repeat + 1):
                response, ms = self.call(method, path, **kwargs)
                spent += ms / 1000
                row.outcome = verdict(response, ms)
                if row.outcome:
                    row.samples.clear()
                    break
                if attempt == 0:
                    if check is not None:
                        row.note = check(response.json())
                else:
                    row.samples.append(ms)
                # Slow queries are repeated fewer times: at most --budget seconds each (one timed).
                if attempt >= 1 and spent + ms / 1000 > self.args.budget:
                    break
        except Refused as exc:
            row.outcome = f"n/a ({exc})"
        except httpx.TimeoutException:
            row.outcome = "timeout"
            self.after_timeout(row)
        except httpx.HTTPError as exc:
            row.outcome = f"error: {type(exc).__name__}: {exc}"
        self.show(row)
        return row

    def show(self, row: Row) -> None:
        figures = row.figures()
        shown = row.outcome or f"p50 {figures['p50_ms']} ms, p99 {figures['p99_ms']} ms (n={figures['n']})"
        print(
            f"  {row.section}: {row.label}: {shown}{'  [' + row.note + ']' if row.note else ''}", flush=True
        )

    # ------------------------------------------------------------------ the device list

    def device_list(self, expected: dict[str, int]) -> None:
        n = expected["devices"]
        section = "devices"
        self.memory.phase = "device list"

        def page(
            total: int | None,
            *,
            items: int | None = None,
            each: Callable[[dict[str, Any]], bool] | None = None,
        ) -> Callable[[Any], str]:
            """Checks an answer: ``total`` matches (when exact) and every item passes ``each``."""

            def check(body: Any) -> str:
                notes = []
                if not isinstance(body, dict) or "items" not in body:
                    raise Refused("no items in the answer")
                got, exact = body.get("total"), body.get("total_exact")
                if total is not None and isinstance(got, int):
                    if got == n and total != n and exact is not False:
                        raise Refused(f"filter ignored: total {got:,}")
                    if exact is False:
                        notes.append(f"total ~{got:,} (estimate; {total:,} in fact)")
                    elif got != total:
                        notes.append(f"WRONG total {got:,}, expected {total:,}")
                    else:
                        notes.append(f"total {got:,}")
                elif got is None and "total" in body:
                    notes.append("no total")
                if items is not None and len(body["items"]) != items:
                    notes.append(f"WRONG: {len(body['items'])} items, expected {items}")
                if each is not None and not all(each(item) for item in body["items"]):
                    raise Refused("filter ignored: items that do not match")
                return ", ".join(notes)

            return check

        def new_api(key: str) -> Callable[[Any], str]:
            def check(body: Any) -> str:
                if not isinstance(body, dict) or key not in body:
                    raise Refused(f"no {key} in the answer")
                return page(n)(body) + f", {key} {body[key]}"

            return check

        get = "GET"
        self.timed(
            section, "first page (limit=100)", get, "/devices", page(n, items=100), params={"limit": 100}
        )
        for offset in (n // 2, n * 99 // 100):
            self.timed(
                section,
                f"offset={offset:,}",
                get,
                "/devices",
                page(n, items=min(100, n - offset)),
                params={"limit": 100, "offset": offset},
            )
        self.cursor_pages(section, n)
        self.timed(
            section,
            "tag=ring=beta",
            get,
            "/devices",
            page(expected["ring_beta"], each=lambda d: d["tags"].get("ring") == "beta"),
            params={"tag": "ring=beta"},
        )
        self.timed(
            section, "tag=ring=nobody", get, "/devices", page(0, items=0), params={"tag": "ring=nobody"}
        )
        self.timed(
            section,
            "devinfo=Mod=M300",
            get,
            "/devices",
            page(expected["mod_m300"], each=lambda d: d["devinfo"].get("Mod") == "M300"),
            params={"devinfo": "Mod=M300"},
        )
        self.timed(
            section,
            f"component={HELLO}&version_below=2.0",
            get,
            "/devices",
            page(expected["hello_below_2"]),
            params={"component": HELLO, "version_below": "2.0"},
        )
        self.timed(
            section,
            f"q={PREFIX}",
            get,
            "/devices",
            page(expected["prefix"], each=lambda d: str(d["device_id"]).startswith(PREFIX)),
            params={"q": PREFIX},
        )
        for count in ("exact", "none"):
            self.timed(
                section,
                f"first page, count={count}",
                get,
                "/devices",
                new_api("total_exact"),
                params={"limit": 100, "count": count},
            )

    def cursor_pages(self, section: str, n: int) -> None:
        """Walk the whole list by ``next_cursor`` (limit=500, untimed), then time a page from the
        middle and the last page (limit=100) from the cursors met on the way."""
        walk: dict[str, Any] = {}
        self.extra["cursor_walk"] = walk
        middle: str | None = None
        last: str | None = None  # the cursor of the last page of 500
        seen, pages, cursor = 0, 0, None
        started = time.perf_counter()
        failure = ""
        try:
            while True:
                params: dict[str, Any] = {"limit": 500, "count": "none"}
                if cursor is not None:
                    params["cursor"] = cursor
                response, ms = self.call("GET", "/devices", params=params)
                failure = verdict(response, ms)
                if failure:
                    break
                body = response.json()
                if "next_cursor" not in body:
                    failure = "n/a (no next_cursor in the answer)"
                    break
                pages += 1
                seen += len(body["items"])
                if cursor is not None:
                    last = cursor
                if middle is None and seen >= n // 2 and body["next_cursor"]:
                    middle = body["next_cursor"]
                if not body["next_cursor"]:
                    break
                if time.perf_counter() - started > self.args.walk_limit:
                    failure = f"n/a (the walk passed {self.args.walk_limit:.0f} s at {seen:,} devices)"
                    break
                cursor = body["next_cursor"]
        except httpx.TimeoutException:
            failure = "timeout"
        walk.update(pages=pages, devices=seen, seconds=round(time.perf_counter() - started, 1))
        if not failure and seen != n:
            walk["problem"] = f"the walk saw {seen:,} devices of {n:,}"
        if pages:
            print(f"  {section}: cursor walk (limit=500, count=none, untimed): {walk} {failure}".rstrip())
        labels = ("cursor: page at the middle (limit=100)", "cursor: last page (limit=100)")
        if failure:
            for label in labels:
                row = Row(section, label, outcome=failure)
                self.rows.append(row)
                self.show(row)
            return
        # The cursor of the last page of 100: from the last cursor of 500, step by 100.
        last100 = last
        with suppress(httpx.HTTPError, KeyError, ValueError):
            for _ in range(6):
                step: dict[str, Any] = {"limit": 100, "count": "none"}
                if last100:
                    step["cursor"] = last100
                body = self.api.get("/devices", params=step).json()
                if not body["next_cursor"]:
                    break
                last100 = body["next_cursor"]

        def expect(last_page: bool) -> Callable[[Any], str]:
            def check(body: Any) -> str:
                if "next_cursor" not in body:
                    raise Refused("no next_cursor in the answer")
                got = len(body["items"])
                if last_page and body["next_cursor"]:
                    return f"WRONG: not the last page ({got} items)"
                return f"{got} items, from {body['items'][0]['device_id'] if got else '-'}"

            return check

        for label, at, is_last in ((labels[0], middle, False), (labels[1], last100, True)):
            params = {"limit": 100} | ({"cursor": at} if at else {})
            self.timed(section, label, "GET", "/devices", expect(is_last), params=params)

    # ------------------------------------------------------------------ campaigns

    def campaigns(self, expected: dict[str, int]) -> None:
        section = "campaigns"
        self.memory.phase = "campaigns"
        first_wave = self.args.first_wave
        body: dict[str, Any] = {
            "name": "registry bench",
            "kind": "deactivate",
            "component_id": HELLO,
            "target": TARGET,
            "waves": [first_wave, "100%"],
            "success_threshold": 0.9,
            "error_threshold": 0.5,
        }
        target = expected["target"]
        print(f"  {section}: target {json.dumps(TARGET)}: {target:,} devices (by SQL)")

        def preview(answer: Any) -> str:
            if not isinstance(answer, dict) or "devices" not in answer:
                raise Refused("no devices in the answer")
            devices = answer["devices"]
            wrong = "" if devices == target else f" WRONG, expected {target:,}"
            return f"devices {devices:,}{wrong}, busy {answer.get('busy')}"

        self.timed(section, "preview", "POST", "/campaigns/preview", preview, json=body)
        rows = {
            step: Row(section, label)
            for step, label in (
                ("create", f"create ({target:,} devices)"),
                ("start", f"start (wave 1: {first_wave:,} jobs)"),
                ("cancel", "cancel"),
            )
        }
        self.rows += rows.values()
        for number in range(1, self.args.campaign_rounds + 1):
            if not self.campaign_round(number, body, rows, target, first_wave):
                break
            # Another round only when this one was not too slow.
            if sum(r.samples[-1] for r in rows.values() if r.samples) / 1000 > self.args.budget:
                break
        for row in rows.values():
            if not row.samples and not row.outcome:
                row.outcome = "n/a (no campaign to act on)"
            self.show(row)

    def campaign_round(
        self, number: int, body: dict[str, Any], rows: dict[str, Row], target: int, first_wave: int
    ) -> bool:
        """Create, start and cancel one campaign; False when a step failed (then no more rounds)."""
        campaign_id = None
        for step in ("create", "start", "cancel"):
            row = rows[step]
            try:
                if step == "create":
                    response, ms = self.call(
                        "POST", "/campaigns", json=body | {"name": f"registry bench {number}"}
                    )
                else:
                    response, ms = self.call("POST", f"/campaigns/{campaign_id}/{step}")
            except httpx.TimeoutException:
                row.outcome = "timeout"
                self.after_timeout(row)
                return False
            except httpx.HTTPError as exc:
                row.outcome = f"error: {type(exc).__name__}: {exc}"
                return False
            row.outcome = verdict(response, ms)
            print(f"    round {number} {step}: {response.status_code} in {ms / 1000:.2f} s", flush=True)
            if row.outcome:
                row.samples.clear()
                return False
            row.samples.append(ms)
            answer = response.json()
            campaign_id = answer["id"]
            waves = answer.get("wave_counters", [])
            if step == "create":
                devices = sum(w.get("size", 0) for w in waves)
                wave1 = waves[0].get("size") if waves else None
                wrong = "" if devices == target else f" WRONG, expected {target:,}"
                row.note = f"{devices:,} devices{wrong}, wave 1 {wave1}"
            elif step == "start":
                running = answer.get("counters", {}).get("running")
                wrong = "" if running == first_wave else f" WRONG, expected {first_wave:,}"
                row.note = f"state {answer['state']}, {running} jobs running{wrong}"
            else:
                counted = {k: v for k, v in answer.get("counters", {}).items() if v}
                row.note = f"state {answer['state']}, devices {counted}"
        return True


# ============================================================================ main


def table(rows: list[Row]) -> list[str]:
    header = ("section", "query", "n", "p50 ms", "p99 ms", "note")
    lines_in: list[tuple[str, ...]] = []
    for row in rows:
        f = row.figures()
        if row.outcome:
            note = row.outcome + ("; " + row.note if row.note else "")
            lines_in.append((row.section, row.label, "-", "-", "-", note))
        else:
            lines_in.append(
                (row.section, row.label, str(f["n"]), f"{f['p50_ms']:,.1f}", f"{f['p99_ms']:,.1f}", row.note)
            )
    widths = [max(len(r[i]) for r in (header, *lines_in)) for i in range(len(header) - 1)]
    out = ["  ".join([*(c.ljust(w) for c, w in zip(header[:-1], widths, strict=True)), header[-1]])]
    out.append("  ".join([*("-" * w for w in widths), "----"]))
    for r in lines_in:
        cells = [
            c.rjust(w) if i in (2, 3, 4) else c.ljust(w)
            for i, (c, w) in enumerate(zip(r[:-1], widths, strict=True))
        ]
        out.append("  ".join([*cells, r[-1]]).rstrip())
    return out


def run(
    args: argparse.Namespace,
    checkout: Checkout,
    db_url: str,
    work: Path,
    *,
    figures: dict[str, Any],
    rows: list[Row],
) -> bool:
    """Fill (unless --reuse), then time (unless --fill-only) into ``rows``; whether it timed."""
    server = Server(db_url, work / "server", work / "server.log", env=checkout.env())
    if not args.reuse:
        started = time.perf_counter()
        recreate(db_url)
        print(server.admin("migrate").strip())
        migrated = time.perf_counter() - started
        print(f"fill: {args.devices:,} devices ...", flush=True)
        started = time.perf_counter()
        took = fill(db_url, args.devices, checkout, args.attributes)
        took["total_s"] = round(time.perf_counter() - started, 1)
        took["migrate_s"] = round(migrated, 1)
        figures["fill"] = took
        print(f"fill: {json.dumps(took)}")
    expected = facts(db_url)
    figures["database"] = expected
    print(f"database: {json.dumps(expected)}")
    args.devices = expected["devices"]
    if args.fill_only:
        return False
    token = server.admin("token", "add", f"registry-bench-{os.getpid()}", "--role", "operator")
    token = token.strip().splitlines()[-1]
    with running(server) as memory:
        print(f"server pid {server.pid} on {server.url}")
        bench = Bench(args, server, token, memory, rows)
        bench.device_list(expected)
        bench.campaigns(expected)
        memory.phase = "end"
        time.sleep(0.5)
        figures["server_rss"] = memory.figures()
    figures["timings"] = [r.figures() for r in bench.rows]
    figures.update(bench.extra)
    return True


@contextmanager
def running(server: Server) -> Iterator[Memory]:
    server.start()
    memory = Memory(server.pid)
    memory.start()
    try:
        yield memory
    finally:
        memory.stop()
        server.stop()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--db-url", default=DEFAULT_DB_URL, help=f"dropped and created [{DEFAULT_DB_URL}]")
    parser.add_argument("--devices", type=int, default=1_000_000)
    parser.add_argument("--repeat", type=int, default=20, help="timed requests per query [20]")
    parser.add_argument("--budget", type=float, default=60.0, help="seconds per query at most (>= 1 timed)")
    parser.add_argument("--timeout", type=float, default=120.0, help="seconds per request [120]")
    parser.add_argument("--first-wave", type=int, default=10_000, help="the campaign's first wave [10000]")
    parser.add_argument(
        "--campaign-rounds", type=int, default=3, help="create, start, cancel this many times"
    )
    parser.add_argument("--walk-limit", type=float, default=900.0, help="seconds the cursor walk may take")
    parser.add_argument("--source", type=Path, help="measure this checkout (PYTHONPATH=SOURCE/src)")
    parser.add_argument(
        "--attributes",
        choices=("trigger", "sql"),
        default="sql",
        help="fill device_attributes (when the schema has it) by SQL after the devices, their "
        "triggers disabled [sql], or by the triggers",
    )
    parser.add_argument("--reuse", action="store_true", help="time the database as it is (no fill)")
    parser.add_argument("--fill-only", action="store_true", help="fill the database, time nothing")
    parser.add_argument("--keep", action="store_true", help="keep the work directory (the server's log)")
    parser.add_argument("--json", type=Path, help="also write the figures to this file")
    parser.add_argument("--quick", action="store_true", help="100,000 devices, 5 repeats, first wave 1,000")
    args = parser.parse_args(argv)
    if args.quick:
        args.devices, args.repeat, args.first_wave = 100_000, 5, 1000
    if args.source is not None:
        args.source = args.source.resolve()
        if not (args.source / "src" / "omadm").is_dir():
            parser.error(f"--source {args.source}: no src/omadm there")
    checkout = Checkout(args.source)
    db_url = conninfo(args.db_url)
    figures: dict[str, Any] = {"devices": args.devices, "repeat": args.repeat}
    try:
        figures["omadm"] = checkout.describe()
        print("python bench/registry.py " + " ".join(sys.argv[1:] if argv is None else argv))
        load = ", ".join(f"{x:.2f}" for x in os.getloadavg())
        print(
            f"machine {platform.machine()}, nproc {os.cpu_count()}, Python {platform.python_version()}, "
            f"load average {load}"
        )
        print(f"omadm from {figures['omadm']}")
        with psycopg.connect(conninfo(db_url, "postgres")) as admin:
            row = admin.execute("SHOW server_version").fetchone()
            figures["postgresql"] = row[0] if row else "?"
        print(f"PostgreSQL {figures['postgresql']}, database {database_name(db_url)}")
        work = Path(tempfile.mkdtemp(prefix="omadm-registry-"))
        rows: list[Row] = []
        try:
            timed = run(args, checkout, db_url, work, figures=figures, rows=rows)
        finally:
            failed = any(r.outcome.startswith("5") for r in rows)
            if args.keep or failed:
                print(f"kept {work} (the server's log: server.log)")
            else:
                shutil.rmtree(work, ignore_errors=True)
        if not timed:
            return 0
    except BenchError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print()
    print(f"{args.devices:,} devices, {args.repeat} repeats (fewer past {args.budget:.0f} s per query)")
    for line in table(rows):
        print(line)
    rss = figures["server_rss"]
    by_phase = ", ".join(f"{k} {v}" for k, v in rss["peak_by_phase_mb"].items())
    print(f"server RSS: start {rss['start_mb']} MB, peak {rss['peak_mb']} MB ({by_phase}), ", end="")
    print(f"final {rss['final_mb']} MB")
    print(f"load average at the end {', '.join(f'{x:.2f}' for x in os.getloadavg())}")
    if args.json is not None:
        args.json.write_text(json.dumps(figures, indent=2) + "\n")
        print(f"figures written to {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
