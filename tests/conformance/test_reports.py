"""The conformance reports: JUnit XML read back, Markdown and HTML with hostile text, the terminal.

The texts below are what a hostile or broken implementation could send: markup, script tags,
an XML close tag, CDATA terminators, control characters that XML 1.0 cannot carry, pipes and
backtick runs that would break Markdown tables and code fences.
"""

from __future__ import annotations

import io
import re
import xml.etree.ElementTree as ET
from html.parser import HTMLParser
from pathlib import Path

import pytest
from rich.console import Console

from omadm.conformance.ics import Ics
from omadm.conformance.model import Case, CaseResult, Exchange, Role, Verdict
from omadm.conformance.reports import (
    MAX_EXCHANGE_CHARS,
    ReportError,
    RichProgress,
    exit_status,
    print_summary,
    render_markdown,
    write_all,
)

HOSTILE = "<script>alert('x')</script> ]]> </failure> & | ``` \x00\x1b[31m\x07 done"


def _case(id: str, *, title: str = "a case", rule: str = "oma-dm-1.2.md §6") -> Case:
    return Case(
        id=id,
        title=title,
        rule=rule,
        role=Role.DEVICE,
        steps=("send a Get",),
        pass_criteria=("Status 200",),
    )


def _results() -> list[CaseResult]:
    failing = _case("DM-CLI-HDR-001", title=f"title {HOSTILE}", rule=f"rule {HOSTILE}")
    exchanges = [
        Exchange("sent", "<SyncML><SyncHdr/></SyncML>", 0.01),
        Exchange("received", f"<SyncML>{HOSTILE}</SyncML>", 0.25),
    ]
    return [
        CaseResult(_case("DM-CLI-SES-001"), Verdict.PASS, "xml", seconds=0.5),
        CaseResult(
            failing,
            Verdict.FAIL,
            "xml",
            expected=f"Status 404 {HOSTILE}",
            seen=f"Status 500 {HOSTILE}",
            exchanges=exchanges,
            seconds=1.25,
        ),
        CaseResult(_case("SCOMO-DEV-DL-001"), Verdict.INCONCLUSIVE, "wbxml", reason="the device never came"),
        CaseResult(
            _case("DM-CLI-AUTH-003"), Verdict.NOT_APPLICABLE, "wbxml", reason="the ICS does not claim 'hmac'"
        ),
        CaseResult(_case("DM-CLI-SES-001"), Verdict.PASS, "wbxml", seconds=0.25),
    ]


def test_junit_xml_reads_back_with_one_testcase_per_case_and_encoding(tmp_path: Path) -> None:
    paths = write_all(
        _results(), tmp_path / "out", title="Acme client", ics=Ics(name="Acme", claimed={"wbxml"})
    )
    assert [p.name for p in paths] == ["junit.xml", "report.md", "report.html"]
    assert all(p.is_file() for p in paths)
    root = ET.parse(paths[0]).getroot()
    assert root.tag == "testsuites"
    assert (root.get("tests"), root.get("failures"), root.get("errors"), root.get("skipped")) == (
        "5",
        "1",
        "1",
        "1",
    )
    suites = root.findall("testsuite")
    assert [s.get("name") for s in suites] == ["Acme client (xml)", "Acme client (wbxml)"]
    names = [tc.get("name") for tc in root.iter("testcase")]
    assert names == [
        "DM-CLI-SES-001 [xml]",
        "DM-CLI-HDR-001 [xml]",
        "SCOMO-DEV-DL-001 [wbxml]",
        "DM-CLI-AUTH-003 [wbxml]",
        "DM-CLI-SES-001 [wbxml]",
    ]
    by_name = {tc.get("name"): tc for tc in root.iter("testcase")}
    passed = by_name["DM-CLI-SES-001 [xml]"]
    assert list(passed) == [] and passed.get("time") == "0.500"
    failure = by_name["DM-CLI-HDR-001 [xml]"].find("failure")
    assert failure is not None
    message = failure.get("message") or ""
    assert message.startswith("expected Status 404 <script>")
    text = failure.text or ""
    # the rule, expected, seen and both messages, hostile text intact apart from the control characters
    assert f"rule: rule {HOSTILE[:40]}" in text
    assert "expected: Status 404 <script>alert('x')</script> ]]> </failure>" in text
    assert "seen: Status 500" in text
    assert "<SyncML><SyncHdr/></SyncML>" in text
    assert "\\x00\\x1b[31m\\x07 done" in text and "\x00" not in text
    error = by_name["SCOMO-DEV-DL-001 [wbxml]"].find("error")
    assert error is not None and error.get("type") == "inconclusive"
    assert error.get("message") == "inconclusive: the device never came"
    skipped = by_name["DM-CLI-AUTH-003 [wbxml]"].find("skipped")
    assert skipped is not None and skipped.get("message") == "not applicable: the ICS does not claim 'hmac'"
    properties = {p.get("name"): p.get("value") for p in suites[0].iter("property")}
    assert properties == {"encoding": "xml", "implementation": "Acme: claims wbxml"}


