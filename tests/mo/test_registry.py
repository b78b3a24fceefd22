"""The registry: look-up by name or URN, helpful errors, validation on registration."""

from __future__ import annotations

import dataclasses

import pytest

from omadm.mo import DEVDETAIL, DEVINFO, DMACC, InvalidModelError, registry
from omadm.mo.registry import STANDARD_MOS, Registry, UnknownMOError


def test_the_standard_objects_are_registered_in_order() -> None:
    assert registry.all_mos()[:3] == (DEVINFO, DEVDETAIL, DMACC)
    assert STANDARD_MOS == (DEVINFO, DEVDETAIL, DMACC)


@pytest.mark.parametrize(
    "key", ["DMAcc", "dmacc", "DMACC", "urn:oma:mo:oma-dm-dmacc:1.0", "URN:OMA:MO:OMA-DM-DMACC:1.0"]
)
def test_get_by_name_or_urn_in_any_case(key: str) -> None:
    assert registry.get(key) is DMACC


def test_an_unknown_name_is_a_key_error_that_lists_the_known_ones() -> None:
    with pytest.raises(KeyError) as info:
        registry.get("FUMO")
    assert isinstance(info.value, UnknownMOError)
    assert str(info.value) == "unknown management object 'FUMO'; known: DevInfo, DevDetail, DMAcc, SCOMO"
    assert info.value.known[:3] == ("DevInfo", "DevDetail", "DMAcc")


def test_register_refuses_duplicates_by_name_or_urn() -> None:
    reg = Registry(STANDARD_MOS)
    assert len(reg) == 3 and "devinfo" in reg and DEVINFO.urn in reg and 3 not in reg
    with pytest.raises(ValueError, match=r"DevInfo \(.*\) has the same name or URN"):
        reg.register(DEVINFO)
    renamed_root = dataclasses.replace(DEVINFO.root, name="DevInfo2")
    same_urn = dataclasses.replace(DEVINFO, name="DevInfo2", root=renamed_root, default_path="./DevInfo2")
    with pytest.raises(ValueError, match="same name or URN"):
        reg.register(same_urn)
    assert len(reg) == 3


def test_register_validates_first() -> None:
    reg = Registry()
    broken = dataclasses.replace(DEVINFO, default_path="./Elsewhere")
    with pytest.raises(InvalidModelError, match="must end with the root's name"):
        reg.register(broken)
    assert len(reg) == 0
    with pytest.raises(UnknownMOError, match="known: none"):
        reg.get("DevInfo")


def test_register_adds_to_the_default_registry(monkeypatch: pytest.MonkeyPatch) -> None:
    private = Registry(STANDARD_MOS)
    monkeypatch.setattr(registry, "_default", private)
    urn = "urn:oma:mo:example:1.0"
    root = dataclasses.replace(DEVINFO.root, name="Example", ddf_name=urn)
    example = dataclasses.replace(DEVINFO, name="Example", urn=urn, root=root, default_path="./Example")
    registry.register(example)
    assert registry.get("example") is example
    assert registry.all_mos()[-1] is example
