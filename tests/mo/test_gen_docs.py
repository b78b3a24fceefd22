"""The DDF files in docs/mo are the generated ones: the docs cannot drift from the declarations."""

from __future__ import annotations

from pathlib import Path

import pytest

from omadm.mo import all_mos, gen_docs

DOCS = Path(__file__).resolve().parents[2] / "docs" / "mo"


def test_one_file_per_registered_mo() -> None:
    assert sorted(gen_docs.render()) == sorted(f"{mo.name}.ddf" for mo in all_mos())


@pytest.mark.parametrize("name", sorted(gen_docs.render()))
def test_the_committed_ddf_is_the_generated_one(name: str) -> None:
    committed = DOCS / name
    assert committed.is_file(), f"{committed} is missing: run scripts/gen-ddf"
    assert committed.read_bytes() == gen_docs.render()[name], f"{committed} is stale: run scripts/gen-ddf"


def test_main_writes_then_checks(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert gen_docs.main(["--check", str(tmp_path)]) == 1
    assert "stale:" in capsys.readouterr().err
    assert gen_docs.main([str(tmp_path)]) == 0
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(gen_docs.render())
    assert gen_docs.main(["--check", str(tmp_path)]) == 0
    (tmp_path / "DevInfo.ddf").write_bytes(b"edited by hand")
    assert gen_docs.main(["--check", str(tmp_path)]) == 1
    assert gen_docs.main([str(tmp_path)]) == 0
    assert "wrote" in capsys.readouterr().out