class _Collect(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.tags: list[str] = []
        self.text: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append(tag)

    def handle_data(self, data: str) -> None:
        self.text.append(data)


def test_html_is_self_contained_and_escapes_hostile_text(tmp_path: Path) -> None:
    write_all(_results(), tmp_path, title=f"run {HOSTILE}", ics=Ics())
    page = (tmp_path / "report.html").read_text(encoding="utf-8")
    parser = _Collect()
    parser.feed(page)
    assert "script" not in parser.tags  # only escaped, never a tag
    assert not re.search(r"""(?:src|href)\s*=\s*["']?(?:https?:)?//""", page)  # nothing from elsewhere
    assert "<link" not in page
    text = "".join(parser.text)
    assert "<script>alert('x')</script>" in text  # shown to the reader as text
    assert "Status 500" in text and "Status 404" in text and "<SyncML><SyncHdr/></SyncML>" in text
    assert "no ICS file given" in text
    assert "\x00" not in page and "\x1b" not in page
    # the summary counts
    assert re.search(r'<td class="fail">fail</td><td>1</td>', page)
    assert re.search(r'<td class="pass">pass</td><td>2</td>', page)
    # a failure's row links to its section
    assert 'href="#DM-CLI-HDR-001-xml"' in page and 'id="DM-CLI-HDR-001-xml"' in page


def test_markdown_keeps_tables_and_fences_intact_against_hostile_text() -> None:
    md = render_markdown(_results(), title="run", ics=Ics(name="Acme", version="1", claimed=set()))
    assert "Implementation: Acme 1: claims none." in md
    assert "| fail | 1 |" in md and "| not applicable | 1 |" in md and "| total | 5 |" in md
    rows = [line for line in md.splitlines() if line.startswith("| DM-CLI-HDR-001 ")]
    assert len(rows) == 1
    # five cells: no unescaped pipe from the hostile title splits the row
    assert len(re.findall(r"(?<!\\)\|", rows[0])) == 6
    assert "<script>" not in md.split("```````")[0].split("````text")[0]
    assert "&lt;script&gt;" in rows[0]
    # the received message sits in a fence longer than the ``` inside it, unescaped
    fence = re.search(r"^(`{4,})text\n<SyncML><script>alert\('x'\)</script>", md, re.MULTILINE)
    assert fence is not None
    assert md.count(fence.group(1) + "\n") >= 1
    assert "### DM-CLI-HDR-001 [xml]: fail" in md
    assert "### SCOMO-DEV-DL-001 [wbxml]: inconclusive" in md
    assert "- reason: the device never came" in md


def test_long_messages_are_cut_with_a_note() -> None:
    result = CaseResult(
        _case("DM-CLI-LO-001"),
        Verdict.FAIL,
        "xml",
        expected="x",
        seen="y",
        exchanges=[Exchange("received", "A" * (MAX_EXCHANGE_CHARS + 10))],
    )
    md = render_markdown([result], title="run", ics=Ics())
    assert "[... 10 more characters cut from the report]" in md
    assert "A" * (MAX_EXCHANGE_CHARS + 1) not in md


def test_an_unwritable_directory_is_a_clear_error(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    with pytest.raises(ReportError, match="cannot create the report directory"):
        write_all(_results(), blocker / "reports", title="run", ics=Ics())


def test_exit_status_tells_failure_from_inconclusive() -> None:
    results = _results()
    assert exit_status(results) == 1
    assert exit_status([r for r in results if r.verdict is not Verdict.FAIL]) == 2
    assert exit_status([r for r in results if r.verdict in {Verdict.PASS, Verdict.NOT_APPLICABLE}]) == 0


def test_progress_and_summary_on_the_terminal() -> None:
    buffer = io.StringIO()
    console = Console(file=buffer, width=200, force_terminal=False, color_system=None)
    results = _results()
    with RichProgress(console, total=len(results)) as progress:
        for result in results:
            progress.started(result.case, result.encoding)
            progress.finished(result)
    print_summary(results, console)
    out = buffer.getvalue()
    assert "FAIL DM-CLI-HDR-001 [xml]" in out  # printed as it happened, markup shown as text
    assert "INCONCLUSIVE SCOMO-DEV-DL-001 [wbxml]" in out
    assert "Conformance summary" in out and "Failed and inconclusive" in out
    assert "the device never came" in out
    summary = Console(file=io.StringIO(), width=120, color_system=None)
    print_summary([r for r in results if r.verdict is Verdict.PASS], summary)
    assert "Every applicable case passed (2)." in summary.file.getvalue()  # type: ignore[attr-defined]
