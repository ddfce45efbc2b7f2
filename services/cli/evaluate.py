"""``kindred evaluate``: measured quality of matching, recommendations and risk scoring.
"""

from __future__ import annotations

from typing import Any

import click

from ..cli_options import FiniteRange
from .risk import _sample
from .root import App, main, pass_app
from .vocabulary import renamed_option


@main.group()
def evaluate() -> None:
    """Measured quality of matching and risk scoring."""


def _print_eval(rep: Any) -> None:
    reps = rep.params.get("repeats", 1)
    click.echo(f"{rep.kind} evaluation of {rep.target} (base rate {rep.base_rate:.4f}; mean "
               f"over {reps} repeat(s), seed {rep.params.get('seed')})")
    click.echo(f"  {'vector column':<16} {'method':<12} {'ROC-AUC':>8} {'SD':>7} {'prec@k':>8} "
               f"{'recall@k':>8} {'lift@k':>7} {'k':>7}")
    for r in rep.rows:
        if r.roc_auc is None:
            click.echo(f"  {r.vector_column:<16} {r.method:<12} could not run: {r.error}")
            continue
        sd = f"{r.roc_auc_sd:.4f}" if r.roc_auc_sd is not None else "-"
        click.echo(f"  {r.vector_column:<16} {r.method:<12} {r.roc_auc:>8.4f} {sd:>7} "
                   f"{r.precision_at_k:>8.4f} {r.recall_at_k:>8.4f} {r.lift_at_k:>7.2f} "
                   f"{r.k:>7}")
    v = rep.predictability
    if v is not None:
        if v["predictable"]:
            click.echo(f"Best: {v['method']}, ROC-AUC {v['roc_auc']:.4f} (95% interval "
                       f"{v['interval'][0]:.4f}-{v['interval'][1]:.4f})")
        else:
            click.echo(f"Warning: {v['message']}")
    for w in rep.warnings:
        click.echo(f"Warning: {w['message']}")


@evaluate.command("matching")
@click.option("--product", default=None, help="Holdout evaluation of this product's holders.")
@click.option("--label", default=None, help="Label column (instead of a product holdout).")
@click.option("--positive", default=None, help="The label's positive value (e.g. yes).")
@click.option("--column", "columns", multiple=True, help="Vector column(s) (default: all).")
@click.option("--method", "methods", multiple=True,
              type=click.Choice(["centroid", "learned", "product", "propensity"]),
              help="Method(s) (default: centroid, learned and propensity).")
@click.option("--holdout", type=FiniteRange(0, 1, min_open=True, max_open=True),
              default=0.2, show_default=True, help="--product: share of holders hidden.")
@click.option("--split-column", default=None,
              help="--label: the column marking test rows (then one fixed split).")
@click.option("--test-value", default="test", show_default=True,
              help="--label: the --split-column value of test rows.")
@click.option("--test-size", type=FiniteRange(0, 1, min_open=True, max_open=True),
              default=0.3, show_default=True,
              help="--label without --split-column: share of rows in each stratified test split.")
@click.option("--repeats", type=click.IntRange(min=1), default=3, show_default=True,
              help="Seeded repeats (seed, seed+1, ...): figures are their mean and SD.")
@click.option("--exclude", multiple=True, help="propensity: attribute columns to leave out.")
@click.option("--seed", type=int, default=0, show_default=True)
@pass_app
def evaluate_matching(app: App, product: str | None, label: str | None, positive: str | None,
                      columns: tuple[str, ...], methods: tuple[str, ...], holdout: float,
                      split_column: str | None, test_value: str, test_size: float,
                      repeats: int, exclude: tuple[str, ...], seed: int) -> None:
    """ROC-AUC, precision/recall/lift at the top 10% against random and popularity."""
    if (product is None) == (label is None):
        raise click.UsageError("give exactly one of --product or --label")
    with app.progress() as bar:
        rep = app.kindred().evaluate_matching(
            product, label=label, positive=_literal(positive),
            columns=list(columns) or None,
            methods=list(methods) or ("centroid", "learned", "propensity"), holdout=holdout,
            seed=seed, repeats=repeats, split_column=split_column,
            test_value=_literal(test_value), test_size=test_size, exclude=list(exclude),
            progress=bar)
    app.emit(rep, lambda: _print_eval(rep))


