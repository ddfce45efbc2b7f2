"""``kindred`` commands that administer the store and run it end to end: init, tables, stats,
versions, restore, optimize, migrate, refresh, report and demo.
"""

from __future__ import annotations

import click

from ingest.datamodel import CUSTOMERS

from ..errors import ServiceError
from .root import App, main, pass_app


def _size(n: int | None) -> str:
    if n is None:
        return "-"
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024  # type: ignore[assignment]
    return str(n)


# ---------------------------------------------------------------------- store administration
@main.command()
@pass_app
def init(app: App) -> None:
    """Create an empty store at --store (a no-op when one exists)."""
    from ..admin import local_path

    path = local_path(app.store_uri)
    if path is not None:
        try:
            path.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise ServiceError(f"cannot create the store directory {path}: "
                               f"{exc.strerror or exc}") from exc
    k = app.kindred(create=True)
    result = {"store": k.location, "backend": k.store.scheme, "tables": k.tables()}
    app.emit(result, lambda: click.echo(
        f"Store ready at {result['store']} ({result['backend']}, "
        f"{len(result['tables'])} table(s))"))


@main.command()
@pass_app
def tables(app: App) -> None:
    """List the tables with their row counts."""
    k = app.kindred()
    rows = [{"table": t, "rows": k.store.count(t)} for t in k.tables()]

    def human() -> None:
        if not rows:
            click.echo(f"No tables in {k.location}")
        for r in rows:
            click.echo(f"{r['table']:<24} {r['rows']:>10,} rows")

    app.emit(rows, human)


@main.command()
@click.option("--table", "tables_", multiple=True, help="Only these tables (repeatable).")
@pass_app
def stats(app: App, tables_: tuple[str, ...]) -> None:
    """Row counts, vector columns and their embedders, indexes, versions and disk size."""
    st = app.kindred().stats(list(tables_) or None)

    def human() -> None:
        from rich.console import Console
        from rich.table import Table

        console = Console(width=120)
        console.print(f"Store: {st.store} (backend {st.backend}, disk {_size(st.disk_bytes)})")
        t = Table("table", "rows", "key", "vector columns (embedder)", "indexes", "version",
                  "disk")
        for ts in st.tables:
            vecs = ", ".join(f"{v.name}[{v.dim}] ({v.embedder or '-'})" for v in ts.vectors)
            idx = ", ".join(f"{i.index_type}:{'+'.join(i.columns)}" for i in ts.indexes)
            ver = f"{ts.version} of {ts.n_versions}" if ts.version is not None else "-"
            t.add_row(ts.name, f"{ts.rows:,}", ts.key or "-", vecs or "-", idx or "-", ver,
                      _size(ts.disk_bytes))
        console.print(t)
        for ts in st.tables:
            if ts.source_names:
                pairs = ", ".join(f"{new} <- {old!r}" for new, old in ts.source_names.items())
                console.print(f"{ts.name}: columns named otherwise in the source: {pairs}",
                              highlight=False)
        fresh = [(ts.name, d) for ts in st.tables for d in ts.derived]
        if fresh:
            f = Table("table", "derived column", "rows", "stale", "empty", "last refreshed")
            for name, d in fresh:
                f.add_row(name, d.column or d.output, f"{d.rows:,}", f"{d.stale:,}",
                          "-" if d.missing is None else f"{d.missing:,}",
                          d.refreshed_at or "-")
            console.print(f)
            if any(d.stale for _, d in fresh):
                console.print("Stale rows changed after the column was written: "
                              "`kindred refresh` brings them up to date.", highlight=False)
        if st.artifacts:
            console.print(f"Artifacts: {', '.join(st.artifacts)}")

    app.emit(st, human)


@main.command()
@click.option("--table", default=CUSTOMERS, show_default=True)
@pass_app
def versions(app: App, table: str) -> None:
    """List the versions of a table (backends that keep versions)."""
    vs = app.kindred().versions(table)

    def human() -> None:
        for v in vs:
            click.echo(f"{v.version:>6}  {v.timestamp}{'  (current)' if v.current else ''}")

    app.emit(vs, human)


@main.command()
@click.argument("version", type=int)
@click.option("--table", default=CUSTOMERS, show_default=True)
@pass_app
def restore(app: App, version: int, table: str) -> None:
    """Restore TABLE to VERSION (recorded as a new version; history is kept)."""
    v = app.kindred().restore(version, table)
    app.emit({"table": table, "restored": version, "version": v.version},
             lambda: click.echo(f"Restored {table} to version {version} "
                                f"(now version {v.version})"))


@main.command()
@click.option("--table", "tables_", multiple=True, help="Only these tables (repeatable).")
@pass_app
def optimize(app: App, tables_: tuple[str, ...]) -> None:
    """Compact storage and bring indexes up to date."""
    with app.progress() as bar:
        r = app.kindred().optimize(list(tables_) or None, progress=bar)
    app.emit(r, lambda: click.echo(f"Optimised {', '.join(r.details['tables']) or 'no tables'}"))

