"""A byte string per version that sorts as PEP 440 orders versions, so SQL can compare them.

Campaign targets and the device list select devices by a component's version ("below 2.0",
"equal to 1.4"). Comparing version strings as text is wrong ("10.0" < "9.0"), and PEP 440's
rules (pre-, post- and development releases, trailing zeros, local labels) cannot be written
in portable SQL. So each inventory row also stores :func:`version_key` of its version: bytes
whose plain byte order (``bytea`` on PostgreSQL, ``BLOB`` on SQLite, both ``memcmp``) is
exactly the order :class:`packaging.version.Version` gives, and which are equal exactly when
the versions are equal ("1.0" and "1.0.0" have one key). A version that does not parse has
no key (``None``): it is not known to be older or newer than anything, as before.

Each part of the version becomes a self-delimiting, order-preserving piece, and the pieces
are concatenated in the order PEP 440 compares them:

* a number is its count of digits (two digits) then its digits: ``7`` -> ``017``,
  ``12`` -> ``0212``; shorter numbers sort first, as they are smaller;
* the release (trailing zeros dropped) is ``1`` + number per component, closed by ``0``, so
  a release that is a prefix of another sorts first;
* pre-release: ``0`` (a development-only release, below every pre-release), ``1a``/``1b``/
  ``1c`` + number (alpha, beta, release candidate) or ``2`` (none: a final release);
* post-release: ``0`` (none) or ``1`` + number; development release: ``1`` + number or
  ``2`` (none, so a ``.devN`` sorts first);
* local label: ``0`` (none) or ``1`` then each segment (``2`` + number for numbers, ``1`` +
  text + ``\\x00`` for text, numbers after text as PEP 440 says), closed by ``0``.
"""

from __future__ import annotations

from packaging.version import InvalidVersion, Version

__all__ = ["MAX_KEY_BYTES", "version_key"]

#: Longer keys (absurd versions) are not stored: such a version is treated as unparsable.
MAX_KEY_BYTES = 255

_PRE = {"a": "1a", "b": "1b", "rc": "1c"}


def _number(value: int) -> str:
    digits = str(value)
    if len(digits) > 99:
        raise OverflowError(digits)
    return f"{len(digits):02d}{digits}"


def version_key(text: str) -> bytes | None:
    """The sortable key of ``text`` (see the module), or None when it is not a PEP 440 version."""
    try:
        version = Version(text)
    except InvalidVersion:
        return None
    release = list(version.release)
    while len(release) > 1 and release[-1] == 0:
        release.pop()
    try:
        parts = [_number(version.epoch)]
        parts.extend("1" + _number(n) for n in release)
        parts.append("0")
        if version.pre is not None:
            letter, number = version.pre
            parts.append(_PRE[letter] + _number(number))
        elif version.post is None and version.dev is not None:
            parts.append("0")
        else:
            parts.append("2")
        parts.append("0" if version.post is None else "1" + _number(version.post))
        parts.append("2" if version.dev is None else "1" + _number(version.dev))
        if version.local is None:
            parts.append("0")
        else:
            parts.append("1")
            for segment in version.local.split("."):
                parts.append("2" + _number(int(segment)) if segment.isdigit() else "1" + segment + "\x00")
            parts.append("0")
    except OverflowError:
        return None
    key = "".join(parts).encode()
    return key if len(key) <= MAX_KEY_BYTES else None
