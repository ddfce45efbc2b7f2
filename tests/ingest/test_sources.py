"""Source adapters: each format read in batches, with row/line provenance and clear errors."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.feather as feather
import pyarrow.parquet as pq
import pytest

from ingest.errors import SourceError
from ingest.sources import (
    ArrowIpcSource,
    CsvSource,
    FrameSource,
    JsonLinesSource,
    ParquetSource,
    SqlSource,
    detect_kind,
    open_source,
)


def _read(src, batch_rows=1000):
    chunks = list(src.chunks(batch_rows))
    table = pa.Table.from_batches([c.batch for c in chunks]) if chunks else None
    return chunks, table


# ---------------------------------------------------------------- kinds
@pytest.mark.parametrize(("name", "kind"), [
    ("a.csv", "csv"), ("a.TSV", "tsv"), ("a.parquet", "parquet"), ("a.jsonl", "jsonl"),
    ("a.ndjson", "jsonl"), ("a.feather", "arrow"), ("a.arrow", "arrow"),
    ("sqlite:///x.db", "sql"), ("postgresql+psycopg://u@h/db", "sql"),
])
def test_kind_from_extension_or_scheme(name, kind):
    assert detect_kind(name) == kind


def test_unknown_extension_needs_a_kind(tmp_path):
    p = tmp_path / "data.bin"
    p.write_text("a,b\n1,2\n")
    with pytest.raises(SourceError, match="kind"):
        open_source(p)
    src = open_source(p, kind="csv")
    assert isinstance(src, CsvSource)
    assert _read(src)[1].column("b").to_pylist() == ["2"]


# ---------------------------------------------------------------- CSV
def test_csv_bom_delimiter_quoting(tmp_path):
    p = tmp_path / "c.csv"
    p.write_bytes('\ufeffid;name;note\n1;"Smith; John";"says ""hi"""\n2;Ana;\n'.encode())
    _, t = _read(open_source(p, delimiter=";"))
    assert t.column_names == ["id", "name", "note"]
    assert t.column("name").to_pylist() == ["Smith; John", "Ana"]
    assert t.column("note").to_pylist() == ['says "hi"', None]


def test_csv_other_encoding(tmp_path):
    p = tmp_path / "latin.csv"
    p.write_bytes("id,city\n1,Málaga\n2,Zürich\n".encode("latin-1"))
    _, t = _read(open_source(p, encoding="latin-1"))
    assert t.column("city").to_pylist() == ["Málaga", "Zürich"]


def test_tsv(tmp_path):
    p = tmp_path / "t.tsv"
    p.write_text("a\tb\nx y\t2\n")
    _, t = _read(open_source(p))
    assert t.column("a").to_pylist() == ["x y"]


def test_csv_streams_in_batches_with_line_numbers(tmp_path):
    p = tmp_path / "big.csv"
    n = 5000
    p.write_text("id,v\n" + "".join(f"{i},{i * 2}\n" for i in range(n)))
    src = CsvSource(p)
    src.options.block_size = 1 << 14  # several blocks
    chunks, t = _read(src, batch_rows=700)
    assert t.num_rows == n
    assert max(c.batch.num_rows for c in chunks) <= 700
    lines = np.concatenate([c.lines for c in chunks])
    assert lines.tolist() == list(range(2, n + 2))  # line 1 is the header


def test_csv_header_required(tmp_path):
    empty = tmp_path / "empty.csv"
    empty.write_text("")
    with pytest.raises(SourceError, match="header row is required"):
        list(open_source(empty).chunks())
    dup = tmp_path / "dup.csv"
    dup.write_text("a,a\n1,2\n")
    with pytest.raises(SourceError, match="'a' appears twice"):
        list(open_source(dup).chunks())
    blank = tmp_path / "blank.csv"
    blank.write_text("a,,c\n1,2,3\n")
    with pytest.raises(SourceError, match="header field 2 is empty"):
        list(open_source(blank).chunks())


def test_malformed_csv_row_fails_with_its_line(tmp_path):
    p = tmp_path / "bad.csv"
    p.write_text("a,b\n1,2\n3,4,5\n6,7\n")
    with pytest.raises(SourceError, match=r"bad\.csv:3: malformed CSV row '3,4,5'"):
        list(open_source(p).chunks())


