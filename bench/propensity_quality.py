"""Planted propensities recovered on the synthetic bank: propensity vs learned (Spearman).

Through the facade, as the CLI runs it: ``generate`` (``--customers``, 12 events per customer,
``--seed``), ingest of the four files, ``consolidate``, ``embed tabular --exclude note``; then
per product ``fit PRODUCT`` (propensity scores written back) and ``match PRODUCT --method
propensity|learned --top N --exact``. Reported: the Spearman rank correlation of the
prospects' scores with the planted propensity ``p_<product>`` of ``truth.parquet`` (what the
holding was drawn from), both methods in the same run, and the margin.

Run: ``.venv/bin/python -m bench.propensity_quality [--customers N] [--seed S] [--json]
[PRODUCT ...]``.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path
from typing import Any

PRODUCTS = ("term_deposit", "mortgage", "insurance", "investment_fund")


def prepare(root: Path, customers: int, seed: int) -> Any:
    from services.facade import Kindred

    bank = Kindred.generate(root / "bank", customers=customers, events_per_customer=12,
                            seed=seed)
    f = bank.files
    k = Kindred(str(root / "store"), create=True)
    k.ingest(f["customers"], table="customers", id_column="customer_id",
             holdings_column="products", holdings_separator=";", text_columns=["note"])
    k.ingest(f["transactions"], table="events")
    k.ingest(f["web_events"], table="events", rename=["page=category"],
             timestamp_formats=["ts=%Y-%m-%dT%H:%M:%SZ"], holdings_from_events=["purchase"])
    k.ingest(f["products"], table="products", id_column="product_id")
    k.consolidate()
    k.embed("tabular", exclude=["note"])
    return k, f["truth"]


def run(customers: int = 5000, seed: int = 3,
        products: tuple[str, ...] = PRODUCTS) -> list[dict[str, Any]]:
    import pyarrow.compute as pc
    import pyarrow.parquet as pq
    from scipy.stats import spearmanr

    out = []
    with tempfile.TemporaryDirectory() as tmp:
        k, truth_path = prepare(Path(tmp), customers, seed)
        truth = pq.read_table(truth_path)
        for product in products:
            t0 = time.perf_counter()
            k.fit([product])
            row: dict[str, Any] = {"product": product,
                                   "fit_seconds": round(time.perf_counter() - t0, 1)}
            for method in ("learned", "propensity"):
                r = k.match(product, method=method, top=customers, exact=True,
                            consumers=False)
                idx = pc.index_in(r.prospects.column("customer_id"),
                                  value_set=truth.column("customer_id")).to_numpy()
                planted = truth.column(f"p_{product}").to_numpy()[idx]
                row[method] = float(spearmanr(r.prospects.column("score").to_numpy(),
                                              planted).statistic)
            row["margin"] = row["propensity"] - row["learned"]
            out.append(row)
        k.close()
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench.propensity_quality")
    ap.add_argument("products", nargs="*", default=list(PRODUCTS))
    ap.add_argument("--customers", type=int, default=5000)
    ap.add_argument("--seed", type=int, default=3)
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args(argv)
    rows = run(args.customers, args.seed, tuple(args.products))
    if args.json:
        print(json.dumps(rows, indent=2))
        return 0
    print("| product | learned (Spearman) | propensity (Spearman) | margin |")
    print("|---|---|---|---|")
    for r in rows:
        print(f"| {r['product']} | {r['learned']:.4f} | {r['propensity']:.4f} | "
              f"{r['margin']:+.4f} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
