"""``kindred risk``: anomaly scores on stored vectors (score, top, explain).
"""

from __future__ import annotations

import click

from ..cli_options import FINITE, FiniteRange
from .root import App, main, pass_app
from .vocabulary import renamed_option


@main.group()
def risk() -> None:
    """Anomaly scores on stored vectors: score, top, explain.

    \b
    Without --column, risk scores vec_tabular_raw (written by `embed tabular`): z-scored
    attributes that keep each customer's distance from the centre, which anomaly detectors
    need and unit-length columns (vec_tabular, vec_text, ...) discard. risk_score is
    a robust z-score of the detector's score: 0 is the median customer, 3 is three robust
    standard deviations more unusual; risk_flag is risk_score > the threshold.
    """


@risk.command("score")
@click.option("--detector", default=None,
              help="iforest, ecod, hbos, copod, knn, lof, pca, or default (IForest + KNN + PCA "
                   "ensemble); or a JSON configuration.")
@click.option("--column", default=None,
              help="Vector column (default: one that keeps magnitudes, vec_tabular_raw first; "
                   "a unit-length column works with a caveat).")
@click.option("--attribute", "attributes", multiple=True,
              help="Fit on numeric attributes instead of a vector column (repeatable).")
@click.option("--fit-sample", type=FiniteRange(min=0, min_open=True), default=None,
              help="Fit on this many rows (or this share if < 1). Default: every row up to "
                   "100,000, else a seeded sample of 100,000.")
@click.option("--threshold", type=FINITE, default=None,
              help="Flag risk scores above this (robust z scale; default: the top "
                   "contamination share, 5%, of the fitted customers).")
@click.option("--seed", type=int, default=0, show_default=True)
@pass_app
def risk_score(app: App, detector: str | None, column: str | None,
               attributes: tuple[str, ...], fit_sample: float | None,
               threshold: float | None, seed: int) -> None:
    """Fit a detector, persist it, and write risk_score/rank/flag/model for every customer.

    Without --column it scores vec_tabular_raw, the column that keeps each customer's
    distance from the centre (see `kindred risk --help`), and says which it used.
    """
    with app.progress() as bar:
        r = app.kindred().score_risk(detector=detector, column=column,
                                     attributes=list(attributes) or None,
                                     fit_sample=_sample(fit_sample), threshold=threshold,
                                     seed=seed, progress=bar)

    def human() -> None:
        who = r.detector if r.members == [r.detector] else f"{r.detector} ({' + '.join(r.members)})"
        rule = (f", the top {r.contamination:.0%} of the fitted customers"
                if r.contamination is not None else "")
        click.echo(f"Scored {r.n_rows:,} customers with {who} on {r.source} (model "
                   f"{r.model_id}, fitted on {r.n_fit_rows:,} rows): {r.n_flagged:,} flagged "
                   f"(risk_score > {r.threshold:.3f}{rule})")
        for m in r.messages:
            click.echo(f"  note: {m}")

    app.emit(r, human)


@risk.command("top")
@click.option("--top", type=click.IntRange(min=1), default=20, show_default=True,
              help="Customers to show.")
@click.option("-n", "old_n", type=click.IntRange(min=1), default=None, hidden=True)
@click.option("--flagged", is_flag=True, help="Only flagged customers.")
@click.option("--attribute", "attrs", multiple=True, help="Attribute column(s) to show.")
@click.option("--attr", "old_attrs", multiple=True, hidden=True)
@pass_app
def risk_top(app: App, top: int, old_n: int | None, flagged: bool, attrs: tuple[str, ...],
             old_attrs: tuple[str, ...]) -> None:
    """The --top most anomalous customers."""
    top = renamed_option("-n", "--top", old_n, top, 20)
    attrs = renamed_option("--attr", "--attribute", old_attrs, attrs, ())
    cols = ["customer_id", *attrs] if attrs else None
    t = app.kindred().risk_top(top, attributes=cols, flagged_only=flagged)

    def human() -> None:
        click.echo(f"Anomalies detected (top {t.num_rows}):")
        shown = [c for c in (attrs or ()) if c in t.column_names]
        for r in t.to_pylist():
            extra = "  ".join(f"{c}={r[c]}" for c in shown)
            flag = "FLAGGED" if r.get("risk_flag") else ""
            click.echo(f"  {r['risk_rank']:>5}. {r['customer_id']:<12} risk {r['risk_score']:.4f}"
                       f"  {flag}  {extra}".rstrip())

    app.emit(t, human)


@risk.command("explain")
@click.argument("customer")
@pass_app
def risk_explain(app: App, customer: str) -> None:
    """Why CUSTOMER has its risk score."""
    e = app.kindred().explain_risk(customer)

    def human() -> None:
        flag = "flagged" if e.risk_flag else "not flagged"
        click.echo(f"{e.customer}: risk {e.risk_score:.4f} (rank {e.risk_rank}, {flag}, "
                   f"percentile {e.percentile:.1f}) under model {e.model_id}")
        devs = e.attribute_deviations or e.deviations
        if devs:
            click.echo("Most unusual:")
            for d in devs:
                if d.share is not None:
                    click.echo(f"  {d.feature:<24} {d.value!s:>12} (held by {d.share:.1%} of "
                               f"customers, z {d.robust_z:+.1f})")
                else:
                    value = "missing" if d.value is None else f"{d.value:.4g}"
                    click.echo(f"  {d.feature:<24} {value:>12} (median {d.median:.4g}, "
                               f"robust z {d.robust_z:+.1f})")
        if e.neighbours:
            click.echo("Nearest normal customers: " + ", ".join(n.key for n in e.neighbours))

    app.emit(e, human)



def _sample(value: float | None) -> int | float | None:
    if value is None:
        return None
    return int(value) if value >= 1 else value
