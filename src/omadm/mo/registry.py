"""The management objects this installation knows, looked up by name or MO identifier.

DevInfo, DevDetail, DMAcc and SCOMO 1.0 are registered when the module is imported; others
are added with :func:`register`, which validates the declaration first, so nothing invalid
reaches the tree builder, the server or the generated DDFs.

A :class:`Registry` instance holds the entries; the module-level functions use the default
one. Tests and tools that need a private set create their own ``Registry()``.
"""

from __future__ import annotations

from .devdetail import DEVDETAIL
from .devinfo import DEVINFO
from .dmacc import DMACC
from .model import MODef, validate
from .scomo import SCOMO_1_0

__all__ = [
    "STANDARD_MOS",
    "Registry",
    "UnknownMOError",
    "all_mos",
    "get",
    "register",
]

#: The management objects every DM 1.2 client and server must support (StdObj 7.1.3).
STANDARD_MOS: tuple[MODef, ...] = (DEVINFO, DEVDETAIL, DMACC)


class UnknownMOError(KeyError):
    """No registered management object has that name or identifier.

    A ``KeyError`` (it is a failed lookup) whose text is a readable sentence listing the known
    MOs, not ``KeyError``'s quoted repr.
    """

    def __init__(self, name: str, known: tuple[MODef, ...]) -> None:
        self.name = name
        self.known = tuple(mo.name for mo in known)
        super().__init__(name)

    def __str__(self) -> str:
        return f"unknown management object {self.name!r}; known: {', '.join(self.known) or 'none'}"


class Registry:
    """Management objects by case-insensitive name and by MO identifier, in registration order."""

    def __init__(self, mos: tuple[MODef, ...] = ()) -> None:
        self._mos: list[MODef] = []
        self._index: dict[str, MODef] = {}
        for mo in mos:
            self.register(mo)

    def register(self, mo: MODef) -> None:
        """Add ``mo`` after validating it.

        Raises:
            InvalidModelError: the declaration breaks a DM rule (see :func:`~omadm.mo.model.validate`).
            ValueError: an MO with the same name or identifier is already registered.
        """
        validate(mo)
        for key in (mo.name.casefold(), mo.urn.casefold()):
            if key in self._index:
                other = self._index[key]
                raise ValueError(
                    f"cannot register {mo.name} ({mo.urn}): "
                    f"{other.name} ({other.urn}) has the same name or URN"
                )
        self._mos.append(mo)
        self._index[mo.name.casefold()] = mo
        self._index[mo.urn.casefold()] = mo

    def get(self, name: str) -> MODef:
        """The MO called ``name`` (any case) or identified by the URN ``name``.

        Raises:
            UnknownMOError: (a ``KeyError``) naming the known MOs.
        """
        mo = self._index.get(name.casefold())
        if mo is None:
            raise UnknownMOError(name, self.all())
        return mo

    def all(self) -> tuple[MODef, ...]:
        """Every registered MO, in registration order."""
        return tuple(self._mos)

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and name.casefold() in self._index

    def __len__(self) -> int:
        return len(self._mos)


#: Registered as well: SCOMO 1.0 (1.1 shares its name, so only one of them can be here).
_default = Registry((*STANDARD_MOS, SCOMO_1_0))


def get(name: str) -> MODef:
    """The registered MO with that name (case-insensitive) or URN; :class:`UnknownMOError` if none."""
    return _default.get(name)


def all_mos() -> tuple[MODef, ...]:
    """Every registered MO, the standard ones first."""
    return _default.all()


def register(mo: MODef) -> None:
    """Validate ``mo`` and add it to the default registry; refuses a duplicate name or URN."""
    _default.register(mo)
