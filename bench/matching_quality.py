"""Matching quality on the UCI bank marketing data, through the product path, beside the
supervised reference a user would build instead.

Product path (what a user types, defaults everywhere): ``kindred ingest customers
bank-full.csv --delimiter ';' --drop duration --holding housing_loan=housing:yes --holding
personal_loan=loan:yes`` (``duration`` is only known after the call; ``y`` stays an attribute,
the label), ``kindred embed tabular --exclude y``, then ``kindred evaluate matching --label y --positive
yes --test-size 0.3 --seed 0`` with ``--repeats 1`` (the stratified 70/30 split with seed 0)
and with the default 3 repeats (seeds 0, 1, 2). The same calls go through the facade here.

Reference, in the same run and on the same splits: scikit-learn's
``HistGradientBoostingClassifier`` (default parameters, native categorical support) on the raw
CSV columns without ``duration``, trained on the train rows. The store keeps the CSV's row
order, so ``train_test_split(range(n), stratify=y, random_state=seed)`` picks the same test
rows on both sides (checked). k = top 10% of the test rows.

Run: ``.venv/bin/python -m bench.matching_quality [--quick] [--json] [--data PATH]``
(``--quick``: a stratified 20% sample of the rows, written to a temporary CSV first).
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

DATA = Path(__file__).resolve().parents[2] / "shared" / "datasets" / "bank_marketing" / "bank-full.csv"
TOP_FRAC = 0.1


def load_frame(path: Path, quick: bool = False) -> pd.DataFrame:
    """The CSV as pandas reads it (``quick``: a stratified 20% sample, seed 1)."""
    from sklearn.model_selection import train_test_split

    df = pd.read_csv(path, sep=";")
    if quick:
        df, _ = train_test_split(df, train_size=0.2, stratify=df["y"], random_state=1)
        df = df.reset_index(drop=True)
    return df


def reference(df: pd.DataFrame, seed: int, test_size: float = 0.3) -> dict[str, float]:
    """HistGradientBoostingClassifier on the raw columns (no ``duration``) on the split."""
    from sklearn.ensemble import HistGradientBoostingClassifier
    from sklearn.model_selection import train_test_split

    from services.matching.evaluate import ranking_metrics

    X = df.drop(columns=["y", "duration"]).copy()
    for c in X.columns:
        if not pd.api.types.is_numeric_dtype(X[c]):
            X[c] = X[c].astype("category")
    y = (df["y"] == "yes").to_numpy()
    _, te_idx = train_test_split(np.arange(len(df)), test_size=test_size, stratify=y,
                                 random_state=seed)
    te = np.zeros(len(df), dtype=bool)
    te[te_idx] = True
    model = HistGradientBoostingClassifier(categorical_features="from_dtype", random_state=0)
    model.fit(X[~te], y[~te])
    s = model.predict_proba(X[te])[:, 1]
    return ranking_metrics(y[te], s, max(1, round(TOP_FRAC * te.sum())))


def product_path(csv: Path, store_dir: str) -> Any:
    """The customers table as `kindred ingest` + `kindred embed tabular` make it."""
    from services.facade import Kindred

    k = Kindred(store_dir, create=True)
    k.ingest(str(csv), table="customers", delimiter=";", drop=["duration"],
             holdings=["housing_loan=housing:yes", "personal_loan=loan:yes"])
    k.embed("tabular", exclude=["y"])  # the label is not an attribute to embed
    return k


def run(path: Path = DATA, *, quick: bool = False, repeats: int = 3) -> dict[str, Any]:
    t0 = time.perf_counter()
    df = load_frame(path, quick)
    with tempfile.TemporaryDirectory() as tmp:
        csv = path
        if quick:
            csv = Path(tmp) / "bank-quick.csv"
            df.to_csv(csv, sep=";", index=False)
        k = product_path(csv, str(Path(tmp) / "store"))
        stored = k.store.to_arrow("customers", columns=["age", "balance"])
        same_order = (stored.column("age").to_pylist() == df["age"].tolist()
                      and stored.column("balance").to_pylist() == df["balance"].tolist())
        if not same_order:
            raise RuntimeError("the store does not keep the CSV's row order: splits differ")
        t_ingest = time.perf_counter() - t0
        t1 = time.perf_counter()
        single = k.evaluate_matching(label="y", positive="yes", test_size=0.3, seed=0,
                                     repeats=1)
        t_single = time.perf_counter() - t1
        t1 = time.perf_counter()
        rep = single if repeats == 1 else k.evaluate_matching(
            label="y", positive="yes", test_size=0.3, seed=0, repeats=repeats)
        t_rep = time.perf_counter() - t1
        k.close()
    refs = [reference(df, s) for s in range(repeats)]
    ref = refs[0]
    ref_mean = {m: float(np.mean([r[m] for r in refs])) for m in ref}
    ref_sd = {m: float(np.std([r[m] for r in refs], ddof=1)) for m in ref}
    best = single.best()
    return {"rows": len(df), "quick": quick, "base_rate": single.base_rate,
            "test_rows": single.params["test_rows"],
            "single": single.model_dump(mode="json"), "repeated": rep.model_dump(mode="json"),
            "markdown_single": single.to_markdown(), "markdown_repeated": rep.to_markdown(),
            "reference": ref, "reference_repeated": {"mean": ref_mean, "sd": ref_sd},
            "best": {"vector_column": best.vector_column, "method": best.method,
                     "roc_auc": best.roc_auc, "precision_at_k": best.precision_at_k,
                     "roc_auc_ratio": (best.roc_auc or 0) / ref["roc_auc"],
                     "precision_ratio": (best.precision_at_k or 0) / ref["precision_at_k"]},
            "seconds": {"ingest_embed": t_ingest, "evaluate_single": t_single,
                        "evaluate_repeated": t_rep}}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench.matching_quality")
    ap.add_argument("--quick", action="store_true", help="a stratified 20%% sample of the rows")
    ap.add_argument("--json", action="store_true")
    ap.add_argument("--data", type=Path, default=DATA)
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args(argv)
    if not args.data.is_file():
        print(f"bank marketing CSV not found at {args.data}", file=sys.stderr)
        return 2
    out = run(args.data, quick=args.quick, repeats=args.repeats)
    if args.json:
        print(json.dumps({k: v for k, v in out.items() if not k.startswith("markdown")},
                         indent=2))
        return 0
    ref = out["reference"]
    print(f"\n### Bank marketing: y = yes, {out['rows']} rows, {out['test_rows']} test rows "
          f"(base rate {out['base_rate']:.4f}), split seed 0\n")
    print(out["markdown_single"])
    print(f"| raw columns | HistGradientBoosting (reference) | {ref['roc_auc']:.4f} | | "
          f"{ref['precision_at_k']:.4f} | {ref['recall_at_k']:.4f} | {ref['lift_at_k']:.2f} | | |")
    b = out["best"]
    print(f"\nbest Kindred method: {b['method']} on {b['vector_column']}: ROC-AUC "
          f"{b['roc_auc']:.4f} ({b['roc_auc_ratio']:.4f} x the reference), precision@10% "
          f"{b['precision_at_k']:.4f} ({b['precision_ratio']:.4f} x)")
    rm, rs = out["reference_repeated"]["mean"], out["reference_repeated"]["sd"]
    print(f"\n### The same over {args.repeats} seeded splits (mean, SD)\n")
    print(out["markdown_repeated"])
    print(f"| raw columns | HistGradientBoosting (reference) | {rm['roc_auc']:.4f} | "
          f"{rs['roc_auc']:.4f} | {rm['precision_at_k']:.4f} | {rm['recall_at_k']:.4f} | "
          f"{rm['lift_at_k']:.2f} | | |")
    print(f"\nseconds: {json.dumps({k: round(v, 1) for k, v in out['seconds'].items()})}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
