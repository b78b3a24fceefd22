"""The reports of a conformance run: JUnit XML, Markdown and HTML, live progress and a summary.

``write_all`` writes three files into one directory, each for its reader:

* ``junit.xml`` for CI: one ``testsuite`` per encoding and one ``testcase`` per case and
  encoding (``DM-CLI-AUTH-001 [wbxml]``). A failure is a ``<failure>`` whose message is
  "expected ...; seen ..." and whose text holds the rule, what was expected, what was seen and
  the exchanged messages. "not applicable" is ``<skipped>`` with its reason. "inconclusive" is
  an ``<error type="inconclusive">``: the run did not show that the implementation conforms,
  so CI must not go green on it, and it is still told apart from a failure (a broken rule).
* ``report.md`` for a review or an issue: summary counts, one line per case and encoding, and
  a section per failure or inconclusive case with the rule, expected, seen and the messages.
* ``report.html``, the same as one self-contained page (inline CSS, no script, no CDN), so it
  opens from a CI artefact or an e-mail attachment.

Everything the implementation under test sent is hostile text: it is escaped for each format
(XML and HTML entities; Markdown table cells and code fences that no backtick run in the text
can close; characters XML 1.0 cannot carry are written as ``\\xNN``). A message longer than
:data:`MAX_EXCHANGE_CHARS` is cut in the reports (the note says how much), so a run with large
objects still gives a report a browser opens.
"""

from __future__ import annotations

import html
import re
import time
import xml.etree.ElementTree as ET
from collections import Counter
from collections.abc import Iterable, Sequence
from pathlib import Path
from types import TracebackType

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table
from rich.text import Text

from .ics import Ics
from .model import Case, CaseResult, Exchange, Verdict

__all__ = [
    "MAX_EXCHANGE_CHARS",
    "ReportError",
    "RichProgress",
    "counts",
    "exit_status",
    "print_summary",
    "render_html",
    "render_junit",
    "render_markdown",
    "write_all",
]

#: A message longer than this many characters is cut in the reports (the start is kept).
MAX_EXCHANGE_CHARS = 64 * 1024

#: Verdicts in the order every report lists them.
VERDICT_ORDER: tuple[Verdict, ...] = (
    Verdict.PASS,
    Verdict.FAIL,
    Verdict.INCONCLUSIVE,
    Verdict.NOT_APPLICABLE,
)


class ReportError(OSError):
    """A report file could not be written; the message names the file and the reason."""


def counts(results: Iterable[CaseResult]) -> dict[Verdict, int]:
    """How many results have each verdict (every verdict present, zero included)."""
    found = Counter(r.verdict for r in results)
    return {verdict: found.get(verdict, 0) for verdict in VERDICT_ORDER}


def exit_status(results: Iterable[CaseResult]) -> int:
    """0 when every applicable case passed, 1 when one failed, 2 when none failed but one was inconclusive.

    The runners exit with this, so a script tells "the implementation broke a rule" from "the
    run could not decide" (a device that never came, an operator who did not answer).
    """
    tally = counts(results)
    if tally[Verdict.FAIL]:
        return 1
    if tally[Verdict.INCONCLUSIVE]:
        return 2
    return 0


# --------------------------------------------------------------------------------------------
# Text hygiene shared by the formats

# Characters XML 1.0 cannot hold at all (not even as references): C0 controls other than tab,
# newline and carriage return, lone surrogates, U+FFFE and U+FFFF.
_XML_ILLEGAL = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\ud800-\udfff\ufffe\uffff]")


def _visible(text: str) -> str:
    """``text`` with the characters XML cannot carry written as ``\\xNN`` / ``\\uNNNN``."""

    def spell(match: re.Match[str]) -> str:
        code = ord(match.group())
        return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}"

    return _XML_ILLEGAL.sub(spell, text)


