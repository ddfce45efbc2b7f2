"""The mapping: how one source feeds one table (customers, events or products).

Declared in TOML (:meth:`Mapping.load`) or built from CLI-style options
(:meth:`Mapping.from_options`), validated by pydantic. A source column's table name is its
``rename`` target, else its name made safe by :func:`ingest.names.safe_name` (``ZIP Code`` ->
``ZIP_Code``; with ``strict_names`` a name that is not a plain identifier is an error instead).
Wherever a mapping names a column (``id_column``, holdings, ``types``, ``drop``,
``attributes``, ``text_columns``...) either the source name or the table name may be used.

Example (TOML)::

    table = "customers"
    generate_id = true                  # no id column: a stable hash of the row's content
    rename = { y = "subscribed" }
    types = { age = "int64", balance = "float64" }
    text_columns = ["note"]
    strict_names = false                # true: refuse names like "ZIP Code" instead of ZIP_Code
    dedupe = false                      # true: identical rows count once (replaying sources)
    [source]
    path = "bank-full.csv"
    delimiter = ";"
    [holdings.flags]
    term_deposit = "y:yes"              # column y, value "yes" -> holds term_deposit
"""

from __future__ import annotations

import re
import tomllib
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal

import pyarrow as pa
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from .datamodel import CUSTOMERS, EVENTS, KEYS, PRODUCTS
from .errors import MappingError
from .names import safe_name

TableName = Literal["customers", "events", "products"]
TRUE_VALUES = ("yes", "y", "true", "t", "1")
_IDENT = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,62}$")
_VECTOR = re.compile(r"^vector\s*[\[(<]\s*(\d+)\s*[\])>]$")

_TYPES: dict[str, pa.DataType] = {
    "string": pa.string(), "str": pa.string(), "text": pa.string(),
    "int": pa.int64(), "int64": pa.int64(), "integer": pa.int64(), "int32": pa.int32(),
    "float": pa.float64(), "float64": pa.float64(), "double": pa.float64(),
    "float32": pa.float32(), "bool": pa.bool_(), "boolean": pa.bool_(),
    "timestamp": pa.timestamp("us", tz="UTC"), "datetime": pa.timestamp("us", tz="UTC"),
    "date": pa.date32(), "list<string>": pa.list_(pa.string()),
    "list[string]": pa.list_(pa.string()),
    # a category code (e.g. customer type 1..41): kept as its text, so every reader sees a label
    "category": pa.string(),
}
EVENT_TYPES: dict[str, pa.DataType] = {
    "event_id": pa.string(), "customer_id": pa.string(), "ts": pa.timestamp("us", tz="UTC"),
    "kind": pa.string(), "product_id": pa.string(), "category": pa.string(),
    "amount": pa.float64(), "channel": pa.string(),
}


def parse_type(name: str) -> pa.DataType:
    """An Arrow type from its mapping name: int64, float64, string, bool, timestamp, date,
    list<string>, vector[384] (a fixed-size list of float32)."""
    key = name.strip().lower().replace(" ", "")
    if key in _TYPES:
        return _TYPES[key]
    m = _VECTOR.match(key)
    if m and int(m.group(1)) > 0:
        return pa.list_(pa.float32(), int(m.group(1)))
    raise MappingError(f"unknown type {name!r}; expected one of {', '.join(sorted(_TYPES))} "
                       "or vector[N]")


def _check_ident(name: str, what: str) -> str:
    if not _IDENT.match(name):
        raise ValueError(f"{what} {name!r} is not a plain identifier (letters, digits, '_', "
                         "not starting with a digit)")
    return name


class SourceSpec(BaseModel):
    """Where the rows come from and how to parse them."""

    model_config = ConfigDict(extra="forbid")

    path: str | None = None
    """A file path, or a SQLAlchemy database URL for SQL sources."""
    kind: Literal["csv", "tsv", "parquet", "jsonl", "arrow", "sql"] | None = None
    delimiter: str | None = None
    quote_char: str | None = '"'
    encoding: str = "utf-8"
    null_values: list[str] | None = None
    multiline: bool = False
    query: str | None = None
    sql_table: str | None = Field(default=None, alias="table")

    def options(self) -> dict[str, Any]:
        """Keyword arguments for :func:`ingest.sources.open_source`."""
        return {"kind": self.kind, "delimiter": self.delimiter, "quote_char": self.quote_char,
                "encoding": self.encoding, "null_values": self.null_values,
                "multiline": self.multiline, "query": self.query, "table": self.sql_table}


