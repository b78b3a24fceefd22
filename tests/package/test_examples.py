"""The shipped examples (examples/hello-package, examples/hello-package-2) build, verify and run."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from omadm.package import build_package, compare_versions, open_package

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
HELLO = "com.example.hello"


@pytest.mark.parametrize(("directory", "version"), [("hello-package", "1.0.0"), ("hello-package-2", "2.0.0")])
def test_example_builds_verifies_and_runs(
    tmp_path: Path, key: Ed25519PrivateKey, directory: str, version: str
) -> None:
    output = tmp_path / f"{directory}.omp"
    manifest = build_package(EXAMPLES / directory, output, signing_key=key)
    assert manifest.id == "com.example.hello-package"
    assert manifest.version == version
    component = manifest.component(HELLO)
    assert component.version == version
    assert set(component.hooks) == {"install", "activate", "deactivate", "remove"}

    package = open_package(output, [key.public_key()])
    dest = package.extract_component(HELLO, tmp_path / "installed")
    hello = subprocess.run([dest / "bin" / "hello"], capture_output=True, text=True, check=True)
    assert hello.stdout.startswith("Hello") and f"(version {version})" in hello.stdout

    state = tmp_path / "state"
    state.mkdir()
    for action in ("install", "activate", "deactivate", "remove"):
        env = {
            **os.environ,
            "OMADM_COMPONENT_ID": HELLO,
            "OMADM_COMPONENT_VERSION": version,
            "OMADM_COMPONENT_DIR": str(dest),
            "OMADM_COMPONENT_STATE_DIR": str(state),
            "OMADM_ACTION": action,
            "OMADM_INSTALL_PARAMS": "mode=test",
        }
        subprocess.run([dest / component.hooks[action]], env=env, check=True)
    assert (state / "hooks.log").read_text().splitlines() == [
        f"{action} {HELLO} {version} mode=test" for action in ("install", "activate", "deactivate", "remove")
    ]


def test_the_second_example_upgrades_the_first(tmp_path: Path) -> None:
    one = build_package(EXAMPLES / "hello-package", tmp_path / "1.omp")
    two = build_package(EXAMPLES / "hello-package-2", tmp_path / "2.omp")
    assert one.id == two.id
    assert compare_versions(two.component(HELLO).version, one.component(HELLO).version) == 1
    assert {f.path for f in two.files} - {f.path for f in one.files} == {f"components/{HELLO}/share/CHANGES"}


def test_the_install_hook_fails_when_the_payload_is_incomplete(tmp_path: Path) -> None:
    build_package(EXAMPLES / "hello-package", tmp_path / "p.omp")
    dest = open_package(tmp_path / "p.omp", [], require_signature=False).extract_component(
        HELLO, tmp_path / "c"
    )
    (dest / "bin" / "hello").unlink()
    env = {**os.environ, "OMADM_COMPONENT_DIR": str(dest), "OMADM_COMPONENT_STATE_DIR": str(tmp_path)}
    assert subprocess.run([dest / "hooks" / "install"], env=env, check=False).returncode != 0


def test_the_broken_example_is_a_newer_release_whose_install_hook_refuses_with_a_reason(
    tmp_path: Path,
) -> None:
    """examples/hello-package-3-broken: what the README walkthrough uses to show a failure."""
    broken = build_package(EXAMPLES / "hello-package-3-broken", tmp_path / "3.omp")
    two = build_package(EXAMPLES / "hello-package-2", tmp_path / "2.omp")
    assert broken.id == two.id
    assert compare_versions(broken.component(HELLO).version, two.component(HELLO).version) == 1
    dest = open_package(tmp_path / "3.omp", [], require_signature=False).extract_component(
        HELLO, tmp_path / "c"
    )
    env = {**os.environ, "OMADM_COMPONENT_DIR": str(dest), "OMADM_COMPONENT_STATE_DIR": str(tmp_path)}
    run = subprocess.run([dest / "hooks" / "install"], env=env, capture_output=True, text=True, check=False)
    assert run.returncode == 3 and "disk check failed" in run.stderr
