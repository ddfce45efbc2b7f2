"""``kindred`` commands of product matching and recommendations: match, fit, explain,
recommend and recommendations.
"""

from __future__ import annotations

from typing import Any

import click

from ..cli_options import FINITE, FiniteRange, exclusive
from .root import App, main, pass_app
from .vocabulary import renamed_option

# ---------------------------------------------------------------------- product matching
METHOD_CHOICE = click.Choice(["centroid", "learned", "product", "propensity", "auto"])


def _print_ranked(title: str, table: Any, limit: int, label: str = "score") -> None:
    click.echo(title)
    if table.num_rows == 0:
        click.echo("  (none)")
        return
    rows = table.slice(0, limit).to_pylist()
    extra = [c for c in table.column_names if c not in ("customer_id", "score", "rank", "band")]
    for r in rows:
        attrs = "  ".join(f"{c}={r[c]}" for c in extra)
        band = f"  [{r['band']}]" if "band" in r else ""
        click.echo(f"  {r['rank']:>5}. {r['customer_id']:<12} {label} {r['score']:.4f}{band}  "
                   f"{attrs}")
    if table.num_rows > limit:
        click.echo(f"  ... {table.num_rows - limit:,} more (use --json for all)")


@main.command()
@click.argument("product")
@click.option("--method", type=METHOD_CHOICE, default="centroid", show_default=True,
              help="centroid of consumers, learned model, the product's own vector, "
                   "propensity (calibrated probabilities from the attributes; served from "
                   "`kindred fit`), or auto (best over repeated holdouts).")
@click.option("--column", "vector_column", default=None,
              help="Vector column (default: the only one).")
@click.option("--top", type=click.IntRange(min=1), default=None,
              help="Number of prospects (default 100).")
@click.option("--audience-pct", type=FiniteRange(0, 100, min_open=True), default=None,
              help="Audience size as a percentage of eligible non-holders.")
@click.option("--min-score", type=FINITE, default=None,
              help="Keep only rows scoring at least this (on the method's score scale); "
                   "alone, it sets the list length.")
@click.option("--where", default=None,
              help="Filter, e.g. \"age >= 30 and region in ('north','south')\".")
@click.option("--consumers", "which", flag_value="consumers", help="Only current consumers.")
@click.option("--prospects", "which", flag_value="prospects", help="Only prospects.")
@click.option("--both", "which", flag_value="both", default=True, help="Both lists (default).")
@click.option("--attribute", "attrs", multiple=True,
              help="Attribute column(s) to show (repeatable).")
@click.option("--attr", "old_attrs", multiple=True, hidden=True)
@click.option("--exact", is_flag=True, help="Exact search (ignore any ANN index).")
@click.option("--min-consumers", type=click.IntRange(min=1), default=20, show_default=True)
@click.option("--bands", type=FINITE, nargs=2, default=None, metavar="HIGH LOW",
              help="Score thresholds of the high and medium bands (default: from the whole "
                   "base: probability vs base rate, or the non-holders' top 10%/30%).")
@click.option("--show", type=click.IntRange(min=1), default=10, show_default=True,
              help="Rows printed per list (human output).")
