"""The end-to-end demo (``make demo``, ``kindred demo``): a synthetic bank, start to finish.

Generates a bank (CSV, Parquet, JSONL and JSON files), ingests every file through the
validating pipeline, consolidates events into customer features, embeds customers (tabular,
behaviour, text), builds indexes, matches a product, scores risk, measures both against the
generator's ground truth, writes the HTML report, and prints a short summary. Runs on a laptop
(2 cores) in a few minutes with no server and no network. Each step says what it did and how
long it took; a step whose module is missing is reported and skipped.
"""

from __future__ import annotations

import shutil
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow.compute as pc

from vectorstore import KindredError

PRODUCT = "term_deposit"
Echo = Callable[[str], Any]


def _print(line: str) -> None:
    print(line, flush=True)


def _pretty(product: str) -> str:
    return product.replace("_", " ").capitalize()


def _user_errors() -> tuple[type[BaseException], ...]:
    return (KindredError, ImportError)


class _Steps:
    """Runs numbered steps, timing each; a failing step is reported and skipped."""

    def __init__(self, echo: Echo | None, total: int) -> None:
        self.echo = echo or (lambda _s: None)
        self.total = total
        self.n = 0
        self.times: dict[str, float] = {}
        self.skipped: dict[str, str] = {}

    def run(self, name: str, fn: Callable[[], Any], describe: Callable[[Any], str]) -> Any:
        self.n += 1
        t0 = time.perf_counter()
        try:
            out = fn()
        except _user_errors() as exc:
            self.skipped[name] = f"{type(exc).__name__}: {exc}"
            self.echo(f"[{self.n}/{self.total}] {name}: skipped ({self.skipped[name]})")
            return None
        dt = time.perf_counter() - t0
        self.times[name] = round(dt, 2)
        self.echo(f"[{self.n}/{self.total}] {name}: {describe(out)} ({dt:.1f}s)")
        return out


def run_demo(out_dir: str | Path = "kindred-demo", *, customers: int = 20_000, seed: int = 0,
             text: bool = True, echo: Echo | None = _print) -> dict[str, Any]:
    """Run the demo into ``out_dir`` (``bank/``, ``store/``, ``report/``); returns a summary."""
    from services.facade import Kindred

    out = Path(out_dir).resolve()
    for sub in ("bank", "store", "report"):
        shutil.rmtree(out / sub, ignore_errors=True)
    bank_dir, store_dir, report_dir = out / "bank", out / "store", out / "report"
    say = echo or (lambda _s: None)
    t_start = time.perf_counter()
    say(f"Kindred demo: a synthetic bank of {customers:,} customers (seed {seed}) in {out}")
    steps = _Steps(echo, total=12 + int(text))
    summary: dict[str, Any] = {"out_dir": str(out), "store": str(store_dir), "customers": customers}

    bank = steps.run("generate", lambda: Kindred.generate(bank_dir, customers=customers,
                                                         seed=seed),
                     lambda r: f"{r.customers:,} customers, {r.details['transactions']:,} "
                               f"transactions, {r.details['web_events']:,} web events, "
                               f"{r.details['products']} products")
    if bank is None:
        return summary
    k = Kindred(str(store_dir), create=True)
    try:
        _pipeline(k, steps, bank.files, summary, text=text)
    finally:
        summary["steps_seconds"] = steps.times
        summary["skipped"] = steps.skipped
        summary["seconds"] = round(time.perf_counter() - t_start, 1)
        k.close()
    _print_summary(say, summary, report_dir)
    return summary


def _ingest_all(k: Any, files: dict[str, str]) -> dict[str, Any]:
    runs = {
        "customers.csv": k.ingest(files["customers"], table="customers",
                                  id_column="customer_id", holdings_column="products",
                                  holdings_separator=";", text_columns=["note"]),
        "transactions.parquet": k.ingest(files["transactions"], table="events"),
        "web_events.jsonl": k.ingest(files["web_events"], table="events",
                                     rename=["page=category"],
                                     timestamp_formats=["ts=%Y-%m-%dT%H:%M:%SZ"],
                                     holdings_from_events=["purchase"]),
        "products.json": k.ingest(files["products"], table="products",
                                  id_column="product_id"),
        # ground truth for measuring risk only: the planted-anomaly label, never a feature
        "truth.parquet (is_anomaly)": k.ingest(files["truth"], table="customers",
                                               id_column="customer_id",
                                               attributes=["is_anomaly"]),
    }
    return runs


