"""Store locations and connection strings: parse first, then print only the redacted form.

A PostgreSQL URI may carry a password in its user info (``user:pass@``) or as a
``password=`` query parameter, and people paste passwords without percent-encoding them
(spaces, ``%``, ``@``, ``:``, ``/``, ``?``, ``#``). :func:`parse_pg_uri` reads the user info
leniently (the password runs to the *last* ``@``, as SQLAlchemy reads it; ``%XX`` is decoded
only where it is a valid escape), rebuilds a canonical, properly encoded URI for the driver,
and keeps a redacted form for every message. Driver messages that quote the connection
string are never shown.

Every password parsed here is remembered for the life of the process, and :func:`redact`
removes remembered passwords (raw and percent-encoded) and anything shaped like a password
from any text, so the CLI can pass every message and traceback through it.

:func:`check_location` refuses store locations that are not a URI of a known shape and not a
plausible directory path (a libpq keyword string such as ``host=db password=...``, control
characters, ``user@host:5432``), so none of them ever becomes a LanceDB directory.
"""

from __future__ import annotations

import re
import threading
from dataclasses import dataclass, field
from urllib.parse import quote, quote_plus

from .errors import BackendUnavailable, InvalidLocation

REDACTED = "***"
MIN_SECRET = 4
"""Shorter remembered secrets are not replaced as bare substrings (every "ab" in a message
would go): URI and keyword patterns still remove them where they appear as a password."""

_SCHEME = re.compile(r"^(?P<scheme>[A-Za-z][A-Za-z0-9+.-]*):")
_URI = re.compile(r"^(?P<scheme>[A-Za-z][A-Za-z0-9+.-]*)://(?P<rest>.*)$", re.S)
_KEYWORDS = ("host", "hostaddr", "port", "dbname", "user", "password", "passfile", "sslmode",
             "service", "options", "application_name", "connect_timeout", "sslcert", "sslkey",
             "sslrootcert", "target_session_attrs", "channel_binding", "gssencmode")
_KEYWORD_DSN = re.compile(r"(?:^|\s)(?:" + "|".join(_KEYWORDS) + r")\s*=", re.I)
_KEYWORD_PASSWORD = re.compile(r"(?i)(\bpassword\s*=\s*)('(?:[^'\\]|\\.)*'?|[^\s&]+)")
_QUERY_PASSWORD = re.compile(r"(?i)([?&]password=)[^&\s]*")
# scheme://user:password@ in free text: the password runs to the last @ on the line (it may
# hold @ itself); over-redacting text between two URIs is the safe way to be wrong
_USERINFO = re.compile(r"(?P<head>\b[A-Za-z][A-Za-z0-9+.-]*://[^\s:/@?#'\"]*):[^\n]*@")
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
_HOST_PORT = re.compile(r"^[^/\\\s@]+@[^/\\\s]+:\d+")
_PCT = re.compile(r"%([0-9A-Fa-f]{2})")

_lock = threading.Lock()
_secrets: set[str] = set()


# ---------------------------------------------------------------------------------- secrets
def remember_secret(secret: str | None) -> None:
    """Note a password so that :func:`redact` removes it (and its encodings) from any text."""
    if not secret:
        return
    forms = {secret, quote(secret, safe=""), quote_plus(secret), quote(secret)}
    with _lock:
        _secrets.update(f for f in forms if f)


def remember_secrets_in(location: str | None) -> None:
    """Remember any password carried by ``location`` (a URI or a keyword string)."""
    if not isinstance(location, str):
        return
    for pw in _passwords_in(location):
        remember_secret(pw)


def _passwords_in(text: str) -> list[str]:
    found: list[str] = []
    m = _URI.match(text.strip())
    if m:
        userinfo, _ = _split_authority(m.group("rest"))
        if userinfo is not None and ":" in userinfo:
            raw = userinfo.split(":", 1)[1]
            found += [raw, _decode(raw)]
        query = text.split("?", 1)[1] if "?" in text else ""
        for part in query.split("&"):
            k, _, v = part.partition("=")
            if k.lower() == "password" and v:
                found += [v, _decode(v.replace("+", " "))]
    for km in _KEYWORD_PASSWORD.finditer(text):
        v = km.group(2)
        if v.startswith("'"):
            v = re.sub(r"\\(.)", r"\1", v[1:-1] if v.endswith("'") and len(v) > 1 else v[1:])
        found.append(v)
    return [f for f in found if f]


