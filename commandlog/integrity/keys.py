"""The sealing key: an Ed25519 private key in a file outside the database, and its public half.

Where: ``CMDLOG_SEAL_KEY`` (a path, for production: the file must exist, so a wrong path never silently starts a
new key) or, by default, ``$CMDLOG_HOME/keys/seal-ed25519.pem``, created on first use (PKCS#8 PEM, mode 0600 in a
0700 folder, ``storage.private``; written under a temporary name and linked into place). Like ssh, a key file
that is a symbolic link, readable or writable by group or others, or owned by another user is refused. The public
key is exported as SubjectPublicKeyInfo PEM (``cmdlog seal --public-key``); an auditor verifies seals and proofs
with it alone. A key is named by its fingerprint: the first 16 bytes of SHA-256 over the raw 32-byte public key, in hex.

**Rotation** (``rotate``, ``cmdlog seal --rotate-key``): the current key's public half is kept beside it as
``seal-<fingerprint>.pub.pem``, then a new private key replaces the file (written whole, renamed into place); new
seals name the new key's fingerprint (``key_id``, in every signed header), older seals keep naming theirs. A
verification is given every public key (``public_keys``: the signing key's and each kept ``*.pub.pem``, or the
files an auditor names) and checks each seal with the key its ``key_id`` names; a seal naming none of them is a
``key_mismatch``.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import os
import secrets
import stat
from collections.abc import Callable
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


def _new_key_file(path: Path, place: Callable[[Path, Path], None]) -> None:
    """A new private key written whole under a temporary name beside ``path``, then ``place(tmp, path)``: another
    process never reads half a key."""
    pem = Ed25519PrivateKey.generate().private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(8)}.tmp")
    try:
        with os.fdopen(open_private(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW), "wb") as f:
            f.write(pem)
            f.flush()
            os.fsync(f.fileno())
        place(tmp, path)
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)


def _link_unless_present(tmp: Path, path: Path) -> None:
    # two processes creating the key at once keep the first one's (``link`` fails on an existing name), never two
    with contextlib.suppress(FileExistsError):
        os.link(tmp, path)


def _create(path: Path, *, base: Path) -> None:
    private_dir(path.parent, base=base if base in path.parents else path.parent)
    _new_key_file(path, _link_unless_present)


def _read_private(path: Path) -> bytes:
    """The key file's bytes, refused like ssh refuses a private key: a symbolic link (``O_NOFOLLOW``), a file
    others may read or write (``mode & 0o077``) or one owned by another user."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW)
    except FileNotFoundError:
        raise SealKeyError(path, "no such file") from None
    except OSError as e:
        if e.errno == errno.ELOOP:
            raise SealKeyError(path, "is a symbolic link (refused: point CMDLOG_SEAL_KEY at the file itself)") from e
        raise SealKeyError(path, f"cannot be opened ({e})") from e
    with os.fdopen(fd, "rb") as f:
        st = os.fstat(f.fileno())
        if not stat.S_ISREG(st.st_mode):
            raise SealKeyError(path, "is not a regular file")
        if st.st_mode & 0o077:
            raise SealKeyError(path, f"mode {stat.S_IMODE(st.st_mode):04o} lets others read or write it "
                                     "(refused: chmod 600)")
        if st.st_uid != os.geteuid():
            raise SealKeyError(path, f"owned by uid {st.st_uid}, not by this user (uid {os.geteuid()}): refused")
        return f.read()


def _load_private(path: Path) -> Ed25519PrivateKey:
    data = _read_private(path)
    try:
        key = serialization.load_pem_private_key(data, password=None)
    except (ValueError, TypeError) as e:
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


def _public_path(folder: Path, key_id: str) -> Path:
    return folder / f"seal-{key_id}.pub.pem"


def rotate(settings: Settings) -> tuple[str, str]:
    """Replace the signing key with a new one; keep the old public half beside it. ``(old id, new id)``."""
    path = key_path(settings)
    old = _load_private(path).public_key()
    old_id = fingerprint(old)
    kept = _public_path(path.parent, old_id)
    if not kept.exists():
        with os.fdopen(open_private(kept, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW), "wb") as f:
            f.write(public_pem(old))
    _new_key_file(path, os.replace)  # atomic: a sealing run reads the old key or the new one
    return old_id, fingerprint(_load_private(path).public_key())


def public_keys(settings: Settings, paths: list[str] | None = None) -> list[Ed25519PublicKey]:
    """The public keys to verify with: the PEM files ``paths`` when given; else the signing key's public half and
    every rotated key kept beside it (``seal-*.pub.pem``)."""
    if paths:
        return [load_public_key(p) for p in paths]
    path = key_path(settings)
    found = [existing_signing_key(settings).public_key()]
    found += [load_public_key(p) for p in sorted(path.parent.glob("seal-*.pub.pem"))]
    return found
