"""The SCOMO document set stays generated from the code, and every requirement has a test case.

Fails when ``docs/scomo/ETS.md``, ``traceability.md`` or a generated block of ``RD.md`` /
``TS.md`` differs from what ``python -m omadm.conformance.gen_docs`` writes now (the
catalogue, the MO or a code table changed without regenerating), and when an RD requirement
is matched by no case of the catalogue or names a TS section that does not exist.
"""

from __future__ import annotations

import importlib
import re
import shutil
import typing
from pathlib import Path

import pytest
import typer.models

from omadm.conformance import gen_docs
from omadm.conformance.model import Case, Role
from omadm.conformance.requirements import AREAS, REQUIREMENTS

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize("path", sorted(str(p) for p in gen_docs.render(ROOT)))
def test_generated_documents_are_current(path: str) -> None:
    expected = gen_docs.render(ROOT)[Path(path)]
    committed = ROOT / path
    assert committed.is_file(), f"{path} is missing: run {gen_docs.COMMAND}"
    assert committed.read_text(encoding="utf-8") == expected, f"{path} is stale: run {gen_docs.COMMAND}"


def test_every_requirement_is_verified_by_a_case_and_names_a_ts_section() -> None:
    assert gen_docs.problems(ROOT) == []


def test_requirement_ids_are_unique_and_well_formed() -> None:
    ids = [r.id for r in REQUIREMENTS]
    assert len(ids) == len(set(ids))
    for r in REQUIREMENTS:
        assert re.fullmatch(r"SCOMO-RD-[A-Z]+-\d{3}", r.id), r.id
        assert r.area in AREAS, r.id
        assert r.verified_by, r.id
        assert r.text.endswith("."), r.id


def _covering_cases() -> list[Case]:
    """One synthetic case per requirement pattern, so the check can pass on a scratch tree."""
    ids = {p.replace("*", "X-001") for r in REQUIREMENTS for p in r.verified_by}
    return [
        Case(
            id=i,
            title=f"case {i}",
            rule="scomo.md §2",
            role=Role.SERVER if "-SRV-" in i else Role.DEVICE,
            steps=("step",),
            pass_criteria=("criterion",),
        )
        for i in sorted(ids)
    ]


def test_check_names_stale_files_and_writing_makes_them_current(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / gen_docs.DOCS_DIR).mkdir(parents=True)
    for name in ("RD.md", "TS.md"):
        shutil.copy(ROOT / gen_docs.DOCS_DIR / name, tmp_path / gen_docs.DOCS_DIR / name)
    monkeypatch.setattr(gen_docs, "_catalogue", _covering_cases)
    assert gen_docs.main(["--check", "--root", str(tmp_path)]) == 1
    err = capsys.readouterr().err
    assert "stale: docs/scomo/ETS.md" in err and "stale: docs/scomo/traceability.md" in err
    assert gen_docs.main(["--root", str(tmp_path)]) == 0
    assert gen_docs.main(["--check", "--root", str(tmp_path)]) == 0
    ets = (tmp_path / gen_docs.DOCS_DIR / "ETS.md").read_text(encoding="utf-8")
    assert "### SCOMO-DEV-INV-X-001: case SCOMO-DEV-INV-X-001" in ets
    assert "- A. criterion" in ets
    # a hand edit inside a generated block is stale again
    ts = tmp_path / gen_docs.DOCS_DIR / "TS.md"
    ts.write_text(ts.read_text(encoding="utf-8").replace("| 1200 |", "| 1201 |"), encoding="utf-8")
    assert gen_docs.main(["--check", "--root", str(tmp_path)]) == 1
    assert "stale: docs/scomo/TS.md" in capsys.readouterr().err


def test_check_names_a_requirement_without_cases(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / gen_docs.DOCS_DIR).mkdir(parents=True)
    for name in ("RD.md", "TS.md"):
        shutil.copy(ROOT / gen_docs.DOCS_DIR / name, tmp_path / gen_docs.DOCS_DIR / name)
    monkeypatch.setattr(
        gen_docs, "_catalogue", lambda: [c for c in _covering_cases() if not c.id.startswith("IOP-")]
    )
    assert gen_docs.main(["--root", str(tmp_path)]) == 0  # writing only warns
    assert gen_docs.main(["--check", "--root", str(tmp_path)]) == 1
    err = capsys.readouterr().err
    assert "requirement SCOMO-RD-IOP-001 is verified by no case (patterns: IOP-*)" in err
    assert "requirement SCOMO-RD-IOP-001: pattern IOP-* matches no case" in err


def test_broken_markers_are_named() -> None:
    ctx = gen_docs._Context(cases=[], ts_sections={})
    with pytest.raises(gen_docs.GeneratedDocsError, match="unknown generated block 'nope'"):
        gen_docs.fill_blocks("<!-- generated:nope -->\n<!-- /generated:nope -->", ctx, name="X.md")
    with pytest.raises(gen_docs.GeneratedDocsError, match=r"X\.md: a <!-- generated:NAME --> marker has no"):
        gen_docs.fill_blocks("<!-- generated:alert -->\nno end", ctx, name="X.md")


def test_a_missing_hand_written_document_is_an_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert gen_docs.main(["--check", "--root", str(tmp_path)]) == 1
    assert "docs/scomo/RD.md is missing" in capsys.readouterr().err


def _runner_options(module_name: str) -> list[str]:
    """The long option names of a runner's typer command (e.g. ``--listen``)."""
    module = importlib.import_module(module_name)
    hints = typing.get_type_hints(module.command, include_extras=True)
    names: list[str] = []
    for hint in hints.values():
        for extra in getattr(hint, "__metadata__", ()):
            if isinstance(extra, typer.models.OptionInfo):
                # in Annotated[...], typer takes the first positional (the name) as the default
                decls = [*(extra.param_decls or ()), extra.default]
                names += [d for d in decls if isinstance(d, str) and d.startswith("--")]
    return names


@pytest.mark.parametrize("module_name", ["omadm.conformance.device", "omadm.conformance.server"])
def test_the_readme_documents_every_runner_option(module_name: str) -> None:
    pytest.importorskip(module_name)
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    section = readme.split("## Conformance: testing your DM client or server", 1)[1].split("\n## ", 1)[0]
    options = _runner_options(module_name)
    assert options, f"{module_name}.command declares no options"
    missing = [o for o in options if f"`{o}" not in section and f" {o} " not in section]
    assert not missing, f"README's conformance section does not mention {', '.join(missing)}"
