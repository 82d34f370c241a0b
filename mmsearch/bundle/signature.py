"""Signed bundles (optional): an Ed25519 signature over the bundle's manifest, so that
recomputing the checksums after an edit is not enough to pass a bundle off as yours. The manifest holds the
sha256 of every other file, so signing it signs the whole bundle.

    MMSEARCH_SIGNING_KEY=key.pem          `export` writes BUNDLE/manifest.sig
    MMSEARCH_TRUSTED_KEY=key.pub.pem      loading refuses a bundle without a valid signature by it

Keys are PEM files, e.g. ``openssl genpkey -algorithm ed25519 -out key.pem`` and
``openssl pkey -in key.pem -pubout -out key.pub.pem``. Needs the `cryptography` package
(`pip install cryptography`), only when one of the variables is set.
"""
from __future__ import annotations

import base64
import binascii
import os
from pathlib import Path

from .manifest import MANIFEST, BundleError

SIGNATURE = "manifest.sig"
SIGNING_KEY_ENV, TRUSTED_KEY_ENV = "MMSEARCH_SIGNING_KEY", "MMSEARCH_TRUSTED_KEY"


def sign(bundle: Path, manifest_bytes: bytes) -> bool:
    """Write the signature if MMSEARCH_SIGNING_KEY names a key; True if the bundle was signed."""
    if not (path := os.environ.get(SIGNING_KEY_ENV)):
        return False
    serialization, ed25519, _ = _crypto(SIGNING_KEY_ENV)
    key = _load(path, SIGNING_KEY_ENV, lambda data: serialization.load_pem_private_key(data, password=None))
    if not isinstance(key, ed25519.Ed25519PrivateKey):
        raise BundleError(f"{SIGNING_KEY_ENV}={path} is not an Ed25519 private key (openssl genpkey -algorithm ed25519)")
    (bundle / SIGNATURE).write_text(base64.b64encode(key.sign(manifest_bytes)).decode() + "\n")
    return True


def verify(bundle: Path, manifest_bytes: bytes) -> None:
    """If MMSEARCH_TRUSTED_KEY names a key, the bundle must carry a valid signature by it."""
    if not (path := os.environ.get(TRUSTED_KEY_ENV)):
        return
    serialization, ed25519, invalid = _crypto(TRUSTED_KEY_ENV)
    key = _load(path, TRUSTED_KEY_ENV, serialization.load_pem_public_key)
    if not isinstance(key, ed25519.Ed25519PublicKey):
        raise BundleError(f"{TRUSTED_KEY_ENV}={path} is not an Ed25519 public key")
    sig_file = bundle / SIGNATURE
    if not sig_file.is_file():
        raise BundleError(f"{bundle} is not signed (no {SIGNATURE}), and {TRUSTED_KEY_ENV} asks for a signature; "
                          f"export it with {SIGNING_KEY_ENV} set, or unset {TRUSTED_KEY_ENV}")
    try:
        key.verify(base64.b64decode(sig_file.read_text().strip(), validate=True), manifest_bytes)
    except (invalid, binascii.Error, ValueError):
        raise BundleError(f"{sig_file} is not a valid signature of {bundle / MANIFEST} by the key in "
                          f"{TRUSTED_KEY_ENV}={path} (changed after export, or signed by another key); refusing to load it") from None


def _crypto(env: str):
    try:
        from cryptography.exceptions import InvalidSignature
        from cryptography.hazmat.primitives import serialization
        from cryptography.hazmat.primitives.asymmetric import ed25519
    except ImportError:
        raise BundleError(f"{env} is set, and bundle signatures need the `cryptography` package: "
                          "pip install cryptography") from None
    return serialization, ed25519, InvalidSignature


def _load(path: str, env: str, parse):
    try:
        return parse(Path(path).expanduser().read_bytes())
    except (OSError, ValueError, TypeError) as e:
        raise BundleError(f"{env}={path}: cannot read a PEM key there ({str(e).splitlines()[0] if str(e) else type(e).__name__})") from None
