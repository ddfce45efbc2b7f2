"""Ingest in pieces: on the Ray runner each worker reads and validates a piece of a Parquet
or CSV file; the stored tables, the counts and the row errors are the local runner's.

The pieces themselves are checked without Ray: together they give exactly the chunks of the
sequential reader (every row once, same row and line numbers).
"""

from __future__ import annotations

import datetime as dt
import itertools
import logging
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

import vectorstore
from ingest import pipeline
from ingest.errors import SourceError
from ingest.freshness import ROW_STAMP, STAMP_PREFIX
from ingest.mapping import Mapping
from ingest.piecewise import plan_pieces
from ingest.pipeline import ingest, rejects_table
from ingest.runner import LOCAL, get_runner
from ingest.sources import (
    Chunk,
    CsvOptions,
    CsvSource,
    FrameSource,
    JsonLinesSource,
    ParquetSource,
    Source,
)

BLOCK = 2048
"""CSV block size in bytes: the test files span many blocks."""
CUSTOMERS = Mapping.from_options("customers", id_column="client_id")
EVENTS_WITH_ID = Mapping.from_options("events", id_column="txn",
                                      rename=["client=customer_id", "when=ts"])
EVENTS = Mapping.from_options("events")


def _customers_csv(path: Path, n: int = 1200, malformed: tuple[int, ...] = (10, 300, 900)
                   ) -> Path:
    """A UTF-8 CSV with a byte order mark, quoted fields, blank lines, malformed rows, a
    repeated id and a bad age in a late block."""
    lines = ["client_id,age,income,segment,notes"]
    for i in range(n):
        age = str(20 + i % 60)
        if i == n - 40:
            age = "forty"  # a bad value in a late block
        income = f"{1000 + i * 7.25}" if i % 11 else ""
        notes = f'"note {i}, with a comma"' if i % 5 == 0 else f"n{i}"
        lines.append(f"c{i},{age},{income},seg{i % 4},{notes}")
        if i % 97 == 0:
            lines.append("")  # blank lines move the file lines of the rows after them
        if i in malformed:  # row 10's is in the block the driver reads for the plan
            lines.append(f"c{i}x,1,2")  # a malformed row (too few fields)
    lines.append("c5,33,1.5,seg1,again")  # an id repeated in the load
    path.write_bytes(b"\xef\xbb\xbf" + ("\n".join(lines) + "\n").encode())
    return path


def _events_csv(path: Path, n: int = 900) -> Path:
    """Events with ids, each of the first 100 repeated later (same content), and one id
    repeated with other content."""
    rows = ["txn,client,when,kind,amount,channel"]
    for i in range(n):
        j = i % (n - 100) if i >= n - 100 else i
        rows.append(f"e{j},c{j % 13},2024-02-{1 + j % 28:02d} 09:{j % 60:02d}:00,"
                    f"transaction,{j * 0.5},card")
    rows.append("e7,c99,2024-03-01 00:00:00,transaction,1,web")  # e7 with other content
    path.write_text("\n".join(rows) + "\n")
    return path


def _customers_parquet(path: Path, n: int = 1000) -> Path:
    ids = [f"c{i}" for i in range(n)]
    ids[n - 30] = "c3"  # a repeated id in a late row group
    t = pa.table({"client_id": ids, "age": pa.array([20 + i % 50 for i in range(n)], pa.int64()),
                  "income": pa.array([None if i % 9 == 0 else i * 3.5 for i in range(n)]),
                  "segment": [f"seg{i % 3}" for i in range(n)]})
    pq.write_table(t, path, row_group_size=130)
    return path


def _events_parquet(path: Path, n: int = 800) -> Path:
    """Events without ids (content-hash ids): repeated identical rows get occurrence
    numbers; one late row has no ts."""
    base = dt.datetime(2024, 1, 1, tzinfo=dt.UTC)
    ts_arr: list[dt.datetime | None] = [base + dt.timedelta(hours=i % 50) for i in range(n)]
    ts_arr[n - 10] = None
    t = pa.table({"customer_id": [f"c{i % 50}" for i in range(n)],
                  "ts": pa.array(ts_arr, pa.timestamp("us", tz="UTC")),
                  "kind": ["transaction"] * n,
                  "amount": [float(i % 50) for i in range(n)],
                  "channel": ["card"] * n})
    pq.write_table(t, path, row_group_size=90)
    return path


