"""Kindred ingest: sources -> validated Arrow batches -> store; consolidation; embedders."""
