"""The mo package's public surface: every exported name exists, every module declares ``__all__``."""

from __future__ import annotations

import importlib

import pytest

from omadm import mo

MODULES = ["model", "ddf", "registry", "devinfo", "devdetail", "dmacc", "gen_docs"]


def test_every_exported_name_exists() -> None:
    for name in mo.__all__:
        assert getattr(mo, name) is not None, name


@pytest.mark.parametrize("module", MODULES)
def test_each_module_declares_all(module: str) -> None:
    m = importlib.import_module(f"omadm.mo.{module}")
    assert m.__all__
    for name in m.__all__:
        assert hasattr(m, name), (module, name)
