"""Risk quality through the product path, beside raw PyOD on z-scored features in the same run.

ADBench (``../shared/datasets/adbench/*.npz``, keys ``X`` and ``y``). For each file, what a
user would do with an export: ``X`` is written to a CSV of plain floats (a ``customer_id``
column, ``f0 ... f{d-1}``, the label ``is_anomaly`` as 0/1) and then goes through the calls the
CLI makes (:class:`services.facade.Kindred`, defaults throughout)::

    kindred ingest customers X.csv --id-column customer_id
    kindred embed tabular --exclude is_anomaly
    kindred risk score                       # default detector, default column
    kindred evaluate risk --label is_anomaly --detector default

(the ROC-AUC recorded is that of the scores ``risk score`` wrote). In the same run, raw PyOD
scores ``X`` z-scored per feature (constant features dropped) with IForest, ECOD, COPOD,
HBOS, KNN and PCA at their defaults: what a user would do instead.

KNN and LOF cost grows with the square of the rows (minutes for 49,097-row shuttle on a
loaded 2-core machine), so ``--max-rows`` (default 10,000) sets their ``max_rows`` guard rail
on both sides, alone and inside the default ensemble: above it they fit on the seeded sample
of ``services.risk.rows.fit_rows_for`` and score every row.

The synthetic bank (``--bank N``): ``kindred generate --customers N`` and the README's quick
start commands that shape the customers table (ingest, consolidate, ``embed tabular
--exclude note --exclude is_anomaly``), then ``kindred risk score`` and ROC-AUC against the
planted anomalies; the reference is raw IForest (and the other raw detectors) on the same
attributes the embedder used, numbers median-filled, categories one-hot, every column
z-scored.

    .venv/bin/python -m bench.risk_quality [--datasets DIR] [--only STEM ...]
        [--product-detectors NAME ...] [--max-rows N] [--bank N] [--json]

Exit status 1 if any score through the product path is not finite.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.csv as pacsv

from services.risk.config import EnsembleConfig, parse_detector

DEFAULT_DIR = Path(__file__).resolve().parents[2] / "shared" / "datasets" / "adbench"
RAW_DETECTORS = ("iforest", "ecod", "copod", "hbos", "knn", "pca")
"""The raw PyOD references (the issue's list)."""
LABEL = "is_anomaly"


def with_row_limit(spec: Any, max_rows: int | None) -> Any:
    """``spec`` with ``max_rows`` set on KNN and LOF (also inside an ensemble)."""
    if max_rows is None:
        return spec
    cfg = parse_detector(spec)
    if isinstance(cfg, EnsembleConfig):
        members = tuple(with_row_limit(m, max_rows) for m in cfg.members)
        return cfg.model_copy(update={"members": members})
    if cfg.kind in ("knn", "lof"):
        return cfg.model_copy(update={"max_rows": max_rows})
    return cfg


def standardise(X: np.ndarray) -> np.ndarray:
    """Per-feature z-scores (float64); constant features dropped."""
    X = np.asarray(X, dtype=np.float64)
    sd = X.std(axis=0)
    keep = sd > 0
    return (X[:, keep] - X[:, keep].mean(axis=0)) / sd[keep]


def raw_pyod_scores(kind: str, X: np.ndarray, max_rows: int | None = None) -> np.ndarray:
    """PyOD's own detector at its defaults, fitted on ``X`` (or the guard rail's sample for
    KNN/LOF above ``max_rows``), scoring every row."""
    from pyod.models.copod import COPOD
    from pyod.models.ecod import ECOD
    from pyod.models.hbos import HBOS
    from pyod.models.iforest import IForest
    from pyod.models.knn import KNN
    from pyod.models.lof import LOF
    from pyod.models.pca import PCA

    if kind == "ecod":
        return ECOD().fit(X).decision_scores_
    if kind == "copod":
        return COPOD().fit(X).decision_scores_
    est = {"iforest": lambda: IForest(random_state=0), "hbos": HBOS, "knn": KNN, "lof": LOF,
           "pca": lambda: PCA(random_state=0)}[kind]()
    if kind in ("knn", "lof") and max_rows and X.shape[0] > max_rows:
        from services.risk.rows import fit_rows_for

        idx, _ = fit_rows_for(with_row_limit(kind, max_rows), X.shape[0])
        return est.fit(X[idx]).decision_function(X)
    return est.fit(X).decision_function(X)


def _auc(y: np.ndarray, scores: np.ndarray) -> float:
    """ROC-AUC, or NaN when a score is not finite (counted as a failure, never hidden)."""
    from sklearn.metrics import roc_auc_score

    scores = np.asarray(scores, dtype=np.float64)
    return float(roc_auc_score(y, scores)) if np.isfinite(scores).all() else float("nan")


def raw_references(X: np.ndarray, y: np.ndarray, max_rows: int | None,
                   kinds: Sequence[str] = RAW_DETECTORS) -> dict[str, float]:
    """ROC-AUC of each raw PyOD detector on ``X`` z-scored."""
    Z = standardise(X)
    out = {}
    for k in kinds:
        with np.errstate(all="ignore"):
            out[k] = _auc(y, raw_pyod_scores(k, Z, max_rows))
    return out


def write_csv(path: Path, X: np.ndarray, y: np.ndarray) -> Path:
    """``X`` and ``y`` as a CSV a user could have exported: plain floats, 0/1 label."""
    cols: dict[str, Any] = {"customer_id": [f"r{i:07d}" for i in range(X.shape[0])]}
    cols.update({f"f{j}": X[:, j].astype(np.float64) for j in range(X.shape[1])})
    cols[LABEL] = y.astype(np.int64)
    pacsv.write_csv(pa.table(cols), path)
    return path


def product_path(csv: Path, store_dir: Path, detectors: Sequence[Any], *,
                 max_rows: int | None) -> dict[str, Any]:
    """CSV -> ingest -> embed tabular -> risk score (-> evaluate) with the facade's defaults.

    The first detector is the one written back (its stored scores give ``roc_auc``); each
    further one is measured as ``kindred evaluate risk --detector NAME`` does."""
    from services.facade import Kindred
    from services.risk import label_metrics

    with Kindred(str(store_dir), create=True) as k:
        t0 = time.perf_counter()
        k.ingest(str(csv), table="customers", id_column="customer_id")
        k.embed("tabular", exclude=[LABEL])
        t1 = time.perf_counter()
        specs = [with_row_limit(d, max_rows) for d in detectors]
        run = k.score_risk(detector=specs[0])
        t2 = time.perf_counter()
        t = k.store.to_arrow("customers", columns=["risk_score", LABEL])
        scores = t.column("risk_score").to_numpy(zero_copy_only=False).astype(np.float64)
        y = t.column(LABEL).to_numpy(zero_copy_only=False).astype(bool)
        finite = bool(np.isfinite(scores).all())
        aucs = {str(detectors[0]): label_metrics(y, scores)["roc_auc"] if finite
                else float("nan")}
        if len(specs) > 1:
            ev = k.evaluate_risk(LABEL, detectors=specs[1:])
            for name, row in zip(detectors[1:], ev.rows, strict=True):
                aucs[str(name)] = row.roc_auc
    return {"auc": aucs, "column": run.column, "members": run.members,
            "n_flagged": run.n_flagged, "threshold": run.threshold, "finite": finite,
            "messages": run.messages, "embed_s": t1 - t0, "score_s": t2 - t1}


def run_dataset(path: Path, workdir: Path, *, detectors: Sequence[Any] = ("default",),
                max_rows: int | None = 10_000,
                raw: Sequence[str] = RAW_DETECTORS) -> dict[str, Any]:
    """One ADBench file through the product path and raw PyOD (same run)."""
    with np.load(path, allow_pickle=False) as f:
        X, y = np.asarray(f["X"], dtype=np.float64), np.asarray(f["y"]).astype(bool)
    csv = write_csv(workdir / f"{path.stem}.csv", X, y)
    ours = product_path(csv, workdir / path.stem, detectors, max_rows=max_rows)
    t0 = time.perf_counter()
    refs = raw_references(X, y, max_rows, raw)
    return {"dataset": path.stem, "n": int(X.shape[0]), "d": int(X.shape[1]),
            "product": ours, "raw": refs, "raw_s": time.perf_counter() - t0}


# ---------------------------------------------------------------------- the synthetic bank
def bank_commands(bank: Path) -> list[list[str]]:
    """The README quick start's commands that shape the customers table, then risk."""
    return [
        ["init"],
        ["ingest", "customers", str(bank / "customers.csv"), "--id-column", "customer_id",
         "--holdings-column", "products", "--holdings-separator", ";", "--text-column", "note"],
        ["ingest", "events", str(bank / "transactions.parquet")],
        ["ingest", "events", str(bank / "web_events.jsonl"), "--rename", "page=category",
         "--timestamp-format", "ts=%Y-%m-%dT%H:%M:%SZ", "--holdings-from-events", "purchase"],
        ["ingest", "products", str(bank / "products.json"), "--id-column", "product_id"],
        ["ingest", "customers", str(bank / "truth.parquet"), "--id-column", "customer_id",
         "--attribute", LABEL],
        ["consolidate"],
        ["embed", "tabular", "--exclude", "note", "--exclude", LABEL],
        ["risk", "score"],
    ]


def onehot_zscores(table: pa.Table, numeric: Sequence[str], categorical: Sequence[str]
                   ) -> np.ndarray:
    """What a user would feed raw PyOD: numbers median-filled, categories one-hot (missing as
    its own level), every column z-scored (constant columns dropped)."""
    import pandas as pd

    from ingest.embedders.tabular import numeric_values

    parts = []
    for c in numeric:
        x = numeric_values(table.column(c).combine_chunks())
        parts.append(np.where(np.isnan(x), np.nanmedian(x), x)[:, None])
    if categorical:
        df = table.select(list(categorical)).to_pandas().astype("string")
        parts.append(pd.get_dummies(df, dummy_na=True).to_numpy(dtype=np.float64))
    return standardise(np.hstack(parts))


def bank_quality(n_customers: int, workdir: Path, *, seed: int = 0,
                 max_rows: int | None = 10_000) -> dict[str, Any]:
    """The synthetic bank through the README's commands vs raw PyOD on the same attributes."""
    from click.testing import CliRunner

    from services.cli import main
    from services.facade import Kindred
    from services.risk.features import tabular_features

    bank, store = workdir / "bank", workdir / "bank-store"
    runner = CliRunner()
    steps = [["generate", "--customers", str(n_customers), "--seed", str(seed), "--out",
              str(bank)], *bank_commands(bank)]
    for argv in steps:
        res = runner.invoke(main, ["--store", str(store), *argv], catch_exceptions=False)
        if res.exit_code != 0:
            raise RuntimeError(f"kindred {' '.join(argv)} failed: {res.stderr or res.stdout}")
    with Kindred(str(store)) as k:
        run = k.store.table_info("customers").metadata["risk"]
        tab = tabular_features(k.store, "customers", run["source"]["column"])
        assert tab is not None
        t = k.store.to_arrow("customers", columns=[*tab.attributes, "risk_score", LABEL])
    y = np.asarray(t.column(LABEL).fill_null(False).to_numpy(zero_copy_only=False), bool)
    scores = t.column("risk_score").to_numpy(zero_copy_only=False).astype(np.float64)
    Z = onehot_zscores(t, tab.numeric, tab.categorical)
    refs = {}
    for kind in RAW_DETECTORS:
        with np.errstate(all="ignore"):
            refs[kind] = _auc(y, raw_pyod_scores(kind, Z, max_rows))
    return {"customers": n_customers, "seed": seed, "anomalies": int(y.sum()),
            "column": run["source"]["column"], "members": run.get("members"),
            "attributes": tab.attributes, "features": int(Z.shape[1]),
            "default": _auc(y, scores), "finite": bool(np.isfinite(scores).all()),
            "raw": refs, "output": res.stdout.strip()}


# ---------------------------------------------------------------------- report
def summarise(rows: list[dict[str, Any]]) -> dict[str, Any]:
    names = list(rows[0]["product"]["auc"])
    raw = list(rows[0]["raw"])
    avg = {f"kindred {n}": float(np.mean([r["product"]["auc"][n] for r in rows])) for n in names}
    avg.update({f"raw {n}": float(np.mean([r["raw"][n] for r in rows])) for n in raw})
    best_raw = max(raw, key=lambda n: avg[f"raw {n}"])
    return {"average_roc_auc": avg, "best_raw": best_raw,
            "non_finite_files": [r["dataset"] for r in rows if not r["product"]["finite"]]}


def markdown(rows: list[dict[str, Any]], summary: dict[str, Any]) -> str:
    names = list(rows[0]["product"]["auc"])
    raw = list(rows[0]["raw"])
    head = [f"Kindred {n}" for n in names] + [f"raw {n}" for n in raw]
    out = ["| dataset | n x d | " + " | ".join(head) + " |",
           "|---|---|" + "---|" * len(head)]
    for r in rows:
        vals = [r["product"]["auc"][n] for n in names] + [r["raw"][n] for n in raw]
        out.append(f"| {r['dataset']} | {r['n']:,} x {r['d']} | "
                   + " | ".join(f"{v:.3f}" for v in vals) + " |")
    avg = summary["average_roc_auc"]
    vals = [avg[f"kindred {n}"] for n in names] + [avg[f"raw {n}"] for n in raw]
    out.append("| **mean** | | " + " | ".join(f"**{v:.3f}**" for v in vals) + " |")
    return "\n".join(out)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench.risk_quality")
    ap.add_argument("--datasets", type=Path, default=DEFAULT_DIR)
    ap.add_argument("--only", nargs="*", help="dataset file stems to run (default: all)")
    ap.add_argument("--product-detectors", nargs="*", default=["default"],
                    help="detectors through the product path (the first is written back)")
    ap.add_argument("--max-rows", type=int, default=10_000,
                    help="KNN/LOF fit-size guard rail on both sides (0: none)")
    ap.add_argument("--bank", type=int, default=0, metavar="N",
                    help="also the synthetic bank of N customers (the README's commands)")
    ap.add_argument("--bank-seeds", type=int, nargs="*", default=[0])
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args(argv)
    files = sorted(args.datasets.glob("*.npz"))
    if args.only:
        files = [f for f in files if f.stem in set(args.only)]
    if not files and not args.bank:
        print(f"no .npz files in {args.datasets}", file=sys.stderr)
        return 2
    max_rows = args.max_rows or None
    rows: list[dict[str, Any]] = []
    banks: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="kindred-risk-quality-") as tmp:
        for f in files:
            rows.append(run_dataset(f, Path(tmp), detectors=args.product_detectors,
                                    max_rows=max_rows))
            print(f"done {f.stem}", file=sys.stderr, flush=True)
        for seed in args.bank_seeds if args.bank else []:
            banks.append(bank_quality(args.bank, Path(tmp) / f"bank-{seed}", seed=seed,
                                      max_rows=max_rows))
            print(f"done bank seed {seed}", file=sys.stderr, flush=True)
    summary = summarise(rows) if rows else {}
    failed = bool(summary.get("non_finite_files")) or not all(b["finite"] for b in banks)
    if args.json:
        json.dump({"rows": rows, "summary": summary, "bank": banks}, sys.stdout, indent=2)
        print()
        return int(failed)
    if rows:
        print(markdown(rows, summary))
        best = summary["best_raw"]
        avg = summary["average_roc_auc"]
        first = args.product_detectors[0]
        print(f"\nKindred {first} (product path) mean {avg[f'kindred {first}']:.4f}; best raw "
              f"single detector {best} {avg[f'raw {best}']:.4f}; files with a non-finite "
              f"score: {summary['non_finite_files'] or 'none'}")
    for b in banks:
        refs = ", ".join(f"{k} {v:.3f}" for k, v in b["raw"].items())
        print(f"\nsynthetic bank, {b['customers']:,} customers (seed {b['seed']}, "
              f"{b['anomalies']} planted): Kindred default on {b['column']} "
              f"({'+'.join(b['members'] or [])}) {b['default']:.3f}; raw on "
              f"{b['features']} z-scored one-hot features: {refs}")
    return int(failed)


if __name__ == "__main__":
    sys.exit(main())
