"""Hostile inputs tried through the ``kindred`` CLI: malformed files and options.

Each case writes its input under a directory and gives the CLI arguments; running it records
the exit code, the output and whether the store changed. The tests (test_bad_input.py) and
the figures in docs/reliability.md (``python -m tests.faults.report``) use the same list.

A case passes when the command either succeeds (``accept``: a valid input read as it should
be) or fails with exit status 1 and one ``Error:`` line, no traceback, and the store as it was.
"""

from __future__ import annotations

import decimal
import gzip
import hashlib
import json
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from click.testing import CliRunner

from services.cli import main

BASE_CSV = "customer_id,age,region,note\nc1,30,north,hello\nc2,40,south,fine\nc3,50,east,ok\n"


@dataclass
class Case:
    name: str
    make: Callable[[Path], list[str]]
    """Writes the input under the directory; returns the CLI arguments after ``--store``."""
    accept: bool = False
    """True when the input is valid and must load."""
    expect: str = ""
    """A fragment the error line must contain (file, line, column or value)."""


@dataclass
class Outcome:
    case: str
    code: int
    output: str
    traceback: bool
    store_changed: bool
    ok: bool
    problems: list[str] = field(default_factory=list)


def _write(path: Path, data: bytes | str) -> str:
    path.write_bytes(data.encode() if isinstance(data, str) else data)
    return str(path)


def _parquet(path: Path, table: pa.Table) -> str:
    pq.write_table(table, path)
    return str(path)


def _ingest(path: str, *extra: str, table: str = "customers") -> list[str]:
    return ["ingest", table, path, *extra]


def _csv(name: str, data: bytes | str) -> Callable[[Path], list[str]]:
    return lambda d: _ingest(_write(d / name, data))


def _big_field(d: Path) -> list[str]:
    return _ingest(_write(d / "big.csv", "customer_id,note\nz1," + "x" * (10 << 20) + "\nz2,y\n"))


def _dup_parquet(d: Path) -> list[str]:
    t = pa.table([pa.array(["z1", "z2"]), pa.array([1, 2]), pa.array([3, 4])],
                 names=["customer_id", "a", "a"])
    return _ingest(_parquet(d / "dup.parquet", t))


def _typed_parquet(name: str, arr: pa.Array) -> Callable[[Path], list[str]]:
    return lambda d: _ingest(_parquet(d / f"{name}.parquet", pa.table(
        {"customer_id": [f"z{i}" for i in range(len(arr))], f"v_{name}": arr})))


def _mapping(body: str) -> Callable[[Path], list[str]]:
    def make(d: Path) -> list[str]:
        _write(d / "m.csv", BASE_CSV.replace("c", "m", 3))
        return ["ingest", "--mapping", _write(d / "m.toml", body.replace("@", str(d / "m.csv")))]
    return make


def _events(first: str, second: str) -> Callable[[Path], list[str]]:
    def make(d: Path) -> list[str]:
        head = "event_id,customer_id,ts,kind,amount\n"
        p = _write(d / "ev.csv", head + second)
        return ["ingest", "events", p]
    return make


def _where(expr: str) -> Callable[[Path], list[str]]:
    return lambda d: ["match", "mortgage", "--where", expr]


def _args(*argv: str) -> Callable[[Path], list[str]]:
    return lambda d: list(argv)


def _ro_target(d: Path) -> list[str]:
    return ["migrate", "--to", "/sys/kindred-migrate-target"]


def _self_target(d: Path) -> list[str]:
    return ["migrate", "--to", "{store}/../" + "{store_name}", "--replace"]


