"""The ``omadm`` command line: codec conversion, --check, errors and exit codes."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from typer.testing import CliRunner, Result

from omadm import __version__, cli
from omadm.protocol import codec, wbxml
from omadm.protocol.codec import Encoding
from omadm.protocol.messages import Message
from tests.strategies import messages

PKG2 = b"""<?xml version="1.0" encoding="UTF-8"?>
<SyncML xmlns="SYNCML:SYNCML1.2">
  <SyncHdr>
    <VerDTD>1.2</VerDTD><VerProto>DM/1.2</VerProto>
    <SessionID>1</SessionID><MsgID>2</MsgID>
    <Target><LocURI>IMEI:493005100592800</LocURI></Target>
    <Source><LocURI>https://dm.example.com/dm</LocURI></Source>
  </SyncHdr>
  <SyncBody>
    <Status><CmdID>1</CmdID><MsgRef>1</MsgRef><CmdRef>0</CmdRef><Cmd>SyncHdr</Cmd><Data>212</Data></Status>
    <Status><CmdID>2</CmdID><MsgRef>1</MsgRef><CmdRef>1</CmdRef><Cmd>Alert</Cmd><Data>200</Data></Status>
    <Status><CmdID>3</CmdID><MsgRef>1</MsgRef><CmdRef>2</CmdRef><Cmd>Replace</Cmd><Data>200</Data></Status>
    <Get><CmdID>4</CmdID><Item><Target><LocURI>./DevDetail/SwV</LocURI></Target></Item></Get>
    <Replace><CmdID>5</CmdID>
      <Item><Target><LocURI>./DevDetail/Ext/Conf</LocURI></Target>
        <Meta><Format xmlns="syncml:metinf">chr</Format></Meta><Data>on</Data></Item>
    </Replace>
    <Final/>
  </SyncBody>
</SyncML>"""

PKG2_SUMMARY = (
    "OK: SyncML DM message, XML, 1.2/DM/1.2, SessionID 1, MsgID 2, 5 commands "
    "(Status\N{MULTIPLICATION SIGN}3, Get, Replace), Final\n"
)

TNDS = b"""<?xml version="1.0" encoding="UTF-8"?>
<MgmtTree xmlns="syncml:dmddf1.2">
  <VerDTD>1.2</VerDTD>
  <Node>
    <NodeName>SCOMO</NodeName>
    <Node>
      <NodeName>Inventory</NodeName>
      <Node><NodeName>Deployed</NodeName><RTProperties><Format><node/></Format></RTProperties></Node>
    </Node>
  </Node>
