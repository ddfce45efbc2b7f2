"""Source adapters: files, databases and in-process frames -> Arrow record batches.

Every adapter streams: it holds one batch (plus the reader's own small buffers) at a time,
so a file of any size is read in bounded memory. Each yields :class:`Chunk` objects: a record
batch plus where its rows came from (1-based row numbers and, for text files, line numbers),
so validation errors can point at ``file:line``.

One module per job:

- :mod:`~ingest.sources.base`: :class:`Source`, :class:`Chunk`, :class:`MalformedRow`.
- :mod:`~ingest.sources.csv`: CSV/TSV options, header, text sniff, streaming mode.
- :mod:`~ingest.sources.csv_blocks`: the CSV block splitter (newline-aligned byte blocks
  parsed in parallel, exact line numbers on the error path).
- :mod:`~ingest.sources.parquet`, :mod:`~ingest.sources.arrow_ipc`,
  :mod:`~ingest.sources.jsonl`, :mod:`~ingest.sources.sql`, :mod:`~ingest.sources.frames`:
  the other adapters.
- :mod:`~ingest.sources.registry`: :func:`detect_kind` and :func:`open_source`.
- :mod:`~ingest.sources.pieces`: Parquet and CSV files cut into pieces a worker reads on
  its own, giving the sequential reader's chunks (:mod:`ingest.piecewise` runs them).
"""

from .arrow_ipc import ArrowIpcSource
from .base import (
    DEFAULT_BATCH_ROWS,
    SOURCE_KINDS,
    Chunk,
    MalformedRow,
    Source,
    SourceKind,
    check_column_names,
)
from .csv import CsvOptions, CsvSource, sniff_text
from .frames import FrameSource
from .jsonl import JsonLinesSource
from .parquet import ParquetSource
from .registry import detect_kind, open_source
from .sql import SqlSource

__all__ = [
    "DEFAULT_BATCH_ROWS",
    "SOURCE_KINDS",
    "ArrowIpcSource",
    "Chunk",
    "CsvOptions",
    "CsvSource",
    "FrameSource",
    "JsonLinesSource",
    "MalformedRow",
    "ParquetSource",
    "Source",
    "SourceKind",
    "SqlSource",
    "check_column_names",
    "detect_kind",
    "open_source",
    "sniff_text",
]