def redact(text: str) -> str:
    """``text`` with every password removed: URI user info, ``password=`` values, and any
    password parsed earlier in this process (raw or percent-encoded)."""
    if not text:
        return text
    out = _USERINFO.sub(lambda m: f"{m.group('head')}:{REDACTED}@", text)
    out = _QUERY_PASSWORD.sub(lambda m: m.group(1) + REDACTED, out)
    out = _KEYWORD_PASSWORD.sub(lambda m: m.group(1) + REDACTED, out)
    with _lock:
        secrets = sorted((s for s in _secrets if len(s) >= MIN_SECRET), key=len, reverse=True)
    for s in secrets:
        if s in out:
            out = out.replace(s, REDACTED)
    return out


# ---------------------------------------------------------------------------------- parsing
def _decode(text: str) -> str:
    """Percent-decode the valid ``%XX`` escapes only; a bare ``%`` stays a ``%``."""
    if "%" not in text:
        return text
    raw = _PCT.sub(lambda m: chr(0xDC00 + int(m.group(1), 16)), text)  # mark escaped bytes
    data = bytearray()
    for ch in raw:
        cp = ord(ch)
        if 0xDC00 <= cp <= 0xDCFF:
            data.append(cp - 0xDC00)
        else:
            data += ch.encode("utf-8", "surrogatepass")
    return data.decode("utf-8", "replace")


def _split_authority(rest: str) -> tuple[str | None, str]:
    """(user info or None, the rest after it) of ``user:pass@host/db?...`` read leniently:
    the user info runs to the last ``@`` (a password may hold ``@``, ``/``, ``?``, ``#``)."""
    at = rest.rfind("@")
    if at < 0:
        return None, rest
    return rest[:at], rest[at + 1:]


def has_scheme(location: str) -> bool:
    """Whether ``location`` starts with a URI scheme of two letters or more (``C:\\x`` is a
    Windows path, not a scheme)."""
    m = _SCHEME.match(location)
    return m is not None and len(m.group("scheme")) > 1


def scheme_of_text(location: str) -> str:
    """The lower-case scheme of a location, or ``""`` for a plain path (never raises)."""
    m = _SCHEME.match(location)
    if not m or len(m.group("scheme")) == 1:
        return ""
    return m.group("scheme").lower()


def redact_location(location: str) -> str:
    """A printable form of a store location (its password replaced by ``***``)."""
    m = _URI.match(location)
    if not m:
        return redact(location)
    userinfo, after = _split_authority(m.group("rest"))
    if userinfo is None:
        return redact(location)
    user = userinfo.split(":", 1)[0]
    shown = f"{m.group('scheme')}://{user}:{REDACTED}@" if ":" in userinfo else \
        f"{m.group('scheme')}://{user}@"
    return redact(shown + after)


@dataclass(frozen=True)
class PgTarget:
    """A parsed PostgreSQL URI: the canonical URI for the driver, its redacted form, the
    password (never printed) and Kindred's own ``schema`` parameter."""

    conninfo: str
    display: str
    password: str | None = field(repr=False)
    schema: str | None = None


def parse_pg_uri(uri: str) -> PgTarget:
    """Parse ``postgresql://user:password@host:port/db?params`` leniently (see the module
    docstring); raises :class:`InvalidLocation` with the redacted form, never the input."""
    m = _URI.match(uri.strip())
    if not m:
        raise InvalidLocation(f"invalid PostgreSQL URI {redact_location(uri)}: expected "
                              "postgresql://USER:***@HOST:PORT/DBNAME")
    scheme = m.group("scheme").split("+", 1)[0].lower()
    userinfo, after = _split_authority(m.group("rest"))
    user = password = None
    if userinfo is not None:
        raw_user, sep, raw_pw = userinfo.partition(":")
        user = _decode(raw_user)
        password = _decode(raw_pw) if sep else None
        remember_secret(raw_pw if sep else None)
        remember_secret(password)
    hostpath, _, query = after.partition("?")
    if "#" in query:
        query = query.split("#", 1)[0]
    if "#" in hostpath:
        hostpath = hostpath.split("#", 1)[0]
    schema = None
    kept: list[str] = []
    for part in (p for p in query.split("&") if p):
        k, _, v = part.partition("=")
        if k == "schema":
            schema = _decode(v)
            continue
        if k.lower() == "password":
            remember_secret(v)
            remember_secret(_decode(v))
        kept.append(part)
    auth = ""
    if user is not None:
        auth = quote(user, safe="")
        if password is not None:
            auth += ":" + quote(password, safe="")
        auth += "@"
    canonical = f"{scheme}://{auth}{hostpath}" + (f"?{'&'.join(kept)}" if kept else "")
    shown_auth = "" if user is None else (
        quote(user, safe="") + (f":{REDACTED}" if password is not None else "") + "@")
    display = redact(f"{scheme}://{shown_auth}{hostpath}" +
                     (f"?{'&'.join(kept)}" if kept else ""))
    return PgTarget(canonical, display, password, schema)