def _cut(text: str) -> str:
    if len(text) <= MAX_EXCHANGE_CHARS:
        return text
    left = len(text) - MAX_EXCHANGE_CHARS
    return f"{text[:MAX_EXCHANGE_CHARS]}\n[... {left} more characters cut from the report]"


def _exchange_heading(exchange: Exchange) -> str:
    who = "omadm (the tester)" if exchange.direction == "sent" else "the implementation under test"
    return f"{exchange.direction} at {exchange.at:.3f} s, by {who}"


def _why(result: CaseResult) -> str:
    """One line saying why a result is not a pass (empty for a pass)."""
    if result.verdict is Verdict.FAIL:
        return f"expected {result.expected}; seen {result.seen}"
    return result.reason


def _case_name(result: CaseResult) -> str:
    return f"{result.case.id} [{result.encoding}]"


def _ics_line(ics: Ics) -> str:
    name = f"{ics.name} {ics.version}".strip()
    if ics.claimed is None:
        return f"{name}: no ICS file given, so every optional capability counts as claimed"
    claimed = ", ".join(sorted(ics.claimed)) or "none"
    return f"{name}: claims {claimed}"


def _encodings(results: Sequence[CaseResult]) -> list[str]:
    return list(dict.fromkeys(r.encoding for r in results))


# --------------------------------------------------------------------------------------------
# JUnit XML


def _failure_text(result: CaseResult) -> str:
    lines = [
        f"case: {result.case.id}: {result.case.title}",
        f"rule: {result.case.rule}",
        f"encoding: {result.encoding}",
    ]
    if result.verdict is Verdict.FAIL:
        lines += [f"expected: {result.expected}", f"seen: {result.seen}"]
    if result.reason:
        lines.append(f"reason: {result.reason}")
    for exchange in result.exchanges:
        lines += ["", f"--- {_exchange_heading(exchange)} ---", _cut(exchange.text)]
    return _visible("\n".join(lines))


def render_junit(results: Sequence[CaseResult], *, title: str, ics: Ics) -> bytes:
    """The JUnit XML document (UTF-8, with declaration) for ``results``."""
    tally = counts(results)
    root = ET.Element(
        "testsuites",
        {
            "name": _visible(title),
            "tests": str(len(results)),
            "failures": str(tally[Verdict.FAIL]),
            "errors": str(tally[Verdict.INCONCLUSIVE]),
            "skipped": str(tally[Verdict.NOT_APPLICABLE]),
            "time": f"{sum(r.seconds for r in results):.3f}",
        },
    )
    for encoding in _encodings(results):
        mine = [r for r in results if r.encoding == encoding]
        mine_tally = counts(mine)
        suite = ET.SubElement(
            root,
            "testsuite",
            {
                "name": _visible(f"{title} ({encoding})"),
                "tests": str(len(mine)),
                "failures": str(mine_tally[Verdict.FAIL]),
                "errors": str(mine_tally[Verdict.INCONCLUSIVE]),
                "skipped": str(mine_tally[Verdict.NOT_APPLICABLE]),
                "time": f"{sum(r.seconds for r in mine):.3f}",
                "timestamp": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime()),
            },
        )
        properties = ET.SubElement(suite, "properties")
        ET.SubElement(properties, "property", {"name": "encoding", "value": encoding})
        ET.SubElement(properties, "property", {"name": "implementation", "value": _visible(_ics_line(ics))})
        for result in mine:
            _junit_case(suite, result)
    ET.indent(root)
    return bytes(ET.tostring(root, encoding="utf-8", xml_declaration=True)) + b"\n"


