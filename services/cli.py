"""The ``kindred`` admin command line: a thin click layer over :class:`services.facade.Kindred`.

Global options: ``--store URI`` (or ``KINDRED_STORE``; default ``./kindred-data``), ``--json``
(machine-readable output: the facade's models as JSON on stdout), ``-v/--verbose`` (tracebacks
for errors) and ``--version``. User errors print one line on stderr and exit with status 1;
progress bars go to stderr, only on a terminal and never under ``--json``.
"""

from __future__ import annotations

import errno
import json
import os
import sys
import traceback
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import click
from pydantic import BaseModel

from vectorstore import KindredError

from . import __version__
from .admin import Progress, redact
from .cli_options import FINITE, FiniteRange, exclusive
from .errors import ServiceError

DEFAULT_STORE = "./kindred-data"
_PACKAGE_ROOTS = tuple(str(Path(__file__).resolve().parents[1] / p)
                       for p in ("services", "ingest", "vectorstore"))


def _user_errors() -> tuple[type[BaseException], ...]:
    return (KindredError,)


class KindredGroup(click.Group):
    """A click group that turns the package's user errors into one clean line on stderr.

    Every message (and, with ``-v``, every traceback) passes through
    :func:`vectorstore.dsn.redact` and :func:`vectorstore.errors.native_free`, so no password
    and no Rust source path reaches the terminal; Kindred's warnings show as one
    ``Warning:`` line each. An unexpected error (a bug) still shows its traceback, redacted,
    and exits with status 2.
    """

    def invoke(self, ctx: click.Context) -> Any:
        with warnings.catch_warnings():
            warnings.simplefilter("default")
            warnings.showwarning = _show_warning
            return self._invoke(ctx)

    def _invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except _user_errors() as exc:
            verbose = bool(ctx.params.get("verbose"))
            if verbose:
                click.echo(redact("".join(traceback.format_exception(exc))), err=True)
            text = str(exc).strip()
            message = _clean(text.splitlines()[0] if text else type(exc).__name__)
            click.echo(f"Error: {message}", err=True)
            ctx.exit(1)
        except (click.exceptions.ClickException, click.exceptions.Exit, click.Abort):
            raise
        except RecursionError as exc:  # input nested beyond what the code accepts
            if ctx.params.get("verbose"):
                click.echo(redact("".join(traceback.format_exception(exc))), err=True)
            click.echo("Error: the input is nested too deeply to process", err=True)
            ctx.exit(1)
        except Exception as exc:  # a bug: keep the traceback, but never a password in it
            disk = _disk_failure(exc)
            if disk:  # a full or read-only disk: not a bug, and the commit did not happen
                if ctx.params.get("verbose"):
                    click.echo(redact("".join(traceback.format_exception(exc))), err=True)
                click.echo(f"Error: {_clean(disk)}", err=True)
                ctx.exit(1)
            click.echo(redact("".join(traceback.format_exception(exc))), err=True)
            click.echo(f"Error: unexpected internal error ({type(exc).__name__}): "
                       f"{_clean(str(exc).strip().splitlines()[0] if str(exc).strip() else '')}",
                       err=True)
            ctx.exit(2)


_DISK_ERRNOS = {errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EACCES, errno.EPERM}
_DISK_TEXT = ("no space left on device", "read-only file system", "disk quota exceeded",
              "permission denied")


def _disk_failure(exc: BaseException) -> str | None:
    """The one line for a write the disk refused (full, read-only, not permitted), found on
    the exception or its causes (native errors carry only the text); None for anything else."""
    seen: BaseException | None = exc
    while seen is not None:
        if isinstance(seen, OSError):
            text = str(seen).lower()
            reason = seen.strerror if seen.errno in _DISK_ERRNOS else next(
                (t for t in _DISK_TEXT if t in text), None)
            if reason:
                where = f" ({seen.filename})" if seen.filename else ""
                return (f"the store could not be written{where}: {reason}; the step's "
                        "commit did not happen: make room (or make it writable) and run it "
                        "again")
        seen = seen.__cause__ or seen.__context__
    return None