def test_malformed_csv_rows_tolerated_keep_line_numbers(tmp_path):
    p = tmp_path / "bad.csv"
    p.write_text("a,b\n1,2\n3,4,5\n6,7\nx\n8,9\n")
    src = open_source(p)
    src.tolerate_malformed = True
    chunks, t = _read(src)
    assert t.column("a").to_pylist() == ["1", "6", "8"]
    assert np.concatenate([c.lines for c in chunks]).tolist() == [2, 4, 6]
    bad = src.take_malformed()
    assert [(m.line, m.text) for m in bad] == [(3, "3,4,5"), (5, "x")]
    assert "2 fields" in bad[0].reason


def test_missing_file(tmp_path):
    with pytest.raises(SourceError, match="no such file"):
        list(open_source(tmp_path / "nope.csv").chunks())


# ---------------------------------------------------------------- Parquet
def test_parquet_in_batches(tmp_path):
    p = tmp_path / "p.parquet"
    t = pa.table({"id": [str(i) for i in range(2500)], "x": np.arange(2500.0)})
    pq.write_table(t, p, row_group_size=1000)
    chunks, back = _read(open_source(p), batch_rows=400)
    assert back.equals(t)
    assert max(c.batch.num_rows for c in chunks) <= 400
    assert chunks[1].first_row == chunks[0].batch.num_rows + 1


def test_malformed_parquet(tmp_path):
    p = tmp_path / "bad.parquet"
    p.write_bytes(b"PAR1 this is not parquet")
    with pytest.raises(SourceError, match="not a readable Parquet file"):
        list(ParquetSource(p).chunks())


# ---------------------------------------------------------------- JSON Lines
def test_jsonl_chunks_keep_line_numbers(tmp_path):
    p = tmp_path / "e.jsonl"
    rows = [{"id": str(i), "amount": i * 1.5} for i in range(7)]
    text = "\n".join(json.dumps(r) for r in rows[:3]) + "\n\n" + \
        "\n".join(json.dumps(r) for r in rows[3:]) + "\n"
    p.write_text(text)
    chunks, t = _read(JsonLinesSource(p, block_lines=2), batch_rows=2)
    assert t.column("id").to_pylist() == [str(i) for i in range(7)]
    assert np.concatenate([c.lines for c in chunks]).tolist() == [1, 2, 3, 5, 6, 7, 8]
    assert np.concatenate([c.rows() for c in chunks]).tolist() == [1, 2, 3, 4, 5, 6, 7]


def test_malformed_jsonl(tmp_path):
    p = tmp_path / "bad.jsonl"
    p.write_text('{"a": 1}\n{"a": 2\n{"a": 3}\n')
    with pytest.raises(SourceError, match=r"line 2: malformed JSON row"):
        list(open_source(p).chunks())
    src = open_source(p)
    src.tolerate_malformed = True
    chunks, t = _read(src)
    assert t.column("a").to_pylist() == [1, 3]
    assert np.concatenate([c.lines for c in chunks]).tolist() == [1, 3]
    assert [m.line for m in src.take_malformed()] == [2]


def test_jsonl_field_appearing_late_is_named(tmp_path):
    p = tmp_path / "late.jsonl"
    p.write_text('{"a": 1}\n{"a": 2}\n{"a": 3, "b": "x"}\n')
    with pytest.raises(SourceError, match=r"field.*b first appear"):
        list(JsonLinesSource(p, block_lines=2).chunks())


# ---------------------------------------------------------------- Arrow IPC / Feather
@pytest.mark.parametrize("fmt", ["file", "stream", "feather"])
def test_arrow_ipc(tmp_path, fmt):
    t = pa.table({"id": ["a", "b", "c"], "v": [1, 2, 3]})
    p = tmp_path / "t.arrow"
    if fmt == "feather":
        feather.write_feather(t, p, chunksize=2)
    else:
        with pa.OSFile(str(p), "wb") as sink:
            writer = (pa.ipc.new_file if fmt == "file" else pa.ipc.new_stream)(sink, t.schema)
            writer.write_table(t, max_chunksize=2)
            writer.close()
    chunks, back = _read(open_source(p))
    assert back.equals(t)
    assert len(chunks) == 2


