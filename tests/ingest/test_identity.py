"""Event identity: repeated identical rows are kept and re-loads write nothing; an explicit
event id that comes again with other content is an error naming it."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest

from ingest.errors import ValidationError
from ingest.identity import DIGEST_COLUMN, KeyDigests, Occurrences, replays
from ingest.mapping import Mapping
from ingest.pipeline import ingest
from ingest.sources import CsvSource

PURCHASES = Mapping.from_options("events", rename=["member=customer_id", "date=ts"],
                                 timestamp_formats=["date=%d-%m-%Y"])


def _purchase_log(path: Path, n: int, repeats: int, seed: int = 0) -> tuple[Path, list[str]]:
    """A member,date,item log with ``repeats`` rows bought again the same day."""
    rng = np.random.default_rng(seed)
    rows = [f"{rng.integers(1000, 1050)},{rng.integers(1, 29):02d}-0{rng.integers(1, 10)}-2015,"
            f"{rng.choice(['whole milk', 'rolls/buns', 'soda', 'yogurt'])}" for _ in range(n)]
    rows += [rows[i] for i in rng.choice(n, repeats, replace=False)]
    rng.shuffle(rows)
    path.write_text("member,date,item\n" + "\n".join(rows) + "\n", encoding="utf-8")
    return path, rows


def _small_blocks(path: Path) -> CsvSource:
    src = CsvSource(path)
    src.options.block_size = 1 << 12  # many blocks, so repeats fall in different batches
    return src


def test_repeated_purchases_are_kept_and_a_reload_writes_nothing(store, tmp_path):
    path, rows = _purchase_log(tmp_path / "log.csv", 3000, 120)
    distinct = len(set(rows))
    assert distinct < len(rows)  # the log really has repeats
    s = ingest(store, _small_blocks(path), PURCHASES, batch_rows=256)
    assert (s.rows_read, s.written, s.unchanged) == (len(rows), len(rows), 0)
    assert store.count("events") == len(rows)
    ids = store.to_arrow("events", columns=["event_id"]).column("event_id").to_pylist()
    assert len(set(ids)) == len(rows)
    assert sum("#" in i for i in ids) == len(rows) - distinct  # the 2nd, 3rd... occurrences
    again = ingest(store, _small_blocks(path), PURCHASES, batch_rows=512)
    assert (again.written, again.unchanged) == (0, len(rows))
    assert store.count("events") == len(rows)


def test_a_longer_log_adds_only_its_new_rows(store, tmp_path):
    path, rows = _purchase_log(tmp_path / "log.csv", 400, 30)
    ingest(store, path, PURCHASES)
    longer = tmp_path / "longer.csv"
    extra = [rows[0], rows[0], "1001,01-01-2016,soda"]  # one more of an old row, twice; a new
    longer.write_text("member,date,item\n" + "\n".join(rows + extra) + "\n", encoding="utf-8")
    s = ingest(store, longer, PURCHASES)
    assert (s.written, s.unchanged) == (3, len(rows))
    assert store.count("events") == len(rows) + 3


def test_dedupe_counts_identical_rows_once(store, tmp_path):
    path, rows = _purchase_log(tmp_path / "log.csv", 500, 40)
    replaying = PURCHASES.model_copy(update={"dedupe": True})
    s = ingest(store, path, replaying)
    assert (s.written, s.unchanged) == (len(set(rows)), len(rows) - len(set(rows)))
    ids = store.to_arrow("events", columns=["event_id"]).column("event_id").to_pylist()
    assert not any("#" in i for i in ids)
    # the first occurrences have the same ids either way: loading without dedupe adds repeats
    s = ingest(store, path, PURCHASES)
    assert (s.written, s.unchanged) == (len(rows) - len(set(rows)), len(set(rows)))


def _ids_csv(path: Path, rows: list[str]) -> Path:
    path.write_text("event_id,customer_id,ts,amount,category\n" + "\n".join(rows) + "\n")
    return path


def test_an_explicit_id_stored_with_other_content_is_an_error(store, tmp_path):
    m = Mapping.from_options("events")
    first = _ids_csv(tmp_path / "a.csv", ["e1,c1,2024-01-01,10,food", "e2,c1,2024-01-02,5,fuel",
                                          "e2,c1,2024-01-02,5,fuel"])
    s = ingest(store, first, m)
    assert (s.written, s.unchanged) == (2, 1)  # the same event twice in one file: a replay
    assert DIGEST_COLUMN in store.table_info("events").schema.names
    assert (ingest(store, first, m).written, ingest(store, first, m).unchanged) == (0, 3)
    changed = _ids_csv(tmp_path / "b.csv", ["e1,c1,2024-01-01,12,food", "e3,c2,2024-01-03,7,x"])
    with pytest.raises(ValidationError, match=r"b\.csv:2 \(row 1\), column 'event_id': value "
                                              r"'e1'; expected the same event"):
        ingest(store, changed, m)
    assert store.count("events") == 2
    s = ingest(store, changed, m, on_error="skip")
    assert (s.written, s.skipped, s.unchanged) == (1, 1, 0)
    assert store.to_arrow("events", filter="event_id = 'e1'").column("amount").to_pylist() == [10]
    # the same id twice in one load with different content
    clash = _ids_csv(tmp_path / "c.csv", ["e9,c1,2024-02-01,1,a", "e9,c2,2024-02-01,1,a"])
    with pytest.raises(ValidationError, match=r"c\.csv:3 \(row 2\).*value 'e9'"):
        ingest(store, clash, m)
    # a column the load does not carry counts as a stored null, not as other content
    fewer = tmp_path / "d.csv"
    fewer.write_text("event_id,customer_id,ts,category\ne1,c1,2024-01-01,food\n")
    with pytest.raises(ValidationError, match="'e1'"):
        ingest(store, fewer, m)  # the stored e1 has an amount: this one does not say it
    extra = tmp_path / "e.csv"
    extra.write_text("event_id,customer_id,ts,amount,category,note\n"
                     "e1,c1,2024-01-01,10.0,food,hello\n")
    assert ingest(store, extra, m).unchanged == 1  # an extra attribute is not event content


def test_stored_events_without_a_digest_are_taken_as_replays(store, tmp_path):
    from synthetic_bank import EVENTS_TABLE_SCHEMA

    store.create_table("events", EVENTS_TABLE_SCHEMA, key="event_id")
    store.write("events", pa.table({"event_id": ["e1"], "customer_id": ["c1"],
                                    "ts": pa.array([0], pa.timestamp("us", "UTC")),
                                    "kind": ["x"], "product_id": [None], "category": ["a"],
                                    "amount": [1.0], "channel": ["web"]},
                                   schema=EVENTS_TABLE_SCHEMA))
    p = _ids_csv(tmp_path / "a.csv", ["e1,c1,2024-01-01,99,other", "e2,c1,2024-01-02,5,b"])
    s = ingest(store, p, Mapping.from_options("events"))
    assert (s.written, s.unchanged) == (1, 1)


def test_occurrences_count_across_batches():
    occ = Occurrences()
    h = pa.array(["a", "b", "a", "c"])
    assert occ.number(h).tolist() == [1, 1, 2, 1]
    assert occ.number(pa.array(["a", "c", "d", "a"])).tolist() == [3, 2, 1, 4]
    assert occ.ids(pa.array(["b", "e"])).to_pylist() == ["b#2", "e"]


def test_key_digests_lookup_handles_equal_first_hashes():
    kd = KeyDigests()
    a = np.array([5, 5, 7, 9], dtype=np.uint64)
    b = np.array([1, 2, 3, 4], dtype=np.uint64)
    kd.add(a, b, np.array([10, 20, 30, -1]))
    kd.add(np.array([11], dtype=np.uint64), np.array([0], dtype=np.uint64))
    hit, d = kd.lookup(np.array([5, 5, 5, 9, 11, 12], dtype=np.uint64),
                       np.array([2, 1, 3, 4, 0, 0], dtype=np.uint64))
    assert hit.tolist() == [True, True, False, True, True, False]
    assert d.tolist() == [20, 10, -1, -1, -1, -1]
    dup, clash = replays(kd, np.array([5, 7, 8, 8], dtype=np.uint64),
                         np.array([1, 3, 0, 0], dtype=np.uint64), np.array([10, 31, 1, 2]))
    assert dup.tolist() == [True, False, False, False]
    assert clash.tolist() == [False, True, False, True]


def test_key_hashes_do_not_change_once_a_longer_key_was_seen(monkeypatch):
    from ingest.validate import hashing

    monkeypatch.setattr(hashing, "_POS_WEIGHTS", {})  # as in a fresh process
    keys = pa.array(["a" * 64, "b" * 10])
    before = hashing.key_hash(keys)
    hashing.key_hash(pa.array(["c" * 3000]))  # grows the weights
    assert hashing.key_hash(keys).tolist() == before.tolist()


def test_a_second_event_load_builds_the_id_index_instead_of_reading_every_stored_id(
        tmp_path, monkeypatch):
    import ingest.pipeline as pipeline
    import vectorstore as vs

    store = vs.connect(str(tmp_path / "store"))
    path, rows = _purchase_log(tmp_path / "log.csv", 1500, 60)
    ingest(store, path, PURCHASES)
    assert store.key_index("events", "event_id") is None

    def read_every_id(*_a: object, **_k: object) -> None:
        raise AssertionError("every stored id was read")

    monkeypatch.setattr(pipeline, "_existing_keys", read_every_id)
    again = ingest(store, _small_blocks(path), PURCHASES, batch_rows=200)
    assert (again.written, again.unchanged) == (0, len(rows))
    assert store.key_index("events", "event_id") is not None
    longer = tmp_path / "longer.csv"
    longer.write_text("member,date,item\n" + "\n".join([*rows, "1001,01-01-2016,soda"])
                      + "\n", encoding="utf-8")
    s = ingest(store, longer, PURCHASES, batch_rows=300)  # the new row is in no index yet
    assert (s.written, s.unchanged) == (1, len(rows))
    assert ingest(store, longer, PURCHASES).unchanged == len(rows) + 1
    assert store.count("events") == len(rows) + 1


def test_with_an_indexed_event_id_each_batch_is_looked_up_not_every_stored_id(tmp_path,
                                                                              monkeypatch):
    import ingest.pipeline as pipeline
    import vectorstore as vs

    store = vs.connect(str(tmp_path / "store"))
    path, rows = _purchase_log(tmp_path / "log.csv", 2000, 80)
    ingest(store, path, PURCHASES)
    store.create_scalar_index("events", "event_id")

    def read_every_id(*_a: object, **_k: object) -> None:
        raise AssertionError("every stored id was read")

    monkeypatch.setattr(pipeline, "_existing_keys", read_every_id)
    again = ingest(store, _small_blocks(path), PURCHASES, batch_rows=256)
    assert (again.written, again.unchanged) == (0, len(rows))
    longer = tmp_path / "longer.csv"
    extra = [rows[0], rows[0], "1001,01-01-2016,soda"]
    longer.write_text("member,date,item\n" + "\n".join(rows + extra) + "\n", encoding="utf-8")
    s = ingest(store, longer, PURCHASES, batch_rows=300)
    assert (s.written, s.unchanged) == (3, len(rows))
    assert store.count("events") == len(rows) + 3
    # an explicit id stored with other content is still an error
    m = Mapping.from_options("events")
    first = _ids_csv(tmp_path / "a.csv", ["e1,c1,2024-01-01,10,food"])
    ids = vs.connect(str(tmp_path / "ids"))
    ingest(ids, first, m)
    ids.create_scalar_index("events", "event_id")
    with pytest.raises(ValidationError, match=r"value 'e1'; expected the same event"):
        ingest(ids, _ids_csv(tmp_path / "b.csv", ["e1,c1,2024-01-01,12,food"]), m)
    assert ingest(ids, first, m).unchanged == 1
