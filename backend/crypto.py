"""Secrets at rest: AES-256-GCM under a key derived (HKDF-SHA256) from CRUCIBLE_SECRET_KEY.

Each ciphertext is bound to where it lives (``aad``, e.g. ``stack/<id>/var/<NAME>``), so a value
copied into another row does not decrypt.
"""

from __future__ import annotations

import base64
import os

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from backend.errors import Conflict

VERSION = "v1"


class DecryptionError(Conflict):
    """A stored secret does not decrypt: the secret key changed, or the value was tampered with.
    Nothing the caller sent is wrong, but nothing can be done with the value either (409)."""


class SecretBox:
    def __init__(self, secret_key: str):
        key = HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=b"crucible secrets v1").derive(
            secret_key.encode()
        )
        self._aead = AESGCM(key)

    def encrypt(self, plaintext: str, aad: str) -> str:
        nonce = os.urandom(12)
        sealed = self._aead.encrypt(nonce, plaintext.encode(), aad.encode())
        return f"{VERSION}:{base64.urlsafe_b64encode(nonce + sealed).decode()}"

    def decrypt(self, token: str, aad: str) -> str:
        version, _, body = token.partition(":")
        if version != VERSION:
            raise DecryptionError(f"unknown secret format {version!r}")
        try:
            raw = base64.urlsafe_b64decode(body.encode())
            return self._aead.decrypt(raw[:12], raw[12:], aad.encode()).decode()
        except (InvalidTag, ValueError):
            raise DecryptionError(
                "a stored secret does not decrypt: CRUCIBLE_SECRET_KEY changed or the value was altered"
            ) from None
