"""``kindred`` commands that bring data in: generate (a synthetic bank), ingest (a file or SQL
source into a table) and consolidate (events -> per-customer features and holdings).
"""

from __future__ import annotations

from pathlib import Path

import click

from ingest.datamodel import KEYS

from ..cli_options import FiniteRange
from .root import App, main, pass_app


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
    from ..facade import Kindred

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
        if table not in KEYS:
            raise click.BadParameter(f"{table!r}: expected customers, events or products",
                                     param_hint="TABLE")
    k = app.kindred(create=True)
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
            click.echo(f"  rejected: {e}")

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
