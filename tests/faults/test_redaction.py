"""DSN passwords never reach the terminal: hostile passwords (spaces, %, @, :, /, ?, #,
quotes, non-ASCII) against a real PostgreSQL with password authentication, on ``stats`` and
``migrate --to``, right and wrong, with and without ``-v``; keyword strings never become a
directory."""

from __future__ import annotations

from pathlib import Path

import pyarrow as pa
import pytest

import vectorstore
from tests.faults import dsn_cases as D
from vectorstore import dsn
from vectorstore.errors import BackendUnavailable

pytestmark = pytest.mark.pgvector


@pytest.fixture(scope="module")
def host(tmp_path_factory: pytest.TempPathFactory):
    with D.password_server(tmp_path_factory.mktemp("pgauth")) as socket_dir:
        yield socket_dir


@pytest.fixture(scope="module")
def lance_store(tmp_path_factory: pytest.TempPathFactory) -> str:
    path = str(tmp_path_factory.mktemp("src") / "store")
    s = vectorstore.connect(path)
    s.create_table("customers", pa.schema([("customer_id", pa.string()), ("age", pa.int64())]),
                   key="customer_id")
    s.write("customers", pa.table({"customer_id": ["a", "b"], "age": [1, 2]}))
    s.put_artifact("customers.note", b"x", {"kind": "note"})
    s.close()
    return path


def test_no_password_piece_in_any_output(host: str, lance_store: str, tmp_path: Path,
                                         monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    outcomes = [D.run(argv, secret, case) for case, argv, secret in D.variants(host, lance_store)]
    assert len(outcomes) >= 80
    leaks = [o for o in outcomes if o.leaked or o.traceback]
    assert not leaks, "\n".join(f"{o.case}: {o.leaked} {o.output[-500:]}" for o in leaks)
    by_case = {o.case: o for o in outcomes}
    for user in D.PASSWORDS:  # the right password works, the wrong one fails clearly
        assert by_case[f"stats, {user} right password"].code == 0
        assert by_case[f"migrate --to, {user} right password"].code == 0
        wrong = by_case[f"stats, {user} wrong password"]
        assert wrong.code == 1
        assert "password authentication failed" in wrong.output
    assert list(tmp_path.iterdir()) == []  # no keyword string became a directory


@pytest.mark.parametrize("text", [
    "host=db.internal password=hunter22 dbname=x", "dbname=x user=y", "  ./store",
    "store\n", "u@db.internal:5432/x", "me:pw@db/x://"])
def test_implausible_locations_are_refused_without_echoing_secrets(text: str) -> None:
    with pytest.raises(BackendUnavailable) as err:
        vectorstore.connect(text)
    assert "hunter22" not in str(err.value)


@pytest.mark.parametrize(("raw", "password"), [
    ("postgresql://u:pa ss@h/db", "pa ss"), ("postgresql://u:Zq%Secret77@h/db", "Zq%Secret77"),
    ("postgresql://u:p@ss:w/rd?x#1@h:5432/db?sslmode=disable", "p@ss:w/rd?x#1"),
    ("postgresql://u:a%40b@h/db", "a@b"), ("postgres://u@h/db", None),
    ("postgresql+psycopg://u:pw%2Fx@h/db?schema=s1", "pw/x")])
def test_lenient_parse_hands_the_driver_a_canonical_uri(raw: str, password: str | None) -> None:
    import psycopg

    target = dsn.parse_pg_uri(raw)
    params = psycopg.conninfo.conninfo_to_dict(target.conninfo)
    assert params.get("password") == password
    assert params.get("host") == "h"
    assert params.get("dbname") == "db"
    if password:
        assert password not in target.display
        assert "***" in target.display
        assert password not in dsn.redact(f"failed: {raw} and {password}")