@main.command()
@click.option("--to", "target", required=True, metavar="URI",
              help="Target store, e.g. postgresql://user:pass@host/db")
@click.option("--table", "tables_", multiple=True, help="Only these tables (repeatable).")
@click.option("--replace", is_flag=True,
              help="Drop and rewrite tables that exist on the target (each is named, with its "
                   "row count, before anything is dropped).")
@pass_app
def migrate(app: App, target: str, tables_: tuple[str, ...], replace: bool) -> None:
    """Copy tables (rows, vectors, metadata) and artifacts to another store or backend."""
    from vectorstore.dsn import remember_secrets_in

    remember_secrets_in(target)

    def dropping(tables: dict[str, int]) -> None:
        click.echo("Replacing on the target (dropped before the copy): " + ", ".join(
            f"{t} ({n:,} rows)" for t, n in tables.items()), err=True)

    with app.progress() as bar:
        r = app.kindred().migrate(target, tables=list(tables_) or None, replace=replace,
                                  progress=bar, on_replace=dropping)

    def human() -> None:
        for name, n in r.tables.items():
            click.echo(f"Copied {name}: {n:,} rows")
        click.echo(f"Copied {len(r.artifacts)} artifact(s) from {r.source} to {r.target}")

    app.emit(r, human)


@main.command()
@click.option("--refit", is_flag=True,
              help="Re-fit the embedders (and the risk model and recommender on them) instead "
                   "of transforming with the stored fitted state (docs/refresh.md: when).")
@pass_app
def refresh(app: App, refit: bool) -> None:
    """Bring every derived column up to date after new data: consolidation, embeddings, ANN
    indexes, risk scores, propensity scores, recommendations, each only for what changed.

    Safe to run twice (a second run writes nothing): what a nightly job runs after ingest.
    """
    with app.progress() as bar:
        r = app.kindred().refresh(refit=refit, progress=bar)

    def human() -> None:
        for s in r.steps:
            click.echo(f"{s.step:<11} {s.target:<28} {s.action:<8} {s.reason}")
        n = sum(s.rows for s in r.steps)
        click.echo(f"refresh: {n:,} row(s) written in {r.seconds:.1f} s"
                   if n else f"refresh: everything up to date ({r.seconds:.1f} s)")

    app.emit(r, human)


# ---------------------------------------------------------------------- report and demo
@main.command()
@click.option("--out", "out_dir", default="./kindred-report", show_default=True,
              type=click.Path(file_okay=False))
@click.option("--product", "products", multiple=True,
              help="Products to plot (default: the fitted ones, else the 3 least held with "
                   "at least 50 holders).")
@click.option("--column", default=None, help="Vector column (default: the preferred one).")
@click.option("--label", default=None,
              help="Anomaly label column: adds the risk ROC and precision-recall curves.")
@click.option("--positive", default=None, help="The --label value that marks an anomaly.")
@click.option("--method", "methods", multiple=True,
              type=click.Choice(["centroid", "learned", "product", "propensity"]),
              help="Methods to evaluate (default: centroid, learned and propensity, as "
                   "evaluate matching).")
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--repeats", type=click.IntRange(min=1), default=3, show_default=True)
@pass_app
def report(app: App, out_dir: str, products: tuple[str, ...], column: str | None,
           label: str | None, positive: str | None, methods: tuple[str, ...], seed: int,
           repeats: int) -> None:
    """Write an HTML report (gain/lift, calibration, score distributions, risk, customer map).

    A table without holdings gets the risk sections only.
    """
    with app.busy("Drawing the report"):
        r = app.kindred().report(out_dir, products=list(products) or None, column=column,
                                 label=label, positive=positive, seed=seed, repeats=repeats,
                                 methods=list(methods) or ("centroid", "learned",
                                                           "propensity"))
    app.emit(r, lambda: click.echo(f"Report written to {r.html} ({len(r.images)} plots: "
                                   f"{', '.join(r.sections) or 'none'})"))


@main.command()
@click.option("--customers", type=click.IntRange(min=200), default=20_000, show_default=True)
@click.option("--out", "out_dir", default="./kindred-demo", show_default=True,
              type=click.Path(file_okay=False),
              help="Directory for the generated bank, the store and the report.")
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--no-text", is_flag=True, help="Skip the (slowest) text embedding.")
@pass_app
def demo(app: App, customers: int, out_dir: str, seed: int, no_text: bool) -> None:
    """End to end on a synthetic bank: generate, ingest, embed, match, score risk, report."""
    from synthetic_bank.demo import run_demo

    summary = run_demo(out_dir, customers=customers, seed=seed, text=not no_text,
                       echo=None if app.json else click.echo)
    if app.json:
        app.emit(summary)
