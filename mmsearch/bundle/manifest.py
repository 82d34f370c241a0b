"""The bundle's manifest: what is in a bundle and the sha256 of every file, checked on load.

manifest.json cannot hold its own file hash, so it holds `manifest_sha256`: the sha256 of its
canonical JSON (sorted keys, no whitespace) without that field. A changed weight, config or
preprocessing value in the manifest is then caught like a changed weights file. (Checksums catch
corruption and edits, not an attacker who recomputes them: bundle.signature adds an optional
Ed25519 signature for that.) Every
path in the manifest is a relative path inside the bundle, and every file the predictor opens
(a member's weights, its config) must be one of the checked `files` (verified_file): an edited
manifest cannot make it read `../elsewhere` or `/etc/passwd`. Standard library only.
"""
from __future__ import annotations

import hashlib
import json
from pathlib import Path, PurePosixPath

from ..errors import MMSearchError

MANIFEST = "manifest.json"
FORMAT, FORMAT_VERSION = "mmsearch-bundle", 1
_REQUIRED = {"files": dict, "members": list, "schema": dict, "preprocess": dict, "metric": str}  # what loading reads


class BundleError(MMSearchError):
    """A bundle that cannot be trusted or used: missing, changed or unknown files."""


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _content_digest(manifest: dict) -> str:
    body = {k: v for k, v in manifest.items() if k != "manifest_sha256"}
    return hashlib.sha256(json.dumps(body, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


def write_manifest(bundle: Path, manifest: dict) -> bytes:
    """Add the sha256 of every file listed in manifest["files"] (paths relative to bundle) and the
    manifest's own digest, then write it; returns the bytes written (what a signature signs)."""
    manifest = {**manifest, "files": {rel: sha256_file(bundle / rel) for rel in sorted(manifest["files"])}}
    manifest["manifest_sha256"] = _content_digest(manifest)
    raw = (json.dumps(manifest, indent=1) + "\n").encode()
    (bundle / MANIFEST).write_bytes(raw)
    return raw


def read_verified(bundle: str | Path) -> dict:
    """The manifest, after checking it and every file it lists; BundleError names what is wrong."""
    bundle = Path(bundle)
    path = bundle / MANIFEST
    if not path.is_file():
        raise BundleError(f"{bundle} is not an mmsearch bundle (no {MANIFEST}); create one with `mmsearch export`")
    from .signature import verify  # (it imports BundleError from here)

    try:
        raw = path.read_bytes()
        verify(bundle, raw)  # first: with a trusted key set, an unsigned or forged manifest is not even parsed
        manifest = json.loads(raw.decode())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise BundleError(f"{path} is unreadable ({e}); re-export the bundle") from None
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        raise BundleError(f"{path} is not an mmsearch bundle manifest")
    if manifest.get("format_version") != FORMAT_VERSION:
        raise BundleError(f"{path}: bundle format version {manifest.get('format_version')!r}; this mmsearch reads "
                          f"version {FORMAT_VERSION}")
    if manifest.get("manifest_sha256") != _content_digest(manifest):
        raise BundleError(f"{path} does not match its checksum (it was changed after export); refusing to load it")
    for key, kind in _REQUIRED.items():
        if not isinstance(manifest.get(key), kind) or not manifest[key]:
            raise BundleError(f"{path} lacks its `{key}` ({kind.__name__}); re-export the bundle")
    files = manifest["files"]
    for rel, digest in files.items():
        file = _inside(bundle, rel, path)
        if not file.is_file():
            raise BundleError(f"bundle file {file} is missing; the bundle is incomplete (copy it whole, or re-export)")
        if sha256_file(file) != digest:
            raise BundleError(f"bundle file {file} does not match its sha256 in {MANIFEST} (corrupted or changed "
                              "after export); refusing to load it")
    return manifest


def verified_file(bundle: str | Path, manifest: dict, rel, what: str) -> Path:
    """The bundle file `rel` that a manifest entry (`what`, e.g. "member t1's weights") names,
    only if it is one of the files read_verified checked: a member cannot point the predictor at
    a file outside the bundle, or at one whose checksum nobody checked."""
    bundle = Path(bundle)
    if not isinstance(rel, str) or rel not in manifest["files"]:
        raise BundleError(f"{bundle / MANIFEST}: {what} is {rel!r}, which is not among the bundle's checked `files`; "
                          "refusing to load it (re-export the bundle)")
    return _inside(bundle, rel, bundle / MANIFEST)


def _inside(bundle: Path, rel, manifest_path: Path) -> Path:
    """bundle/rel, refused unless it is a relative path that stays inside the bundle (also
    through symbolic links)."""
    p = PurePosixPath(rel) if isinstance(rel, str) else None
    if p is None or not rel or p.is_absolute() or ".." in p.parts or "\\" in rel:
        raise BundleError(f"{manifest_path} lists {rel!r}, which is outside the bundle; refusing to load it")
    file = bundle / p
    if not file.resolve().is_relative_to(bundle.resolve()):
        raise BundleError(f"bundle file {file} leads outside the bundle (a link to {file.resolve()}); refusing to load it")
    return file
