"""Risk detector quality on the ADBench files, through Kindred and with raw PyOD in the same run.

For each ``../shared/datasets/adbench/*.npz`` (``X``, ``y``): standardise X (z-score per
feature; constant features are dropped), store it as a ``customers`` table with a float32
``vec_tabular`` vector column and the label ``is_anomaly``, fit every detector on all rows and
score every row through :func:`services.risk.evaluate`; then run raw PyOD on the same float32
array and check that both give the same scores (max relative difference). Prints a Markdown
table of ROC-AUC per dataset and the averages (or JSON with ``--json``).

KNN and LOF cost grows with the square of the rows (about 4 minutes each for 49,097-row
shuttle on a loaded 2-core machine), so ``--max-rows`` (default 10,000) sets their
``max_rows`` guard rail, alone and inside ensembles: above it they fit on the module's seeded
sample (``services.risk.detector.fit_rows_for``) and score every row, on both sides.

    .venv/bin/python -m bench.risk_quality [--datasets DIR] [--only NAME ...]
        [--detectors NAME ...] [--max-rows N] [--json]
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
import pyarrow as pa

import vectorstore
from services import risk
from services.risk.config import EnsembleConfig, parse_detector
from vectorstore import VectorColumn

DEFAULT_DIR = Path(__file__).resolve().parents[2] / "shared" / "datasets" / "adbench"
SINGLES = ("ecod", "copod", "iforest", "hbos", "knn", "lof", "pca")
ENSEMBLES = {
    "default": "default",  # services.risk.config.default_ensemble: IForest + KNN + PCA, z-score
    "ens_iforest_knn_hbos_z": {"kind": "ensemble", "combine": "zscore", "members": [
        {"kind": "iforest"}, {"kind": "knn"}, {"kind": "hbos"}]},
    "ens_iforest_knn_pca_rank": {"kind": "ensemble", "combine": "rank", "members": [
        {"kind": "iforest"}, {"kind": "knn"}, {"kind": "pca"}]},
    "ens_all7_z": {"kind": "ensemble", "combine": "zscore", "members": [
        {"kind": k} for k in SINGLES]},
}


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
    """Per-feature z-scores as float32 (what a tabular vector column holds); drops constants."""
    X = np.asarray(X, dtype=np.float64)
    sd = X.std(axis=0)
    keep = sd > 0
    return ((X[:, keep] - X[:, keep].mean(axis=0)) / sd[keep]).astype(np.float32)


def ingest(store: vectorstore.VectorStore, X: np.ndarray, y: np.ndarray) -> None:
    store.drop_table("customers", missing_ok=True)
    store.create_table("customers", pa.schema([("customer_id", pa.string()),
                                               ("is_anomaly", pa.bool_())]),
                       key="customer_id", vectors=[VectorColumn("vec_tabular", X.shape[1], "l2")])
    store.write("customers", pa.table({
        "customer_id": [f"r{i:07d}" for i in range(X.shape[0])],
        "is_anomaly": y.astype(bool),
        "vec_tabular": pa.FixedSizeListArray.from_arrays(pa.array(X.ravel()), X.shape[1]),
    }))


def raw_pyod_scores(cfg: Any, X: np.ndarray) -> np.ndarray:
    """The same detector with PyOD directly on the numpy array (fit on all rows)."""
    from pyod.models.copod import COPOD
    from pyod.models.ecod import ECOD
    from pyod.models.hbos import HBOS
    from pyod.models.iforest import IForest
    from pyod.models.knn import KNN
    from pyod.models.lof import LOF
    from pyod.models.pca import PCA

    if isinstance(cfg, EnsembleConfig):
        parts = [raw_pyod_scores(m, X) for m in cfg.members]
        if cfg.combine == "zscore":
            return np.mean([(s - s.mean()) / (s.std() or 1.0) for s in parts], axis=0)
        from scipy.stats import rankdata
        return np.mean([rankdata(s, method="max") / s.size for s in parts], axis=0)
    c = cfg.contamination
    if cfg.kind == "ecod":
        return ECOD(contamination=c).fit(X).decision_scores_
    if cfg.kind == "copod":
        return COPOD(contamination=c).fit(X).decision_scores_
    est = {"iforest": lambda: IForest(random_state=cfg.random_state, contamination=c),
           "hbos": lambda: HBOS(contamination=c),
           "knn": lambda: KNN(contamination=c),
           "lof": lambda: LOF(contamination=c),
           "pca": lambda: PCA(random_state=cfg.random_state, contamination=c)}[cfg.kind]()
    if getattr(cfg, "max_rows", None) and X.shape[0] > cfg.max_rows:
        from services.risk.detector import fit_rows_for
        idx, _ = fit_rows_for(cfg, X.shape[0])
        return est.fit(X[idx]).decision_function(X)
    return est.fit(X).decision_function(X)


def run_dataset(path: Path, detectors: dict[str, Any], workdir: str) -> list[dict[str, Any]]:
    """Score one ADBench file with each detector through Kindred and raw PyOD."""
    from sklearn.metrics import roc_auc_score

    with np.load(path, allow_pickle=False) as f:
        X, y = standardise(f["X"]), np.asarray(f["y"]).astype(bool)
    rows = []
    with vectorstore.connect(str(Path(workdir) / path.stem)) as store:
        ingest(store, X, y)
        for name, spec in detectors.items():
            cfg = parse_detector(spec)
            t0 = time.perf_counter()
            det, source = risk.fit(store, "customers", cfg, column="vec_tabular")
            kept, ours = risk.score_stream(store, "customers", det, source)
            t1 = time.perf_counter()
            raw = raw_pyod_scores(cfg, X)
            t2 = time.perf_counter()
            order = np.argsort(kept.column("customer_id").to_numpy(zero_copy_only=False))
            ours = ours[order]
            rel = float(np.max(np.abs(ours - raw)) / max(np.max(np.abs(raw)), 1e-12))
            rows.append({"dataset": path.stem, "n": X.shape[0], "d": X.shape[1],
                         "detector": name, "roc_auc": float(roc_auc_score(y, ours)),
                         "raw_roc_auc": float(roc_auc_score(y, raw)), "max_rel_diff": rel,
                         "kindred_s": t1 - t0, "pyod_s": t2 - t1})
    return rows


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench.risk_quality")
    ap.add_argument("--datasets", type=Path, default=DEFAULT_DIR)
    ap.add_argument("--only", nargs="*", help="dataset file stems to run (default: all)")
    ap.add_argument("--detectors", nargs="*", help="detector names to run (default: all)")
    ap.add_argument("--max-rows", type=int, default=10_000,
                    help="KNN/LOF fit-size guard rail on both sides (0: none)")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args(argv)
    files = sorted(args.datasets.glob("*.npz"))
    if args.only:
        files = [f for f in files if f.stem in set(args.only)]
    if not files:
        print(f"no .npz files in {args.datasets}", file=sys.stderr)
        return 2
    detectors: dict[str, Any] = {k: k for k in SINGLES} | ENSEMBLES
    if args.detectors:
        detectors = {k: v for k, v in detectors.items() if k in set(args.detectors)}
    detectors = {k: with_row_limit(v, args.max_rows or None) for k, v in detectors.items()}
    rows: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory() as tmp:
        for f in files:
            rows.extend(run_dataset(f, detectors, tmp))
            print(f"done {f.stem}", file=sys.stderr, flush=True)
    names = list(detectors)
    avg = {n: float(np.mean([r["roc_auc"] for r in rows if r["detector"] == n])) for n in names}
    worst = max(r["max_rel_diff"] for r in rows)
    if args.json:
        json.dump({"rows": rows, "average_roc_auc": avg, "max_rel_diff": worst}, sys.stdout,
                  indent=2)
        print()
        return 0
    print("| dataset | n x d | " + " | ".join(names) + " |")
    print("|---|---|" + "---|" * len(names))
    for f in files:
        r = {x["detector"]: x for x in rows if x["dataset"] == f.stem}
        first = r[names[0]]
        print(f"| {f.stem} | {first['n']} x {first['d']} | "
              + " | ".join(f"{r[n]['roc_auc']:.3f}" for n in names) + " |")
    print("| **average** | | " + " | ".join(f"**{avg[n]:.3f}**" for n in names) + " |")
    print(f"\nstore path vs raw PyOD: max relative score difference {worst:.2e} "
          f"over {len(rows)} (dataset, detector) pairs")
    return 0


if __name__ == "__main__":
    sys.exit(main())
