"""Ed25519 primitives shared by signing and verification (kept apart so neither imports the other).

A package signature is a raw 64-byte Ed25519 signature over the exact ``manifest.json``
bytes. Ed25519 because it has no parameters to get wrong, deterministic signatures (signing
the same manifest twice gives the same bytes, so re-signing is idempotent and builds stay
reproducible) and small keys that are easy to compare by eye via :func:`key_id`.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

__all__ = ["SIGNATURE_SIZE", "find_signer", "key_id", "raw_public_key"]

SIGNATURE_SIZE = 64


def raw_public_key(key: Ed25519PublicKey | Ed25519PrivateKey) -> bytes:
    """The 32 raw bytes of the public key (of a private key: of its public half)."""
    public = key.public_key() if isinstance(key, Ed25519PrivateKey) else key
    return public.public_bytes(Encoding.Raw, PublicFormat.Raw)


def key_id(key: Ed25519PublicKey | Ed25519PrivateKey) -> str:
    """First 16 hex digits of SHA-256 of the raw public key: short enough to read out and compare."""
    return hashlib.sha256(raw_public_key(key)).hexdigest()[:16]


def find_signer(
    message: bytes, signature: bytes, keys: Sequence[Ed25519PublicKey]
) -> Ed25519PublicKey | None:
    """The first key whose signature over ``message`` this is, or ``None``."""
    for key in keys:
        try:
            key.verify(signature, message)
        except InvalidSignature:
            continue
        return key
    return None
