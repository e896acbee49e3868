# Copyright: hosting.migration contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""What the live methods of both engines share: their plan, and the verification by chunks of an integer key
(pt-table-checksum's idea) - while live, rounds that re-hash only the chunks still differing; in the freeze, the
chunks holding the rows changed since. Each engine supplies how to hash a table's chunks and how to tell its
destination has caught up (pg_live.py, mariadb_live.py)."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

# Key values per chunk (a chunk of a dense key is that many rows).
CHUNK_KEYS = 10000


class LivePlan:
    """plan() of a live method: the dump method's plan, with the catch-up as the estimate where live can run."""

    CATCH_UP_SECONDS = 3.0
    DUMP_SECONDS_PER_GB = 0.0  # the engine's dump method's, for the estimate when live cannot run

    def plan(self) -> dict:
        plan = super().plan()
        with self.connected("source") as source, self.connected("destination") as destination:
            reasons = self.live_problems(source, destination, list(plan["databases"]))
        if reasons:
            plan.update(method="dump", live_problems=reasons)
            plan["estimated_seconds"] = round(1 + plan["bytes"] / 2**30 * self.DUMP_SECONDS_PER_GB, 1)
        else:
            plan["estimated_seconds"] = self.CATCH_UP_SECONDS
        return plan

    def drop_account_replication(self, databases: list[str]) -> None:
        """Remove whatever replication the method set up for the account's databases; idempotent."""
        for database in databases:
            self.drop_replication(database)


def compare_rounds(
    keys: dict[str, Any],
    source_sums: Callable[[dict], dict[str, dict]],
    destination_sums: Callable[[dict], dict[str, dict]],
    caught_up: Callable[[], bool],
    rounds: int,
) -> dict[str, dict]:
    """Compare every table of `keys` (table: its chunk key or None) on both sides, the destination's once it has
    caught up with what the source's reading held; later rounds re-hash only the chunks that differed. The sums
    functions take {table: chunks, or None for all} and give {table: {chunk: (rows, hash)}} (chunk 0: the whole of
    a table without key). Returns,
    per table verified, its key and the chunks still differing; a table never found equal as a whole (or never
    compared: the catch-up timed out) is left out - the freeze hashes it."""
    pending: dict[str, set[int] | None] = dict.fromkeys(keys)  # None: all of it
    for _round in range(rounds):
        ours = source_sums(pending)
        if not caught_up():
            break
        theirs = destination_sums(pending)
        for table in list(pending):
            differing = {
                c for c in ours[table].keys() | theirs[table].keys() if ours[table].get(c) != theirs[table].get(c)
            }
            if differing:
                pending[table] = differing if keys[table] else None
            else:
                del pending[table]
        if not pending:
            break
    return {
        table: {"key": keys[table], "pending": sorted(pending.get(table) or [])}
        for table in keys
        if table not in pending or (keys[table] and pending[table] is not None)
    }


def chunk_differences(
    engine: str, database: str, table: str, key: str, chunks: Iterable[int], ours: dict, theirs: dict
) -> list[str]:
    return [
        f"{engine} table {database}.{table}, key {key} from {chunk * CHUNK_KEYS} to {(chunk + 1) * CHUNK_KEYS - 1}: "
        f"source {ours.get(chunk)} != destination {theirs.get(chunk)}"
        for chunk in sorted(chunks)
        if ours.get(chunk) != theirs.get(chunk)
    ]


def chunks_of(rows: Iterable[int], pending: Iterable[int]) -> set[int]:
    """The chunks holding these key values, and those still differing after the live rounds."""
    return {row // CHUNK_KEYS for row in rows} | set(pending)