def malformed_cases() -> list[Case]:
    """Every kind of bad input the issue lists, plus variants; a few valid ones (accept)."""
    rng = np.random.default_rng(0)
    cases = [
        Case("gzip named .csv", _csv("g.csv", gzip.compress(BASE_CSV.encode())), expect="gzip"),
        Case("random bytes named .csv", _csv("r.csv", rng.bytes(4000)), expect="binary"),
        Case("zip named .csv", _csv("z.csv", b"PK\x03\x04" + rng.bytes(100)), expect="zip"),
        Case("parquet named .csv", _csv("p.csv", b"PAR1" + rng.bytes(100)), expect="Parquet"),
        Case("empty file", _csv("e.csv", b""), expect="empty"),
        Case("header only", _csv("h.csv", "customer_id,age\n"), accept=True),
        Case("unterminated quote", _csv("q.csv", 'customer_id,age,note\nq1,30,"hello\n'
                                        'q2,40,ok\nq3,50,fine\n'), expect="q.csv:2"),
        Case("unterminated quote at the end", _csv("q2.csv", 'customer_id,note\nq1,a\nq2,"b\n'),
             expect="q2.csv:3"),
        Case("wrong field count", _csv("f.csv", "customer_id,age\nf1,30\nf2,40,9\n"),
             expect="f.csv:3"),
        Case("latin-1 byte", _csv("l.csv", b"customer_id,region,age,name\nl1,n,30,ab\n"
                                  b"l2,s,40,caf\xe9\n"), expect="l.csv:3: column 'name'"),
        Case("UTF-16 without declaring it", _csv("u16.csv", BASE_CSV.encode("utf-16")),
             expect="u16.csv"),
        Case("NUL byte in a value", _csv("n.csv", "customer_id,note\nn1,a\x00b\nn2,c\n"),
             expect="n.csv:2"),
        Case("legal 10 MB field", _big_field, accept=True),
        Case("duplicate header name", _csv("d.csv", "customer_id,a,a\nd1,1,2\n"), expect="'a'"),
        Case("empty header name", _csv("eh.csv", "customer_id,,b\nx1,1,2\n"), expect="line 1"),
        Case("BOM and CRLF", _csv("bom.csv", "\ufeffcustomer_id,age\r\nb1,3\r\nb2,4\r\n"),
             accept=True),
        Case("blank id", _csv("bi.csv", "customer_id,age\n,3\nb2,4\n"), expect="bi.csv:2"),
        Case("repeated id", _csv("ri.csv", "customer_id,age\nr1,3\nr1,4\n"), expect="ri.csv:3"),
        Case("integer overflow in a declared int", lambda d: _ingest(_write(
            d / "o.csv", "customer_id,age\no1,3\no2,99999999999999999999999\n"),
            "--type", "age=int64"), expect="o.csv:3"),
        Case("nested JSON object", lambda d: _ingest(_write(
            d / "nest.jsonl", '{"customer_id":"j1","a":{"x":1}}\n{"customer_id":"j2","a":{"x":2}}\n')),
            accept=True),
        Case("JSON field changing type", lambda d: _ingest(_write(
            d / "chg.jsonl", '{"customer_id":"j1","a":1}\n{"customer_id":"j2","a":"x"}\n')),
            expect="chg.jsonl:2"),
        Case("invalid JSON line", lambda d: _ingest(_write(
            d / "bad.jsonl", '{"customer_id":"j1"}\n{"customer_id": \n')), expect="line 2"),
        Case("JSON field first seen late", lambda d: _ingest(_write(
            d / "late.jsonl", "".join(f'{{"customer_id":"k{i}"}}\n' for i in range(3))
            + '{"customer_id":"k9","z":1}\n')),
            accept=True),
        Case("parquet duplicate column names", _dup_parquet, expect="'a'"),
        Case("float16 column", _typed_parquet("f16", pa.array(np.array([1.5, 2.5], np.float16))),
             accept=True),
        Case("decimal128 column", _typed_parquet("dec", pa.array(
            [decimal.Decimal("1.25"), decimal.Decimal("2.50")], pa.decimal128(10, 2))),
            accept=True),
        Case("decimal beyond float64", _typed_parquet("dec38", pa.array(
            [decimal.Decimal("1234567890123456789.123")], pa.decimal128(38, 3))),
            expect="dec38.parquet"),
        Case("struct column", _typed_parquet("st", pa.array([{"x": 1}, {"x": 2}])),
             accept=True),
        Case("NUL in a parquet string", _typed_parquet("nul", pa.array(["a\x00b", "c"])),
             expect="row 1"),
        Case("uint64 above int64", _typed_parquet("u64", pa.array([1, 2**63 + 5], pa.uint64())),
             expect="row 2"),
        Case("duration column", _typed_parquet("dur", pa.array([1, 2], pa.duration("s"))),
             expect="duration"),
        Case("corrupt parquet", _csv("c.parquet", b"PAR1" + rng.bytes(300) + b"PAR1"),
             expect="c.parquet"),
        Case("quote_char 'ab'", _mapping('table = "customers"\n[source]\npath = "@"\n'
                                         'quote_char = "ab"\n'), expect="quote_char"),
        Case("delimiter equal to quote", _mapping('table = "customers"\n[source]\npath = "@"\n'
                                                  'delimiter = "\\""\n'), expect="must differ"),
        Case("mapping not TOML", lambda d: ["ingest", "--mapping", _write(d / "x.toml", "[[[")],
             expect="TOML"),
        Case("mapping unknown key", _mapping('table = "customers"\nfoo = 1\n[source]\n'
                                             'path = "@"\n'), expect="foo"),
        Case("mapping unknown type", _mapping('table = "customers"\ntypes = {age = "uint128"}\n'
                                              '[source]\npath = "@"\n'), expect="uint128"),
        Case("rename onto an existing column", lambda d: _ingest(_write(d / "rn.csv", BASE_CSV),
                                                                 "--rename", "region=age"),
             expect="region=age"),
        Case("rename of a missing column", lambda d: _ingest(_write(d / "rm.csv", BASE_CSV),
                                                             "--rename", "nope=x"),
             expect="nope"),
        Case("event id reused with other values",
             _events("", "e1,c1,2024-01-01,purchase,10\ne1,c1,2024-01-01,purchase,11\n"),
             expect="ev.csv:3"),
        Case("event without a timestamp", _events("", "e7,c1,,purchase,10\n"), expect="ev.csv:2"),
        Case("--where 500 nested parentheses", _where("(" * 500 + "age > 3" + ")" * 500),
             expect="parentheses"),
        Case("--where 300 'not'", _where("not " * 300 + "age > 3"), accept=True),
        Case("--where deep and/or/not", _where(_alternating(60)), expect="levels"),
        Case("--where unknown column", _where("nope > 3"), expect="nope"),
        Case("--where type mismatch", _where("age = 'x'"), expect="age"),
        Case("--where injection", _where("age > 3; DROP TABLE customers"), expect="';'"),
        Case("--where unterminated string", _where("region = 'x"), expect="unterminated"),
        Case("--where NUL", _where("region = 'a\x00b'"), expect="NUL"),
        Case("risk score --threshold nan", _args("risk", "score", "--threshold", "nan"),
             expect="finite"),
        Case("risk score --threshold inf", _args("risk", "score", "--threshold", "inf"),
             expect="finite"),
        Case("match --min-score nan", _args("match", "mortgage", "--min-score", "nan"),
             expect="finite"),
        Case("match --audience-pct nan", _args("match", "mortgage", "--audience-pct", "nan"),
             expect="finite"),
        Case("match --bands nan 0", _args("match", "mortgage", "--bands", "nan", "0"),
             expect="finite"),
        Case("match --top 5 --audience-pct 5", _args("match", "mortgage", "--top", "5",
                                                     "--audience-pct", "5"),
             expect="cannot be combined"),
        Case("embed tabular --dim 100000", _args("embed", "tabular", "--dim", "100000",
                                                 "--output", "vec_big"), expect="100000"),
        Case("embed combined --weight nan", _args("embed", "combined", "--source", "vec_tabular",
                                                  "--weight", "nan"), expect="finite"),
        Case("risk score --fit-sample nan", _args("risk", "score", "--fit-sample", "nan"),
             expect="finite"),
        Case("evaluate --holdout nan", _args("evaluate", "matching", "--product", "mortgage",
                                             "--holdout", "nan"), expect="finite"),
        Case("migrate --to a read-only directory", _ro_target, expect="/sys/kindred"),
        Case("migrate --to the store itself", _self_target, expect="is the source store"),
        Case("--store keyword DSN", _args("--store=host=db password=hunter22secret", "stats"),
             expect="keyword"),
        Case("unknown table", _args("stats", "--table", "nope"), expect="nope"),
    ]
    return cases


