"""Secrets at rest (SPEC X1): AES-256-GCM with one key per installation.

The key comes from IACCTL_SECRET_KEY (base64 of 32 bytes, or any passphrase, stretched with
SHA-256) or from a key file generated on first use, mode 0600, in the config directory.
Owns encryption and the key; knows nothing about what is encrypted.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import os
from pathlib import Path

from iacctl.errors import SecretKeyError

_MAGIC = b"ic1"
_NONCE = 12
KEY_FILE_NAME = "secret.key"


def _parse_key(text: str) -> bytes:
    text = text.strip()
    try:
        raw = base64.b64decode(text, validate=True)
        if len(raw) == 32:
            return raw
    except (binascii.Error, ValueError):
        pass
    if not text:
        raise SecretKeyError("IACCTL_SECRET_KEY is empty")
    return hashlib.sha256(text.encode()).digest()


def key_source(config_dir: Path) -> str:
    """Where this process's key comes from, as the user would fix it."""
    if os.environ.get("IACCTL_SECRET_KEY") is not None:
        return "IACCTL_SECRET_KEY"
    return f"the key file {config_dir / KEY_FILE_NAME}"


def find_key(config_dir: Path) -> bytes | None:
    """The key of this process (IACCTL_SECRET_KEY, else the key file), or None: nothing is
    generated here (issue 18 item 7: only a store with no key yet gets a new one)."""
    env = os.environ.get("IACCTL_SECRET_KEY")
    if env is not None:
        return _parse_key(env)
    path = config_dir / KEY_FILE_NAME
    if not path.exists():
        return None
    return load_key(config_dir)


def key_check(key: bytes) -> str:
    """What a store remembers of its key (issue 18 item 7): a MAC of a fixed text under the key,
    which says whether a key is the store's without revealing the key."""
    import hmac

    return hmac.new(key, b"iacctl/key-check", hashlib.sha256).hexdigest()


def load_key(config_dir: Path) -> bytes:
    env = os.environ.get("IACCTL_SECRET_KEY")
    if env is not None:
        return _parse_key(env)
    path = config_dir / KEY_FILE_NAME
    if not path.exists():
        config_dir.mkdir(parents=True, exist_ok=True)
        key = base64.b64encode(os.urandom(32))
        # O_EXCL: two first-time processes racing must end up with one key.
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except FileExistsError:
            pass
        else:
            with os.fdopen(fd, "wb") as f:
                f.write(key + b"\n")
    try:
        return _parse_key(path.read_text())
    except OSError as exc:
        raise SecretKeyError(f"cannot read the secret key file {path}: {exc.strerror}") from None


class Cipher:
    """Encrypts and decrypts blobs; the nonce is random per blob and stored in front of it."""

    def __init__(self, key: bytes) -> None:
        from cryptography.hazmat.primitives.ciphers.aead import AESGCM

        if len(key) != 32:
            raise SecretKeyError("the secret key must be 32 bytes (AES-256)")
        self._aead = AESGCM(key)
        self._key = key

    def derive(self, label: str) -> bytes:
        """A 32-byte key for another purpose (run-task token signing, R3), derived from the
        installation key so that it is as secret as the key and never stored or printed."""
        import hmac

        return hmac.new(self._key, b"iacctl/" + label.encode(), hashlib.sha256).digest()

    def encrypt(self, plain: bytes) -> bytes:
        nonce = os.urandom(_NONCE)
        return _MAGIC + nonce + self._aead.encrypt(nonce, plain, None)

    def decrypt(self, blob: bytes) -> bytes:
        from cryptography.exceptions import InvalidTag

        if not blob.startswith(_MAGIC):
            raise SecretKeyError("a stored secret is not in iacctl's format")
        nonce = blob[len(_MAGIC) : len(_MAGIC) + _NONCE]
        try:
            return self._aead.decrypt(nonce, blob[len(_MAGIC) + _NONCE :], None)
        except InvalidTag:
            raise SecretKeyError(
                "the secret key does not open the stored secrets (was IACCTL_SECRET_KEY changed?)"
            ) from None

    def encrypt_text(self, text: str) -> bytes:
        return self.encrypt(text.encode())

    def decrypt_text(self, blob: bytes) -> str:
        return self.decrypt(blob).decode()
