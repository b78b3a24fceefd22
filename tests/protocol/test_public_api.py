"""The protocol package's public surface is explicit, sorted and importable."""

from omadm import protocol


def test_all_is_sorted_and_every_name_exists() -> None:
    assert protocol.__all__ == sorted(protocol.__all__)
    for name in protocol.__all__:
        assert getattr(protocol, name) is not None


def test_the_package_installs_as_a_regular_package() -> None:
    # A wheel built by setuptools only contains packages with an __init__.py.
    assert protocol.__file__ is not None and protocol.__file__.endswith("__init__.py")
