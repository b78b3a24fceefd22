"""requirements.lock covers pyproject.toml: a dependency added without ``scripts/lock`` fails here.

scripts/_venv.sh (so scripts/test, scripts/demo and CI) installs the dependencies from the lock
alone, with ``--require-hashes``, then omadm with ``--no-deps``: a dependency named in
pyproject.toml but not pinned in the lock would be missing from every venv made that way, or
be there only by the accident of an older install. Each check names what is wrong and says
to run ``scripts/lock``.
"""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

import pytest
from packaging.markers import default_environment
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version

ROOT = Path(__file__).resolve().parents[2]
LOCK = ROOT / "requirements.lock"
FIX = "run scripts/lock and commit requirements.lock"
#: What the lock is made for (scripts/lock: --python-version 3.11, x86_64 Linux).
TARGET = {
    **default_environment(),
    "python_version": "3.11",
    "python_full_version": "3.11.0",
    "sys_platform": "linux",
    "platform_system": "Linux",
    "platform_machine": "x86_64",
    "os_name": "posix",
    "platform_python_implementation": "CPython",
    "implementation_name": "cpython",
}
_PIN = re.compile(r"^([A-Za-z0-9][A-Za-z0-9._-]*)(\[[^\]]*\])?==([^\s;\\]+)")


def pinned(text: str) -> dict[str, tuple[Version, list[str]]]:
    """Every pin of a lock: canonical name -> (version, its sha256 hashes)."""
    pins: dict[str, tuple[Version, list[str]]] = {}
    current: str | None = None
    for line in text.splitlines():
        match = _PIN.match(line)
        if match:
            current = canonicalize_name(match.group(1))
            pins[current] = (Version(match.group(3)), [])
        elif current is not None and line.strip().startswith("--hash=sha256:"):
            pins[current][1].append(line.strip().removeprefix("--hash=sha256:").rstrip(" \\"))
        elif not line.startswith((" ", "\t")):
            current = None
    return pins


def declared(pyproject: dict[str, object]) -> list[tuple[str, Requirement]]:
    """Every dependency pyproject.toml names: (where, requirement), base and each extra."""
    project = pyproject["project"]
    assert isinstance(project, dict)
    found = [("dependencies", Requirement(text)) for text in project.get("dependencies", [])]
    for extra, texts in project.get("optional-dependencies", {}).items():
        found += [(f"the {extra} extra", Requirement(text)) for text in texts]
    return found


def problems(pyproject: dict[str, object], lock_text: str) -> list[str]:
    """What the lock lacks for the dependencies pyproject.toml names; empty when it covers them."""
    pins = pinned(lock_text)
    found: list[str] = []
    for where, requirement in declared(pyproject):
        if requirement.marker is not None and not requirement.marker.evaluate(TARGET):
            continue  # not for the platform the lock is made for (e.g. Windows only)
        name = canonicalize_name(requirement.name)
        if name not in pins:
            found.append(f"{requirement.name} ({where}) is not in requirements.lock")
            continue
        version, hashes = pins[name]
        if not requirement.specifier.contains(version, prereleases=True):
            found.append(f"requirements.lock pins {name}=={version}, outside {requirement} ({where})")
        if not hashes:
            found.append(f"requirements.lock pins {name}=={version} without a hash")
    return found


def test_the_lock_covers_every_dependency_of_pyproject() -> None:
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text())
    assert LOCK.exists(), f"requirements.lock is missing: {FIX}"
    found = problems(pyproject, LOCK.read_text())
    assert not found, "requirements.lock is out of date with pyproject.toml:\n  " + "\n  ".join([*found, FIX])


def test_every_pin_of_the_lock_has_a_hash() -> None:
    pins = pinned(LOCK.read_text())
    assert len(pins) > 20  # the parser found the lock's pins, not nothing
    bare = sorted(name for name, (_, hashes) in pins.items() if not hashes)
    assert not bare, f"pinned without a hash (pip --require-hashes refuses them): {bare}; {FIX}"
    for name, (_, hashes) in pins.items():
        assert all(re.fullmatch(r"[0-9a-f]{64}", digest) for digest in hashes), name


def test_the_server_stack_is_an_extra_and_the_base_stays_slim() -> None:
    """pip install omadm (an agent on a device) must not pull the server's libraries."""
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text())
    base = {canonicalize_name(Requirement(text).name) for text in pyproject["project"]["dependencies"]}
    server = {
        canonicalize_name(Requirement(text).name)
        for text in pyproject["project"]["optional-dependencies"]["server"]
    }
    heavy = {"fastapi", "starlette", "uvicorn", "sqlalchemy", "alembic", "aiosqlite", "asyncpg", "psycopg"}
    heavy |= {"jinja2", "fastapi-offline", "httptools", "uvloop", "prometheus-client", "boto3", "aiobotocore"}
    assert not base & heavy, f"in the base dependencies, belongs to the server extra: {sorted(base & heavy)}"
    assert {"fastapi", "uvicorn", "sqlalchemy", "httptools", "uvloop"} <= server


PYPROJECT = {
    "project": {
        "dependencies": ["lxml>=5.2", "sniffio>=1.3"],
        "optional-dependencies": {
            "server": ["fastapi>=0.110", "pywin32>=300; sys_platform == 'win32'"],
            "dev": ["pytest>=8"],
        },
    }
}
LOCK_TEXT = """\
# This file was autogenerated by uv via the following command:
#    scripts/lock
fastapi==0.115.0 \\
    --hash=sha256:{a}
    # via omadm (pyproject.toml)
lxml==5.3.0 \\
    --hash=sha256:{a} \\
    --hash=sha256:{b}
pytest==8.3.3 \\
    --hash=sha256:{b}
sniffio==1.3.1 \\
    --hash=sha256:{a}
""".format(a="0" * 64, b="f" * 64)


def test_a_complete_lock_has_no_problem() -> None:
    """The Windows-only dependency is not wanted in a lock for Linux."""
    assert problems(PYPROJECT, LOCK_TEXT) == []
    assert pinned(LOCK_TEXT)["lxml"] == (Version("5.3.0"), ["0" * 64, "f" * 64])


@pytest.mark.parametrize(
    ("edit", "expected"),
    [
        (lambda text: text.replace("sniffio==1.3.1", "other==1.0"), "sniffio (dependencies) is not in"),
        (lambda text: text.replace("fastapi==0.115.0", "fastapi==0.100.0"), "outside fastapi>=0.110"),
        (
            lambda text: text.replace("pytest==8.3.3 \\\n    --hash=sha256:" + "f" * 64, "pytest==8.3.3"),
            "without a hash",
        ),
    ],
)
def test_a_stale_lock_is_named(edit: object, expected: str) -> None:
    assert callable(edit)
    found = problems(PYPROJECT, edit(LOCK_TEXT))
    assert any(expected in problem for problem in found), found
