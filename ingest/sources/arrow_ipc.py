"""Arrow IPC files and streams (Feather v2), memory-mapped and read batch by batch."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pyarrow as pa

from ..errors import SourceError
from .base import DEFAULT_BATCH_ROWS, Chunk, Source, _check_file, numbered_chunks


class ArrowIpcSource(Source):
    """An Arrow IPC file (Feather v2) or stream, memory-mapped and read batch by batch."""

    kind = "arrow"

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        super().__init__(str(self.path))

    def _batches(self) -> Iterator[pa.RecordBatch]:
        mm = pa.memory_map(str(self.path))
        try:
            try:
                f = pa.ipc.open_file(mm)
            except pa.ArrowInvalid:
                mm.seek(0)
                yield from pa.ipc.open_stream(mm)
                return
            for i in range(f.num_record_batches):
                yield f.get_batch(i)
        finally:
            mm.close()

    def chunks(self, batch_rows: int = DEFAULT_BATCH_ROWS) -> Iterator[Chunk]:
        _check_file(self.path)
        try:
            yield from numbered_chunks(self.name, self._batches(), batch_rows)
        except (pa.ArrowInvalid, OSError) as exc:
            raise SourceError(f"{self.name}: not a readable Arrow IPC/Feather file: "
                              f"{str(exc).splitlines()[0]}") from exc