def _line(path: Path, text: str) -> int:
    """The 1-based file line holding ``text``."""
    return next(i for i, ln in enumerate(path.read_text("utf-8-sig").split("\n"), 1)
                if text in ln)


def _csv_source(path: Path, **options: Any) -> CsvSource:
    return CsvSource(path, CsvOptions(block_size=BLOCK, **options))


def _table(store: vectorstore.VectorStore, name: str) -> pa.Table:
    """Every column but the change stamps (times of writes), sorted by key."""
    t = store.to_arrow(name)
    stamps = [c for c in t.column_names if c == ROW_STAMP or c.startswith(STAMP_PREFIX)]
    key = store.table_info(name).key or t.column_names[0]
    return t.drop_columns(stamps).sort_by(key)


def _both(tmp_path: Path, loads: list[tuple[Any, Mapping, dict[str, Any]]],
          monkeypatch: pytest.MonkeyPatch, *, split: bool = True) -> list[tuple[Any, Any]]:
    """Each load run on the local runner into one store and on Ray into another; the results
    side by side. ``loads`` hold factories of the source (a fresh Source per run). Each Ray
    load was read in pieces (``split``), or on the driver."""
    local = vectorstore.connect(str(tmp_path / "local"))
    ray = vectorstore.connect(str(tmp_path / "ray"))
    planned: list[Any] = []

    def spy(*args: Any) -> Any:
        planned.append(plan_pieces(*args))
        return planned[-1]

    monkeypatch.setattr(pipeline, "plan_pieces", spy)
    out = []
    for make, mapping, kw in loads:
        a = ingest(local, make(), mapping, runner="local", **kw)
        b = ingest(ray, make(), mapping, runner="ray", **kw)
        out.append((a, b))
    assert len(planned) == len(loads)  # only the Ray loads ask for pieces
    assert all((p is not None and len(p[1]) > 3) if split else p is None for p in planned)
    tables = {m.table for _, m, _ in loads}
    tables |= {rejects_table(t) for t in tables if local.has_table(rejects_table(t))}
    for t in sorted(tables):
        expect, got = _table(local, t), _table(ray, t)
        if t.endswith("_rejects"):
            expect, got = (x.drop_columns(["rejected_at"]) for x in (expect, got))
        assert got.num_rows == expect.num_rows, t
        assert got.equals(expect), t
    return out


def _same(a: Any, b: Any) -> None:
    assert a.model_dump() == b.model_dump()
    assert [(e.row, e.line, e.column, e.value, e.expected) for e in a.errors] == \
        [(e.row, e.line, e.column, e.value, e.expected) for e in b.errors]


# ---------------------------------------------------------------- the pieces, without Ray
def _chunk_rows(chunks: list[Chunk]) -> tuple[list[Any], list[int], list[int] | None]:
    t = pa.Table.from_batches([c.batch for c in chunks])
    rows = np.concatenate([c.rows() for c in chunks]).tolist()
    lines = None
    if chunks and chunks[0].lines is not None:
        lines = np.concatenate([c.lines for c in chunks if c.lines is not None]).tolist()
    return t.to_pylist(), rows, lines


def _pieces_read(src: Source, batch_rows: int) -> tuple[list[Chunk], list[Any], int]:
    split = plan_pieces(src, LOCAL, batch_rows)
    assert split is not None
    reader, pieces = split
    chunks: list[Chunk] = []
    malformed: list[Any] = []
    for p in pieces:
        c, m = reader.read(p)
        chunks += c
        malformed += m
    return chunks, malformed, len(pieces)


def test_csv_pieces_give_the_block_readers_chunks(tmp_path):
    path = _customers_csv(tmp_path / "c.csv")
    src = _csv_source(path)
    src.tolerate_malformed = True
    expect = list(src.chunks(100))
    expect_bad = src.take_malformed()
    got, bad, n = _pieces_read(src, 100)
    assert n > 10
    assert [(c.first_row, c.batch.num_rows) for c in got] == \
        [(c.first_row, c.batch.num_rows) for c in expect]
    assert _chunk_rows(got) == _chunk_rows(expect)
    assert bad == expect_bad
    assert len(bad) == 3
    # every data row exactly once, in order
    rows = _chunk_rows(got)[0]
    assert len(rows) == 1201
    assert len({r["client_id"] for r in rows}) == 1200
    split = plan_pieces(src, LOCAL, 100)
    assert split is not None
    pieces = split[1]
    assert all(a.stop == b.start for a, b in itertools.pairwise(pieces))
    assert pieces[-1].stop == path.stat().st_size