def _clean(text: str) -> str:
    from vectorstore.errors import native_free

    return redact(native_free(text))


def _show_warning(message: Warning | str, category: type[Warning], filename: str, lineno: int,
                  file: Any = None, line: str | None = None) -> None:
    """Kindred's warnings as one ``Warning:`` line on stderr; others as Python prints them."""
    from vectorstore.errors import KindredWarning

    if issubclass(category, KindredWarning) or filename.startswith(_PACKAGE_ROOTS):
        click.echo(f"Warning: {_clean(str(message))}", err=True)
    else:
        click.echo(redact(warnings.formatwarning(message, category, filename, lineno, line)),
                   err=True, nl=False)


class App:
    """The click context object: global options and the lazily opened facade."""

    def __init__(self, store: str, as_json: bool, verbose: bool, runner: str | None = None,
                 ray_address: str | None = None) -> None:
        self.store_uri = store
        self.json = as_json
        self.verbose = verbose
        self.runner = runner
        self.ray_address = ray_address
        self._kindred: Any = None

    def kindred(self, *, must_exist: bool = True) -> Any:
        from .facade import Kindred

        if self._kindred is None:
            self._kindred = Kindred(self.store_uri, must_exist=must_exist, runner=self.runner,
                                    ray_address=self.ray_address)
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
    def busy(self, message: str) -> Iterator[None]:
        """A spinner with the step's name on stderr while a long step runs (terminals only)."""
        if not self.interactive:
            yield
            return
        from rich.console import Console

        with Console(stderr=True).status(message):
            yield

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
              help="Store location: a directory or s3://BUCKET/PREFIX (LanceDB), memory://NAME, "
                   "postgresql://... or milvus://FILE.db | milvus://HOST:PORT (env KINDRED_STORE).")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable JSON on stdout.")
@click.option("-v", "--verbose", is_flag=True, help="Show tracebacks for errors.")
@click.option("--runner", type=click.Choice(["local", "ray"], case_sensitive=False),
              envvar="KINDRED_RUNNER", default=None,
              help="Where the heavy steps run: in this process (local, the default) or one "
                   "Ray task per partition (ray; docs/scale.md) (env KINDRED_RUNNER).")
@click.option("--ray-address", envvar="KINDRED_RAY_ADDRESS", default=None, metavar="ADDRESS",
              help="The Ray cluster to join with --runner ray (ray://HOST:10001, auto); "
                   "default: a local Ray instance (env KINDRED_RAY_ADDRESS).")
@click.version_option(__version__, prog_name="kindred")
@click.pass_context
def main(ctx: click.Context, store: str, as_json: bool, verbose: bool, runner: str | None,
         ray_address: str | None) -> None:
    """Kindred: customer embeddings for product matching and risk scoring."""
    # lance's own log lines (a failed clean-up after a full disk: Rust source paths) stay
    # out of the terminal; the error that matters comes as one Error: line
    os.environ.setdefault("LANCE_LOG", "error")
    from vectorstore.dsn import remember_secrets_in

    remember_secrets_in(store)
    app = App(store, as_json, verbose, runner, ray_address)
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
        try:
            path.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise ServiceError(f"cannot create the store directory {path}: "
                               f"{exc.strerror or exc}") from exc
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


# ---------------------------------------------------------------------- data in
@main.command()
@click.option("--out", "out_dir", default="./kindred-bank", show_default=True,
              type=click.Path(file_okay=False), help="Directory for the generated files.")
@click.option("--customers", type=click.IntRange(min=1), default=None,
              help="Customers on day 1 [default: 20000].")
@click.option("--events-per-customer", type=FiniteRange(min=0), default=None,
              help="Events per customer over day 1's year [default: 20].")
@click.option("--seed", type=int, default=None, help="[default: 0]")
@click.option("--day", type=click.IntRange(min=1), default=1, show_default=True,
              help="2 or later: the next day's files of the bank in --out (new and changed "
                   "customers, that day's transactions and web events), in --out/dayN.")
