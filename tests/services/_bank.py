"""A small synthetic bank, generated and prepared once per test session for the CLI/facade tests.

Built through the facade (generate -> ingest the CSV/Parquet/JSONL/JSON files -> consolidate ->
tabular and behaviour embeddings -> risk scores). Tests that write copy it first
(:func:`copy_store`), so every test starts from the same state.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

N_CUSTOMERS = 2_000
_CACHE: dict[str, Path] = {}


def prepared_bank(factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """(bank directory, prepared store directory), built on first use in the session."""
    if "store" not in _CACHE:
        from services.facade import Kindred

        root = factory.mktemp("bank")
        bank = Kindred.generate(root / "bank", customers=N_CUSTOMERS, events_per_customer=12,
                                seed=7)
        f = bank.files
        with Kindred(str(root / "store"), create=True) as k:
            k.ingest(f["customers"], table="customers", id_column="customer_id",
                     holdings_column="products", holdings_separator=";", text_columns=["note"])
            k.ingest(f["transactions"], table="events")
            k.ingest(f["web_events"], table="events", rename=["page=category"],
                     timestamp_formats=["ts=%Y-%m-%dT%H:%M:%SZ"],
                     holdings_from_events=["purchase"])
            k.ingest(f["products"], table="products", id_column="product_id")
            k.ingest(f["truth"], table="customers", id_column="customer_id",
                     attributes=["is_anomaly"])
            k.consolidate()
            k.embed("tabular", exclude=["note", "is_anomaly"])
            k.embed("behavior", dim=16)
            k.score_risk(detector="hbos", column="vec_tabular")
        _CACHE["bank"], _CACHE["store"] = root / "bank", root / "store"
    return _CACHE["bank"], _CACHE["store"]


def copy_store(factory: pytest.TempPathFactory, dest: Path) -> Path:
    """A private copy of the prepared store at ``dest``."""
    _, store = prepared_bank(factory)
    shutil.copytree(store, dest)
    return dest
