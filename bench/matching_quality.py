"""Matching quality on the UCI bank marketing data, next to a supervised reference.

Target: term deposit ``y``; ``duration`` is dropped (it is only known after the call); a
stratified 70/30 split with seed 0. Customers are loaded into a LanceDB store with ``y`` and
the split as columns, and the two loans as ``holdings``. Vector columns:

- ``vec_tabular``: the project's tabular embedder (robust-scaled numbers, one-hot categories,
  unit length, cosine), fitted on every row's attributes (no labels);
- ``vec_tabular_raw``: the same without the unit-length normalisation (l2 column; the learned
  model then ranks by ``x . w + b`` computed in streamed blocks).

Each method (centroid, learned) is fitted on the train rows' labels through
:func:`services.evaluate.evaluate_labels` and measured on the test rows, beside the random and
popularity baselines and scikit-learn's HistGradientBoostingClassifier on the raw columns,
trained and measured on the same split in the same run.

Run: ``.venv/bin/python -m bench.matching_quality [--quick] [--json] [--data PATH]``
(``--quick``: a stratified 20% sample of the rows).
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa

DATA = Path(__file__).resolve().parents[2] / "shared" / "datasets" / "bank_marketing" / "bank-full.csv"
CATEGORICAL = ["job", "marital", "education", "default", "housing", "loan", "contact", "month",
               "poutcome"]
NUMERIC = ["age", "balance", "day", "campaign", "pdays", "previous"]


def load_frame(path: Path, quick: bool = False) -> pd.DataFrame:
    """The CSV without ``duration``, with a stratified 70/30 ``split`` (seed 0)."""
    from sklearn.model_selection import train_test_split

    df = pd.read_csv(path, sep=";").drop(columns=["duration"])
    if quick:
        df, _ = train_test_split(df, train_size=0.2, stratify=df["y"], random_state=1)
        df = df.reset_index(drop=True)
    _, test = train_test_split(np.arange(len(df)), test_size=0.3, stratify=df["y"],
                               random_state=0)
    df["split"] = "train"
    df.loc[test, "split"] = "test"
    return df


def reference(df: pd.DataFrame, top_frac: float = 0.1) -> dict[str, float]:
    """HistGradientBoostingClassifier on the raw columns: test ROC-AUC and precision@10%."""
    from sklearn.ensemble import HistGradientBoostingClassifier

    from services.evaluate import ranking_metrics

    X = df[NUMERIC + CATEGORICAL].copy()
    for c in CATEGORICAL:
        X[c] = X[c].astype("category")
    y = (df["y"] == "yes").to_numpy()
    tr, te = (df["split"] == "train").to_numpy(), (df["split"] == "test").to_numpy()
    model = HistGradientBoostingClassifier(categorical_features="from_dtype", random_state=0)
    model.fit(X[tr], y[tr])
    s = model.predict_proba(X[te])[:, 1]
    m = ranking_metrics(y[te], s, max(1, round(top_frac * te.sum())))
    return {"roc_auc": m["roc_auc"], "precision_at_k": m["precision_at_k"],
            "lift_at_k": m["lift_at_k"]}


def build_store(df: pd.DataFrame, path: str) -> Any:
    """customers table with attributes, holdings, y, split and the tabular vector columns."""
    import vectorstore
    from ingest.embedders import TabularEmbedder, embed

    st = vectorstore.connect(path)
    holdings = [[p for p, flag in (("housing_loan", h), ("personal_loan", ln)) if flag == "yes"]
                for h, ln in zip(df["housing"], df["loan"], strict=True)]
    tbl = pa.Table.from_pandas(df, preserve_index=False)
    tbl = tbl.append_column("customer_id", pa.array([f"b{i:06d}" for i in range(len(df))]))
    tbl = tbl.append_column("holdings", pa.array(holdings, pa.list_(pa.string())))
    st.create_table("customers", tbl.schema, key="customer_id")
    st.write("customers", tbl)
    attrs = NUMERIC + CATEGORICAL
    embed(st, "customers", TabularEmbedder(include=attrs), "vec_tabular")
    embed(st, "customers", TabularEmbedder(include=attrs, normalize=False), "vec_tabular_raw")
    return st


def run(path: Path = DATA, *, quick: bool = False, columns: list[str] | None = None,
        methods: tuple[str, ...] = ("centroid", "learned")) -> dict[str, Any]:
    from services.evaluate import evaluate_labels

    t0 = time.perf_counter()
    df = load_frame(path, quick)
    ref = reference(df)
    t_ref = time.perf_counter() - t0
    with tempfile.TemporaryDirectory() as tmp:
        st = build_store(df, str(Path(tmp) / "db"))
        t1 = time.perf_counter()
        rep = evaluate_labels(st, "y", positive="yes", split_column="split", test_value="test",
                              vector_columns=columns or ["vec_tabular", "vec_tabular_raw"],
                              methods=methods)
        t_eval = time.perf_counter() - t1
    best = rep.best()
    return {"rows": len(df), "test_rows": int((df["split"] == "test").sum()), "quick": quick,
            "base_rate": rep.base_rate, "reference": ref,
            "report": rep.model_dump(mode="json"), "markdown": rep.to_markdown(),
            "best": {"vector_column": best.vector_column, "method": best.method,
                     "roc_auc": best.roc_auc, "ratio_to_reference": best.roc_auc / ref["roc_auc"]},
            "seconds": {"reference": t_ref, "evaluation": t_eval}}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench.matching_quality")
    ap.add_argument("--quick", action="store_true", help="a stratified 20%% sample of the rows")
    ap.add_argument("--json", action="store_true")
    ap.add_argument("--data", type=Path, default=DATA)
    args = ap.parse_args(argv)
    if not args.data.is_file():
        print(f"bank marketing CSV not found at {args.data}", file=sys.stderr)
        return 2
    out = run(args.data, quick=args.quick)
    if args.json:
        print(json.dumps({k: v for k, v in out.items() if k != "markdown"}, indent=2))
        return 0
    ref = out["reference"]
    print(f"\n### Bank marketing: term deposit, {out['rows']} rows, {out['test_rows']} test rows"
          f" (base rate {out['base_rate']:.4f})\n")
    print(out["markdown"])
    print(f"| raw columns | HistGradientBoosting (supervised reference) | {ref['roc_auc']:.4f} "
          f"| {ref['precision_at_k']:.4f} | | {ref['lift_at_k']:.2f} | |")
    b = out["best"]
    print(f"\nbest Kindred method: {b['method']} on {b['vector_column']}, ROC-AUC "
          f"{b['roc_auc']:.4f} = {b['ratio_to_reference']:.3f} x the reference "
          f"(target >= 0.97)")
    print(f"seconds: reference {out['seconds']['reference']:.1f}, "
          f"evaluation {out['seconds']['evaluation']:.1f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