@pass_app
def generate(app: App, out_dir: str, customers: int | None, events_per_customer: float | None,
             seed: int | None, day: int) -> None:
    """Write a synthetic bank: customers.csv, transactions.parquet, web_events.jsonl, ...

    \b
    kindred generate --customers 1000 --out bank     # day 1
    kindred generate --out bank --day 2              # bank/day2: the next day's files
    """
    from .facade import Kindred

    r = Kindred.generate(out_dir, customers=customers, events_per_customer=events_per_customer,
                         seed=seed, day=day)

    def human() -> None:
        d = r.details
        if day > 1:
            click.echo(f"Generated day {day} of the bank in {Path(r.out_dir).parent}: "
                       f"{d['new_customers']:,} new and {d['changed_customers']:,} changed "
                       f"customers, {d['transactions']:,} transactions, {d['web_events']:,} "
                       f"web events")
        else:
            click.echo(f"Generated a bank of {r.customers:,} customers in {r.out_dir}: "
                       f"{d['transactions']:,} transactions, {d['web_events']:,} web events, "
                       f"{d['products']} products, {d['anomalies']} planted anomalies")
        for kind, path in r.files.items():
            click.echo(f"  {kind:<13} {path}")

    app.emit(r, human)


@main.command()
@click.argument("args", nargs=-1, metavar="[TABLE] [SOURCE]")
@click.option("--mapping", type=click.Path(dir_okay=False), default=None,
              help="A TOML mapping file (then SOURCE, if given, overrides its path).")
@click.option("--on-error", type=click.Choice(["fail", "skip", "quarantine"]), default="fail",
              show_default=True, help="fail: write nothing; skip: drop bad rows; quarantine: "
                                      "bad rows go to <table>_rejects.")
@click.option("--id-column", default=None, help="The source's id column.")
@click.option("--generate-id", is_flag=True, default=None,
              help="A stable id hashed from each row (automatic when there is no id column).")
@click.option("--holding", "holdings", multiple=True, metavar="PRODUCT=COLUMN[:VALUE]",
              help="A yes/no or 0/1 column meaning a product is held (repeatable), "
                   "e.g. term_deposit=y:yes.")
@click.option("--holdings-column", default=None,
              help="A column listing the products held.")
@click.option("--holdings-separator", default="|", show_default=True)
@click.option("--holdings-from-events", multiple=True, metavar="KIND",
              help="events: event kinds whose product the customer holds (e.g. purchase).")
@click.option("--text-column", "text_columns", multiple=True, help="Free-text column(s).")
@click.option("--attribute", "attributes", multiple=True,
              help="Keep only these columns as attributes (repeatable).")
@click.option("--rename", multiple=True, metavar="OLD=NEW")
@click.option("--type", "types", multiple=True, metavar="COLUMN=TYPE",
              help="e.g. age=int64, income=float64, ts=timestamp, branch=category.")
@click.option("--timestamp-format", "timestamp_formats", multiple=True,
              metavar="COLUMN=FORMAT", help="e.g. ts=%Y-%m-%dT%H:%M:%SZ")
@click.option("--drop", multiple=True, help="Source columns to leave out.")
@click.option("--kind", default=None,
              type=click.Choice(["csv", "tsv", "parquet", "jsonl", "arrow", "sql"]),
              help="Force the source kind (default: from the extension).")
@click.option("--delimiter", default=None, help="CSV delimiter (e.g. ';').")
@click.option("--keep-flag-columns", is_flag=True,
              help="Keep --holding flag columns as attributes too (e.g. to use one as a label).")
@click.option("--strict-names", is_flag=True,
              help="Refuse column names that are not plain identifiers (one error listing them "
                   "all) instead of making them safe ('ZIP Code' -> ZIP_Code).")
@click.option("--dedupe", is_flag=True,
              help="Identical rows count once (sources that replay rows). By default repeated "
                   "identical events are kept, each with its own id.")
