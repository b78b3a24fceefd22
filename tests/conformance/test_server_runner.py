"""The server runner's parts without a server: trigger files, placeholders, queries, options, the catalogue.

The runner against a real server is ``test_server_e2e``; here each part is checked on its own,
including every error a user can make in a trigger file or on the command line.
"""

from __future__ import annotations

import asyncio
import json
import sys
from pathlib import Path

import httpx
import pytest

from omadm.conformance.model import Role, cases_for, select
from omadm.conformance.server import ServerOptions, exit_code
from omadm.conformance.server_harness import Reply, ServerTarget
from omadm.conformance.server_triggers import (
    KNOWN_TRIGGERS,
    TriggerError,
    TriggerRunner,
    extract,
    fill,
    load_triggers,
)
from omadm.protocol.codec import Encoding, encode
from omadm.protocol.messages import Message, Source, Status, SyncHdr, Target

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "conformance" / "omadm-server-triggers.toml"


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "triggers.toml"
    path.write_text(text)
    return path


def test_the_shipped_example_names_every_trigger_the_cases_use() -> None:
    triggers, variables = load_triggers(EXAMPLE)
    assert set(triggers) == set(KNOWN_TRIGGERS)
    assert variables["token"] == "{env:OMADM_TOKEN}"
    assert triggers["job"].returns == {"state": "state", "result_code": "result_code"}


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("[triggers.install\n", "not valid TOML"),
        ("[other]\n", "unknown tables other"),
        ("[triggers.launch]\nurl = 'http://x'\n", "unknown trigger 'launch'"),
        ("[triggers.install]\nmethod = 'POST'\n", "give either url"),
        ("[triggers.install]\nurl = 'http://x'\ncommand = 'true'\n", "give either url"),
        ("[triggers.install]\nurl = 'ftp://x'\n", "must start with http"),
        ("[triggers.install]\nurl = 'http://x'\nmethod = 'FETCH'\n", "method must be one of"),
        ("[triggers.install]\nurl = 'http://x'\nheaders = { A = 1 }\n", "headers.A must be a string"),
        ("[triggers.install]\nurl = 'http://x'\nsettle = -1\n", "settle must be"),
        ("[triggers.install]\nurl = 'http://x'\nbody = 'x'\n", "unknown keys body"),
        ("[vars]\napi = 3\n", "[vars].api must be a string"),
    ],
)
def test_a_bad_trigger_file_is_refused_with_the_reason(tmp_path: Path, text: str, message: str) -> None:
    with pytest.raises(TriggerError, match=message.replace("[", r"\[").replace("(", r"\(")):
        load_triggers(write(tmp_path, text))


def test_a_missing_trigger_file_is_named(tmp_path: Path) -> None:
    with pytest.raises(TriggerError, match="cannot read the trigger file"):
        load_triggers(tmp_path / "absent.toml")


