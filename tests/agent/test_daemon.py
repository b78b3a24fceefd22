"""``omadm agent run`` without Typer: the same command, a smaller long-lived process (issue 17).

The ``omadm`` entry point hands the plain forms of ``agent run`` to :mod:`omadm.agent.daemon`;
everything else still goes through Typer. These tests pin both halves: what the short path
accepts (and what it leaves to Typer), that it behaves as the command does (exit codes, one
``error:`` line), and that a real agent process started this way has neither Typer's pydantic
nor cryptography loaded while it idles.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from omadm.agent import daemon
from omadm.agent.cli import DEFAULT_CONFIG, EXIT_CONFIG, EXIT_OK, EXIT_TLS


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        ([], (DEFAULT_CONFIG, False)),
        (["-v"], (DEFAULT_CONFIG, True)),
        (["--config", "a.toml"], (Path("a.toml"), False)),
        (["-c", "a.toml", "--verbose"], (Path("a.toml"), True)),
        (["--verbose", "--config=b c.toml"], (Path("b c.toml"), True)),
    ],
)
def test_the_plain_forms_are_taken(
    args: list[str], expected: tuple[Path, bool], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv(daemon.CONFIG_ENV, raising=False)
    assert daemon.parse_run_args(args) == expected


@pytest.mark.parametrize(
    "args",
    [["--help"], ["-h"], ["--config"], ["-c", "--verbose"], ["--config="], ["--bogus"], ["x.toml"], ["-cx"]],
)
def test_anything_else_is_left_to_typer(args: list[str]) -> None:
    """Help, usage errors and options the short path does not know get Typer's handling."""
    assert daemon.parse_run_args(args) is None


def test_the_config_comes_from_the_environment_as_with_typer(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(daemon.CONFIG_ENV, "/etc/omadm/agent.toml")
    assert daemon.parse_run_args([]) == (Path("/etc/omadm/agent.toml"), False)
    assert daemon.parse_run_args(["-c", "here.toml"]) == (Path("here.toml"), False)


def test_exit_codes_are_the_commands() -> None:
    assert (daemon.EXIT_OK, daemon.EXIT_CONFIG, daemon.EXIT_TLS) == (EXIT_OK, EXIT_CONFIG, EXIT_TLS)


def omadm(*args: str) -> list[str]:
    """The console script's entry point (``python -m omadm`` runs the same ``main``)."""
    return [sys.executable, "-m", "omadm", *args]


def test_a_missing_configuration_is_one_error_line(tmp_path: Path) -> None:
    done = subprocess.run(
        omadm("agent", "run", "--config", str(tmp_path / "nowhere.toml")),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == EXIT_CONFIG, done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and "nowhere.toml" in lines[0], done.stderr


def test_help_still_goes_through_typer() -> None:
    done = subprocess.run(
        omadm("agent", "run", "--help"), capture_output=True, text=True, timeout=60, check=False
    )
    assert done.returncode == 0, done.stderr
    assert "Run until stopped" in done.stdout and "--config" in done.stdout


def mapped_libraries(pid: int) -> str:
    return Path(f"/proc/{pid}/maps").read_text()


@pytest.mark.e2e
@pytest.mark.skipif(not Path("/proc/self/maps").exists(), reason="needs Linux's /proc")
def test_an_idle_agent_holds_neither_typer_nor_cryptography(tmp_path: Path) -> None:
    config = tmp_path / "omadm.toml"
    init = subprocess.run(
        omadm(
            "agent",
            "init",
            "--config",
            str(config),
            "--server",
            "http://127.0.0.1:9/dm",
            "--device-id",
            "IMEI:490154203237518",
            "--username",
            "dev",
            "--password",
            "secret",
            "--server-password",
            "srv-secret",
            "--data-dir",
            str(tmp_path / "data"),
            "--poll-interval",
            "0",
            "--listen-udp",
            "127.0.0.1:0",
        ),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert init.returncode == 0, init.stderr
    log = tmp_path / "agent.log"
    with log.open("wb") as out:
        process = subprocess.Popen(omadm("agent", "run", "--config", str(config)), stdout=out, stderr=out)
    try:
        deadline = time.monotonic() + 60
        while "listening for Package #0" not in log.read_text():
            assert process.poll() is None, log.read_text()
            assert time.monotonic() < deadline, log.read_text()
            time.sleep(0.1)
        maps = mapped_libraries(process.pid)
        modules = Path(f"/proc/{process.pid}/cmdline").read_bytes()
        assert b"omadm" in modules
        assert "pydantic_core" not in maps, "Typer's pydantic is loaded in the idle agent"
        assert "cryptography" not in maps, "cryptography is loaded before any package is verified"
        assert "lxml" in maps  # the check sees extension modules: the agent's XML is there
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=30) == EXIT_OK, log.read_text()
    finally:
        if process.poll() is None:
            os.kill(process.pid, signal.SIGKILL)
            process.wait()