def _junit_case(suite: ET.Element, result: CaseResult) -> None:
    testcase = ET.SubElement(
        suite,
        "testcase",
        {
            "name": _visible(_case_name(result)),
            "classname": f"omadm.conformance.{result.case.role.value}.{result.encoding}",
            "time": f"{result.seconds:.3f}",
        },
    )
    if result.verdict is Verdict.FAIL:
        failure = ET.SubElement(testcase, "failure", {"message": _visible(_why(result)), "type": "fail"})
        failure.text = _failure_text(result)
    elif result.verdict is Verdict.INCONCLUSIVE:
        error = ET.SubElement(
            testcase, "error", {"message": _visible(f"inconclusive: {result.reason}"), "type": "inconclusive"}
        )
        error.text = _failure_text(result)
    elif result.verdict is Verdict.NOT_APPLICABLE:
        ET.SubElement(testcase, "skipped", {"message": _visible(f"not applicable: {result.reason}")})


# --------------------------------------------------------------------------------------------
# Markdown


def _md_cell(text: str) -> str:
    """Text for a Markdown table cell: HTML-escaped, pipes escaped, one line."""
    flat = " ".join(_visible(text).split())
    return html.escape(flat, quote=False).replace("|", "\\|")


def _md_text(text: str) -> str:
    """Running text outside code: HTML-escaped so a renderer shows markup instead of running it."""
    return html.escape(_visible(text), quote=False)


def _fence(text: str) -> str:
    """A code block whose fence is longer than any backtick run inside ``text``."""
    longest = max((len(run) for run in re.findall(r"`+", text)), default=0)
    fence = "`" * max(3, longest + 1)
    return f"{fence}text\n{text}\n{fence}"


def render_markdown(results: Sequence[CaseResult], *, title: str, ics: Ics) -> str:
    """The Markdown report."""
    tally = counts(results)
    out = [
        f"# {_md_text(title)}",
        "",
        f"Implementation: {_md_text(_ics_line(ics))}.",
        "",
        "| verdict | count |",
        "| --- | ---: |",
        *(f"| {verdict.value} | {tally[verdict]} |" for verdict in VERDICT_ORDER),
        f"| total | {len(results)} |",
        "",
        "## Cases",
        "",
        "| case | encoding | verdict | title | why |",
        "| --- | --- | --- | --- | --- |",
    ]
    for r in results:
        why = "" if r.verdict is Verdict.PASS else _md_cell(_why(r))
        out.append(
            f"| {_md_cell(r.case.id)} | {r.encoding} | {r.verdict.value} | {_md_cell(r.case.title)} | {why} |"
        )
    details = [r for r in results if r.verdict in {Verdict.FAIL, Verdict.INCONCLUSIVE}]
    if details:
        out += ["", "## Failures and inconclusive cases"]
    for r in details:
        out += ["", f"### {_md_text(_case_name(r))}: {r.verdict.value}", ""]
        out.append(f"- title: {_md_text(r.case.title)}")
        out.append(f"- rule: {_md_text(r.case.rule)}")
        if r.verdict is Verdict.FAIL:
            out.append(f"- expected: {_md_text(r.expected)}")
            out.append(f"- seen: {_md_text(r.seen)}")
        if r.reason:
            out.append(f"- reason: {_md_text(r.reason)}")
        for exchange in r.exchanges:
            out += ["", f"{_exchange_heading(exchange)}:", "", _fence(_visible(_cut(exchange.text)))]
    return "\n".join(out) + "\n"


# --------------------------------------------------------------------------------------------
# HTML

_CSS = """
body { font-family: system-ui, sans-serif; margin: 2em; color: #222; }
table { border-collapse: collapse; margin: 1em 0; }
th, td { border: 1px solid #ccc; padding: 0.3em 0.6em; text-align: left; vertical-align: top; }
th { background: #f0f0f0; }
.pass { color: #176317; } .fail { color: #b00020; font-weight: bold; }
.inconclusive { color: #8a5a00; font-weight: bold; } .na { color: #666; }
pre { background: #f7f7f7; border: 1px solid #ddd; padding: 0.6em; overflow-x: auto;
      white-space: pre-wrap; word-break: break-all; }
dt { font-weight: bold; } dd { margin: 0 0 0.4em 1.5em; }
section { border-top: 1px solid #ccc; margin-top: 1.5em; }
"""

