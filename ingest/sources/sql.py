"""SQL sources: a query or a table by SQLAlchemy URL, fetched with a server-side cursor.

Passwords in the URL never reach a message (:func:`_redact`).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any

import pyarrow as pa

from ..errors import SourceError
from .base import DEFAULT_BATCH_ROWS, Chunk, Source


def _sql_arrow_type(sqltype: Any) -> pa.DataType | None:
    import sqlalchemy as sa

    checks: list[tuple[type, pa.DataType]] = [
        (sa.Boolean, pa.bool_()), (sa.Integer, pa.int64()), (sa.Float, pa.float64()),
        (sa.Numeric, pa.float64()), (sa.DateTime, pa.timestamp("us")), (sa.Date, pa.date32()),
        (sa.LargeBinary, pa.binary()), (sa.String, pa.string()),
    ]
    for cls, t in checks:
        if isinstance(sqltype, cls):
            return t
    return None


class SqlSource(Source):
    """Rows of a SQL query or table, by SQLAlchemy URL, fetched with a server-side cursor.

    Rows come ``batch_rows`` at a time (``stream_results`` + ``fetchmany``), so a large table
    is never held whole. Column types come from the table's reflected types, or else from the
    first batch of values.
    """

    kind = "sql"

    def __init__(self, url: str, *, query: str | None = None, table: str | None = None) -> None:
        if (query is None) == (table is None):
            raise SourceError("a SQL source needs exactly one of query= or table=")
        self.url = url
        self.query = query
        self.table = table
        super().__init__(f"{_redact(url)} ({'table ' + table if table else 'query'})")

    def chunks(self, batch_rows: int = DEFAULT_BATCH_ROWS) -> Iterator[Chunk]:
        import sqlalchemy as sa

        try:
            engine = sa.create_engine(self.url)
        except (sa.exc.ArgumentError, ImportError) as exc:
            raise SourceError(f"{self.name}: cannot use this database URL: {exc}") from exc
        try:
            with engine.connect() as conn:
                types: dict[str, pa.DataType] = {}
                if self.table is not None:
                    from vectorstore import check_name
                    from vectorstore.errors import InvalidName

                    try:
                        check_name(self.table, "SQL table name")
                        tbl = sa.Table(self.table, sa.MetaData(), autoload_with=conn)
                    except (InvalidName, sa.exc.NoSuchTableError) as exc:
                        raise SourceError(f"{self.name}: no such table {self.table!r}") from exc
                    for c in tbl.columns:
                        t = _sql_arrow_type(c.type)
                        if t is not None:
                            types[c.name] = t
                    stmt: Any = sa.select(tbl)
                else:
                    stmt = sa.text(self.query or "")
                result = conn.execution_options(stream_results=True,
                                                max_row_buffer=batch_rows).execute(stmt)
                names = list(result.keys())
                schema: pa.Schema | None = None
                row = 1
                while True:
                    rows = result.fetchmany(batch_rows)
                    if not rows:
                        break
                    batch = _rows_to_batch(self.name, names, rows, schema, types, row)
                    schema = schema or batch.schema
                    yield Chunk(batch, row)
                    row += batch.num_rows
        except sa.exc.SQLAlchemyError as exc:
            raise SourceError(f"{self.name}: {str(exc).splitlines()[0]}") from exc
        finally:
            engine.dispose()


def _rows_to_batch(name: str, names: list[str], rows: Sequence[Any], schema: pa.Schema | None,
                   types: dict[str, pa.DataType], first_row: int) -> pa.RecordBatch:
    columns = list(zip(*rows, strict=True)) if rows else [() for _ in names]
    arrays = []
    for i, (col, values) in enumerate(zip(names, columns, strict=True)):
        target = schema.field(i).type if schema is not None else types.get(col)
        try:
            arr = pa.array(values, type=target)
        except (pa.ArrowInvalid, pa.ArrowTypeError, OverflowError) as exc:
            raise SourceError(f"{name}: rows {first_row}-{first_row + len(rows) - 1}, column "
                              f"{col!r}: values do not fit {target or 'one type'}: {exc}") from exc
        if pa.types.is_null(arr.type) and schema is None:
            arr = arr.cast(pa.string())  # an all-null first batch: keep the column as text
        arrays.append(arr)
    return pa.RecordBatch.from_arrays(arrays, names=names)


def _redact(url: str) -> str:
    """The URL without its password, for messages (the password is remembered, so that no
    later message shows it either)."""
    from vectorstore.dsn import redact_location, remember_secrets_in

    remember_secrets_in(url)
    return redact_location(url)