@pass_app
def ingest(app: App, args: tuple[str, ...], mapping: str | None, on_error: str,
           id_column: str | None, generate_id: bool | None, holdings: tuple[str, ...],
           holdings_column: str | None, holdings_separator: str,
           holdings_from_events: tuple[str, ...], text_columns: tuple[str, ...],
           attributes: tuple[str, ...], rename: tuple[str, ...], types: tuple[str, ...],
           timestamp_formats: tuple[str, ...], drop: tuple[str, ...], kind: str | None,
           delimiter: str | None, keep_flag_columns: bool, strict_names: bool,
           dedupe: bool) -> None:
    """Load a file (CSV, Parquet, JSONL, Arrow, JSON array) or SQL source into a table.

    Column names are made safe ('ZIP Code' -> ZIP_Code, 'a.b' -> a_b, '2019' -> c_2019);
    every option that names a column takes the name as the file has it, or the safe one.

    \b
    kindred ingest customers clients.csv --id-column client_id \\
        --holding term_deposit=y:yes --text-column notes
    kindred ingest events purchases.csv --rename 'Member number=customer_id' \\
        --rename Date=ts --timestamp-format 'Date=%d-%m-%Y' --rename item=category
    kindred ingest --mapping examples/bank_marketing.toml
    """
    if mapping is not None:
        if len(args) > 1:
            raise click.UsageError("with --mapping give at most one SOURCE (the mapping names "
                                   "the table)")
        source = args[0] if args else None
        table = None
    else:
        if len(args) != 2:
            raise click.UsageError("give TABLE and SOURCE (or --mapping FILE)")
        table, source = args
        if table not in ("customers", "events", "products"):
            raise click.BadParameter(f"{table!r}: expected customers, events or products",
                                     param_hint="TABLE")
    k = app.kindred(must_exist=False)
    with app.progress() as bar:
        r = k.ingest(source, table=table, mapping=mapping, on_error=on_error, id_column=id_column,
                 generate_id=generate_id, holdings=holdings, holdings_column=holdings_column,
                 holdings_separator=holdings_separator,
                 holdings_from_events=holdings_from_events, text_columns=text_columns,
                 attributes=list(attributes) or None, rename=rename, types=types,
                 timestamp_formats=timestamp_formats, drop=drop, kind=kind,
                 delimiter=delimiter, keep_flag_columns=keep_flag_columns,
                 strict_names=strict_names, dedupe=dedupe, progress=bar)

    def human() -> None:
        click.echo(f"{r.table} <- {r.source}: read {r.rows_read:,}, written {r.written:,}, "
                   f"updated {r.updated:,}, unchanged {r.unchanged:,}, skipped {r.skipped:,}, "
                   f"quarantined {r.quarantined:,}"
                   + (f"; new columns: {', '.join(r.new_columns)}" if r.new_columns else ""))
        if r.renamed_columns:
            pairs = [f"{old!r} -> {new}" for old, new in r.renamed_columns.items()]
            more = f" ... and {len(pairs) - 5} more (kindred stats lists them)" \
                if len(pairs) > 5 else ""
            click.echo(f"  names made safe for {len(pairs)} column(s): "
                       f"{', '.join(pairs[:5])}{more}")
        for e in r.errors[:5]:
            click.echo(f"  rejected: {_row_error(e)}")

    app.emit(r, human)


@main.command()
@click.option("--full", is_flag=True, help="Recompute every customer, not only those with new "
                                          "events.")
@click.option("--amount", default=None, metavar="COLUMN",
              help="The events' amount column (default: 'amount' when there is one).")
@click.option("--category", "categories", multiple=True, metavar="COLUMN",
              help="A column whose values each give a feature: spend_<value> (sum of amounts), "
                   "or count_<value> without amounts (default: 'category'; repeatable).")
@click.option("--channel", "channels", multiple=True, metavar="COLUMN",
              help="A column whose values each give count_<value> (default: 'channel'; "
                   "repeatable).")