</MgmtTree>"""

runner = CliRunner()


def invoke(*args: str, stdin: bytes | None = None) -> Result:
    return runner.invoke(cli.app, list(args), input=stdin)


def assert_clean_failure(result: Result, code: int) -> None:
    """A user error: the documented exit code, one ``error:`` line, no traceback."""
    assert result.exit_code == code, result.output
    assert isinstance(result.exception, SystemExit)
    assert result.stdout == ""
    assert result.stderr.startswith("error: ")
    assert result.stderr.count("\n") == 1
    assert "Traceback" not in result.output


@pytest.fixture
def pkg2(tmp_path: Path) -> Path:
    path = tmp_path / "pkg2.xml"
    path.write_bytes(PKG2)
    return path


# --------------------------------------------------------------------------- app-level


def test_version() -> None:
    result = invoke("--version")
    assert result.exit_code == cli.EXIT_OK
    assert result.stdout == f"omadm {__version__}\n"


def test_help_lists_codec_and_supported_inputs() -> None:
    result = invoke("--help")
    assert result.exit_code == 0
    assert "codec" in result.stdout
    result = invoke("codec", "--help")
    assert result.exit_code == 0
    for text in ("--to", "--check", "-o", "<SyncML>", "<MgmtTree>", "TNDS / DDF"):
        assert text in result.stdout


def test_no_arguments_shows_help() -> None:
    result = invoke()
    assert "Usage" in result.output
    assert "codec" in result.output


def test_exit_codes_are_distinct_constants() -> None:
    assert (cli.EXIT_OK, cli.EXIT_INVALID, cli.EXIT_USAGE) == (0, 1, 2)


# --------------------------------------------------------------------------- conversion


def test_xml_to_wbxml_to_xml_preserves_the_message(pkg2: Path, tmp_path: Path) -> None:
    binary = tmp_path / "pkg2.wbxml"
    result = invoke("codec", str(pkg2), "-o", str(binary))
    assert result.exit_code == 0, result.output
    assert result.output == ""
    data = binary.read_bytes()
    assert wbxml.is_wbxml(data)
    original, _ = codec.decode(PKG2)
    assert codec.decode(data) == (original, Encoding.WBXML)

    result = invoke("codec", str(binary))  # default direction: WBXML -> XML, to stdout
    assert result.exit_code == 0, result.output
    assert result.stdout_bytes.startswith(b"<?xml")
    assert b"\n  <SyncHdr>\n" in result.stdout_bytes  # pretty-printed
    assert codec.decode(result.stdout_bytes) == (original, Encoding.XML)


def test_wbxml_goes_to_stdout_as_exact_bytes(pkg2: Path) -> None:
    result = invoke("codec", str(pkg2))
    assert result.exit_code == 0
    original, _ = codec.decode(PKG2)
    assert result.stdout_bytes == codec.encode(original, Encoding.WBXML)


def test_stdin_input_and_dash_output(pkg2: Path) -> None:
    result = invoke("codec", "-", "--to", "xml", "-o", "-", stdin=PKG2)
    assert result.exit_code == 0, result.output
    assert codec.decode(result.stdout_bytes)[0] == codec.decode(PKG2)[0]


def test_to_selects_the_output_encoding_case_insensitively(pkg2: Path) -> None:
    result = invoke("codec", str(pkg2), "--to", "WBXML")
    assert result.exit_code == 0
    assert wbxml.is_wbxml(result.stdout_bytes)


def test_refuses_wbxml_on_a_terminal(pkg2: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(cli, "_stdout_is_terminal", lambda: True)
    result = invoke("codec", str(pkg2))
    assert_clean_failure(result, cli.EXIT_USAGE)
    assert "terminal" in result.stderr and "-o" in result.stderr
    # XML is text: fine on a terminal.
    assert invoke("codec", str(pkg2), "--to", "xml").exit_code == 0


def test_tnds_mgmttree_converts_both_ways(tmp_path: Path) -> None:
    source = tmp_path / "tree.xml"
    source.write_bytes(TNDS)
    binary = tmp_path / "tree.wbxml"
    result = invoke("codec", str(source), "-o", str(binary))
    assert result.exit_code == 0, result.output
    data = binary.read_bytes()
    assert data[:4] == b"\x02\x00\x00\x6a"  # WBXML 1.2, literal public id (the DM DDF FPI), UTF-8
    assert b"-//OMA//DTD-DM-DDF 1.2//EN" in data

    result = invoke("codec", str(binary))
    assert result.exit_code == 0, result.output
    xml = result.stdout_bytes
    assert b'<MgmtTree xmlns="syncml:dmddf1.2">' in xml
    assert b"<NodeName>Deployed</NodeName>" in xml
    assert b"<node/>" in xml
    # Converting the XML back gives the same WBXML: nothing was lost.
    again = invoke("codec", "-", stdin=xml)
    assert again.stdout_bytes == data

    check = invoke("codec", "--check", str(binary))
    assert check.exit_code == 0
    assert check.stdout.startswith("OK: DM DDF/TNDS MgmtTree document, WBXML, VerDTD 1.2, 3 nodes")


# --------------------------------------------------------------------------- --check


def test_check_ok(pkg2: Path) -> None:
    result = invoke("codec", "--check", str(pkg2))
    assert result.exit_code == cli.EXIT_OK
    assert result.stdout == PKG2_SUMMARY
    assert result.stderr == ""


def test_check_wbxml_from_stdin(pkg2: Path) -> None:
    binary = codec.encode(codec.decode(PKG2)[0], Encoding.WBXML)
    result = invoke("codec", "--check", "-", stdin=binary)
    assert result.exit_code == 0
    assert result.stdout == PKG2_SUMMARY.replace("XML", "WBXML", 1)


def test_check_warns_but_passes_a_lenient_message(tmp_path: Path) -> None:
    sloppy = (
        PKG2.replace(b"<VerDTD>1.2</VerDTD>", b"")
        .replace(b"<Final/>", b"")
        .replace(b"<CmdID>4</CmdID>", b"<CmdID>four</CmdID>")
        .replace(b">chr</Format>", b">CHR</Format>")
    )
    # Move the SyncHdr's Status after the Alert's.
    hdr_status, alert_status = [line for line in sloppy.splitlines() if b"<Status>" in line][:2]
    sloppy = sloppy.replace(hdr_status, b"@@").replace(alert_status, hdr_status).replace(b"@@", alert_status)
    path = tmp_path / "sloppy.xml"
    path.write_bytes(sloppy)
    result = invoke("codec", "--check", str(path))
    assert result.exit_code == cli.EXIT_OK
    assert result.stdout.startswith("OK: SyncML DM message, XML, ?/DM/1.2, SessionID 1, MsgID 2, 5 commands")
    assert result.stdout.endswith(", no Final\n")
    warnings = result.stderr.splitlines()
    assert all(line.startswith(f"warning: {path}: ") for line in warnings)
    text = "\n".join(warnings)
    for fragment in (
        "lacks <VerDTD>",
        "non-numeric CmdID 'four'",
        "'CHR' is not lower case",
        "must come first",
        "no <Final/>",
    ):
        assert fragment in text
    assert len(warnings) == 5


def test_check_error(tmp_path: Path) -> None:
    path = tmp_path / "bad.xml"
    path.write_bytes(PKG2.replace(b"<MsgID>2</MsgID>", b""))
    result = invoke("codec", "--check", str(path))
    assert_clean_failure(result, cli.EXIT_INVALID)
    assert result.stderr == f"error: {path}: <SyncHdr> lacks the mandatory <MsgID>\n"


def test_check_refuses_conversion_options(pkg2: Path) -> None:
    assert_clean_failure(invoke("codec", "--check", "--to", "xml", str(pkg2)), cli.EXIT_USAGE)


# --------------------------------------------------------------------------- errors


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        (b"\x00\xffgarbage", "neither XML nor WBXML"),
        (b"hello world", "neither XML nor WBXML"),
        (b"<SyncML><SyncHdr>", "not well-formed XML"),
        (b"\x02\x00\x00\x6a\x05garbage", "WBXML"),
        (b"", "empty input"),
        (b'<?xml version="1.0"?><!DOCTYPE x [<!ENTITY a "b">]><x>&a;</x>', "refused"),
    ],
)
@pytest.mark.parametrize("check", [False, True])
def test_garbage_input_is_a_clean_error(data: bytes, reason: str, check: bool) -> None:
    args = ["codec", *(["--check"] if check else []), "-"]
    result = invoke(*args, stdin=data)
    assert_clean_failure(result, cli.EXIT_INVALID)
    assert result.stderr.startswith("error: <stdin>: ")
    assert reason in result.stderr


def test_xml_without_a_wbxml_token_is_a_clean_error() -> None:
    result = invoke("codec", "-", stdin=b"<Foo><Bar/></Foo>")
    assert_clean_failure(result, cli.EXIT_INVALID)
    assert "Foo" in result.stderr


def test_unreadable_input(tmp_path: Path) -> None:
    result = invoke("codec", str(tmp_path / "missing.xml"))
    assert_clean_failure(result, cli.EXIT_USAGE)
    assert result.stderr == f"error: cannot read {tmp_path / 'missing.xml'}: No such file or directory\n"
    assert_clean_failure(invoke("codec", str(tmp_path)), cli.EXIT_USAGE)


def test_unwritable_output(pkg2: Path, tmp_path: Path) -> None:
    result = invoke("codec", str(pkg2), "-o", str(tmp_path / "no" / "such" / "dir.wbxml"))
    assert_clean_failure(result, cli.EXIT_USAGE)
    assert "cannot write" in result.stderr


# --------------------------------------------------------------------------- properties


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(messages(binary=True))
def test_any_message_survives_the_cli_both_ways(message: Message) -> None:
    # Over XML binary data becomes b64 text, so compare with what the XML itself decodes to.
    xml = codec.encode(message, Encoding.XML)
    expected, _ = codec.decode(xml)
    to_wbxml = invoke("codec", "-", stdin=xml)
    assert to_wbxml.exit_code == 0, to_wbxml.output
    back = invoke("codec", "-", stdin=to_wbxml.stdout_bytes)
    assert back.exit_code == 0, back.output
    assert codec.decode(back.stdout_bytes)[0] == expected


# --------------------------------------------------------------------------- entry point


def test_installed_entry_point_smoke(tmp_path: Path) -> None:
    exe = Path(sys.executable).with_name("omadm")
    if not exe.exists():
        pytest.skip("the omadm console script is not installed in this environment")
    source = tmp_path / "pkg2.xml"
    source.write_bytes(PKG2)
    converted = subprocess.run([str(exe), "codec", str(source)], capture_output=True, check=False, timeout=60)
    assert converted.returncode == 0, converted.stderr
    assert wbxml.is_wbxml(converted.stdout)
    checked = subprocess.run(
        [str(exe), "codec", "--check", "-"],
        input=converted.stdout,
        capture_output=True,
        check=False,
        timeout=60,
    )
    assert checked.returncode == 0
    assert checked.stdout.decode() == PKG2_SUMMARY.replace("XML", "WBXML", 1)
    broken = subprocess.run(
        [str(exe), "codec", "-"], input=b"\x00garbage", capture_output=True, check=False, timeout=60
    )
    assert broken.returncode == cli.EXIT_INVALID
    assert broken.stderr.startswith(b"error: <stdin>: ") and b"Traceback" not in broken.stderr
