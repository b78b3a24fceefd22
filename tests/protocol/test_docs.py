"""Documentation that is derived from code stays in step with it."""

from pathlib import Path

from omadm.protocol.session import TRANSITIONS

DOC = Path(__file__).resolve().parents[2] / "docs" / "protocol-core.md"


def test_the_state_table_in_the_docs_is_the_one_in_the_code() -> None:
    text = DOC.read_text(encoding="utf-8")
    table = text.split("<!-- transitions:start -->", 1)[1].split("<!-- transitions:end -->", 1)[0]
    rows = [line.strip("| ").split(" | ") for line in table.strip().splitlines()[2:]]
    documented = {(state, step): nxt for state, step, nxt in rows}
    in_code = {(state.value, step): nxt.value for (state, step), nxt in TRANSITIONS.items()}
    assert documented == in_code
