"""``kindred`` commands that write and index vector columns: embed and index.
"""

from __future__ import annotations

import click

from ingest.datamodel import CUSTOMERS

from ..cli_options import FiniteRange
from .root import App, main, pass_app
from .vocabulary import renamed_option


@main.command()
@click.argument("kind", type=click.Choice(["tabular", "text", "behavior", "combined"]))
@click.option("--table", default=CUSTOMERS, show_default=True)
@click.option("--include", multiple=True, help="tabular: only these columns (repeatable).")
@click.option("--exclude", multiple=True, help="tabular: leave these columns out (repeatable).")
@click.option("--column", default=None,
              help="Vector column to write (default vec_<kind>).")
@click.option("--text-column", default=None, help="text: the text column to embed.")
@click.option("--template", default=None,
              help="text: a profile template, e.g. '{age}-year-old {occupation} in {region}'.")
@click.option("--model", default=None,
              help="text: a local sentence-transformers model directory (default: the "
                   "packaged all-MiniLM-L6-v2).")
@click.option("--backend", type=click.Choice(["torch", "onnx"]), default="torch",
              show_default=True, help="text: PyTorch, or ONNX Runtime int8 (~3x faster on CPU).")
@click.option("--output", default=None, hidden=True)
@click.option("--dim", type=click.IntRange(min=1), default=None,
              help="tabular: PCA dimension; behavior: SVD dimension.")
@click.option("--source", "sources", multiple=True,
              help="combined: source vector columns (repeatable).")
@click.option("--weight", "weights", multiple=True, type=FiniteRange(min=0, min_open=True),
              help="combined: one weight per --source.")
@click.option("--raw/--no-raw", default=True, show_default=True,
              help="tabular: also write OUTPUT_raw, z-scored and not unit-normalised (l2), "
                   "the column risk scoring uses.")
@click.option("--type", "types", multiple=True, metavar="COLUMN=category|numeric",
              help="tabular: read a column as a category (e.g. an integer code) or a number.")
@pass_app
def embed(app: App, kind: str, table: str, include: tuple[str, ...], exclude: tuple[str, ...],
          column: str | None, text_column: str | None, template: str | None,
          model: str | None, backend: str, output: str | None, dim: int | None,
          sources: tuple[str, ...],
          weights: tuple[float, ...], raw: bool, types: tuple[str, ...]) -> None:
    """Write a vector column: tabular, text, behavior or combined.

    tabular writes vec_tabular (robust-scaled, unit length: for matching) and
    vec_tabular_raw (z-scores that keep each customer's distance from the centre: for risk).
    """
    if kind == "text" and column is not None and text_column is None and template is None:
        click.echo("Warning: embed text --column naming the text column is deprecated: use "
                   "--text-column (--column names the vector column written)", err=True)
        text_column, column = column, None
    column = renamed_option("--output", "--column", output, column)
    with app.progress() as bar:
        r = app.kindred().embed(kind, table=table, include=list(include) or None,
                                exclude=list(exclude), column=column, text_column=text_column,
                                template=template, model=model, dim=dim, sources=list(sources),
                                weights=list(weights) or None, backend=backend, raw=raw,
                                types=list(types), progress=bar)
    app.emit(r, lambda: click.echo(r.details.get("message") or str(r.details)))


@main.command()
@click.option("--table", default=CUSTOMERS, show_default=True)
@click.option("--column", "columns", multiple=True, help="Vector column(s) to index.")
@click.option("--min-rows", type=int, default=5_000, show_default=True,
              help="Build ANN indexes only on tables with at least this many rows.")
@click.option("--index-type", default=None, help="Backend index type (e.g. IVF_HNSW_SQ, hnsw).")
@pass_app
def index(app: App, table: str, columns: tuple[str, ...], min_rows: int,
          index_type: str | None) -> None:
    """Build or refresh ANN indexes on vector columns and a scalar index on the key."""
    with app.progress() as bar:
        r = app.kindred().index(table, columns=list(columns) or None, min_rows=min_rows,
                                index_type=index_type, progress=bar)

    def human() -> None:
        d = r.details
        click.echo(f"{table}: scalar index on {d['scalar'] or '-'}; ANN on "
                   f"{', '.join(d['vector_indexes']) or 'none'}"
                   + (f"; exact search for {', '.join(d['exact_only'])} "
                      f"({d['rows']:,} rows < {d['min_rows']:,})" if d["exact_only"] else ""))

    app.emit(r, human)