class HoldingFlag(BaseModel):
    """One product held when ``column``'s value is one of ``values`` (case-insensitive)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    product: str
    column: str
    values: tuple[str, ...] = TRUE_VALUES

    @classmethod
    def parse(cls, product: str, spec: str) -> HoldingFlag:
        """``"y:yes"`` -> column y, value yes; ``"loan:yes|y"`` -> two values; ``"has_card"``
        -> the usual true values (yes, y, true, t, 1)."""
        column, _, values = spec.partition(":")
        vals = tuple(v.strip().lower() for v in values.split("|") if v.strip()) or TRUE_VALUES
        return cls(product=product, column=column.strip(), values=vals)


class HoldingsSpec(BaseModel):
    """Where a customer's product holdings come from."""

    model_config = ConfigDict(extra="forbid")

    list_column: str | None = None
    """A column listing product ids (a list, or text split on ``separator``)."""
    separator: str = "|"
    flags: dict[str, str] = Field(default_factory=dict)
    """product -> ``"column:value[|value...]"``: yes/no or 0/1 columns, one per product."""
    keep_flag_columns: bool = False
    """Keep the flag columns as attributes too (default: they live on only in ``holdings``)."""
    from_events: list[str] = Field(default_factory=list)
    """For an events source: event kinds (e.g. ``purchase``) whose product the customer holds.
    The load records them in the events table's metadata (``holding_kinds``); consolidation
    adds them to its own holding kinds, so the products reach ``customers.holdings``."""

    def flag_list(self) -> list[HoldingFlag]:
        return [HoldingFlag.parse(p, s) for p, s in self.flags.items()]

    @property
    def any(self) -> bool:
        return bool(self.list_column or self.flags)