@click.option("--max-values", type=click.IntRange(min=0), default=None,
              help="At most this many feature columns per --category/--channel column "
                   "(default 200; the most frequent values first).")
@pass_app
def consolidate(app: App, full: bool, amount: str | None, categories: tuple[str, ...],
                channels: tuple[str, ...], max_values: int | None) -> None:
    """Events -> per-customer features and holdings (incremental).

    Only a customer id and a timestamp are required; the features of an amount, category or
    channel column the events lack are skipped (and said so). Customers first seen in events
    are created, the customers table too. Options given once are remembered by later runs.
    """
    with app.busy("Consolidating events"):
        r = app.kindred().consolidate(full=full, amount=amount,
                                      categories=list(categories) or None,
                                      channels=list(channels) or None, max_values=max_values)

    def human() -> None:
        d = r.details
        click.echo(f"Consolidated {d['customers']:,} customers from {d['events_scanned']:,} "
                   f"events: {d['updated']:,} updated, {d['inserted']:,} inserted, "
                   f"{len(d['feature_columns'])} feature columns"
                   + ("; created the customers table" if d.get("created_table") else ""))
        if d.get("notes"):
            click.echo(f"  skipped: {'; '.join(d['notes'])}")

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


@main.command()
@click.argument("kind", type=click.Choice(["tabular", "text", "behavior", "combined"]))
@click.option("--table", default="customers", show_default=True)
@click.option("--include", multiple=True, help="tabular: only these columns (repeatable).")
@click.option("--exclude", multiple=True, help="tabular: leave these columns out (repeatable).")
@click.option("--column", default=None, help="text: the text column to embed.")
@click.option("--template", default=None,
              help="text: a profile template, e.g. '{age}-year-old {occupation} in {region}'.")
@click.option("--model", default=None,
              help="text: a local sentence-transformers model directory (default: the "
                   "packaged all-MiniLM-L6-v2).")
@click.option("--backend", type=click.Choice(["torch", "onnx"]), default="torch",
              show_default=True, help="text: PyTorch, or ONNX Runtime int8 (~3x faster on CPU).")
