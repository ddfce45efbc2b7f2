"""Lance field ids: read them from a dataset's schema, give new fields fresh ids, remap files.

Lance binds each column of a data file to a schema field by a numeric id (``DataFile.fields``).
A staged step writes data files against the schema it started from and commits against the
newest schema, so the ids of the columns it adds are only known at commit time: files are
written first, then their ids are remapped by column path (``"holdings.item"``) to the ids of
the committed schema. ``LanceSchema`` objects are rebuilt from their field records (the same
serialised form pylance pickles them with), which carries the description metadata too.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import replace
from typing import Any

import pyarrow as pa

_ID, _PARENT, _NAME = 3, 4, 2  # protobuf field numbers of lance.file.Field


def _varint(buf: bytes, i: int) -> tuple[int, int]:
    out = shift = 0
    while True:
        b = buf[i]
        i += 1
        out |= (b & 0x7F) << shift
        shift += 7
        if not b & 0x80:
            return out, i


def _encode_varint(value: int) -> bytes:
    value &= (1 << 64) - 1  # int32 fields encode negatives as 64-bit two's complement
    out = bytearray()
    while True:
        b = value & 0x7F
        value >>= 7
        if value:
            out.append(b | 0x80)
        else:
            out.append(b)
            return bytes(out)


def _signed(v: int) -> int:
    v &= (1 << 64) - 1
    return v - (1 << 64) if v >= 1 << 63 else v


def _parse(record: bytes) -> list[tuple[int, int, Any]]:
    """(field number, wire type, value) of a protobuf message (varint and bytes fields)."""
    out: list[tuple[int, int, Any]] = []
    i = 0
    while i < len(record):
        tag, i = _varint(record, i)
        num, wire = tag >> 3, tag & 7
        if wire == 0:
            v, i = _varint(record, i)
            out.append((num, wire, v))
        elif wire == 2:
            n, i = _varint(record, i)
            out.append((num, wire, record[i:i + n]))
            i += n
        elif wire == 5:
            out.append((num, wire, record[i:i + 4]))
            i += 4
        elif wire == 1:
            out.append((num, wire, record[i:i + 8]))
            i += 8
        else:  # pragma: no cover (groups are not used by lance)
            raise ValueError(f"unsupported protobuf wire type {wire}")
    return out


def _encode(items: list[tuple[int, int, Any]]) -> bytes:
    out = bytearray()
    for num, wire, v in items:
        out += _encode_varint(num << 3 | wire)
        if wire == 0:
            out += _encode_varint(v)
        elif wire == 2:
            out += _encode_varint(len(v)) + v
        else:
            out += v
    return bytes(out)


class Fields:
    """The field records of a LanceSchema: ``(id, parent id, name, record bytes)``."""

    def __init__(self, records: Sequence[bytes]) -> None:
        self.records = list(records)
        self.items: list[tuple[int, int, str]] = []
        for r in self.records:
            fid, parent, name = 0, 0, ""
            for num, _, v in _parse(r):
                if num == _ID:
                    fid = _signed(v)
                elif num == _PARENT:
                    parent = _signed(v)
                elif num == _NAME:
                    name = v.decode()
            self.items.append((fid, parent, name))

    @classmethod
    def of(cls, schema: Any) -> Fields:
        """The fields of a ``lance.schema.LanceSchema``."""
        return cls(schema.__reduce__()[1][1:])

    @classmethod
    def fresh(cls, fields: Sequence[pa.Field]) -> Fields:
        """Records of Arrow fields as Lance numbers them in a new dataset (0, 1, ...)."""
        from lance.schema import LanceSchema

        return cls.of(LanceSchema.from_pyarrow(pa.schema(list(fields))))

    @property
    def max_id(self) -> int:
        return max((i for i, _, _ in self.items), default=-1)

    def paths(self) -> dict[str, int]:
        """Column path (``parent.child``) -> field id."""
        by_id = {fid: (parent, name) for fid, parent, name in self.items}
        out = {}
        for fid, _, _ in self.items:
            parts, cur = [], fid
            while cur in by_id:
                parent, name = by_id[cur]
                parts.append(name)
                cur = parent
            out[".".join(reversed(parts))] = fid
        return out

    def top_level(self) -> list[str]:
        return [name for _, parent, name in self.items if parent == -1]

    def select(self, names: Sequence[str]) -> Fields:
        """The records of these top-level columns and their children."""
        keep: set[int] = set()
        wanted = set(names)
        for fid, parent, name in self.items:
            if (parent == -1 and name in wanted) or parent in keep:
                keep.add(fid)
        return Fields([r for r, (fid, _, _) in zip(self.records, self.items, strict=True)
                       if fid in keep])

    def renumbered(self, start: int) -> Fields:
        """The same fields with ids ``start, start + 1, ...`` in order (parents follow)."""
        mapping = {fid: start + k for k, (fid, _, _) in enumerate(self.items)}
        out = []
        for r, (fid, parent, _) in zip(self.records, self.items, strict=True):
            # proto3 leaves zero values out: write both ids explicitly
            items = [(_ID, 0, mapping[fid]), (_PARENT, 0, mapping.get(parent, parent))]
            items += [(num, wire, v) for num, wire, v in _parse(r) if num not in (_ID, _PARENT)]
            out.append(_encode(items))
        return Fields(out)

    def __add__(self, other: Fields) -> Fields:
        return Fields(self.records + other.records)

    def schema(self, metadata: dict[bytes, bytes]) -> Any:
        """A ``LanceSchema`` of these fields with this schema metadata."""
        from lance.schema import LanceSchema

        meta = json.dumps({k.decode(): list(v) for k, v in metadata.items()})
        return LanceSchema._from_protos(meta, *self.records)


def with_fields(f: Any, fields: list[int]) -> Any:
    """A copy of the DataFile ``f`` with other field ids."""
    from lance.fragment import DataFile

    return DataFile(f.path, list(fields), list(f.column_indices), f.file_major_version,
                    f.file_minor_version, f.file_size_bytes, f.base_id)


def remap_files(fragment: Any, source: dict[str, int], target: dict[str, int],
                only: set[str] | None = None) -> Any:
    """``fragment`` (FragmentMetadata) with the field ids of its data files moved from the
    ``source`` numbering to the ``target`` one, by column path. Tombstones (-2) stay.
    ``only`` limits the remap to files that hold one of these paths (the others keep theirs).
    """
    by_id = {fid: path for path, fid in source.items()}
    files = []
    for f in fragment.files:
        paths = [by_id.get(i) for i in f.fields if i >= 0]
        if only is not None and not (set(p for p in paths if p) & only):
            files.append(f)
            continue
        files.append(with_fields(f, [i if i < 0 else target[by_id[i]] for i in f.fields]))
    return replace(fragment, files=files)
