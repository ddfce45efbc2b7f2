"""The plan of a load (:func:`make_plan`): its key, output columns and types, holdings, and
what it adds to the table.

The plan decides the output columns once, from the mapping, the first batch and the existing
table: existing columns keep their type, declared types win for new columns, text columns
from CSV/JSON are typed from the first batch's values.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import pyarrow as pa

from vectorstore import TableInfo

from ..datamodel import EVENTS
from ..errors import MappingError, SchemaEvolutionError
from ..identity import DIGEST_COLUMN
from ..mapping import Mapping
from ..names import check_collisions, check_strict, is_plain, safe_name
from .infer import _normalise, infer_text_type, is_lossless


@dataclass
class ColumnPlan:
    """One output column: its name, the raw source column it comes from, type and format."""

    name: str
    source: str
    type: pa.DataType
    fmt: str | None = None


@dataclass
class Plan:
    """What a load writes: key, columns, holdings; and what it changes in the table."""

    table: str
    key: str
    id_source: str | None
    generate_id: bool
    columns: list[ColumnPlan]
    flags: list[tuple[str, str, tuple[str, ...]]] = field(default_factory=list)
    list_column: str | None = None
    separator: str = "|"
    holdings: bool = False
    new_fields: list[pa.Field] = field(default_factory=list)
    vectors: dict[str, int] = field(default_factory=dict)
    source_names: dict[str, str] = field(default_factory=dict)
    """Table column -> source column, for columns whose name the load changed."""
    occurrences: bool = False
    """Generated ids carry the occurrence number of identical rows (:mod:`ingest.identity`)."""
    digest: bool = False
    """Events with explicit ids: write ``event_digest`` and refuse an id with other content."""

    @property
    def schema(self) -> pa.Schema:
        fields = [pa.field(self.key, pa.string())]
        fields += [pa.field(c.name, c.type) for c in self.columns]
        if self.digest:
            fields.append(pa.field(DIGEST_COLUMN, pa.int64()))
        if self.holdings:
            fields.append(pa.field("holdings", pa.list_(pa.string())))
        return pa.schema(fields)


def _find(raw_names: Sequence[str], mapping: Mapping, name: str, what: str) -> str:
    for raw in raw_names:
        if raw == name or mapping.resolve(raw) == name:
            return raw
    raise MappingError(f"{what} {name!r} is not in the source; its columns: {', '.join(raw_names)}")


def _check_renames(raw: Sequence[str], mapping: Mapping) -> None:
    """MappingError when a rename makes two source columns one table column (``--rename
    region=age`` on a source that already has ``age``), or names no column. Names that
    collide by normalisation alone are reported together by the plan's collision check."""
    by_target: dict[str, str] = {}
    for r in raw:
        target = mapping.resolve(r)
        other = by_target.get(target)
        if other is not None and (r in mapping.rename or other in mapping.rename):
            renamed = r if r in mapping.rename else other
            kept = other if renamed == r else r
            raise MappingError(
                f"rename {renamed}={target}: the source already has a column {kept!r}, so two "
                f"columns would be called {target!r}; rename or drop {kept!r} as well")
        by_target[target] = r
    missing = [old for old in mapping.rename if old not in raw and old not in by_target]
    if missing:
        raise MappingError(f"rename {missing[0]}={mapping.rename[missing[0]]}: the source has "
                           f"no column {missing[0]!r}; its columns: {', '.join(raw)}")