def test_malformed_arrow(tmp_path):
    p = tmp_path / "bad.feather"
    p.write_bytes(b"ARROW1\x00\x00garbage")
    with pytest.raises(SourceError, match="not a readable Arrow"):
        list(ArrowIpcSource(p).chunks())


# ---------------------------------------------------------------- SQL
@pytest.fixture
def sqlite_url(tmp_path: Path) -> str:
    db = tmp_path / "crm.db"
    con = sqlite3.connect(db)
    con.execute("CREATE TABLE clients (client_id TEXT, age INTEGER, income REAL, note TEXT)")
    con.executemany("INSERT INTO clients VALUES (?, ?, ?, ?)",
                    [(f"c{i}", 20 + i % 50, 1000.0 * i, None if i % 3 else "vip")
                     for i in range(250)])
    con.commit()
    con.close()
    return f"sqlite:///{db}"


def test_sql_table_in_batches(sqlite_url):
    chunks, t = _read(open_source(sqlite_url, table="clients"), batch_rows=100)
    assert [c.batch.num_rows for c in chunks] == [100, 100, 50]
    assert t.num_rows == 250
    assert t.schema.field("age").type == pa.int64()
    assert t.schema.field("income").type == pa.float64()
    assert t.column("client_id")[249].as_py() == "c249"


def test_sql_query(sqlite_url):
    _, t = _read(open_source(sqlite_url, query="SELECT client_id, age FROM clients WHERE age < 22"))
    assert sorted(set(t.column("age").to_pylist())) == [20, 21]


def test_sql_errors(sqlite_url):
    with pytest.raises(SourceError, match="no such table 'missing'"):
        list(open_source(sqlite_url, table="missing").chunks())
    with pytest.raises(SourceError, match="no such column"):
        list(open_source(sqlite_url, query="SELECT nope FROM clients").chunks())
    with pytest.raises(SourceError, match="exactly one of"):
        SqlSource(sqlite_url)


def test_sql_url_password_not_in_name():
    src = SqlSource("postgresql://user:s3cret@localhost/db", table="t")
    assert "s3cret" not in src.name


@pytest.mark.pgvector
def test_sql_postgresql(pg_dsn):
    pytest.importorskip("psycopg")
    import sqlalchemy as sa

    url = pg_dsn if "+" in pg_dsn.split("://")[0] else pg_dsn.replace("postgresql://",
                                                                       "postgresql+psycopg://", 1)
    engine = sa.create_engine(url)
    with engine.begin() as conn:
        conn.execute(sa.text("DROP TABLE IF EXISTS ingest_src"))
        conn.execute(sa.text("CREATE TABLE ingest_src (id text, n integer)"))
        conn.execute(sa.text("INSERT INTO ingest_src SELECT 'k' || g, g FROM generate_series(1, 300) g"))
    engine.dispose()
    chunks, t = _read(open_source(url, table="ingest_src"), batch_rows=128)
    assert [c.batch.num_rows for c in chunks] == [128, 128, 44]
    assert sorted(t.column("n").to_pylist()) == list(range(1, 301))


# ---------------------------------------------------------------- in-process frames
def test_frames():
    import pandas as pd
    import polars as pl

    data = {"id": ["a", "b", "c"], "v": [1.5, 2.5, None]}
    for obj in (pd.DataFrame(data), pl.DataFrame(data), pa.table(data),
                pa.table(data).to_batches()[0],
                pa.RecordBatchReader.from_batches(pa.table(data).schema, pa.table(data).to_batches())):
        src = open_source(obj)
        assert isinstance(src, FrameSource)
        _, t = _read(src, batch_rows=2)
        assert t.column("id").to_pylist() == ["a", "b", "c"]
        assert t.column("v").to_pylist() == [1.5, 2.5, None]


def test_unknown_object():
    with pytest.raises(SourceError, match="cannot read a dict"):
        list(open_source({"a": [1]}).chunks())


