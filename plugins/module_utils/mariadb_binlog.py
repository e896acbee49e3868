# Copyright: hosting.migration contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Reading `mariadb-binlog --base64-output=decode-rows --verbose` for one question: which rows of which tables of a
database changed (the values of each table's integer key), so that only their chunks are hashed again in the
freeze. Row events read like

    ### UPDATE `alice_shop`.`orders`
    ### WHERE
    ###   @1=7
    ###   @2='old note'
    ### SET
    ###   @1=7
    ###   @2='new note'

Statements (Query events: TRUNCATE, DDL, anything not logged as rows) name no row: one that may touch the database
counts as the whole database changed. Whatever cannot be read for sure counts as the whole table changed.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

_ROW_RE = re.compile(r"### (?:INSERT INTO|UPDATE|DELETE FROM) `(.*)`\.`(.*)`$")
_VALUE_RE = re.compile(r"###   @(\d+)=(\S*)(?: \((\d+)\))?")
_END = "/*!*/;"
_USE_RE = re.compile(r"use `(.*)`/\*!\*/;$")
# Statements that change no table's rows: transaction control, and account management (the freeze locks users).
_HARMLESS = re.compile(
    r"(BEGIN|COMMIT|ROLLBACK|XA |SAVEPOINT|RELEASE SAVEPOINT|GRANT |REVOKE |CREATE USER|DROP USER|ALTER USER|"
    r"RENAME USER|SET PASSWORD|CREATE ROLE|DROP ROLE|SET DEFAULT ROLE|FLUSH |ANALYZE TABLE)",
    re.IGNORECASE,
)


class Changes:
    """What a binary log says changed in one database: per table, key values or None (the whole table); and
    whether a statement may have changed any of it (then every table counts as changed)."""

    def __init__(self) -> None:
        self.rows: dict[str, set[int] | None] = {}
        self.statements: list[str] = []

    def tables(self) -> list[str]:
        return sorted(self.rows)


def read_changes(lines: Iterable[str], database: str, keys: dict[str, int | None]) -> Changes:
    """Changes to `database` in the decoded log; keys[table] is the ordinal (1-based) of its integer key column,
    None or absent for a table without one."""
    changes = Changes()
    table: str | None = None  # the row event being read, if it is one of ours
    found: set[int] = set()
    current_db = ""
    statement: list[str] | None = None

    def close_row() -> None:
        nonlocal table, found
        if table is not None:
            if not found or changes.rows.get(table, set()) is None:
                changes.rows[table] = None
            else:
                changes.rows.setdefault(table, set()).update(found)
        table, found = None, set()

    def close_statement() -> None:
        nonlocal statement
        if statement:
            text = " ".join(statement).strip()
            mentioned = current_db == database or re.search(rf"\b{re.escape(database)}\b", text)
            if text and mentioned and not _HARMLESS.match(text):
                changes.statements.append(text[:200])
        statement = None

    for raw in lines:
        line = raw.rstrip("\n")
        if line.startswith("### "):
            header = _ROW_RE.match(line)
            if header:
                close_row()
                if header.group(1) == database:
                    table = header.group(2)
                continue
            value = _VALUE_RE.match(line)
            if value and table is not None and keys.get(table) == int(value.group(1)):
                raw_value = value.group(3) or value.group(2)
                try:
                    found.add(int(raw_value))
                except ValueError:
                    changes.rows[table] = None
            continue
        close_row()
        if line.startswith("#"):
            close_statement()
            if "\tQuery\t" in line or " Query\t" in line:
                statement = []
            continue
        if statement is None:
            continue
        use = _USE_RE.match(line)
        if use:
            current_db = use.group(1)
            continue
        if line.startswith(("SET TIMESTAMP=", "SET @@", "SET INSERT_ID=", "SET LAST_INSERT_ID=", "/*!")):
            continue
        statement.append(line[: -len(_END)] if line.endswith(_END) else line)
    close_row()
    close_statement()
    return changes