class Mapping(BaseModel):
    """How one source's columns become one table's columns."""

    model_config = ConfigDict(extra="forbid")

    table: TableName
    source: SourceSpec | None = None
    id_column: str | None = None
    generate_id: bool = False
    """No id column: the id is the sha256 of the row's content (stable across loads)."""
    rename: dict[str, str] = Field(default_factory=dict)
    types: dict[str, str] = Field(default_factory=dict)
    timestamp_formats: dict[str, str] = Field(default_factory=dict)
    """column -> strptime format (``%Y-%m-%d %H:%M``); the column becomes a UTC timestamp."""
    attributes: list[str] | None = None
    """Columns to keep as attributes (default: every column not used otherwise)."""
    text_columns: list[str] = Field(default_factory=list)
    drop: list[str] = Field(default_factory=list)
    holdings: HoldingsSpec = Field(default_factory=HoldingsSpec)
    strict_names: bool = False
    """Refuse source column names that are not plain identifiers (one error listing them all)
    instead of normalising them (see :mod:`ingest.names`)."""
    dedupe: bool = False
    """Identical rows count once. By default a generated id (events without ``event_id``,
    ``generate_id``) is the row's content hash plus its occurrence number among identical rows
    of the source, so repeats (the same item bought twice on one day) are kept, and a re-load
    of the same source still writes nothing. Set it for sources that replay rows."""

    @field_validator("rename")
    @classmethod
    def _renames(cls, v: dict[str, str]) -> dict[str, str]:
        for target in v.values():
            _check_ident(target, "renamed column")
        if len(set(v.values())) != len(v):
            raise ValueError("two columns are renamed to the same name")
        return v

    @field_validator("types")
    @classmethod
    def _types(cls, v: dict[str, str]) -> dict[str, str]:
        for col, t in v.items():
            try:
                parse_type(t)
            except MappingError as exc:
                raise ValueError(f"column {col!r}: {exc}") from None
        return v

    @model_validator(mode="after")
    def _consistent(self) -> Mapping:
        if self.id_column and self.generate_id:
            raise ValueError("give either id_column or generate_id = true, not both")
        if self.table != CUSTOMERS and self.holdings.any:
            raise ValueError("holdings from list or flag columns apply to the customers table")
        if self.table != EVENTS and self.holdings.from_events:
            raise ValueError("holdings.from_events applies to an events source")
        for f in self.holdings.flag_list():
            _check_ident(f.product, "product id")
        if self.table == PRODUCTS and self.generate_id:
            raise ValueError("products need an id column (product ids are referenced elsewhere)")
        return self

    # ------------------------------------------------------------------ helpers
    @property
    def key(self) -> str:
        """The table's key column (customer_id, event_id or product_id)."""
        return KEYS[self.table]

    def resolve(self, name: str) -> str:
        """The table column name of a source or already-renamed column name: its ``rename``
        target, else the name itself when ``strict_names``, else its safe form."""
        if name in self.rename:
            return self.rename[name]
        if self.strict_names:
            return name
        return safe_name(name) or name

    def declared_type(self, column: str) -> pa.DataType | None:
        """The type declared for a (renamed) column, or the data-model default for events."""
        for src, t in self.types.items():
            if self.resolve(src) == column:
                return parse_type(t)
        if column in {self.resolve(c) for c in self.timestamp_formats}:
            return pa.timestamp("us", tz="UTC")
        if column in {self.resolve(t) for t in self.text_columns}:
            return pa.string()
        if self.table == EVENTS:
            return EVENT_TYPES.get(column)
        if column == "holdings":
            return pa.list_(pa.string())
        return None

    def timestamp_format(self, column: str) -> str | None:
        for src, fmt in self.timestamp_formats.items():
            if self.resolve(src) == column:
                return fmt
        return None

    # ------------------------------------------------------------------ constructors
    @classmethod
    def load(cls, path: str | Path) -> Mapping:
        """Read a mapping from a TOML file; a relative source path is relative to the file."""
        p = Path(path)
        try:
            data = tomllib.loads(p.read_text(encoding="utf-8"))
        except FileNotFoundError as exc:
            raise MappingError(f"{p}: no such mapping file") from exc
        except tomllib.TOMLDecodeError as exc:
            raise MappingError(f"{p}: not valid TOML: {exc}") from exc
        src = data.get("source")
        if isinstance(src, dict) and src.get("path") and src.get("kind") != "sql" \
                and "://" not in str(src["path"]):
            sp = Path(src["path"]).expanduser()
            if not sp.is_absolute():
                src["path"] = str((p.parent / sp).resolve())
        return cls.from_dict(data, where=str(p))

    @classmethod
    def from_dict(cls, data: dict[str, Any], *, where: str = "mapping") -> Mapping:
        try:
            return cls.model_validate(data)
        except ValidationError as exc:
            problems = "; ".join(
                f"{'.'.join(str(x) for x in e['loc']) or 'mapping'}: {e['msg']}"
                for e in exc.errors())
            raise MappingError(f"{where}: {problems}") from None

    @classmethod
    def from_options(cls, table: str, *, id_column: str | None = None,
                     generate_id: bool = False, rename: Sequence[str] = (),
                     types: Sequence[str] = (), timestamp_formats: Sequence[str] = (),
                     attributes: Sequence[str] | None = None, text_columns: Sequence[str] = (),
                     drop: Sequence[str] = (), holdings: Sequence[str] = (),
                     holdings_column: str | None = None, holdings_separator: str = "|",
                     holdings_from_events: Sequence[str] = (),
                     keep_flag_columns: bool = False, strict_names: bool = False,
                     dedupe: bool = False,
                     source: dict[str, Any] | None = None) -> Mapping:
        """Build a mapping from CLI-style options.

        ``rename=["old=new"]``, ``types=["age=int64"]``, ``timestamp_formats=["ts=%Y-%m-%d"]``,
        ``holdings=["term_deposit=y:yes"]`` (product=column[:value|value]). A source column
        name may hold ``=`` in a rename or a type (the last ``=`` separates the new name or
        the type, neither of which can hold one).
        """
        def pairs(items: Sequence[str], what: str, last: bool = False) -> dict[str, str]:
            out: dict[str, str] = {}
            for item in items:
                k, sep, v = item.rpartition("=") if last else item.partition("=")
                if not sep or not k.strip() or not v.strip():
                    raise MappingError(f"{what} {item!r}: expected NAME=VALUE")
                out[k.strip()] = v.strip()
            return out

        data: dict[str, Any] = {
            "table": table, "id_column": id_column, "generate_id": generate_id,
            "rename": pairs(rename, "rename", last=True),
            "types": pairs(types, "type", last=True),
            "timestamp_formats": pairs(timestamp_formats, "timestamp format"),
            "attributes": list(attributes) if attributes is not None else None,
            "text_columns": list(text_columns), "drop": list(drop),
            "holdings": {"flags": pairs(holdings, "holding"), "list_column": holdings_column,
                         "separator": holdings_separator,
                         "from_events": list(holdings_from_events),
                         "keep_flag_columns": keep_flag_columns},
            "strict_names": strict_names, "dedupe": dedupe,
        }
        if source:
            data["source"] = source
        return cls.from_dict(data, where="options")