def test_placeholders_fill_from_values_env_and_nested_values(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CONF_TOKEN", "t0k")
    values = {"api": "http://h/api", "token": "{env:CONF_TOKEN}", "device_id": "D1"}
    assert fill("{api}/devices/{device_id}?t={token}", values, "here") == "http://h/api/devices/D1?t=t0k"
    with pytest.raises(
        TriggerError, match=r"no value for the placeholder \{artifact_id\}.*--set artifact_id"
    ):
        fill("{artifact_id}", values, "trigger install")
    monkeypatch.delenv("CONF_TOKEN")
    with pytest.raises(TriggerError, match="environment variable CONF_TOKEN is not set"):
        fill("{token}", values, "here")
    with pytest.raises(TriggerError, match="nest more than 5 deep"):
        fill("{a}", {"a": "{a}"}, "here")


def test_extract_follows_dotted_paths_and_maps_over_lists() -> None:
    document = {"items": [{"state": "ok", "n": 1}, {"state": "bad", "n": 2}]}
    assert extract(document, "items.1.state") == "bad"
    assert extract(document["items"], "[].n") == [1, 2]
    assert extract(document, ".") == document
    with pytest.raises(KeyError):
        extract(document, "missing")


def test_a_rest_trigger_saves_and_returns_json_fields(tmp_path: Path) -> None:
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        if request.method == "POST":
            return httpx.Response(201, json={"id": 42})
        return httpx.Response(200, json={"state": "succeeded", "result_code": 1200})

    triggers, variables = load_triggers(
        write(
            tmp_path,
            """
[vars]
api = "http://server/api"
[triggers.install]
url = "{api}/jobs"
headers = { Authorization = "Bearer {token}" }
json = { device_id = "{device_id}", artifact_id = "{artifact_id}", list = ["{device_id}"] }
save = { job_id = "id" }
[triggers.job]
url = "{api}/jobs/{job_id}"
returns = { state = "state", result_code = "result_code" }
""",
        )
    )
    runner = TriggerRunner(
        triggers,
        {**variables, "token": "T", "device_id": "D1", "artifact_id": "7"},
        transport=httpx.MockTransport(handler),
    )
    assert asyncio.run(runner.fire("install")) == {}
    assert runner.values["job_id"] == "42"
    assert asyncio.run(runner.fire("job")) == {"state": "succeeded", "result_code": 1200}
    assert seen[0].headers["Authorization"] == "Bearer T"
    assert json.loads(seen[0].content) == {"device_id": "D1", "artifact_id": "7", "list": ["D1"]}
    assert str(seen[1].url) == "http://server/api/jobs/42"


def test_a_rest_trigger_that_the_server_refuses_says_so(tmp_path: Path) -> None:
    triggers, _ = load_triggers(
        write(tmp_path, "[triggers.install]\nurl = 'http://server/jobs'\nmethod = 'POST'\n")
    )
    runner = TriggerRunner(
        triggers, transport=httpx.MockTransport(lambda r: httpx.Response(422, text="no artifact"))
    )
    with pytest.raises(TriggerError, match="answered HTTP 422: no artifact"):
        asyncio.run(runner.fire("install"))


def test_a_command_trigger_runs_with_quoted_placeholders(tmp_path: Path) -> None:
    out = tmp_path / "out.txt"
    script = (
        f"{sys.executable} -c \"import sys; open(sys.argv[1], 'w').write(sys.argv[2])\" {out} {{device_id}}"
    )
    triggers, _ = load_triggers(write(tmp_path, f"[triggers.install]\ncommand = '''{script}'''\n"))
    asyncio.run(TriggerRunner(triggers, {"device_id": "IMEI:1 2; rm -rf x"}).fire("install"))
    assert out.read_text() == "IMEI:1 2; rm -rf x"  # one argument, not a shell command
    (tmp_path / "query.py").write_text("import json\nprint(json.dumps({'job': {'state': 'failed'}}))\n")
    query = f"{sys.executable} {tmp_path / 'query.py'}"
    text = f"[triggers.job]\ncommand = {json.dumps(query)}\nreturns = {{ state = 'job.state' }}\n"
    triggers, _ = load_triggers(write(tmp_path, text))
    assert asyncio.run(TriggerRunner(triggers).fire("job")) == {"state": "failed"}
    triggers, _ = load_triggers(write(tmp_path, "[triggers.install]\ncommand = 'exit 3'\n"))
    with pytest.raises(TriggerError, match="exited with 3"):
        asyncio.run(TriggerRunner(triggers).fire("install"))


def test_without_a_trigger_the_operator_is_asked() -> None:
    questions: list[str] = []
    answers = iter(["", "failed", "1405", "a.b, c.d", "deployed,delivered"])

    async def ask(prompt: str) -> str:
        questions.append(prompt)
        return next(answers)

    runner = TriggerRunner(values={"device_id": "D1", "component_id": "x"}, ask=ask)
    assert asyncio.run(runner.fire("activate")) == {}
    assert "Activate of component x on device D1" in questions[0]
    assert asyncio.run(runner.fire("job")) == {"state": "failed", "result_code": "1405"}
    assert asyncio.run(runner.fire("inventory")) == {
        "components": ["a.b", "c.d"],
        "kinds": ["deployed", "delivered"],
    }


def test_options_refuse_unknown_schemes_and_encodings() -> None:
    with pytest.raises(ValueError, match="--auth must be one of"):
        ServerOptions("http://s/dm", device_id="d", username="u", password="p", auth="sha1")
    with pytest.raises(ValueError, match="--encoding must be xml or wbxml"):
        ServerOptions("http://s/dm", device_id="d", username="u", password="p", encoding="json")
    with pytest.raises(ValueError, match="must start with http"):
        ServerTarget("s/dm", device_id="d", username="u", password="p")


def test_the_catalogue_holds_at_least_50_documented_server_cases() -> None:
    cases = cases_for(Role.SERVER)
    assert len(cases) >= 50
    prefixes = {c.id.split("-")[0] + "-" + c.id.split("-")[1] for c in cases}
    assert {"DM-SRV", "SCOMO-SRV"} <= prefixes and any(c.id.startswith("IOP-") for c in cases)
    for c in cases:
        assert c.executable and c.title and c.rule and c.steps and c.pass_criteria, c.id
        assert c.rule.split()[0] in ("oma-dm-1.2.md", "scomo.md", "ets.md"), c.id
    assert [c.id for c in select(cases, "dm-srv-auth-00[12]")] == ["DM-SRV-AUTH-001", "DM-SRV-AUTH-002"]


def test_exit_code_one_for_a_failure_two_for_only_inconclusive() -> None:
    from omadm.conformance.model import CaseResult, Verdict  # noqa: PLC0415

    case = cases_for(Role.SERVER)[0]
    assert (
        exit_code([CaseResult(case, Verdict.PASS, "xml"), CaseResult(case, Verdict.NOT_APPLICABLE, "xml")])
        == 0
    )
    assert (
        exit_code([CaseResult(case, Verdict.PASS, "xml"), CaseResult(case, Verdict.INCONCLUSIVE, "xml")]) == 2
    )
    assert (
        exit_code([CaseResult(case, Verdict.NOT_APPLICABLE, "xml"), CaseResult(case, Verdict.FAIL, "xml")])
        == 1
    )


def test_a_reply_finds_its_header_status_and_nonce() -> None:
    header = SyncHdr("1", "1", Target("D"), Source("http://s/dm"))
    status = Status("1", msg_ref="1", cmd_ref="0", cmd="SyncHdr", data="212")
    message = Message(header, (status, Status("2", msg_ref="1", cmd_ref="1", cmd="Alert", data="200")))
    reply = Reply(200, httpx.Headers({"content-type": Encoding.XML.content_type}), encode(message), message)
    assert reply.header_status == status
    assert [s.cmd for s in reply.status_for("1", "1")] == ["Alert"]
    assert reply.next_nonce() is None and reply.commands == []
    assert "Status(212)" in reply.describe()


def test_cases_whose_capability_the_ics_does_not_claim_are_not_applicable(tmp_path: Path) -> None:
    from omadm.conformance.ics import load_ics  # noqa: PLC0415
    from omadm.conformance.model import Verdict  # noqa: PLC0415
    from omadm.conformance.server import run_server_suite  # noqa: PLC0415

    ics_file = tmp_path / "ics.toml"
    ics_file.write_text('[implementation]\nname = "x"\n[capabilities]\nscomo = false\nauth-md5 = true\n')
    options = ServerOptions(
        "http://127.0.0.1:9/dm",  # never contacted: every selected case needs SCOMO
        device_id="d",
        username="u",
        password="p",
        ics=load_ics(ics_file),
        only="SCOMO-SRV-EXEC-00[1-4],IOP-001",
    )
    results = asyncio.run(run_server_suite(options))
    assert len(results) == 5
    assert all(r.verdict is Verdict.NOT_APPLICABLE and "'scomo'" in r.reason for r in results)


def test_the_command_refuses_an_unreachable_server_and_bad_files(tmp_path: Path) -> None:
    from typer.testing import CliRunner  # noqa: PLC0415

    from omadm.conformance.cli import conformance_app  # noqa: PLC0415

    base = ["server", "http://127.0.0.1:9/dm", "--device-id", "d", "--username", "u", "--password", "p"]
    runner = CliRunner()
    down = runner.invoke(conformance_app, [*base, "--only", "DM-SRV-HDR-001"])
    assert down.exit_code == 2 and "nothing answers HTTP at http://127.0.0.1:9/dm" in down.output
    bad = write(tmp_path, "[triggers.nope]\nurl = 'http://x'\n")
    refused = runner.invoke(conformance_app, [*base, "--trigger", str(bad)])
    assert refused.exit_code == 2 and "unknown trigger 'nope'" in refused.output
    ics = tmp_path / "ics.toml"
    ics.write_text("[capabilities]\nteleport = true\n")
    refused = runner.invoke(conformance_app, [*base, "--ics", str(ics)])
    assert refused.exit_code == 2 and "unknown capabilities teleport" in refused.output
    assert "scomo-activation" in refused.output  # the known ones are listed, the server's among them
    refused = runner.invoke(conformance_app, [*base, "--set", "novalue"])
    assert refused.exit_code == 2 and "NAME=VALUE" in refused.output