_CLASS = {
    Verdict.PASS: "pass",
    Verdict.FAIL: "fail",
    Verdict.INCONCLUSIVE: "inconclusive",
    Verdict.NOT_APPLICABLE: "na",
}


def _h(text: str) -> str:
    return html.escape(_visible(text), quote=True)


def _anchor(result: CaseResult) -> str:
    return re.sub(r"[^A-Za-z0-9_-]", "-", f"{result.case.id}-{result.encoding}")


def render_html(results: Sequence[CaseResult], *, title: str, ics: Ics) -> str:
    """The HTML report: one page, inline CSS, no script, nothing loaded from elsewhere."""
    tally = counts(results)
    details = [r for r in results if r.verdict in {Verdict.FAIL, Verdict.INCONCLUSIVE}]
    out = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        f"<title>{_h(title)}</title>",
        f"<style>{_CSS}</style></head><body>",
        f"<h1>{_h(title)}</h1>",
        f"<p>Implementation: {_h(_ics_line(ics))}.</p>",
        "<table><tr><th>verdict</th><th>count</th></tr>",
        *(f'<tr><td class="{_CLASS[v]}">{v.value}</td><td>{tally[v]}</td></tr>' for v in VERDICT_ORDER),
        f"<tr><td>total</td><td>{len(results)}</td></tr></table>",
        "<h2>Cases</h2>",
        "<table><tr><th>case</th><th>encoding</th><th>verdict</th><th>title</th><th>why</th></tr>",
    ]
    detailed = {id(r) for r in details}
    for r in results:
        case_cell = _h(r.case.id)
        if id(r) in detailed:
            case_cell = f'<a href="#{_anchor(r)}">{case_cell}</a>'
        why = "" if r.verdict is Verdict.PASS else _h(_why(r))
        out.append(
            f'<tr><td>{case_cell}</td><td>{_h(r.encoding)}</td><td class="{_CLASS[r.verdict]}">'
            f"{r.verdict.value}</td><td>{_h(r.case.title)}</td><td>{why}</td></tr>"
        )
    out.append("</table>")
    if details:
        out.append("<h2>Failures and inconclusive cases</h2>")
    for r in details:
        out += [
            f'<section id="{_anchor(r)}">',
            f'<h3>{_h(_case_name(r))}: <span class="{_CLASS[r.verdict]}">{r.verdict.value}</span></h3>',
            "<dl>",
            f"<dt>title</dt><dd>{_h(r.case.title)}</dd>",
            f"<dt>rule</dt><dd>{_h(r.case.rule)}</dd>",
        ]
        if r.verdict is Verdict.FAIL:
            out.append(f"<dt>expected</dt><dd>{_h(r.expected)}</dd>")
            out.append(f"<dt>seen</dt><dd>{_h(r.seen)}</dd>")
        if r.reason:
            out.append(f"<dt>reason</dt><dd>{_h(r.reason)}</dd>")
        out.append("</dl>")
        for exchange in r.exchanges:
            out.append(f"<p>{_h(_exchange_heading(exchange))}:</p><pre>{_h(_cut(exchange.text))}</pre>")
        out.append("</section>")
    out.append("</body></html>")
    return "\n".join(out) + "\n"


# --------------------------------------------------------------------------------------------
# Files


