# Copyright: hosting.migration contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Reading the text that PostgreSQL's test_decoding plugin gives for committed row changes, e.g.

    table public.orders: INSERT: id[integer]:7 note[text]:'it''s'
    table "Odd"."Name": UPDATE: old-key: id[bigint]:3 new-tuple: id[bigint]:4 v[text]:null
    table public.a, public.b: TRUNCATE: (no-flags)

The live verification asks one question of it: which rows of which tables changed (the values of each table's
integer key), so that only their chunks are hashed again in the freeze. Whatever it cannot read for sure counts as
the whole table changed: reading less than was written would let a difference through, reading more costs time.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

# quote_identifier leaves only [a-z0-9_] unquoted; a quoted one doubles its quotes.
_IDENTIFIER = r'(?:[a-z_][a-z0-9_$]*|"(?:[^"]|"")*")'
_QUALIFIED = rf"{_IDENTIFIER}\.{_IDENTIFIER}"
_CHANGE_RE = re.compile(rf"table ({_QUALIFIED}(?:, {_QUALIFIED})*): (INSERT|UPDATE|DELETE|TRUNCATE):(.*)", re.S)
_PART_RE = re.compile(_IDENTIFIER)
_MARKERS = ("old-key:", "new-tuple:")


def _unquote(identifier: str) -> str:
    if identifier.startswith('"'):
        return identifier[1:-1].replace('""', '"')
    return identifier


def _table_names(listed: str) -> list[str]:
    """'public.a, "X".b' -> ['public.a', 'X.b'] (schema.name, as the verification names tables)."""
    parts = [_unquote(match.group(0)) for match in _PART_RE.finditer(listed)]
    return [f"{parts[i]}.{parts[i + 1]}" for i in range(0, len(parts), 2)]


def _closing_quote(text: str, start: int) -> int:
    """Where the quoted string opening at `start` ends (its quote character doubled inside); ValueError if never."""
    quote, close = text[start], start + 1
    while True:
        close = text.index(quote, close)
        if not text.startswith(quote * 2, close):
            return close
        close += 2


def tuple_values(text: str) -> list[tuple[str, str]]:
    """The (column, value as printed) pairs of a change's tuple data, old key and new tuple alike. Raises
    ValueError on text it cannot read."""
    values, pos, end = [], 0, len(text)
    while pos < end:
        if text[pos] == " ":
            pos += 1
            continue
        marker = next((m for m in _MARKERS if text.startswith(m, pos)), None)
        if marker:
            pos += len(marker)
            continue
        if text[pos] == '"':
            close = _closing_quote(text, pos)
            name, pos = text[pos + 1 : close].replace('""', '"'), close + 1
        else:
            bracket = text.index("[", pos)
            name, pos = text[pos:bracket], bracket
        if not name or text[pos : pos + 1] != "[":
            raise ValueError(f"no column at {pos}")
        pos = text.index("]:", pos) + 2  # past the type, which may itself hold brackets (integer[])
        if text.startswith("'", pos):
            close = _closing_quote(text, pos)
            value, pos = text[pos : close + 1], close + 1
        else:
            space = text.find(" ", pos)
            space = end if space < 0 else space
            value, pos = text[pos:space], space
        values.append((name, value))
    return values


def changed_rows(lines: Iterable[str], keys: dict[str, str | None]) -> dict[str, set[int] | None]:
    """Per table changed in `lines`, the integer key values of the rows changed (old and new), or None when the
    whole table counts as changed: a table without a key in `keys`, a TRUNCATE, a change it cannot read."""
    changed: dict[str, set[int] | None] = {}
    for line in lines:
        if line.startswith(("BEGIN", "COMMIT", "message:")):
            continue
        match = _CHANGE_RE.fullmatch(line)
        if match is None:
            raise ValueError(f"unreadable change: {line[:200]!r}")
        tables, action, data = _table_names(match.group(1)), match.group(2), match.group(3)
        for table in tables:
            key = keys.get(table)
            if key is None or action == "TRUNCATE" or changed.get(table, set()) is None:
                changed[table] = None
                continue
            try:
                found = {int(value) for column, value in tuple_values(data) if column == key}
            except ValueError:
                found = set()
            if not found:
                changed[table] = None
            else:
                changed.setdefault(table, set()).update(found)
    return changed


def touched_tables(lines: Iterable[str]) -> dict[str, int]:
    """How many row changes `lines` hold per table (a TRUNCATE counts one per table it names)."""
    counts: dict[str, int] = {}
    for line in lines:
        match = _CHANGE_RE.fullmatch(line)
        if match:
            for table in _table_names(match.group(1)):
                counts[table] = counts.get(table, 0) + 1
    return counts