def _alternating(depth: int) -> str:
    text = "age > 1"
    for i in range(depth):
        text = f"not (age > {i} or ({text}))"
    return text


# ---------------------------------------------------------------------------------- running
def make_store(root: Path) -> Path:
    """A small store with customers (holdings), a tabular vector column and a risk model."""
    store = root / "store"
    src = root / "customers.csv"
    rows = ["customer_id,age,region,income,products"]
    rng = np.random.default_rng(1)
    for i in range(120):
        held = "mortgage;savings" if i % 3 == 0 else "savings"
        rows.append(f"c{i},{20 + i % 50},{['north', 'south', 'east'][i % 3]},"
                    f"{int(rng.integers(1000, 9000))},{held}")
    src.write_text("\n".join(rows) + "\n")
    for argv in (["ingest", "customers", str(src), "--holdings-column", "products",
                  "--holdings-separator", ";"], ["embed", "tabular"]):
        res = CliRunner().invoke(main, ["--store", str(store), *argv], catch_exceptions=False)
        assert res.exit_code == 0, res.output
    return store


def fingerprint(store: Path) -> str:
    """A digest of what a store holds: each table's schema, description and rows (sorted by
    key), and each artifact's digest. Not its files: a refused load may leave new catalogue
    versions behind, which are history, not content."""
    import vectorstore

    h = hashlib.sha256()
    s = vectorstore.connect(str(store))
    try:
        for name in sorted(s.list_tables()):
            info = s.table_info(name)
            h.update(f"{name}|{info.schema}|{info.key}|{sorted(info.vectors)}|".encode())
            h.update(json.dumps(info.metadata, sort_keys=True, default=str).encode())
            t = s.to_arrow(name)
            if info.key and t.num_rows:
                t = t.sort_by(info.key)
            h.update(str(t.to_pylist()).encode())
        for art in s.list_artifacts():
            h.update(f"{art}={s.get_artifact(art)[1]['sha256']}".encode())
    finally:
        s.close()
    return h.hexdigest()


