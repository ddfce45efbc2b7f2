"""Object-store locations of LanceDB stores: ``s3://``, ``gs://`` and ``az://`` prefixes.

Storage options come from three places, later ones winning: the environment (LanceDB's object
store reads ``AWS_*``, ``GOOGLE_*`` and ``AZURE_*`` variables itself, and instance or workload
credentials where there are none), the URI's query string
(``s3://bucket/kindred?aws_endpoint=http://127.0.0.1:9000&allow_http=true``), and the
``storage_options`` given to :func:`vectorstore.connect`. Values of keys that look like
credentials are remembered as secrets, so they are redacted from every message, and the
store's printed location never carries the query string.
"""

from __future__ import annotations

import re
from urllib.parse import parse_qsl, urlsplit, urlunsplit

from ..dsn import remember_secret
from ..errors import InvalidOption

OBJECT_STORE_SCHEMES = ("s3", "gs", "az")
_SECRET_KEY = re.compile(r"(secret|token|password|sas|credential|_key$|account_key)", re.I)
_OPTION = re.compile(r"^[A-Za-z][A-Za-z0-9_]*$")


def is_secret_option(key: str) -> bool:
    """Whether a storage option's value is a credential (never printed)."""
    return bool(_SECRET_KEY.search(key)) and not key.lower().endswith("key_id")


def object_store_location(uri: str) -> tuple[str, dict[str, str]]:
    """``(uri without its query, storage options from the query)``."""
    parts = urlsplit(uri)
    if not parts.netloc:
        raise InvalidOption(f"an object-store location needs a bucket: {parts.scheme}://BUCKET/"
                            "PREFIX")
    options: dict[str, str] = {}
    for key, value in parse_qsl(parts.query, keep_blank_values=True):
        if not _OPTION.match(key):
            raise InvalidOption(f"storage option {key!r} in the store location is not a plain "
                                "name (e.g. aws_endpoint, aws_region, allow_http)")
        if is_secret_option(key):
            remember_secret(value)
        options[key.lower()] = value
    return urlunsplit((parts.scheme, parts.netloc, parts.path.rstrip("/"), "", "")), options


def redacted_options(options: dict[str, str] | None) -> dict[str, str]:
    """Storage options fit to print: credential values replaced by ``***``."""
    return {k: ("***" if is_secret_option(k) else v) for k, v in (options or {}).items()}
