"""Secrets at rest: keyed hashes for bearer values, authenticated encryption for client secrets.

Bearer values (access and refresh tokens, authorization codes, PAR handles, receipt URLs) are only ever compared,
so the store keeps an HMAC-SHA256 of them: a database dump does not let anyone use them. Client secrets must be
shown again by the Credentials API (CDS-WG1-02 §7), so they are encrypted with Fernet (AES-128-CBC + HMAC) under a
key from configuration, and also hashed so authentication never needs to decrypt.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets

from cryptography.fernet import Fernet, InvalidToken


class SecretBox:
    def __init__(self, fernet_key: bytes, hash_key: bytes) -> None:
        self._fernet = Fernet(fernet_key)
        self._hash_key = hash_key

    def encrypt(self, plaintext: str) -> str:
        return self._fernet.encrypt(plaintext.encode()).decode()

    def decrypt(self, ciphertext: str) -> str:
        try:
            return self._fernet.decrypt(ciphertext.encode()).decode()
        except InvalidToken:
            raise ValueError("stored secret cannot be decrypted with the configured secret key") from None

    def hash(self, value: str) -> str:
        return hmac.new(self._hash_key, value.encode(), hashlib.sha256).hexdigest()

    def matches(self, value: str, stored_hash: str) -> bool:
        return hmac.compare_digest(self.hash(value), stored_hash)

    @staticmethod
    def new_secret(nbytes: int = 48) -> str:
        """A random URL-safe secret (client secrets, tokens, handles)."""
        return secrets.token_urlsafe(nbytes)

    @staticmethod
    def new_id(nbytes: int = 8) -> str:
        """A random public identifier in the style of the CDS examples (16 hex digits)."""
        return secrets.token_hex(nbytes)