def write_all(results: list[CaseResult], directory: Path, *, title: str, ics: Ics) -> list[Path]:
    """Write ``junit.xml``, ``report.md`` and ``report.html`` into ``directory`` (created if needed).

    Returns the three paths in that order.

    Raises:
        ReportError: the directory cannot be created or a file cannot be written.
    """
    try:
        directory.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ReportError(f"{directory}: cannot create the report directory: {exc.strerror or exc}") from exc
    files: list[tuple[Path, bytes]] = [
        (directory / "junit.xml", render_junit(results, title=title, ics=ics)),
        (directory / "report.md", render_markdown(results, title=title, ics=ics).encode("utf-8")),
        (directory / "report.html", render_html(results, title=title, ics=ics).encode("utf-8")),
    ]
    for path, data in files:
        try:
            path.write_bytes(data)
        except OSError as exc:
            raise ReportError(f"{path}: cannot write the report: {exc.strerror or exc}") from exc
    return [path for path, _ in files]


# --------------------------------------------------------------------------------------------
# The terminal


class RichProgress:
    """Live progress of a run (implements :class:`omadm.conformance.runner.Progress`).

    A bar with the case running now and the running counts; each failure or inconclusive
    verdict is printed above the bar as it happens, so an operator can stop a long run early.
    Use it as a context manager around :func:`~omadm.conformance.runner.run_cases`::

        with RichProgress(console, total=len(cases) * len(encodings)) as progress:
            results = await run_cases(..., progress=progress)
    """

    def __init__(self, console: Console | None = None, *, total: int | None = None) -> None:
        self.console = console or Console(stderr=True)
        self._tally: Counter[Verdict] = Counter()
        self._progress = Progress(
            TextColumn("{task.description}", markup=False, style="bold"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("{task.fields[tally]}", markup=False),
            TimeElapsedColumn(),
            console=self.console,
            transient=False,
        )
        self._task = self._progress.add_task("starting", total=total, tally="")

    def __enter__(self) -> RichProgress:
        self._progress.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self._progress.update(self._task, description="done")
        self._progress.stop()

    def started(self, case: Case, encoding: str) -> None:
        self._progress.update(self._task, description=f"{case.id} [{encoding}]")

    def finished(self, result: CaseResult) -> None:
        self._tally[result.verdict] += 1
        tally = "  ".join(f"{v.value} {self._tally[v]}" for v in VERDICT_ORDER if self._tally[v])
        self._progress.update(self._task, advance=1, tally=tally)
        if result.verdict in {Verdict.FAIL, Verdict.INCONCLUSIVE}:
            line = Text()
            line.append(f"{result.verdict.value.upper()} ", style=_STYLE[result.verdict])
            line.append(f"{_case_name(result)} {result.case.title}: {_why(result)}")
            self._progress.console.print(line)


_STYLE = {
    Verdict.PASS: "green",
    Verdict.FAIL: "bold red",
    Verdict.INCONCLUSIVE: "bold yellow",
    Verdict.NOT_APPLICABLE: "dim",
}


def print_summary(results: Sequence[CaseResult], console: Console) -> None:
    """Counts per encoding and verdict, then every failed or inconclusive case with why."""
    table = Table(title="Conformance summary")
    table.add_column("encoding")
    for verdict in VERDICT_ORDER:
        table.add_column(verdict.value, justify="right", style=_STYLE[verdict])
    table.add_column("total", justify="right")
    for encoding in _encodings(results):
        mine = [r for r in results if r.encoding == encoding]
        tally = counts(mine)
        table.add_row(encoding, *(str(tally[v]) for v in VERDICT_ORDER), str(len(mine)))
    console.print(table)
    bad = [r for r in results if r.verdict in {Verdict.FAIL, Verdict.INCONCLUSIVE}]
    if not bad:
        applicable = sum(1 for r in results if r.verdict is Verdict.PASS)
        console.print(f"Every applicable case passed ({applicable}).", style="green")
        return
    bad_table = Table(title="Failed and inconclusive")
    for column in ("case", "verdict", "rule", "why"):
        bad_table.add_column(column, overflow="fold")
    for r in bad:
        bad_table.add_row(
            Text(_case_name(r)),
            Text(r.verdict.value, style=_STYLE[r.verdict]),
            Text(r.case.rule),
            Text(_why(r)),
        )
    console.print(bad_table)
