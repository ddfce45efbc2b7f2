"""What an embedder is fitted on: Arrow record batches handed to it, never a store it reads.

scikit-learn's estimators learn from the data given to ``fit``; an embedder does the same
with :class:`FitData`: a table's description (schema, key, vector columns) and record batches
of the columns it asks for, in as many passes as it needs (the tabular embedder makes two when
integer codes must be told from numbers), plus the related tables it reads beside the rows
(the behaviour embedder's events). The embed runner builds one over the store
(:meth:`FitData.from_store`, a streamed scan per pass); tests and applications hand Arrow data
directly (:meth:`FitData.from_arrow`). ``Embedder.fit(store, table)`` still works: it builds
the same object over the store.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import pyarrow as pa

from vectorstore import Metric, TableInfo, VectorColumn, VectorStore

from .errors import EmbeddingError, EmptyInputError, UnknownColumnError

Scan = Callable[[Sequence[str], int], Iterator[pa.RecordBatch]]
"""``scan(columns, batch_size)``: one fresh pass over the rows, only those columns."""


@dataclass(frozen=True)
class FitData:
    """A table to fit on: its description, a scan of its rows, and related tables by name."""

    info: TableInfo
    scan: Scan
    related: Mapping[str, FitData] = field(default_factory=dict)
    batch_size: int = 65_536

    def batches(self, columns: Sequence[str], batch_size: int | None = None
                ) -> Iterator[pa.RecordBatch]:
        """One pass over the rows: record batches holding exactly ``columns``."""
        names = set(self.info.schema.names)
        for c in columns:
            if c not in names:
                raise UnknownColumnError(f"table {self.info.name!r} has no column {c!r}; "
                                         f"columns: {', '.join(self.info.schema.names)}")
        return self.scan(list(columns), batch_size or self.batch_size)

    def table(self, name: str) -> FitData:
        """The related table ``name`` (EmbeddingError if the runner handed none)."""
        if name not in self.related:
            raise EmbeddingError(f"fitting needs the rows of table {name!r} beside "
                                 f"{self.info.name!r}; none were given")
        return self.related[name]

    def has_rows(self) -> bool:
        return any(b.num_rows for b in self.batches(self.info.schema.names[:1]))

    # ------------------------------------------------------------------ builders
    @classmethod
    def from_store(cls, store: VectorStore, table: str, *, batch_size: int = 65_536,
                   related: Sequence[str] = ()) -> FitData:
        """Streamed scans of a store table (and of ``related`` tables) on demand."""
        def scan(columns: Sequence[str], size: int, _t: str = table) -> Iterator[pa.RecordBatch]:
            return iter(store.scan(_t, columns=list(columns), batch_size=size))

        rel = {t: cls.from_store(store, t, batch_size=batch_size) for t in related
               if t and t != table}
        return cls(store.table_info(table), scan, rel, batch_size)

    @classmethod
    def from_arrow(cls, data: Any, *, name: str = "data", key: str | None = None,
                   vectors: Mapping[str, VectorColumn] | None = None,
                   related: Mapping[str, Any] | None = None,
                   batch_size: int = 65_536) -> FitData:
        """Arrow rows in memory: a ``pa.Table``, a ``RecordBatch`` or a list of batches
        (or a pandas DataFrame). ``vectors``: the vector columns (by default every
        fixed-size list of floats, cosine metric)."""
        table = _as_table(data)
        if vectors is None:
            vectors = {f.name: VectorColumn(f.name, f.type.list_size, Metric.COSINE)
                       for f in table.schema if pa.types.is_fixed_size_list(f.type)
                       and pa.types.is_floating(f.type.value_type)}
        if key is not None and key not in table.schema.names:
            raise UnknownColumnError(f"{name}: no key column {key!r}")
        info = TableInfo(name, table.schema, key, dict(vectors))

        def scan(columns: Sequence[str], size: int) -> Iterator[pa.RecordBatch]:
            return iter(table.select(list(columns)).to_batches(max_chunksize=size))

        rel = {n: v if isinstance(v, FitData) else cls.from_arrow(v, name=n)
               for n, v in (related or {}).items()}
        return cls(info, scan, rel, batch_size)


def _as_table(data: Any) -> pa.Table:
    if isinstance(data, pa.Table):
        return data
    if isinstance(data, pa.RecordBatch):
        return pa.Table.from_batches([data])
    if isinstance(data, (list, tuple)) and data and all(isinstance(b, pa.RecordBatch)
                                                         for b in data):
        return pa.Table.from_batches(list(data))
    if hasattr(data, "__arrow_c_stream__") or type(data).__name__ == "DataFrame":
        return pa.table(data)
    raise EmbeddingError(f"cannot fit on {type(data).__name__}: give Arrow data (a table, a "
                         "record batch or a list of batches), FitData, or a store and a table")


def as_fit_data(data: Any, table: str | None = None, *, batch_size: int = 65_536,
                key: str | None = None, related: Sequence[str] = ()) -> FitData:
    """``fit``'s argument as :class:`FitData`: as it is, Arrow rows, or a store and a table
    name (the former ``fit(store, table)``, a streamed scan of the store)."""
    if isinstance(data, FitData):
        return data
    if isinstance(data, VectorStore):
        if not isinstance(table, str):
            raise EmbeddingError("fit(store, table): give the table's name")
        return FitData.from_store(data, table, batch_size=batch_size, related=related)
    if table is not None:
        raise EmbeddingError("a table name goes with a store; Arrow rows need none")
    fd = FitData.from_arrow(data, key=key, batch_size=batch_size)
    if not fd.has_rows():
        raise EmptyInputError("no rows to fit on")
    return fd


__all__ = ["FitData", "as_fit_data"]