def _pipeline(k: Any, steps: _Steps, files: dict[str, str], summary: dict[str, Any], *,
              text: bool) -> None:
    def ingest() -> Any:
        try:
            return _ingest_all(k, files)
        except ImportError:  # without the validating pipeline: the generator's direct loader
            return {"direct load": k.load_bank(Path(files["customers"]).parent)}

    loads = steps.run("ingest", ingest, lambda r: "; ".join(
        f"{name} -> {getattr(x, 'table', 'store')}: "
        f"{getattr(x, 'written', 0) + getattr(x, 'updated', 0):,} rows"
        for name, x in r.items()))
    if loads is None:
        return
    steps.run("consolidate", lambda: k.consolidate(),
              lambda r: f"{r.details['customers']:,} customers, "
                        f"{len(r.details['feature_columns'])} feature columns "
                        "(recency, frequency, monetary, spend per category, channels)")
    schema = k.store.table_info("customers").schema.names
    activity = [c for c in schema if c.startswith(("spend_", "count_"))
                or c in ("n_events", "frequency", "monetary", "recency_days")]
    label = ["is_anomaly"] if "is_anomaly" in schema else []
    steps.run("embed tabular", lambda: k.embed("tabular", exclude=["note", *label]),
              lambda r: r.details["message"])
    steps.run("embed behaviour", lambda: k.embed("behavior"), lambda r: r.details["message"])
    if text:
        def embed_text() -> Any:
            fallback: tuple[type[BaseException], ...] = (*_user_errors(), RuntimeError, OSError)
            try:  # int8 ONNX Runtime: ~3x faster on CPU than PyTorch
                return k.embed("text", text_column="note", backend="onnx")
            except fallback as exc:
                steps.echo(f"      (ONNX Runtime unavailable: {exc}; using PyTorch)")
                return k.embed("text", text_column="note")

        steps.run("embed text", embed_text, lambda r: r.details["message"])
    if not activity:
        steps.n += 1
    else:
        steps.run("embed activity", lambda: k.embed("tabular", include=activity,
                                                    column="vec_activity"),
                  lambda r: r.details["message"] + " (transaction features, for risk)")
    steps.run("index", lambda: k.index(), lambda r: (
        f"scalar index on {r.details['scalar']}, ANN on "
        f"{', '.join(r.details['vector_indexes']) or 'none'}"))
    # vec_behavior is left out of the holdout: it is built from the holdings themselves, so a
    # hidden holder's vector still carries the product and the measure would be flattering
    columns = [c for c in ("vec_tabular", "vec_text")
               if c in k.store.table_info("customers").vectors]

    fitted: dict[str, Any] = {}

    def evaluate() -> Any:
        # every method is fitted on the training holders only (C chosen by cross-validation
        # inside the holdout), so the figures are honest
        rep = k.evaluate_matching(PRODUCT, columns=columns, methods=("centroid",))
        if "vec_tabular" in columns:  # the learned model on the compact tabular vectors
            learned = k.evaluate_matching(PRODUCT, columns=["vec_tabular"],
                                          methods=("learned",))
            rep.rows.extend(r for r in learned.rows if r.method == "learned")
        return rep

    ev = steps.run("evaluate matching", evaluate,
                   lambda r: f"best {r.best().method} on {r.best().vector_column}: holdout "
                             f"ROC-AUC {r.best().roc_auc:.3f}, lift@10% {r.best().lift_at_k:.2f}")
    best_col, best_method = (ev.best().vector_column, ev.best().method) if ev else (None,
                                                                                  "centroid")
    if ev:
        summary["matching_quality"] = {
            "product": PRODUCT, "vector_column": best_col, "method": best_method,
            "roc_auc": ev.best().roc_auc, "lift_at_10pct": ev.best().lift_at_k,
            "precision_at_10pct": ev.best().precision_at_k, "base_rate": ev.base_rate,
            "table": [r.model_dump() for r in ev.rows]}

    def match() -> Any:
        q = k.product_query(PRODUCT, method=best_method, column=best_col)
        fitted["query"] = q
        return k.match(PRODUCT, query=q, top=10, attributes=["age", "occupation", "region"])

    m = steps.run("match", match,
                  lambda r: f"{r.summary.known_consumers:,} consumers, top "
                            f"{r.summary.prospects_returned} prospects "
                            f"({r.summary.method} on {r.summary.column})")
    if m is not None:
        summary["match"] = m.to_dict()
    # the activity features' magnitude-preserving companion: the planted anomalies are in the
    # transactions, and detectors need each customer's distance from the centre
    risk_col = "vec_activity_raw" if activity else None
    run = steps.run("risk", lambda: k.score_risk(column=risk_col),
                    lambda r: f"{r.detector} on {r.source}: {r.n_flagged:,} of {r.n_rows:,} "
                              "flagged")
    if run is not None:
        summary["risk"] = run.model_dump(mode="json")
        top = k.risk_top(5, attributes=["customer_id", *label])
        summary["risk_top"] = top.to_pylist()
        if label:
            summary["risk_quality"] = _risk_auc(k, label[0])
    steps.run("recommend", lambda: k.recommend(top=3),
              lambda r: f"top {r.details['top_n']} of {r.details['products']} products for "
                        f"{r.details['customers']:,} customers from their behaviour "
                        "(rec_products, rec_scores)")
    rep = steps.run("report", lambda: k.report(
        Path(summary["out_dir"]) / "report", products=[PRODUCT, "mortgage"],
        column=best_col, methods=tuple(dict.fromkeys(("centroid", best_method))),
        label=label[0] if label else None, learned_options=_learned_c(fitted), repeats=1),
        lambda r: f"{len(r.images)} plots")
    if rep is not None:
        summary["report"] = rep.html
    summary["stats"] = k.stats().model_dump(mode="json")


