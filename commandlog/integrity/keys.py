"""The sealing key: an Ed25519 private key in a file outside the database, and its public half.

Where: ``CMDLOG_SEAL_KEY`` (a path, for production: the file must exist, so a wrong path never silently starts a
new key) or, by default, ``$CMDLOG_HOME/keys/seal-ed25519.pem``, created on first use (PKCS#8 PEM, mode 0600 in a
0700 folder, ``storage.private``). The public key is exported as SubjectPublicKeyInfo PEM
(``cmdlog seal --public-key``); an auditor verifies seals and proofs with it alone. A key is named by its
fingerprint: the first 16 bytes of SHA-256 over the raw 32-byte public key, in hex.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
from pathlib import Path

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from commandlog.integrity.errors import SealKeyError
from commandlog.settings import Settings
from storage.private import open_private, private_dir

KEY_ENV = "CMDLOG_SEAL_KEY"
DEFAULT_KEY = Path("keys") / "seal-ed25519.pem"
"""The default key file, under ``CMDLOG_HOME``."""


def key_path(settings: Settings) -> Path:
    """The private key's file for ``settings``."""
    explicit = settings.extra.get(KEY_ENV)
    return Path(explicit).expanduser() if explicit else settings.home / DEFAULT_KEY


def signing_key(settings: Settings) -> Ed25519PrivateKey:
    """The private key (the default file is created on first use; an explicit ``CMDLOG_SEAL_KEY`` must exist)."""
    path = key_path(settings)
    if not path.exists() and not settings.extra.get(KEY_ENV):
        _create(path, base=settings.home)
    return _load_private(path)


def existing_signing_key(settings: Settings) -> Ed25519PrivateKey:
    """The private key of ``settings``, which must exist (``SealKeyError`` otherwise)."""
    return _load_private(key_path(settings))


def _create(path: Path, *, base: Path) -> None:
    private_dir(path.parent, base=base if base in path.parents else path.parent)
    pem = Ed25519PrivateKey.generate().private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    # O_EXCL: two processes creating the key at once keep the first one's, never two different keys
    with contextlib.suppress(FileExistsError), os.fdopen(
            open_private(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL), "wb") as f:
        f.write(pem)


def _load_private(path: Path) -> Ed25519PrivateKey:
    try:
        key = serialization.load_pem_private_key(path.read_bytes(), password=None)
    except FileNotFoundError:
        raise SealKeyError(path, "no such file") from None
    except (OSError, ValueError, TypeError) as e:
        raise SealKeyError(path, f"cannot be read as an unencrypted PEM private key ({e})") from e
    if not isinstance(key, Ed25519PrivateKey):
        raise SealKeyError(path, "not an Ed25519 key")
    return key


def load_public_key(path: Path | str) -> Ed25519PublicKey:
    """An Ed25519 public key from a PEM file (``public_pem``'s output)."""
    try:
        key = serialization.load_pem_public_key(Path(path).read_bytes())
    except FileNotFoundError:
        raise SealKeyError(path, "no such file") from None
    except (OSError, ValueError) as e:
        raise SealKeyError(path, f"cannot be read as a PEM public key ({e})") from e
    if not isinstance(key, Ed25519PublicKey):
        raise SealKeyError(path, "not an Ed25519 key")
    return key


def public_pem(key: Ed25519PublicKey) -> bytes:
    """The public key as SubjectPublicKeyInfo PEM."""
    return key.public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)


def fingerprint(key: Ed25519PublicKey) -> str:
    """The key's name in seals: hex of the first 16 bytes of SHA-256 over the raw public key."""
    return hashlib.sha256(key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)).digest()[
        :16].hex()


def signature_valid(key: Ed25519PublicKey, signature: bytes, message: bytes) -> bool:
    """True when ``signature`` is ``key``'s Ed25519 signature of ``message``."""
    try:
        key.verify(signature, message)
    except InvalidSignature:
        return False
    return True
