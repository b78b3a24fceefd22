"""Management objects declared once, as data (DESIGN rule 3).

:mod:`~omadm.mo.model` has the declaration types and the validator, :mod:`~omadm.mo.ddf` the
DDF 1.2 writer and reader, :mod:`~omadm.mo.registry` the known MOs. The standard objects are
:data:`DEVINFO`, :data:`DEVDETAIL` and :data:`DMACC`.
"""

from __future__ import annotations

from .ddf import DDFError, parse_ddf, parse_ddf_all, to_ddf
from .devdetail import DEVDETAIL
from .devinfo import DEVINFO
from .dmacc import DMACC
from .model import (
    Access,
    Format,
    InvalidModelError,
    MODef,
    NodeDef,
    Occurrence,
    Scope,
    acl_error,
    validate,
    value_error,
)
from .registry import UnknownMOError, all_mos, get, register

__all__ = [
    "DEVDETAIL",
    "DEVINFO",
    "DMACC",
    "Access",
    "DDFError",
    "Format",
    "InvalidModelError",
    "MODef",
    "NodeDef",
    "Occurrence",
    "Scope",
    "UnknownMOError",
    "acl_error",
    "all_mos",
    "get",
    "parse_ddf",
    "parse_ddf_all",
    "register",
    "to_ddf",
    "validate",
    "value_error",
]
