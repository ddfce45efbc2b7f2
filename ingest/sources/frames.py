"""In-process frames: pandas or polars DataFrames and pyarrow Tables, batches and readers."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pyarrow as pa

from ..errors import SourceError
from .base import DEFAULT_BATCH_ROWS, Chunk, Source, numbered_chunks


class FrameSource(Source):
    """An in-process pandas or polars DataFrame, or a pyarrow Table / RecordBatch / reader."""

    kind = "frame"

    def __init__(self, obj: Any, name: str | None = None) -> None:
        super().__init__(name or f"<{type(obj).__module__.split('.')[0]}.{type(obj).__name__}>")
        self.obj = obj
        self._used = False

    def _batches(self) -> Iterator[pa.RecordBatch]:
        obj = self.obj
        mod = type(obj).__module__.split(".")[0]
        if isinstance(obj, pa.RecordBatchReader):
            if self._used:
                raise SourceError(f"{self.name}: a RecordBatchReader can be read only once")
            self._used = True
            yield from obj
        elif isinstance(obj, pa.Table):
            yield from obj.to_batches()
        elif isinstance(obj, pa.RecordBatch):
            yield obj
        elif mod == "pandas":
            import pandas as pd

            if not isinstance(obj, pd.DataFrame):
                raise SourceError(f"{self.name}: expected a pandas DataFrame")
            step = 65_536
            for start in range(0, len(obj), step):
                try:
                    t = pa.Table.from_pandas(obj.iloc[start:start + step], preserve_index=False)
                except (pa.ArrowInvalid, pa.ArrowTypeError) as exc:
                    raise SourceError(f"{self.name}: rows {start + 1}-{start + step}: "
                                      f"{exc}") from exc
                yield from t.to_batches()
        elif mod == "polars":
            import polars as pl

            if isinstance(obj, pl.LazyFrame):
                obj = obj.collect()
            yield from obj.to_arrow().to_batches()
        else:
            raise SourceError(f"cannot read a {type(obj).__name__}: expected a pandas or polars "
                              "DataFrame or a pyarrow Table, RecordBatch or RecordBatchReader")

    def chunks(self, batch_rows: int = DEFAULT_BATCH_ROWS) -> Iterator[Chunk]:
        yield from numbered_chunks(self.name, self._batches(), batch_rows)