@pass_app
def match(app: App, product: str, method: str, vector_column: str | None, top: int | None,
          audience_pct: float | None, min_score: float | None, where: str | None, which: str,
          attrs: tuple[str, ...], old_attrs: tuple[str, ...], exact: bool, min_consumers: int,
          bands: tuple[float, float] | None, show: int) -> None:
    """Current consumers of PRODUCT and the best prospects for it."""
    attrs = renamed_option("--attr", "--attribute", old_attrs, attrs, ())
    exclusive(top=top, audience_pct=audience_pct)
    with app.busy(f"Matching {product}"):
        r = app.kindred().match(product, method=method, column=vector_column, top=top,
                            audience_pct=audience_pct, min_score=min_score, where=where,
                            exact=exact, attributes=attrs, min_consumers=min_consumers,
                            consumers=which != "prospects", prospects=which != "consumers",
                            bands=bands)
    s = r.summary
    data = {"summary": s.model_dump(mode="json")}
    if which in ("both", "consumers"):
        data["consumers"] = r.consumers.to_pylist()
    if which in ("both", "prospects"):
        data["prospects"] = r.prospects.to_pylist()

    def human() -> None:
        eligible = (f", {s.eligible_prospects:,} eligible prospects"
                    if s.eligible_prospects is not None else "")
        click.echo(f"{product}: method {s.method} on {s.column} ({s.metric}), "
                   f"{s.known_consumers:,} known consumers{eligible}"
                   + (f", filter {s.filter}" if s.filter else ""))
        for w in s.warnings:
            click.echo(f"Warning: {w}")
        if s.predictability and s.predictability["predictable"]:
            p = s.predictability
            click.echo(f"Predictable: {p['method']} ROC-AUC {p['roc_auc']:.3f} (95% interval "
                       f"{p['interval'][0]:.3f}-{p['interval'][1]:.3f}, {p['source']})")
        label = "probability" if s.metric == "probability" else "score"
        if which in ("both", "consumers"):
            _print_ranked(f"Customers consuming {product}:", r.consumers, show, label)
        if which in ("both", "prospects"):
            _print_ranked(f"Top potential customers for {product}:", r.prospects, show, label)
        a = s.audience
        if a and which in ("both", "prospects"):
            lo, hi = a["conversions_interval"]
            llo, lhi = a["lift_interval"]
            click.echo(f"Audience of {a['size']:,}: expected conversions {a['expected_conversions']:.1f}"
                       f" (95% interval {lo:.1f}-{hi:.1f}), lift {a['lift']:.2f}x the base rate "
                       f"{a['base_rate']:.4f} (95% interval {llo:.2f}-{lhi:.2f})")

    app.emit(data, human)


@main.command()
@click.argument("products", nargs=-1, required=True)
@click.option("--method", type=click.Choice(["propensity", "learned"]), default="propensity",
              show_default=True)
@click.option("--column", "vector_column", default=None, help="learned: the vector column.")
@click.option("--exclude", multiple=True, help="propensity: attribute columns to leave out.")
@click.option("--type", "types", multiple=True, metavar="COLUMN=category|numeric",
              help="propensity: read a column as a category or a number.")
@click.option("--seed", type=int, default=0, show_default=True)
@pass_app
def fit(app: App, products: tuple[str, ...], method: str, vector_column: str | None,
        exclude: tuple[str, ...], types: tuple[str, ...], seed: int) -> None:
    """Fit and save PRODUCTS' models; propensity also writes propensity_<product> scores."""
    with app.progress() as bar:
        r = app.kindred().fit(list(products), method=method, column=vector_column,
                              exclude=list(exclude), types=list(types), seed=seed,
                              progress=bar)

    def human() -> None:
        for product, d in r.details["products"].items():
            if d["method"] == "learned":
                click.echo(f"{product}: learned query on {d['vector_column']} saved")
                continue
            a = d["assessment"]
            lo, hi = a["interval"]
            click.echo(f"{product}: model {d['model_id']}, {d['rows_scored']:,} customers scored "
                       f"into {d['column']}; cross-validated ROC-AUC {a['roc_auc']:.3f} "
                       f"(95% interval {lo:.3f}-{hi:.3f}), base rate {d['base_rate']:.4f}")
            if not a["predictable"]:
                click.echo(f"Warning: {product} is not predictable from these data (the "
                           "interval includes chance)")
            for w in d["leakage"]:
                click.echo(f"Warning: {w['message']}")

    app.emit(r, human)


@main.command()
@click.argument("customer")
@click.option("--product", required=True)
@click.option("--column", "vector_column", default=None)
@click.option("--top", type=click.IntRange(min=1), default=5, show_default=True,
              help="Nearest consumers to show.")
