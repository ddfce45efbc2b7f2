"""Kindred ingest: sources -> validated Arrow batches -> store; consolidation; embedders."""

_EXPORTS = {
    "ingest": "ingest.pipeline", "IngestResult": "ingest.result",
    "IngestSummary": "ingest.result",  # the former name of IngestResult (deprecated)
    "Mapping": "ingest.mapping", "open_source": "ingest.sources",
}


def __getattr__(name: str) -> object:
    """Lazy exports, so importing a submodule does not load the whole pipeline."""
    if name in _EXPORTS:
        import importlib

        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'ingest' has no attribute {name!r}")
