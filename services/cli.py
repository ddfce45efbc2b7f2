"""The ``kindred`` admin command line: a thin click layer over :class:`services.facade.Kindred`.

Global options: ``--store URI`` (or ``KINDRED_STORE``; default ``./kindred-data``), ``--json``
(machine-readable output: the facade's models as JSON on stdout), ``-v/--verbose`` (tracebacks
for errors) and ``--version``. User errors print one line on stderr and exit with status 1;
progress bars go to stderr, only on a terminal and never under ``--json``.
"""

from __future__ import annotations

import json
import sys
import traceback
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import click
from pydantic import BaseModel

from vectorstore import StoreError

from . import __version__
from .admin import Progress, redact
from .errors import ServiceError

DEFAULT_STORE = "./kindred-data"


def _user_errors() -> tuple[type[BaseException], ...]:
    errors: list[type[BaseException]] = [StoreError, ServiceError]
    try:
        from ingest.errors import IngestError

        errors.append(IngestError)
    except ImportError:  # pragma: no cover - ingest is part of the distribution
        pass
    return tuple(errors)


class KindredGroup(click.Group):
    """A click group that turns the package's user errors into one clean line on stderr."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except _user_errors() as exc:
            verbose = bool(ctx.params.get("verbose"))
            if verbose:
                click.echo(redact("".join(traceback.format_exception(exc))), err=True)
            message = redact(str(exc).strip().splitlines()[0] if str(exc).strip() else
                             type(exc).__name__)
            click.echo(f"Error: {message}", err=True)
            ctx.exit(1)


class App:
    """The click context object: global options and the lazily opened facade."""

    def __init__(self, store: str, as_json: bool, verbose: bool) -> None:
        self.store_uri = store
        self.json = as_json
        self.verbose = verbose
        self._kindred: Any = None

    def kindred(self, *, must_exist: bool = True) -> Any:
        from .facade import Kindred

        if self._kindred is None:
            self._kindred = Kindred(self.store_uri, must_exist=must_exist)
        return self._kindred

    def close(self) -> None:
        if self._kindred is not None:
            self._kindred.close()
            self._kindred = None

    # ------------------------------------------------------------------ output
    def emit(self, data: Any, human: Callable[[], None] | None = None) -> None:
        """Print ``data`` as JSON under --json, else call ``human`` (or print it plainly)."""
        if self.json:
            click.echo(json.dumps(_jsonable(data), indent=2, default=str))
        elif human is not None:
            human()
        else:
            click.echo(str(data))

    @property
    def interactive(self) -> bool:
        return not self.json and sys.stderr.isatty()

    @contextmanager
    def progress(self) -> Iterator[Progress | None]:
        """A progress callback drawing rich bars on stderr, or None when quiet."""
        if not self.interactive:
            yield None
            return
        from rich.console import Console
        from rich.progress import (
            BarColumn,
            MofNCompleteColumn,
            TextColumn,
            TimeElapsedColumn,
        )
        from rich.progress import Progress as Bars

        bars = Bars(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                    TimeElapsedColumn(), console=Console(stderr=True), transient=False)
        tasks: dict[str, Any] = {}

        def update(step: str, done: int, total: int | None) -> None:
            if step not in tasks:
                tasks[step] = bars.add_task(step, total=total)
            bars.update(tasks[step], completed=done, total=total)

        with bars:
            yield update


def _jsonable(data: Any) -> Any:
    if isinstance(data, BaseModel):
        return data.model_dump(mode="json")
    if isinstance(data, list | tuple):
        return [_jsonable(d) for d in data]
    if isinstance(data, dict):
        return {k: _jsonable(v) for k, v in data.items()}
    if hasattr(data, "to_pylist"):  # an Arrow table
        return data.to_pylist()
    return data


pass_app = click.make_pass_decorator(App)


def _size(n: int | None) -> str:
    if n is None:
        return "-"
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024  # type: ignore[assignment]
    return str(n)


@click.group(cls=KindredGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--store", "store", envvar="KINDRED_STORE", default=DEFAULT_STORE,
              show_default=True, metavar="URI",
              help="Store location: a directory (LanceDB), memory://NAME or postgresql://... "
                   "(env KINDRED_STORE).")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable JSON on stdout.")
@click.option("-v", "--verbose", is_flag=True, help="Show tracebacks for errors.")
@click.version_option(__version__, prog_name="kindred")
@click.pass_context
def main(ctx: click.Context, store: str, as_json: bool, verbose: bool) -> None:
    """Kindred: customer embeddings for product matching and risk scoring."""
    app = App(store, as_json, verbose)
    ctx.obj = app
    ctx.call_on_close(app.close)


# ---------------------------------------------------------------------- store administration
@main.command()
@pass_app
def init(app: App) -> None:
    """Create an empty store at --store (a no-op when one exists)."""
    from .admin import local_path

    path = local_path(app.store_uri)
    if path is not None:
        path.mkdir(parents=True, exist_ok=True)
    k = app.kindred(must_exist=False)
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
        if st.artifacts:
            console.print(f"Artifacts: {', '.join(st.artifacts)}")

    app.emit(st, human)


@main.command()
@click.option("--table", default="customers", show_default=True)
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
@click.option("--table", default="customers", show_default=True)
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
@click.option("--table", default="customers", show_default=True)
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


@main.command()
@click.option("--to", "target", required=True, metavar="URI",
              help="Target store, e.g. postgresql://user:pass@host/db")
@click.option("--table", "tables_", multiple=True, help="Only these tables (repeatable).")
@click.option("--replace", is_flag=True, help="Overwrite tables that exist on the target.")
@pass_app
def migrate(app: App, target: str, tables_: tuple[str, ...], replace: bool) -> None:
    """Copy tables (rows, vectors, metadata) and artifacts to another store or backend."""
    with app.progress() as bar:
        r = app.kindred().migrate(target, tables=list(tables_) or None, replace=replace,
                                  progress=bar)

    def human() -> None:
        for name, n in r.tables.items():
            click.echo(f"Copied {name}: {n:,} rows")
        click.echo(f"Copied {len(r.artifacts)} artifact(s) from {r.source} to {r.target}")

    app.emit(r, human)


if __name__ == "__main__":  # pragma: no cover
    main()