@evaluate.command("recommendations")
@click.option("--top", type=click.IntRange(min=1), default=10, show_default=True,
              help="k of hit@k, recall@k and NDCG@k.")
@click.option("-k", "old_k", type=click.IntRange(min=1), default=None, hidden=True)
@click.option("--seed", type=int, default=0, show_default=True)
@pass_app
def evaluate_recommendations(app: App, top: int, old_k: int | None, seed: int) -> None:
    """Next-basket hit/recall/NDCG@k (last day of events hidden) against popularity and ALS."""
    k = renamed_option("-k", "--top", old_k, top, 10)
    with app.busy("Evaluating recommendations"):
        rep = app.kindred().evaluate_recommendations(top=k, seed=seed)

    def human() -> None:
        click.echo(f"Next-basket evaluation: {rep.customers:,} customers, {rep.items} items, "
                   f"each customer's last day of events hidden")
        click.echo(f"  {'method':<32} {'hit@' + str(k):>8} {'recall@' + str(k):>10} "
                   f"{'NDCG@' + str(k):>8}")
        for r in rep.rows:
            click.echo(f"  {r.method:<32} {r.hit_at_k:>8.4f} {r.recall_at_k:>10.4f} "
                       f"{r.ndcg_at_k:>8.4f}")

    app.emit(rep, human)


@evaluate.command("risk")
@click.option("--label", required=True,
              help="Column marking known anomalies (bool or 0/1, or any values with "
                   "--positive).")
@click.option("--positive", default=None,
              help="The --label value that marks an anomaly (e.g. bad, Yes).")
@click.option("--detector", "detectors", multiple=True,
              help="Detector(s) to compare (default: iforest, hbos, ecod, default ensemble).")
@click.option("--column", default=None,
              help="Vector column (default: as `risk score` picks, vec_tabular_raw first).")
@click.option("--fit-sample", type=FiniteRange(min=0, min_open=True), default=None,
              help="Fit on this many rows (or this share if < 1).")
@click.option("--seed", type=int, default=0, show_default=True)
@pass_app
def evaluate_risk(app: App, label: str, positive: str | None, detectors: tuple[str, ...],
                  column: str | None, fit_sample: float | None, seed: int) -> None:
    """ROC-AUC, average precision and precision@n of each detector against --label."""
    dets = list(detectors) or ["iforest", "hbos", "ecod", "default"]
    with app.busy("Evaluating detectors"):
        rep = app.kindred().evaluate_risk(label, positive=positive, detectors=dets,
                                          column=column, fit_sample=_sample(fit_sample),
                                          seed=seed)

    def human() -> None:
        target = f"{label} = {positive}" if positive is not None else label
        click.echo(f"Risk evaluation against {target} on {rep.rows[0].source}")
        click.echo(f"  {'detector':<10} {'ROC-AUC':>8} {'avg prec':>9} {'prec@n':>8} "
                   f"{'n':>6} {'anomalies':>9}")
        for r in rep.rows:
            click.echo(f"  {r.detector:<10} {r.roc_auc:>8.4f} {r.average_precision:>9.4f} "
                       f"{r.precision_at_n:>8.4f} {r.n_rows:>6} {r.n_anomalies:>9}")

    app.emit(rep, human)


def _literal(value: str | None) -> Any:
    """A command-line value as int/float/bool when it looks like one, else the string."""
    if value is None:
        return None
    low = value.lower()
    if low in ("true", "false"):
        return low == "true"
    for cast in (int, float):
        try:
            return cast(value)
        except ValueError:
            pass
    return value
