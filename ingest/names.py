"""Column names as files have them -> safe table column names, and back.

Files name columns however their authors liked: ``ZIP Code``, ``CheckingAccountStatus.lt.0``,
``% change``, ``2019 sales``, a UTF-8 byte order mark glued to the first name. A table column
must be a plain identifier (letters, digits, ``_``, not starting with a digit, at most 63
characters: :func:`vectorstore.check_name`), so a load maps every source name to one.

The rule (:func:`safe_name`), applied to names that are not already plain identifiers:

1. byte order marks, zero-width and control characters are removed; surrounding white space
   is trimmed (a name that is then a plain identifier is kept as it is, case included);
2. accents are dropped (``é`` -> ``e``, by Unicode NFKD decomposition) and a few letters
   spelled out (``ß`` -> ``ss``, ``æ`` -> ``ae``, ``ø`` -> ``o``);
3. every run of other characters (spaces, dots, dashes, brackets, ``%``, non-Latin letters...)
   becomes one ``_``, with none at either end: ``ZIP Code`` -> ``ZIP_Code``,
   ``CheckingAccountStatus.lt.0`` -> ``CheckingAccountStatus_lt_0``, ``(total)`` -> ``total``;
4. a name starting with a digit gets the prefix ``c_``: ``2019 sales`` -> ``c_2019_sales``;
5. a name with no letter or digit left becomes ``column_<position>`` (1-based);
6. names longer than 63 characters are cut to 63.

Two source columns that end up with the same name are an error that lists every such group
(nothing is renamed silently to ``_2``: the next file could pair the names differently).
With ``strict_names`` nothing is normalised and every name that is not a plain identifier is
listed in one error. The original names are kept in the table's metadata under
``source_names`` (table column -> source name; explicit renames too), shown by
``kindred stats``, and :func:`resolve_column` accepts either name wherever a column is named.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from .errors import MappingError

SOURCE_NAMES_KEY = "source_names"
"""Table metadata: table column -> the source column name it was loaded from."""
MAX_LEN = 63
_IDENT = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,62}")
_INVISIBLE = re.compile("[\ufeff\u200b\u200c\u200d\u2060\u00ad\x00-\x1f\x7f]")
_TOKEN = re.compile(r"[A-Za-z0-9_]+")
_SPELLED = str.maketrans({"ß": "ss", "æ": "ae", "Æ": "AE", "ø": "o", "Ø": "O", "œ": "oe",
                          "Œ": "OE", "ł": "l", "Ł": "L", "đ": "d", "Đ": "D", "þ": "th"})


def is_plain(name: str) -> bool:
    """Whether ``name`` is already a valid table column name."""
    return _IDENT.fullmatch(name) is not None


def safe_name(name: str, position: int | None = None) -> str:
    """The table column name for a source column name (see the module docstring).

    ``position`` (1-based) names a column that has no letter or digit; without it such a
    name gives ``""``.
    """
    text = _INVISIBLE.sub("", str(name)).strip()
    if is_plain(text):
        return text
    ascii_text = "".join(ch for ch in unicodedata.normalize("NFKD", text.translate(_SPELLED))
                         if not unicodedata.combining(ch))
    out = "_".join(t for t in (t.strip("_") for t in _TOKEN.findall(ascii_text)) if t)
    if not out:
        return f"column_{position}" if position is not None else ""
    if out[0].isdigit():
        out = "c_" + out
    return out[:MAX_LEN]


def check_collisions(pairs: Sequence[tuple[str, str]], where: str) -> None:
    """Refuse two source columns that map to one table column, listing every such group.

    ``pairs`` is (source name, table name) for every column the load keeps.
    """
    groups: dict[str, list[str]] = {}
    for source, table in pairs:
        groups.setdefault(table, []).append(source)
    clashes = {t: s for t, s in groups.items() if len(s) > 1}
    if not clashes:
        return
    parts = [f"{' and '.join(repr(x) for x in s)} all become {t!r}" if len(s) > 2 else
             f"{s[0]!r} and {s[1]!r} both become {t!r}" for t, s in clashes.items()]
    raise MappingError(f"{where}: {'; '.join(parts)}; rename one of each group "
                       "(--rename 'OLD=NEW') or drop it (--drop)")


def check_strict(names: Iterable[str], where: str) -> None:
    """With strict names: one error listing every source name that is not a plain identifier."""
    bad = [n for n in names if not is_plain(n)]
    if not bad:
        return
    listed = ", ".join(f"{n!r} (normalised: {safe_name(n) or 'column_N'})" for n in bad)
    raise MappingError(f"{where}: {len(bad)} column name(s) are not plain identifiers "
                       f"(letters, digits, '_', not starting with a digit): {listed}; rename "
                       "them (--rename 'OLD=NEW') or leave out --strict-names to normalise them")


def source_names(metadata: Mapping[str, Any] | None) -> dict[str, str]:
    """Table column -> source name, from a table's metadata."""
    found = (metadata or {}).get(SOURCE_NAMES_KEY)
    return {str(k): str(v) for k, v in found.items()} if isinstance(found, dict) else {}