@click.option("--output", default=None, help="Vector column to write (default vec_<kind>).")
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
          column: str | None, template: str | None, model: str | None, backend: str,
          output: str | None, dim: int | None, sources: tuple[str, ...],
          weights: tuple[float, ...], raw: bool, types: tuple[str, ...]) -> None:
    """Write a vector column: tabular, text, behavior or combined.

    tabular writes vec_tabular (robust-scaled, unit length: for matching) and
    vec_tabular_raw (z-scores that keep each customer's distance from the centre: for risk).
    """
    with app.progress() as bar:
        r = app.kindred().embed(kind, table=table, include=list(include) or None,
                                exclude=list(exclude), column=column, template=template,
                                model=model, output=output, dim=dim, sources=list(sources),
                                weights=list(weights) or None, backend=backend, raw=raw,
                                types=list(types), progress=bar)
    app.emit(r, lambda: click.echo(r.details.get("message") or str(r.details)))


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
@click.option("--attr", "attrs", multiple=True, help="Attribute column(s) to show (repeatable).")
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
          attrs: tuple[str, ...], exact: bool, min_consumers: int,
          bands: tuple[float, float] | None, show: int) -> None:
    """Current consumers of PRODUCT and the best prospects for it."""
    exclusive(top=top, audience_pct=audience_pct)
    with app.busy(f"Matching {product}"):
        r = app.kindred().match(product, method=method, vector_column=vector_column, top=top,
                            audience_pct=audience_pct, min_score=min_score, where=where,
                            exact=exact, columns=attrs, min_consumers=min_consumers,
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
        click.echo(f"{product}: method {s.method} on {s.vector_column} ({s.metric}), "
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
        r = app.kindred().fit(list(products), method=method, vector_column=vector_column,
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
@click.option("-k", "k", type=click.IntRange(min=1), default=5, show_default=True,
              help="Nearest consumers to show.")
@pass_app
def explain(app: App, customer: str, product: str, vector_column: str | None, k: int) -> None:
    """Why CUSTOMER matches --product: nearest consumers and the attributes they share."""
    e = app.kindred().explain(customer, product, vector_column=vector_column, k=k)

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
@click.option("--top-n", type=click.IntRange(min=1), default=3, show_default=True)
@click.option("--method", type=click.Choice(["behavior", "vector"]), default=None,
              help="behavior: from the events (default when there are events); vector: "
                   "customer . product in a shared vector column.")
@click.option("--column", "vector_column", default=None,
              help="vector: column shared by customers and products (e.g. vec_behavior).")
@click.option("--include-held", is_flag=True, help="vector: also recommend products already held.")
@click.option("--all-items", is_flag=True,
              help="behavior: recommend any event item, not only products-table rows.")
@pass_app
def recommend(app: App, top_n: int, method: str | None, vector_column: str | None,
              include_held: bool, all_items: bool) -> None:
    """Every customer's top products, written to rec_products and rec_scores."""
    with app.progress() as bar:
        r = app.kindred().recommend(top_n=top_n, vector_column=vector_column, method=method,
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
@click.option("--top-n", type=click.IntRange(min=1), default=10, show_default=True)
@click.option("--all-items", is_flag=True, help="Any event item, not only products.")
@pass_app
def recommendations(app: App, customer: str, top_n: int, all_items: bool) -> None:
    """CUSTOMER's behaviour recommendations, each with its reasons."""
    r = app.kindred().recommendations(customer, top_n=top_n, only_products=not all_items)

    def human() -> None:
        click.echo(f"{customer}: {r['active_days']} active days, holds "
                   f"{', '.join(r['holdings']) or 'nothing'} ({r['source']})")
        if not r["recommendations"]:
            click.echo("  (nothing to recommend)")
        for i, item in enumerate(r["recommendations"], start=1):
            click.echo(f"  {i:>2}. {item['item']:<24} score {item['score']:.4f}  "
                       + "; ".join(item["reasons"]))

    app.emit(r, human)


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
            vector_columns=list(columns) or None,
            methods=list(methods) or ("centroid", "learned", "propensity"), holdout=holdout,
            seed=seed, repeats=repeats, split_column=split_column,
            test_value=_literal(test_value), test_size=test_size, exclude=list(exclude),
            progress=bar)
    app.emit(rep, lambda: _print_eval(rep))


@evaluate.command("recommendations")
@click.option("-k", "k", type=click.IntRange(min=1), default=10, show_default=True)
@click.option("--seed", type=int, default=0, show_default=True)
@pass_app
def evaluate_recommendations(app: App, k: int, seed: int) -> None:
    """Next-basket hit/recall/NDCG@k (last day of events hidden) against popularity and ALS."""
    with app.busy("Evaluating recommendations"):
        rep = app.kindred().evaluate_recommendations(k=k, seed=seed)

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


def _sample(value: float | None) -> int | float | None:
    if value is None:
        return None
    return int(value) if value >= 1 else value


# ---------------------------------------------------------------------- risk
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
              help="Fit on this many rows (or this share if < 1).")
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
@click.option("-n", "n", type=click.IntRange(min=1), default=20, show_default=True)
@click.option("--flagged", is_flag=True, help="Only flagged customers.")
@click.option("--attr", "attrs", multiple=True, help="Attribute column(s) to show.")
@pass_app
def risk_top(app: App, n: int, flagged: bool, attrs: tuple[str, ...]) -> None:
    """The N most anomalous customers."""
    cols = ["customer_id", *attrs] if attrs else None
    t = app.kindred().risk_top(n, columns=cols, flagged_only=flagged)

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


def _row_error(error: Any) -> str:
    """A rejected row as one readable line (the facade keeps it as a dict for --json)."""
    if isinstance(error, dict):
        from ingest.validate import RowError

        try:
            return str(RowError(**error))
        except TypeError:
            pass
    return str(error)


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


if __name__ == "__main__":  # pragma: no cover
    main()
