"""Fixtures for the package tests: publisher keys and built sample packages."""

from __future__ import annotations

from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from omadm.package import build_package, generate_key

from .helpers import sample_source


@pytest.fixture(scope="session")
def key() -> Ed25519PrivateKey:
    return generate_key()


@pytest.fixture(scope="session")
def other_key() -> Ed25519PrivateKey:
    return generate_key()


@pytest.fixture
def source(tmp_path: Path) -> Path:
    return sample_source(tmp_path / "source")


@pytest.fixture
def signed(tmp_path: Path, source: Path, key: Ed25519PrivateKey) -> Path:
    """The sample package, built and signed by ``key``."""
    output = tmp_path / "signed.omp"
    build_package(source, output, signing_key=key)
    return output


@pytest.fixture
def unsigned(tmp_path: Path, source: Path) -> Path:
    output = tmp_path / "unsigned.omp"
    build_package(source, output)
    return output