def merged_source_names(metadata: Mapping[str, Any] | None,
                        new: Mapping[str, str]) -> dict[str, str] | None:
    """The ``source_names`` entry after a load that used ``new``; None when nothing changes.

    The first source name recorded for a column is kept (later files may spell it otherwise;
    :func:`resolve_column` also tries the normalised form of any name)."""
    have = source_names(metadata)
    merged = {**have, **{k: v for k, v in new.items() if k not in have}}
    return merged if merged != have else None


def resolve_column(columns: Iterable[str], metadata: Mapping[str, Any] | None,
                   name: str) -> str:
    """The table column a user means by ``name``: itself, the column loaded from a source
    column of that name, or its normalised form; ``name`` unchanged when none exists (so the
    caller's own "no such column" error names what the user typed)."""
    cols = set(columns)
    if name in cols:
        return name
    for col, original in source_names(metadata).items():
        if original == name and col in cols:
            return col
    safe = safe_name(name)
    return safe if safe in cols else name


def resolve_columns(columns: Iterable[str], metadata: Mapping[str, Any] | None,
                    names: Sequence[str] | None) -> list[str] | None:
    """:func:`resolve_column` over a list (None stays None)."""
    if names is None:
        return None
    cols = list(columns)
    return [resolve_column(cols, metadata, n) for n in names]


def resolve_filter_names(text: str, columns: Iterable[str],
                         metadata: Mapping[str, Any] | None) -> str:
    """Filter text with each double-quoted column name (``"ZIP Code" = '1234'``) replaced by
    its table column (:func:`resolve_column`); single-quoted values are left alone. A quoted
    name that matches no column is left quoted, so the filter parser reports it."""
    cols = list(columns)
    out: list[str] = []
    i, n = 0, len(text)
    while i < n:
        ch = text[i]
        if ch == "'":  # a string value, '' escaping a quote
            j = i + 1
            while j < n:
                if text[j] == "'" and (j + 1 >= n or text[j + 1] != "'"):
                    break
                j += 2 if text[j] == "'" else 1
            out.append(text[i:j + 1])
            i = j + 1
        elif ch == '"' and (j := text.find('"', i + 1)) > i:
            name = text[i + 1:j]
            col = resolve_column(cols, metadata, name)
            out.append(col if col in cols and is_plain(col) else text[i:j + 1])
            i = j + 1
        else:
            out.append(ch)
            i += 1
    return "".join(out)


__all__ = ["SOURCE_NAMES_KEY", "check_collisions", "check_strict", "is_plain",
           "merged_source_names", "resolve_column", "resolve_columns", "resolve_filter_names",
           "safe_name",
           "source_names"]
