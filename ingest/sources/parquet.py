"""Parquet files, read row group by row group (``ParquetFile.iter_batches``)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pyarrow as pa

from ..errors import SourceError
from .base import DEFAULT_BATCH_ROWS, Chunk, Source, _check_file, _short_text, check_column_names


class ParquetSource(Source):
    """A Parquet file read group by group with ``ParquetFile.iter_batches``."""

    kind = "parquet"

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        super().__init__(str(self.path))

    def chunks(self, batch_rows: int = DEFAULT_BATCH_ROWS) -> Iterator[Chunk]:
        import pyarrow.parquet as pq

        _check_file(self.path)
        try:
            f = pq.ParquetFile(self.path)
        except (pa.ArrowInvalid, OSError) as exc:
            raise SourceError(f"{self.name}: not a readable Parquet file: "
                              f"{str(exc).splitlines()[0]}") from exc
        row = 1
        try:
            check_column_names(self.name, f.schema_arrow.names)
            for b in f.iter_batches(batch_size=batch_rows):
                yield Chunk(b, row)
                row += b.num_rows
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError, OSError) as exc:
            raise SourceError(f"{self.name}: corrupt or unsupported Parquet data after row "
                              f"{row - 1}: {_short_text(str(exc).splitlines()[0])}") from exc
        finally:
            f.close()