def _learned_c(fitted: dict[str, Any]) -> dict[str, Any] | None:
    """The strength C the match step chose by cross-validation on all holders, reused by the
    report's curves to save refitting (its figures of record are the evaluation step's)."""
    q = fitted.get("query")
    if q is None or q.method != "learned" or "C" not in q.details:
        return None
    return {"Cs": [float(q.details["C"])]}


def _risk_auc(k: Any, label: str) -> dict[str, Any]:
    """ROC-AUC of the stored risk scores against the planted anomalies."""
    from sklearn.metrics import roc_auc_score

    t = k.store.to_arrow("customers", columns=["risk_score", "risk_flag", label])
    y = np.asarray(pc.fill_null(t.column(label), False).to_numpy(zero_copy_only=False),
                   dtype=bool)
    s = t.column("risk_score").to_numpy(zero_copy_only=False)
    flag = np.asarray(t.column("risk_flag").to_numpy(zero_copy_only=False), dtype=bool)
    return {"label": label, "roc_auc": float(roc_auc_score(y, s)), "planted": int(y.sum()),
            "flagged": int(flag.sum()), "planted_among_flagged": int((flag & y).sum())}


def _customer_line(r: dict[str, Any]) -> str:
    """One matched customer of the summary: id, score and who they are."""
    return (f"  {r['customer_id']}  score {r['score']:.3f}  age {r['age']}, "
            f"{r['occupation']}, {r['region']}")


def _print_summary(say: Echo, s: dict[str, Any], report_dir: Path) -> None:
    name = _pretty(PRODUCT)
    say("")
    m = s.get("match")
    if m:
        sm = m["summary"]
        say(f"Customers consuming {name}: {sm['known_consumers']:,} "
            f"(most typical first, {sm['method']} on {sm['vector_column']})")
        for r in m["consumers"][:5]:
            say(_customer_line(r))
        others = sm.get("eligible_prospects")
        if others is None:  # not counted when --top sets the list length
            others = s["customers"] - sm["known_consumers"]
        say(f"Top potential customers for {name}: (of {others:,} who do not hold it yet)")
        for r in m["prospects"][:5]:
            say(_customer_line(r))
    q = s.get("matching_quality")
    if q:
        say(f"Matching quality: hiding 20% of {name} holders, {q['method']} on "
            f"{q['vector_column']} ranks them with ROC-AUC {q['roc_auc']:.3f} (random 0.500); "
            f"the top 10% holds {q['lift_at_10pct']:.1f}x the base rate "
            f"({q['precision_at_10pct']:.1%} vs {q['base_rate']:.1%})")
    r = s.get("risk")
    if r:
        say(f"Anomalies detected: {r['n_flagged']:,} of {r['n_rows']:,} customers flagged "
            f"({r['detector']} on {r['source']}, score >= {r['threshold']:.3g})")
        for row in s.get("risk_top", []):
            planted = " (planted anomaly)" if row.get("is_anomaly") else ""
            say(f"  #{row['risk_rank']} {row['customer_id']}  risk {row['risk_score']:.3f}"
                f"{planted}")
    rq = s.get("risk_quality")
    if rq:
        say(f"Risk quality: ROC-AUC {rq['roc_auc']:.3f} on the {rq['planted']:,} planted "
            f"anomalies; {rq['planted_among_flagged']:,} of them are among the "
            f"{rq['flagged']:,} flagged")
    if s.get("skipped"):
        say("Skipped steps: " + "; ".join(f"{k}: {v}" for k, v in s["skipped"].items()))
    say(f"Store: {s['store']}  (try: kindred --store {s['store']} stats)")
    if s.get("report"):
        say(f"Report: {s['report']}")
    else:
        say(f"Report: not written (see skipped steps); it would be in {report_dir}")
    say(f"Total time: {s.get('seconds', 0):.0f}s")


def main(argv: list[str] | None = None) -> int:
    import argparse

    ap = argparse.ArgumentParser(prog="python -m synthetic_bank.demo", description=__doc__)
    ap.add_argument("out", nargs="?", default="kindred-demo")
    ap.add_argument("--customers", type=int, default=20_000)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--no-text", action="store_true", help="skip the text embedding")
    args = ap.parse_args(argv)
    s = run_demo(args.out, customers=args.customers, seed=args.seed, text=not args.no_text)
    return 0 if not s.get("skipped") and s.get("report") else 1


if __name__ == "__main__":
    sys.exit(main())
