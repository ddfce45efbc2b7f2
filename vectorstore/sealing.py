"""Artifact authentication: an HMAC keyed outside the store, checked on every read.

The sha256 the store keeps beside each artifact detects accidents (a truncated write, a bit
flip), not tampering: whoever can rewrite the bytes can rewrite the digest, and the table
metadata that records it. With ``KINDRED_ARTIFACT_KEY`` set in the environment (a secret
of at least 16 characters, the same for every process that shares the store), every artifact
written gets an HMAC-SHA256 over its name, its bytes' digest and its metadata, and every read
requires a matching one: a forged, swapped or unsigned artifact is refused
(:class:`ArtifactUnauthenticated`) before any caller sees its bytes.

Without the key, artifacts are stored and read as before; models are still never stored in
an executable format (see :mod:`vectorstore.estimators`), so tampering can change what a
model says but cannot run code. docs/reliability.md describes the key's use.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
from typing import Any

from .errors import ArtifactUnauthenticated, InvalidOption

KEY_ENV = "KINDRED_ARTIFACT_KEY"
MAC_FIELD = "hmac"
_STORE_FIELDS = ("sha256", MAC_FIELD)
_MIN_KEY = 16


def artifact_key() -> bytes | None:
    """The authentication key from ``KINDRED_ARTIFACT_KEY``, or None when it is not set."""
    raw = os.environ.get(KEY_ENV)
    if raw is None or raw == "":
        return None
    if len(raw) < _MIN_KEY:
        raise InvalidOption(f"{KEY_ENV} is set but shorter than {_MIN_KEY} characters: too "
                            "weak to authenticate artifacts (use e.g. `openssl rand -hex 32`)")
    return raw.encode("utf-8")


def _canonical(meta: dict[str, Any]) -> bytes:
    """The metadata as the store keeps it (JSON round trip), minus store-added fields."""
    kept = {k: v for k, v in meta.items() if k not in _STORE_FIELDS}
    plain = json.loads(json.dumps(kept, sort_keys=True, default=str))
    return json.dumps(plain, sort_keys=True, separators=(",", ":")).encode("utf-8")


def _mac(key: bytes, name: str, data: bytes, meta: dict[str, Any]) -> str:
    msg = b"\0".join([b"kindred-artifact/1", name.encode("utf-8"),
                      hashlib.sha256(data).hexdigest().encode(), _canonical(meta)])
    return "hmac-sha256:" + hmac.new(key, msg, hashlib.sha256).hexdigest()


def seal(name: str, data: bytes, meta: dict[str, Any]) -> dict[str, Any]:
    """``meta`` with the artifact's HMAC when the key is set (any older one replaced)."""
    key = artifact_key()
    out = {k: v for k, v in meta.items() if k != MAC_FIELD}
    if key is not None:
        out[MAC_FIELD] = _mac(key, name, data, out)
    return out


def verify(name: str, data: bytes, meta: dict[str, Any]) -> None:
    """With the key set: ArtifactUnauthenticated unless ``meta`` carries this artifact's HMAC."""
    key = artifact_key()
    if key is None:
        return
    got = meta.get(MAC_FIELD)
    if not isinstance(got, str):
        raise ArtifactUnauthenticated(
            f"artifact {name!r} carries no HMAC although {KEY_ENV} is set: it was stored "
            "without the key (or the HMAC was removed); refusing to use it")
    if not hmac.compare_digest(got, _mac(key, name, data, meta)):
        raise ArtifactUnauthenticated(
            f"artifact {name!r} fails its HMAC check: it was changed after it was stored, or "
            f"stored under another {KEY_ENV}; refusing to use it")