def test_csv_pieces_transcode_and_name_bad_bytes_as_the_block_reader(tmp_path):
    """A Latin-1 file with CRLF line ends reads the same in pieces; a byte that is not
    UTF-8 in a late block is refused with the same file line by both."""
    rows = ["client_id,city"] + [f"c{i},Z\u00fcrich {i}" for i in range(600)]
    latin = tmp_path / "latin.csv"
    latin.write_bytes("\r\n".join(rows).encode("latin-1") + b"\r\n")
    src = _csv_source(latin, encoding="latin-1")
    got, _, n = _pieces_read(src, 64)
    assert n > 3
    assert _chunk_rows(got) == _chunk_rows(list(src.chunks(64)))
    bad = tmp_path / "bad.csv"
    bad.write_bytes("\n".join(rows[:500]).encode() + b"\nc500,Z\xfcrich\n")
    messages = []
    for read in (lambda s: list(s.chunks(64)), lambda s: _pieces_read(s, 64)):
        with pytest.raises(SourceError) as exc:
            read(_csv_source(bad))
        messages.append(str(exc.value))
    assert messages[0] == messages[1]
    assert ":501: column 'city'" in messages[0]  # header + 499 rows before it


def test_parquet_pieces_cover_every_row_once_in_batches(tmp_path):
    path = _customers_parquet(tmp_path / "c.parquet")
    src = ParquetSource(path)
    expect = list(src.chunks(64))
    got, _, n = _pieces_read(src, 64)
    assert n > 3
    assert [(c.first_row, c.batch.num_rows) for c in got] == \
        [(c.first_row, c.batch.num_rows) for c in expect]
    assert _chunk_rows(got) == _chunk_rows(expect)
    split = plan_pieces(src, LOCAL, 64)
    assert split is not None
    pieces = split[1]
    assert pieces[0].start == 0
    assert pieces[-1].stop == 1000
    assert all(a.stop == b.start for a, b in itertools.pairwise(pieces))
    assert all((p.stop - p.start) % 64 == 0 for p in pieces[:-1])


def test_multiline_and_other_sources_have_no_pieces(tmp_path):
    path = _customers_csv(tmp_path / "c.csv")
    assert plan_pieces(_csv_source(path, multiline=True), LOCAL, 100) is None
    assert plan_pieces(FrameSource(pa.table({"a": [1, 2]})), LOCAL, 100) is None
    lines = tmp_path / "e.jsonl"
    lines.write_text('{"a": 1}\n{"a": 2}\n')
    assert plan_pieces(JsonLinesSource(lines), LOCAL, 100) is None


# ---------------------------------------------------------------- local and Ray alike
@pytest.mark.parametrize("on_error", ["skip", "quarantine"])
def test_csv_files_load_the_same_on_ray(tmp_path, ray_cluster, on_error, caplog, monkeypatch):
    caplog.set_level(logging.INFO, logger="ingest.piecewise")
    cust = _customers_csv(tmp_path / "c.csv")
    ev = _events_csv(tmp_path / "e.csv")
    ray = get_runner("ray")
    assert len(plan_pieces(_csv_source(cust), ray, 100)[1]) > 10  # type: ignore[index]
    results = _both(tmp_path, [
        (lambda: _csv_source(cust), CUSTOMERS, {"on_error": on_error, "batch_rows": 100}),
        (lambda: _csv_source(ev), EVENTS_WITH_ID, {"on_error": on_error, "batch_rows": 64}),
        (lambda: _csv_source(ev), EVENTS_WITH_ID, {"on_error": on_error, "batch_rows": 64}),
    ], monkeypatch)
    assert "do not see this file" not in caplog.text
    for a, b in results:
        _same(a, b)
    cust_res, ev_res, again = (a for a, _ in results)
    assert (cust_res.rows_read, cust_res.written) == (1204, 1199)
    forty, c5 = _line(cust, ",forty,"), _line(cust, "c5,33,")
    assert [(e.line, e.column, e.value) for e in cust_res.errors if e.column] == [
        (forty, "age", "forty"), (c5, "client_id", "c5")]
    assert [e.line for e in cust_res.errors if e.column is None] == [
        _line(cust, f"c{i}x,") for i in (10, 300, 900)]  # the malformed rows
    assert all(e.row == e.line - 1 for e in cust_res.errors)
    assert (ev_res.written, ev_res.unchanged) == (800, 100)
    assert [(e.row, e.value) for e in ev_res.errors] == [(901, "e7")]
    assert (again.written, again.unchanged) == (0, 900)


