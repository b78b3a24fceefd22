"""Damaged packages fail with PackageError, never another exception (bounded property tests)."""

from __future__ import annotations

import contextlib
import gzip
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from omadm.package import build_package, generate_key, open_package
from omadm.package.errors import PackageError

from .helpers import gz, sample_source

KEY: Ed25519PrivateKey = generate_key()


def _package(tmp: Path) -> bytes:
    path = tmp / "p.omp"
    if not path.exists():
        build_package(sample_source(tmp / "src"), path, signing_key=KEY)
    return path.read_bytes()


def _check(tmp: Path, data: bytes) -> None:
    path = tmp / "fuzzed.omp"
    path.write_bytes(data)
    # Either outcome is fine (some flips hit bytes nothing covers, like the gzip mtime);
    # any exception other than PackageError fails the test.
    with contextlib.suppress(PackageError):
        open_package(path, [KEY.public_key()], require_signature=False)


flips = st.lists(st.tuples(st.floats(0, 1, exclude_max=True), st.integers(1, 255)), min_size=1, max_size=4)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(flips=flips)
def test_flipped_bytes_in_the_tar_stream(tmp_path: Path, flips: list[tuple[float, int]]) -> None:
    tar = bytearray(gzip.decompress(_package(tmp_path)))
    for where, mask in flips:
        tar[int(where * len(tar))] ^= mask
    _check(tmp_path, gz(bytes(tar)))


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(flips=flips)
def test_flipped_bytes_in_the_compressed_file(tmp_path: Path, flips: list[tuple[float, int]]) -> None:
    data = bytearray(_package(tmp_path))
    for where, mask in flips:
        data[int(where * len(data))] ^= mask
    _check(tmp_path, bytes(data))


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(cut=st.floats(0, 1, exclude_max=True))
def test_truncated_tar_stream(tmp_path: Path, cut: float) -> None:
    tar = gzip.decompress(_package(tmp_path))
    _check(tmp_path, gz(tar[: int(cut * len(tar))]))
