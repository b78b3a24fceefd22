"""``pip install omadm`` is the agent alone (issue 17, point 4): no server stack on a device.

One fresh venv for the module: ``pip install <this repository>`` with no extra (pip's cache and
whatever index pip is configured with; a few seconds once warm). Then, in that venv:

* ``omadm agent --help`` and the other device-side families work, and an agent sets itself up;
* ``import fastapi`` (and the rest of the server extra) fails: they were not installed;
* ``omadm server`` says in one line what to install and exits ``EXIT_NEEDS_EXTRA``.

A second check runs in the development venv, where everything is installed: the device-side
command families import nothing of the server stack (``sys.modules`` after the command), so
that a slim install cannot fail on an import the full one hides.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import venv
from collections.abc import Iterator
from pathlib import Path

import pytest

from omadm.cli import EXIT_NEEDS_EXTRA

pytestmark = pytest.mark.e2e

ROOT = Path(__file__).resolve().parents[2]
#: What the server extra brings, by import name (pyproject.toml's [project.optional-dependencies]).
SERVER_STACK = (
    "fastapi",
    "starlette",
    "uvicorn",
    "sqlalchemy",
    "alembic",
    "aiosqlite",
    "asyncpg",
    "psycopg",
    "jinja2",
    "fastapi_offline",
    "prometheus_client",
    "httptools",
    "uvloop",
)


@pytest.fixture(scope="module")
def slim(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """The bin directory of a fresh venv with ``pip install <repo>`` (no extras)."""
    where = tmp_path_factory.mktemp("slim") / "venv"
    venv.EnvBuilder(with_pip=True).create(where)
    bin_dir = where / "bin"
    # A copy of what a source distribution holds, not the working tree: setuptools builds in
    # place and would leave build/ there, whose stale files a later build installs again.
    source = where.parent / "source"
    source.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy2(ROOT / name, source / name)
    shutil.copytree(ROOT / "src", source / "src", ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
    done = subprocess.run(
        [
            str(bin_dir / "python"),
            "-m",
            "pip",
            "install",
            "--quiet",
            "--disable-pip-version-check",
            str(source),
        ],
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
        env={**os.environ, "PIP_NO_INPUT": "1"},
    )
    assert done.returncode == 0, f"pip install {source} failed:\n{done.stdout}\n{done.stderr}"
    yield bin_dir


def run(bin_dir: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(bin_dir / args[0]), *args[1:]], capture_output=True, text=True, timeout=120, check=False
    )


def test_the_agent_works_without_the_server_stack(slim: Path, tmp_path: Path) -> None:
    done = run(slim, "omadm", "agent", "--help")
    assert done.returncode == 0, done.stderr
    assert "The device agent" in done.stdout
    for family in ("package", "sim", "mo", "codec", "conformance", "ctl"):
        done = run(slim, "omadm", family, "--help")
        assert done.returncode == 0, f"omadm {family} --help: {done.stderr}"
    config = tmp_path / "omadm.toml"
    done = run(
        slim,
        "omadm",
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
    )
    assert done.returncode == 0, done.stderr
    done = run(slim, "omadm", "agent", "tree", "get", "./DevInfo/DevId", "--config", str(config))
    assert done.returncode == 0, done.stderr
    assert "IMEI:490154203237518" in done.stdout
    done = run(slim, "omadm", "mo", "list")
    assert done.returncode == 0 and "DevInfo" in done.stdout, done.stderr


def test_the_server_stack_is_not_installed(slim: Path) -> None:
    for module in ("fastapi", "sqlalchemy", "uvicorn", "jinja2", "asyncpg"):
        done = run(slim, "python", "-c", f"import {module}")
        assert done.returncode != 0, f"{module} is installed by 'pip install omadm'"
        assert "ModuleNotFoundError" in done.stderr


@pytest.mark.parametrize("args", [("server",), ("server", "migrate"), ("server", "--port", "9000")])
def test_omadm_server_says_what_to_install(slim: Path, args: tuple[str, ...]) -> None:
    done = run(slim, "omadm", *args)
    assert done.returncode == EXIT_NEEDS_EXTRA, done.stderr
    assert done.stderr.strip() == 'error: omadm server needs the server extra: pip install "omadm[server]"'
    assert "Traceback" not in done.stderr


def test_the_overview_lists_the_server_with_the_hint(slim: Path) -> None:
    done = run(slim, "omadm", "--help")
    assert done.returncode == 0, done.stderr
    assert 'pip install "omadm[server]"' in done.stdout


#: In the development venv: which server-side modules a command line left in sys.modules.
PROBE = """
import json, sys
stack = set(json.loads(sys.argv[2]))
sys.argv = ["omadm", *json.loads(sys.argv[1])]
from omadm.__main__ import main
try:
    main()
except SystemExit:
    pass
found = sorted(m for m in sys.modules if m.split(".")[0] in stack or m.startswith("omadm.server"))
print(json.dumps(found), file=sys.__stderr__)
"""


@pytest.mark.parametrize(
    "args",
    [
        ("agent", "--help"),
        ("agent", "run", "--help"),
        ("package", "--help"),
        ("sim", "run", "--help"),
        ("codec", "--help"),
        ("mo", "list"),
        ("conformance", "--help"),
        ("ctl", "--help"),
    ],
)
def test_device_side_commands_import_nothing_of_the_server(args: tuple[str, ...]) -> None:
    done = subprocess.run(
        [sys.executable, "-c", PROBE, json.dumps(args), json.dumps(SERVER_STACK)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    loaded = json.loads(done.stderr.strip().splitlines()[-1])
    assert loaded == [], f"omadm {' '.join(args)} imported {loaded}"