def test_parquet_files_load_the_same_on_ray(tmp_path, ray_cluster, monkeypatch):
    cust = _customers_parquet(tmp_path / "c.parquet")
    ev = _events_parquet(tmp_path / "e.parquet")
    ray = get_runner("ray")
    assert len(plan_pieces(ParquetSource(cust), ray, 64)[1]) > 3  # type: ignore[index]
    results = _both(tmp_path, [
        (lambda: ParquetSource(cust), CUSTOMERS, {"on_error": "quarantine", "batch_rows": 64}),
        (lambda: ParquetSource(ev), EVENTS, {"on_error": "skip", "batch_rows": 50}),
        (lambda: ParquetSource(ev), EVENTS, {"on_error": "skip", "batch_rows": 50}),
    ], monkeypatch)
    for a, b in results:
        _same(a, b)
    cust_res, ev_res, again = (a for a, _ in results)
    assert [(e.row, e.column, e.value) for e in cust_res.errors] == [(971, "client_id", "c3")]
    assert (ev_res.written, ev_res.skipped) == (799, 1)
    assert [(e.row, e.column) for e in ev_res.errors] == [(791, "ts")]
    assert (again.written, again.unchanged) == (0, 799)


def test_fail_mode_raises_the_same_error_on_ray(tmp_path, ray_cluster):
    cust = _customers_csv(tmp_path / "c.csv", malformed=(300, 900))  # a worker's error
    messages = []
    for runner in ("local", "ray"):
        store = vectorstore.connect(str(tmp_path / runner))
        with pytest.raises(SourceError) as exc:  # the first malformed row, by its line
            ingest(store, _csv_source(cust), CUSTOMERS, runner=runner, batch_rows=100)
        messages.append(str(exc.value))
        assert not store.has_table("customers")
    assert messages[0] == messages[1]
    assert f":{_line(cust, 'c300x,')}: malformed CSV row" in messages[0]


def test_quoted_line_break_across_a_block_boundary(tmp_path, ray_cluster, monkeypatch):
    """One row per line (block mode): a quoted value holding a line break is refused with
    its line on both runners; with ``multiline`` the file is read on the driver (it cannot
    be cut without reading it) and loads the same rows on both."""
    rows = ["client_id,age,notes"] + [f"c{i},{i % 70},n{i}" for i in range(1000)]
    boundary = 3 * BLOCK  # the nominal end of the third block lies inside the quoted value
    head = '30,"a note that runs' + " on" * 10
    for at in range(1, len(rows)):
        start = 3 + len("\n".join(rows[:at]).encode()) + 1
        nl = start + len(f"c{at - 1},{head}")
        if nl < boundary <= nl + 1 + len("across the block boundary\""):
            break
    rows[at] = f'c{at - 1},{head}\nacross the block boundary"'
    path = tmp_path / "q.csv"
    path.write_bytes(b"\xef\xbb\xbf" + ("\n".join(rows) + "\n").encode())
    data = path.read_bytes()
    inside = data.index(b"\n", data.index(b'"a note'))
    assert inside < boundary <= data.index(b"\n", inside + 1)
    messages = []
    for runner in ("local", "ray"):
        store = vectorstore.connect(str(tmp_path / runner))
        with pytest.raises(SourceError) as exc:
            ingest(store, _csv_source(path), CUSTOMERS, runner=runner, on_error="skip")
        messages.append(str(exc.value))
    assert messages[0] == messages[1]
    assert f":{at + 1}: column 'notes'" in messages[0]
    a, b = _both(tmp_path / "multi", [
        (lambda: _csv_source(path, multiline=True), CUSTOMERS, {"batch_rows": 50})],
        monkeypatch, split=False)[0]
    _same(a, b)
    assert a.written == 1000