def make_plan(mapping: Mapping, first: pa.RecordBatch, existing: TableInfo | None, *,
              text_source: bool) -> Plan:
    """Decide the output columns and types of a load (see the module docstring)."""
    raw = list(first.schema.names)
    key = mapping.key
    _check_renames(raw, mapping)
    used: set[str] = set()
    id_source: str | None = None
    generate = mapping.generate_id
    if mapping.id_column:
        id_source = _find(raw, mapping, mapping.id_column, "id column")
    elif not generate:
        id_source = next((r for r in raw if mapping.resolve(r) == key), None)
        if id_source is None:
            if mapping.table != EVENTS:
                raise MappingError(
                    f"the source has no {key!r} column: name the id column (id_column) or "
                    "set generate_id = true for a stable id from each row's content")
            generate = True  # events without an id: the content hash, per the data model
    if id_source:
        used.add(id_source)
    flags = []
    for f in mapping.holdings.flag_list():
        col = _find(raw, mapping, f.column, f"holding column for {f.product!r}")
        flags.append((f.product, col, f.values))
        if not mapping.holdings.keep_flag_columns:
            used.add(col)
    list_col = None
    if mapping.holdings.list_column:
        list_col = _find(raw, mapping, mapping.holdings.list_column, "holdings list column")
        used.add(list_col)
    # a dropped name is a source column's own name when one has it (so that "a b" drops only
    # that column even though "a_b" normalises alike), else a table name
    used |= {d for d in mapping.drop if d in raw}
    dropped = {mapping.resolve(d) for d in mapping.drop if d not in raw}
    wanted = None
    if mapping.attributes is not None:
        wanted = {mapping.resolve(a) for a in mapping.attributes} | {
            mapping.resolve(t) for t in mapping.text_columns}
        if mapping.table == EVENTS:
            wanted |= {"customer_id", "ts", "kind", "product_id", "category", "amount", "channel"}
        for w in sorted(wanted):
            if mapping.table != EVENTS or w in {mapping.resolve(r) for r in raw}:
                _find(raw, mapping, w, "column")
    for t in mapping.text_columns:
        _find(raw, mapping, t, "text column")
    existing_types = {f.name: f.type for f in existing.schema} if existing else {}
    vectors: dict[str, Any] = dict(existing.vectors) if existing else {}
    kept = _kept_columns(raw, mapping, used, dropped, wanted)
    columns: list[ColumnPlan] = []
    new_fields: list[pa.Field] = []
    for r, name in kept:
        if name == "holdings" and (flags or list_col):
            raise MappingError("the source has a 'holdings' column and holdings are also "
                               "derived from flags or a list column: rename or drop one")
        src_type = first.schema.field(r).type
        declared = mapping.declared_type(name)
        fmt = mapping.timestamp_format(name)
        is_text = text_source and pa.types.is_string(src_type)
        if name in existing_types:
            typ = existing_types[name]
            if declared is not None and declared != typ and not is_lossless(declared, typ):
                raise SchemaEvolutionError(
                    f"column {name!r} is {typ} in table {mapping.table!r} but the mapping "
                    f"declares {declared}: that change would lose data; load it under another "
                    "column name (rename) or declare a compatible type")
            if not is_text and not is_lossless(_normalise(src_type, r), typ) and not (
                    pa.types.is_string(src_type) and fmt):
                raise SchemaEvolutionError(
                    f"column {name!r} is {typ} in table {mapping.table!r} but the source has "
                    f"{src_type}: storing it as {typ} could lose data; load it under another "
                    "column name (rename) or convert it first")
        elif declared is not None:
            typ = declared
        elif is_text:
            typ = infer_text_type(first.column(r))
        else:
            typ = _normalise(src_type, r)
        if name not in existing_types:
            new_fields.append(pa.field(name, typ))
        if pa.types.is_fixed_size_list(typ) and pa.types.is_floating(typ.value_type):
            vectors.setdefault(name, typ.list_size)
        columns.append(ColumnPlan(name, r, typ, fmt))
    digest = mapping.table == EVENTS and id_source is not None
    if mapping.table == EVENTS:
        have = {c.name for c in columns}
        missing = [c for c in ("customer_id", "ts") if c not in have]
        if missing:
            raise MappingError(f"an events source needs columns {', '.join(missing)} "
                               "(rename the source's columns to them)")
        if DIGEST_COLUMN in have:
            raise MappingError(f"{DIGEST_COLUMN!r} is written by the load itself (see "
                               "ingest.identity): rename or drop the source's column")
        if digest and DIGEST_COLUMN not in existing_types:
            new_fields.append(pa.field(DIGEST_COLUMN, pa.int64()))
    holdings = bool(flags or list_col)
    if holdings and "holdings" not in existing_types:
        new_fields.append(pa.field("holdings", pa.list_(pa.string())))
    if existing is not None and existing.key not in (None, key):
        raise SchemaEvolutionError(f"table {mapping.table!r} has key {existing.key!r}, "
                                   f"expected {key!r}")
    vec_dims = {k: (v.dim if hasattr(v, "dim") else int(v)) for k, v in vectors.items()}
    return Plan(table=mapping.table, key=key, id_source=id_source, generate_id=generate,
                columns=columns, flags=flags, list_column=list_col,
                separator=mapping.holdings.separator, holdings=holdings,
                new_fields=new_fields if existing is not None else [], vectors=vec_dims,
                source_names={n: r for r, n in kept if n != r},
                occurrences=generate and not mapping.dedupe, digest=digest)


def _kept_columns(raw: Sequence[str], mapping: Mapping, used: set[str], dropped: set[str],
                  wanted: set[str] | None) -> list[tuple[str, str]]:
    """(source name, table name) of each source column the load keeps as a column.

    Names are made safe (:mod:`ingest.names`) unless ``strict_names``, which instead refuses
    every name that is not a plain identifier in one error; two columns that would share a
    name are refused together too.
    """
    kept: list[tuple[str, str]] = []
    for pos, r in enumerate(raw, start=1):
        name = mapping.resolve(r)
        if r in used or name in dropped or (wanted is not None and name not in wanted):
            continue
        if name == mapping.key:
            continue
        if not mapping.strict_names and not is_plain(name):
            name = safe_name(r, pos)
        kept.append((r, name))
    if mapping.strict_names:
        check_strict([n for _, n in kept], "strict column names")
    check_collisions(kept, "column names")
    return kept