# ---------------------------------------------------------------- CSV blocks, typed reads
def _typed_csv(path: Path, rows: int, bad: dict[int, str] | None = None) -> Path:
    """id,n,x rows; ``bad`` replaces the n value of data row i (0-based) with a text."""
    bad = bad or {}
    path.write_text("id,n,x\n" + "".join(
        f"c{i},{bad.get(i, i)},{i / 2}\n" for i in range(rows)))
    return path


def test_csv_typed_blocks_keep_exact_lines(tmp_path):
    p = _typed_csv(tmp_path / "t.csv", 3000, bad={2500: "0x1F", 2900: "oops"})
    src = CsvSource(p)
    src.options.block_size = 1 << 12  # many blocks
    src.column_types = {"n": pa.int64(), "x": pa.float64()}
    chunks = list(src.chunks(500))
    lines = np.concatenate([c.lines for c in chunks])
    assert lines.tolist() == list(range(2, 3002))
    typed = [c for c in chunks if c.batch.schema.field("n").type == pa.int64()]
    text = [c for c in chunks if c.batch.schema.field("n").type == pa.string()]
    assert typed  # later blocks are read typed
    assert text  # the first block, and the blocks with values int64 refuses, as text
    values = {}
    for c in text:
        for v, ln in zip(c.batch.column("n").to_pylist(), c.lines.tolist(), strict=True):
            values[ln] = v
    assert values[2502] == "0x1F"  # never silently read as 31
    assert values[2902] == "oops"
    assert sum(c.batch.num_rows for c in typed) > 1500


def test_csv_blocks_with_empty_lines_and_malformed_rows(tmp_path):
    p = tmp_path / "gaps.csv"
    body = []
    for i in range(400):
        body.append(f"c{i},{i},{i}.5")
        if i % 97 == 0:
            body.append("")  # an empty line (skipped, but counted)
        if i % 151 == 0:
            body.append("broken,row")
    p.write_text("id,n,x\n" + "\r\n".join(body) + "\r\n")
    src = CsvSource(p)
    src.options.block_size = 1 << 10
    src.column_types = {"n": pa.int64()}
    src.tolerate_malformed = True
    chunks, t = _read(src, batch_rows=64)
    expect = {}
    for line_no, text in enumerate(body, start=2):
        if text.startswith("c"):
            expect[line_no] = text.split(",")[0]
    got = dict(zip(np.concatenate([c.lines for c in chunks]).tolist(),
                   t.column("id").to_pylist(), strict=True))
    assert got == expect
    bad = src.take_malformed()
    assert [m.line for m in bad] == [n for n, text in enumerate(body, start=2)
                                    if text == "broken,row"]


def test_csv_typed_block_with_a_bad_value_and_a_malformed_row(tmp_path):
    p = _typed_csv(tmp_path / "both.csv", 2000, bad={1500: "x1"})
    lines = p.read_text().splitlines()
    lines.insert(1700, "c_short,1")  # a malformed row in the same late block
    p.write_text("\n".join(lines) + "\n")
    src = CsvSource(p)
    src.options.block_size = 1 << 16
    src.column_types = {"n": pa.int64()}
    src.tolerate_malformed = True
    chunks = list(src.chunks(4096))
    got = {}
    for c in chunks:
        got.update(zip(c.lines.tolist(), c.batch.column("n").to_pylist(), strict=True))
    assert got[1502] == "x1"
    assert [m.line for m in src.take_malformed()] == [1701]
    assert sorted(got) == [n for n in range(2, 2003) if n != 1701]


def test_jsonl_lists_of_nulls_are_readable(tmp_path):
    # pyarrow.json gives [null, null] a child array shorter than its offsets say
    p = tmp_path / "n.jsonl"
    p.write_text('{"id": "a", "note": [null, null]}\n{"id": "b", "note": null}\n'
                 '{"id": "c", "note": []}\n')
    batch = next(JsonLinesSource(p).chunks()).batch
    batch.validate(full=True)
    assert batch.column("note").to_pylist() == [[None, None], None, []]