def run_case(case: Case, store: Path, work: Path) -> Outcome:
    """Run one case on ``store`` with its input under ``work``; see the module docstring."""
    work.mkdir(parents=True, exist_ok=True)
    argv = case.make(work)
    argv = [a.replace("{store}", str(store)).replace("{store_name}", store.name) for a in argv]
    full = argv if argv and argv[0].startswith("--store=") else ["--store", str(store), *argv]
    before = fingerprint(store)
    res = CliRunner().invoke(main, full, catch_exceptions=True)
    out = res.output
    tb = "Traceback (most recent call last)" in out or (
        res.exception is not None and not isinstance(res.exception, SystemExit))
    changed = fingerprint(store) != before
    problems = []
    if tb:
        problems.append("traceback")
    if case.accept:
        if res.exit_code != 0:
            problems.append(f"valid input refused (exit {res.exit_code})")
    else:
        if res.exit_code == 0:
            problems.append("silently accepted (exit 0)")
        elif res.exit_code not in (1, 2) or (res.exit_code == 2 and "Usage:" not in out):
            problems.append(f"exit {res.exit_code}")
        errors = [ln for ln in out.splitlines() if ln.startswith("Error:")]
        if len(errors) != 1:
            problems.append(f"{len(errors)} error lines")
        elif case.expect and case.expect not in errors[0]:
            problems.append(f"error line lacks {case.expect!r}")
        if changed:
            problems.append("store changed")
    return Outcome(case.name, res.exit_code, out, tb, changed, not problems, problems)


def summary(outcomes: list[Outcome]) -> dict[str, int]:
    return {
        "inputs tried": len(outcomes),
        "tracebacks": sum(o.traceback for o in outcomes),
        "silent acceptances": sum("silently accepted (exit 0)" in o.problems for o in outcomes),
        "store changed by a rejected input": sum("store changed" in o.problems
                                                 for o in outcomes),
        "cases failing any check": sum(not o.ok for o in outcomes),
    }


def dump(outcomes: list[Outcome], path: Path) -> None:
    path.write_text(json.dumps([o.__dict__ for o in outcomes], indent=1))


os.environ.setdefault("COLUMNS", "200")