def driver_reason(message: str) -> str:
    """A driver's error message safe to show: quoted fragments (where libpq and psycopg quote
    parts of the connection string) replaced by ``"..."``, then redacted."""
    first = (message or "").strip().splitlines()[0] if (message or "").strip() else ""
    return redact(re.sub(r"\"[^\"]*\"|'[^']*'", '"..."', first))


# ---------------------------------------------------------------------------------- locations
def check_location(location: str) -> None:
    """Refuse a store location that is neither a URI nor a plausible directory path.

    Raises :class:`InvalidLocation` (showing only the redacted form) for a libpq keyword
    string, control characters, surrounding whitespace, or ``user@host:port`` without a
    scheme; remembers any password it finds first.
    """
    if not isinstance(location, str) or not location.strip():
        raise BackendUnavailable(f"store URI must be a non-empty string, got {location!r}")
    remember_secrets_in(location)
    shown = redact_location(location)
    if _KEYWORD_DSN.search(location) and not has_scheme(location):
        words = sorted({w.lower() for w in re.findall(r"(\w+)\s*=", location)
                        if w.lower() in _KEYWORDS})
        raise InvalidLocation(
            f"the store location looks like a PostgreSQL keyword connection string "
            f"(keywords {', '.join(words)}), not a directory: give it as a URI, "
            "postgresql://USER:***@HOST:PORT/DBNAME")
    if _CONTROL.search(location):
        raise InvalidLocation(f"the store location {_CONTROL.sub('?', shown)!r} contains control "
                              "characters: give a directory path or a URI")
    if location != location.strip():
        raise InvalidLocation(f"the store location {shown!r} has leading or trailing "
                              "whitespace: remove it")
    if not has_scheme(location) and (_HOST_PORT.match(location) or "://" in location):
        raise InvalidLocation(
            f"the store location {shown!r} looks like a database address without a known "
            "scheme, not a directory: write postgresql://USER:***@HOST:PORT/DBNAME")


# ---------------------------------------------------------------------------------- identity
def store_identity(store: object) -> tuple[object, ...]:
    """What makes two open stores the same storage, whatever the spelling of their location.

    LanceDB on a local directory: the directory's device and inode (so ``./s``, ``s/``,
    ``/abs/s`` and a symlink to it agree), else its resolved path; object-store URIs: the
    normalised URI; in-memory stores: the object. PostgreSQL: the server (its postmaster start
    time and port, which every role may read), the database and the schema, so ``localhost``,
    ``127.0.0.1`` and a socket directory that reach one server agree.
    """
    import os
    from pathlib import Path

    scheme = getattr(store, "scheme", "")
    if scheme == "lance":
        uri = str(getattr(store, "uri", ""))
        if uri.startswith("memory://"):
            return ("memory", id(store))
        if has_scheme(uri):
            return ("lance", uri.rstrip("/"))
        path = Path(uri).expanduser()
        try:
            st = os.stat(path)
            return ("lance-dir", st.st_dev, st.st_ino)
        except OSError:
            return ("lance-path", str(path.resolve()))
    if scheme == "postgresql" and hasattr(store, "_connection"):
        with store._connection() as conn:
            row = conn.execute("SELECT pg_postmaster_start_time()::text, "
                               "current_setting('port'), current_database()").fetchone()
        return ("postgresql", *(str(v) for v in row), getattr(store, "schema", None))
    return ("object", id(store))


def same_store(a: object, b: object) -> bool:
    """Whether two open stores are the same storage (see :func:`store_identity`)."""
    if a is b:
        return True
    if getattr(a, "scheme", None) != getattr(b, "scheme", None):
        return False
    return store_identity(a) == store_identity(b)