@click.option("-k", "old_k", type=click.IntRange(min=1), default=None, hidden=True)
@pass_app
def explain(app: App, customer: str, product: str, vector_column: str | None, top: int,
            old_k: int | None) -> None:
    """Why CUSTOMER matches --product: nearest consumers and the attributes they share."""
    top = renamed_option("-k", "--top", old_k, top, 5)
    e = app.kindred().explain(customer, product, column=vector_column, top=top)

    def human() -> None:
        held = "holds" if e.holds_product else "does not hold"
        click.echo(f"{e.customer_id} {held} {product}; nearest consumers in {e.vector_column}:")
        for n in e.neighbours:
            shared = ", ".join(f"{a}={v}" for a, v in n.shared.items()) or "-"
            click.echo(f"  {n.customer_id:<12} similarity {n.similarity:.4f}  shares {shared}")
        common = sorted(e.shared_counts.items(), key=lambda kv: -kv[1])
        if common:
            click.echo("Shared most often: " + ", ".join(f"{a} ({c}/{len(e.neighbours)})"
                                                         for a, c in common[:5]))

    app.emit(e, human)


@main.command()
@click.option("--top", type=click.IntRange(min=1), default=3, show_default=True,
              help="Products per customer.")
@click.option("--top-n", "old_top_n", type=click.IntRange(min=1), default=None, hidden=True)
@click.option("--method", type=click.Choice(["behavior", "vector"]), default=None,
              help="behavior: from the events (default when there are events); vector: "
                   "customer . product in a shared vector column.")
@click.option("--column", "vector_column", default=None,
              help="vector: column shared by customers and products (e.g. vec_behavior).")
@click.option("--include-held", is_flag=True, help="vector: also recommend products already held.")
@click.option("--all-items", is_flag=True,
              help="behavior: recommend any event item, not only products-table rows.")
@pass_app
def recommend(app: App, top: int, old_top_n: int | None, method: str | None,
              vector_column: str | None, include_held: bool, all_items: bool) -> None:
    """Every customer's top products, written to rec_products and rec_scores."""
    top = renamed_option("--top-n", "--top", old_top_n, top, 3)
    with app.progress() as bar:
        r = app.kindred().recommend(top=top, column=vector_column, method=method,
                                    exclude_held=not include_held, only_products=not all_items,
                                    progress=bar)

    def human() -> None:
        d = r.details if hasattr(r, "details") else r.model_dump()
        click.echo(f"Wrote top {d['top_n']} of {d['products']} products for {d['customers']:,} "
                   f"customers ({d.get('method') or d.get('vector_column')}; scoring "
                   f"{d['seconds_scoring']:.2f}s, writing {d['seconds_writing']:.2f}s)")

    app.emit(r, human)


@main.command()
@click.argument("customer")
@click.option("--top", type=click.IntRange(min=1), default=10, show_default=True,
              help="Recommendations to show.")
@click.option("--top-n", "old_top_n", type=click.IntRange(min=1), default=None, hidden=True)
@click.option("--all-items", is_flag=True, help="Any event item, not only products.")
@pass_app
def recommendations(app: App, customer: str, top: int, old_top_n: int | None,
                    all_items: bool) -> None:
    """CUSTOMER's behaviour recommendations, each with its reasons."""
    top = renamed_option("--top-n", "--top", old_top_n, top, 10)
    r = app.kindred().recommendations(customer, top=top, only_products=not all_items)

    def human() -> None:
        click.echo(f"{customer}: {r.active_days} active days, holds "
                   f"{', '.join(r.holdings) or 'nothing'} ({r.source})")
        if not r.recommendations:
            click.echo("  (nothing to recommend)")
        for i, item in enumerate(r.recommendations, start=1):
            click.echo(f"  {i:>2}. {item.item:<24} score {item.score:.4f}  "
                       + "; ".join(item.reasons))

    app.emit(r, human)
