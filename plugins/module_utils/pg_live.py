# Copyright: hosting.migration contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The live method for PostgreSQL: logical replication takes the database copy out of the downtime window.

While the account runs (precopy): roles, then per database the schema (pg_dump | pg_restore, indexes included),
a publication of its tables on the source (tables without a primary key get REPLICA IDENTITY FULL, so their updates
and deletes replicate; the publication's comment records them to undo) and a subscription on the destination whose
initial sync copies the rows. At the freeze (copy): wait until the source's slot confirms the source's current WAL
position, carry the sequences over, drop subscription, slot and publication, undo the replica identities. Downtime
is the catch-up, not the size.

Verification (verify_live, while live): a decoding slot (test_decoding) on each side starts recording row changes,
then both sides are compared by chunks of each table's integer key. In the freeze (freeze_differences) the slots
say which rows changed since: only their chunks are hashed again, and any change the destination made itself is a
difference. The freeze's work grows with the writes since, not with the size.

Where a prerequisite does not hold (wal_level, free slots and WAL senders, the destination server on this host so
its pass file can be read by it), or a database changed shape since the pre-copy, that database travels by the dump
method and the result says why. The subscription's connection string names a pass file in the destination server's
OS user's home, never a password, so no statement log or catalog ever holds one.
"""

from __future__ import annotations

import hashlib
import json
import os
import pwd
import re
import time
from typing import Any

from ansible_collections.hosting.migration.plugins.module_utils import pg_decoding
from ansible_collections.hosting.migration.plugins.module_utils.dbcopy import CopyError, Progress, write_private_file
from ansible_collections.hosting.migration.plugins.module_utils.live_verify import (
    CHUNK_KEYS,
    LivePlan,
    chunk_differences,
    chunks_of,
    compare_rounds,
)
from ansible_collections.hosting.migration.plugins.module_utils.postgres import (
    _USER_RELATIONS,
    PostgresDumpCopy,
    _conninfo_value,
    _identifier,
    _query,
    _read_only_snapshot,
    copy_sequences,
    server_version,
    table_checksums,
)

try:
    from psycopg2 import sql
except ImportError:  # account_move reports the missing driver (postgres.HAS_DRIVER) before any copy starts
    sql = None

# Replication object names: lower-case letters, digits, underscore, at most 63 characters.
_NAME_RE = re.compile(r"[a-z0-9_]{1,60}")
# Initial sync: fail when no table finished for this long. Catch-up at freeze: bounded wait, then the dump method.
SYNC_STALL_S = 600.0
CATCH_UP_S = 30.0
_POLL_S = 0.05
NOT_STARTED = "no replication was set up in the pre-copy"
_DROP_SLOT = "SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots WHERE slot_name = %s"


def live_settings(conn: Any) -> dict[str, Any]:
    """The running values of the server settings the live method needs on a source."""
    rows = _query(
        conn,
        "SELECT name, setting FROM pg_settings WHERE name IN ('wal_level', 'max_replication_slots', 'max_wal_senders')",
    )
    values: dict[str, Any] = dict(rows)
    for name in ("max_replication_slots", "max_wal_senders"):
        values[name] = int(values[name])
    return values


def missing_settings(settings: dict[str, Any], slots: int) -> dict[str, Any]:
    """What to change (name: new value) so a server can be the source of `slots` replications at once."""
    changes: dict[str, Any] = {}
    if settings["wal_level"] != "logical":
        changes["wal_level"] = "logical"
    for name in ("max_replication_slots", "max_wal_senders"):
        if settings[name] < slots:
            changes[name] = slots
    return changes


def _tables(conn: Any) -> list[list[str]]:
    """The database's user tables as sorted [schema, name] pairs (the publication's record keeps the same)."""
    return sorted(
        [schema, name] for schema, name in _query(conn, f"SELECT n.nspname, c.relname {_USER_RELATIONS}", (["r"],))
    )


def chunk_key(conn: Any, table: str) -> str | None:
    """The column of `table`'s primary key if it is a single integer column (its chunks are key ranges)."""
    schema, name = table.split(".", 1)
    rows = _query(
        conn,
        "SELECT a.attname FROM pg_index i JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = i.indkey[0] "
        "JOIN pg_class c ON c.oid = i.indrelid JOIN pg_namespace n ON n.oid = c.relnamespace "
        "WHERE n.nspname = %s AND c.relname = %s AND i.indisprimary AND i.indnatts = 1 "
        "AND a.atttypid IN ('int2'::regtype, 'int4'::regtype, 'int8'::regtype)",
        (schema, name),
    )
    return rows[0][0] if rows else None


def _sums(conn: Any, table: str, key: str | None, chunks: set[int] | None) -> dict[int, tuple[int, str]]:
    """Row count and content hash (table_checksums' hash) of `table`: of each chunk of CHUNK_KEYS values of its
    integer key `key` (the chunks named, or all), or of the whole table as chunk 0 when it has no such key."""
    schema, name = table.split(".", 1)
    target = _identifier(schema, name)
    row_hash = sql.SQL("coalesce(sum(('x' || left(md5(ROW(t.*)::text), 15))::bit(60)::bigint), 0)")
    sums = {}
    with _read_only_snapshot(conn) as cursor:
        if key is None:
            cursor.execute(sql.SQL("SELECT 0, count(*), {} FROM ONLY {} AS t").format(row_hash, target))
            rows = cursor.fetchall()
        elif chunks is None:
            column = sql.Identifier(key)
            cursor.execute(
                sql.SQL("SELECT floor({} / %s::numeric)::bigint, count(*), {} FROM ONLY {} AS t GROUP BY 1").format(
                    column, row_hash, target
                ),
                (CHUNK_KEYS,),
            )
            rows = cursor.fetchall()
        else:
            column = sql.Identifier(key)
            rows = []
            for chunk in sorted(chunks):
                cursor.execute(
                    sql.SQL("SELECT %s, count(*), {} FROM ONLY {} AS t WHERE {} >= %s AND {} < %s").format(
                        row_hash, target, column, column
                    ),
                    (chunk, chunk * CHUNK_KEYS, (chunk + 1) * CHUNK_KEYS),
                )
                rows += cursor.fetchall()
        for chunk, count, total in rows:
            if count:
                sums[int(chunk)] = (int(count), format(int(total), "x"))
    return sums


def _relations(conn: Any, kinds: str = "rS") -> list[str]:
    """The tables and sequences (kinds r, S) whose checksums table_checksums computes (schema.name)."""
    return [
        f"{schema}.{name}"
        for schema, name in _query(conn, f"SELECT n.nspname, c.relname {_USER_RELATIONS}", (list(kinds),))
    ]


def replication_name(database: str) -> str:
    """The publication, subscription and slot of one database (the same name on both servers)."""
    if _NAME_RE.fullmatch(database):
        return f"hm_{database}"
    return "hm_" + hashlib.sha256(database.encode()).hexdigest()[:32]


def verification_slot(database: str) -> str:
    """The live verification's decoding slot of one database (on both servers)."""
    if _NAME_RE.fullmatch(database) and len(database) < 60:
        return f"hmv_{database}"
    return "hmv_" + hashlib.sha256(database.encode()).hexdigest()[:32]


class PostgresLiveCopy(LivePlan, PostgresDumpCopy):
    method = "live"
    # Downtime is the catch-up and the verification, not the copy: bench/account_move_live.py measures it.
    SECONDS_PER_GB = 0.0
    DUMP_SECONDS_PER_GB = PostgresDumpCopy.SECONDS_PER_GB

    # ---- prerequisites -----------------------------------------------------------------------------------------

    def live_problems(self, source: Any, destination: Any, databases: list[str]) -> list[str]:
        """Why the live method cannot run here (empty if it can)."""
        problems = []
        wal_level = _query(source, "SHOW wal_level")[0][0]
        if wal_level != "logical":
            problems.append(f"wal_level on the source is {wal_level}, not logical (step 3 sets it)")
        slots_free, senders_free = _query(
            source,
            "SELECT current_setting('max_replication_slots')::int - (SELECT count(*) FROM pg_replication_slots), "
            "current_setting('max_wal_senders')::int - (SELECT count(*) FROM pg_stat_replication)",
        )[0]
        # Per database a subscription's slot and WAL sender, plus the initial sync's temporary ones
        # (max_sync_workers_per_subscription: 2); the verification's decoding slots need no sender.
        senders = sum(1 for d in databases if not self._has_slot(source, d)) + 2
        slots = senders + len(databases)
        if slots > slots_free or senders > senders_free:
            problems.append(
                f"the source has {slots_free} free replication slot(s) and {senders_free} free WAL sender(s); "
                f"{len(databases)} database(s) need {slots} and {senders}"
            )
        if not _query(source, "SELECT rolsuper OR rolreplication FROM pg_roles WHERE rolname = current_user")[0][0]:
            problems.append(f"{self.source.user} on the source may not replicate")
        if server_version(source) < (10,):
            problems.append("the source runs PostgreSQL before 10 (no logical replication)")
        if self._server_home(destination) is None:
            problems.append(
                "the destination PostgreSQL does not run on this host: its subscription could read a pass file only "
                "here, and a password in its connection string would reach catalogs and statement logs"
            )
        return problems

    def _has_slot(self, source: Any, database: str) -> bool:
        name = replication_name(database)
        return bool(_query(source, "SELECT 1 FROM pg_replication_slots WHERE slot_name = %s", (name,)))

    def _server_home(self, destination: Any) -> str | None:
        """The home of the destination server's OS user, if that server runs on this host: its postmaster.pid,
        read here and by the server itself, is the same (a data directory at the same path elsewhere is not)."""
        data_directory = _query(destination, "SHOW data_directory")[0][0]
        try:
            with open(os.path.join(data_directory, "postmaster.pid"), encoding="utf-8") as handle:
                here = handle.read()
            owner = os.stat(data_directory).st_uid
        except OSError:
            return None
        if _query(destination, "SELECT pg_read_file('postmaster.pid')")[0][0] != here:
            return None
        return pwd.getpwuid(owner).pw_dir

    # ---- the interface -----------------------------------------------------------------------------------------

    def precopy(self, progress: Progress) -> dict:
        self.write_credentials()
        with self.connected("source") as source, self.connected("destination") as destination:
            databases = self.databases(source)
            reasons = self.live_problems(source, destination, databases)
            if reasons:
                return {"method": "dump", "live_problems": reasons}
            self._step("copying users", lambda: self.copy_users(source, destination))
            started = {}
            for database in databases:
                started[database] = self._step(
                    f"starting the replication of {database}", lambda d=database: self._start(d, source, destination)
                )
        self._wait_for_sync(databases, progress)
        return {"method": "live", "databases": started}

    def _start(self, database: str, source: Any, destination: Any) -> str:
        """Publication and subscription for one database; an existing pair (a re-run) is kept as it is."""
        name = replication_name(database)
        if self._subscription_exists(database) and self._publication(database) is not None:
            return "resumed"
        self.drop_replication(database)
        self.prepare_database(database, source, destination)
        # Everything post-data too: the apply worker finds rows by the primary key's index.
        destination_db = self._destination_db(database)
        self.run([self._restore_stage(database, "post-data", destination_db, f"--jobs={self.parallel}")])
        self._archives.pop(database, None)
        with self.connected("source", database) as conn:
            tables = _tables(conn)
            keyless = [
                [schema, table]
                for schema, table in _query(
                    conn,
                    "SELECT n.nspname, c.relname "
                    f"{_USER_RELATIONS} AND c.relreplident IN ('d', 'n') "
                    "AND NOT EXISTS (SELECT 1 FROM pg_index i WHERE i.indrelid = c.oid AND i.indisprimary)",
                    (["r"],),
                )
            ]
            for schema, table in keyless:
                _query(conn, sql.SQL("ALTER TABLE {} REPLICA IDENTITY FULL").format(_identifier(schema, table)))
            published = sql.SQL(", ").join(_identifier(schema, table) for schema, table in tables)
            if tables:
                _query(conn, sql.SQL("CREATE PUBLICATION {} FOR TABLE {}").format(sql.Identifier(name), published))
            else:
                _query(conn, sql.SQL("CREATE PUBLICATION {}").format(sql.Identifier(name)))
            record = json.dumps({"replica_identity_full": keyless, "tables": tables})
            _query(conn, sql.SQL("COMMENT ON PUBLICATION {} IS %s").format(sql.Identifier(name)), (record,))
        passfile = self._subscription_passfile(destination, name)
        conninfo = " ".join(
            f"{key}={_conninfo_value(value)}"
            for key, value in {
                "host": self.source.host,
                "port": str(self.source.port),
                "user": self.source.user,
                "dbname": database,
                "passfile": passfile,
                "connect_timeout": "10",
            }.items()
        )
        with self.connected("destination", database) as conn:
            _query(
                conn,
                sql.SQL(
                    "CREATE SUBSCRIPTION {} CONNECTION {} PUBLICATION {} WITH (slot_name = {}, copy_data = true)"
                ).format(sql.Identifier(name), sql.Literal(conninfo), sql.Identifier(name), sql.Literal(name)),
            )
        return "started"

    def _subscription_passfile(self, destination: Any, name: str) -> str:
        """The source's pass line in a 0600 file of the destination server's OS user: its apply and sync workers
        read it; the subscription names the file, never the password."""
        home = self._server_home(destination)
        if home is None:
            raise CopyError("the destination PostgreSQL does not run on this host")
        directory = os.path.join(home, ".hosting-migration")
        owner = os.stat(home)
        os.makedirs(directory, mode=0o700, exist_ok=True)
        os.chown(directory, owner.st_uid, owner.st_gid)
        path = write_private_file(directory, f"{name}.pgpass", self.source.passfile())
        os.chown(path, owner.st_uid, owner.st_gid)
        return path

    def _wait_for_sync(self, databases: list[str], progress: Progress) -> None:
        """Until every table of every subscription is ready; progress in tables."""
        last_change, last_done = time.monotonic(), -1
        while True:
            done = total = 0
            for database in databases:
                with self.connected("destination", database) as conn:
                    states = _query(
                        conn,
                        "SELECT r.srsubstate FROM pg_subscription_rel r JOIN pg_subscription s ON s.oid = r.srsubid "
                        "WHERE s.subname = %s",
                        (replication_name(database),),
                    )
                done += sum(1 for (state,) in states if state == "r")
                total += len(states)
            progress("precopy", tables_done=done, tables_total=total)
            if done == total:
                return
            if done != last_done:
                last_change, last_done = time.monotonic(), done
            elif time.monotonic() - last_change > SYNC_STALL_S:
                raise CopyError(
                    f"postgresql: the initial sync of the subscriptions finished no table in {SYNC_STALL_S:g} s "
                    f"({done} of {total} ready); see the destination server's log"
                )
            time.sleep(0.5)

    def copy(self, progress: Progress) -> dict:
        started = time.monotonic()
        self.write_credentials()
        with self.connected("source") as source, self.connected("destination") as destination:
            users = self._step("copying users", lambda: self.copy_users(source, destination))
            databases, sizes, counters = self._inventory(source)
            copied = {}
            problems = None
            for database in databases:
                reason = self._step(f"checking the replication of {database}", lambda d=database: self._not_live(d))
                if reason == NOT_STARTED:
                    # Say why it was not started (the pre-copy's reasons), when that is what happened.
                    if problems is None:
                        problems = self.live_problems(source, destination, databases)
                    reason = "; ".join(problems) or reason
                if reason is None:
                    copied[database] = self._step(
                        f"catching up {database}",
                        lambda d=database: self._catch_up(d, sizes[d], counters, progress),
                    )
                    reason = copied[database].pop("fallback", None)
                if reason is not None:
                    self.drop_replication(database)
                    copied[database] = self._copy_database(
                        database, sizes[database], source, destination, counters, progress
                    )
                    copied[database].update(method="dump", live_problem=reason)
        return self._copied(started, counters, copied, users)

    def _not_live(self, database: str) -> str | None:
        """Why this database cannot finish by catch-up (None: it can)."""
        record = self._publication(database)
        if record is None or not self._subscription_exists(database):
            return NOT_STARTED
        with self.connected("source", database) as conn:
            tables = _tables(conn)
        if tables != sorted(record.get("tables", [])):
            return "its tables changed since the pre-copy"
        with self.connected("destination", database) as conn:
            waiting = _query(
                conn,
                "SELECT count(*) FROM pg_subscription_rel r JOIN pg_subscription s ON s.oid = r.srsubid "
                "WHERE s.subname = %s AND r.srsubstate <> 'r'",
                (replication_name(database),),
            )[0][0]
        if waiting:
            return f"{waiting} table(s) had not finished their initial sync"
        return None

    def _catch_up(self, database: str, size: int, counters: dict, progress: Progress) -> dict:
        started = time.monotonic()
        with self.connected("source", database) as source:
            if not self._wait_caught_up(source, database):
                return {"fallback": f"the subscription did not catch up with the source within {CATCH_UP_S:g} s"}
            waited = time.monotonic() - started
            with self.connected("destination", database) as destination:
                copy_sequences(source, destination)
        self._drop_subscription(database)  # the decoding slots stay for the freeze's verification
        counters["bytes_done"] += size
        progress("databases", **counters)
        return {
            "seconds": round(time.monotonic() - started, 3),
            "catch_up_seconds": round(waited, 3),
            "bytes": size,
            "method": "live",
        }

    # ---- verification that does not grow the freeze with size ---------------------------------------------------

    def verify_live(self, database: str, rounds: int = 3) -> dict:
        """While the account runs, compare both sides' content, each side once the destination has applied what
        the source's snapshot held. First a decoding slot on each side (test_decoding) starts recording the rows
        changed from here on, so the freeze re-hashes only those (source) and finds any change made on the
        destination outside the replication. A table with a single integer primary key is compared by chunks of
        its key range, so the rounds after the first re-hash only the chunks that differed (rows written
        meanwhile, as pt-table-checksum does); other tables as a whole. Returns {"tables": {table: its chunk key
        and the chunks still differing after `rounds`}}; empty when the slots could not be made (the freeze then
        hashes every table); a table never found equal as a whole is left out (the freeze hashes it)."""
        with self.connected("source", database) as source, self.connected("destination", database) as destination:
            if not self._start_recording(database, source, destination):
                return {}
            keys = {table: chunk_key(source, table) for table in _relations(source, "r")}
            return {
                "tables": compare_rounds(
                    keys,
                    lambda pending: {t: _sums(source, t, keys[t], chunks) for t, chunks in pending.items()},
                    lambda pending: {t: _sums(destination, t, keys[t], chunks) for t, chunks in pending.items()},
                    lambda: self._wait_caught_up(source, database),
                    rounds,
                )
            }

    def _start_recording(self, database: str, source: Any, destination: Any) -> bool:
        """A fresh decoding slot in the database on both sides (a re-run's old ones are dropped first). False,
        with none left, where one cannot be made: wal_level below logical, no free slot."""
        name = verification_slot(database)
        try:
            for conn in (source, destination):
                _query(conn, _DROP_SLOT, (name,))
                _query(conn, "SELECT pg_create_logical_replication_slot(%s, 'test_decoding')", (name,))
        except Exception:  # noqa: BLE001 - any refusal means: verify in the freeze, as the dump method does
            self._drop_recording(database)
            return False
        return True

    def _recorded(self, conn: Any, database: str, only_local: bool = False) -> list[str] | None:
        """The row changes committed in this database since its decoding slot was made (None: no slot). With
        only_local, those not applied by a replication (no origin): on the destination, writes by anyone else."""
        name = verification_slot(database)
        if not _query(conn, "SELECT 1 FROM pg_replication_slots WHERE slot_name = %s", (name,)):
            return None
        options = ["skip-empty-xacts", "1", "include-xids", "0"] + (["only-local", "1"] if only_local else [])
        rows = _query(
            conn, "SELECT data FROM pg_logical_slot_peek_changes(%s, NULL, NULL, VARIADIC %s::text[])", (name, options)
        )
        return [data for (data,) in rows]

    def _wait_caught_up(self, source: Any, database: str) -> bool:
        """Until the subscription has applied everything the source has written up to now (bounded)."""
        target = _query(source, "SELECT pg_current_wal_lsn()")[0][0]
        deadline = time.monotonic() + CATCH_UP_S
        while time.monotonic() < deadline:
            caught_up = _query(
                source,
                "SELECT confirmed_flush_lsn >= %s::pg_lsn FROM pg_replication_slots WHERE slot_name = %s",
                (target, replication_name(database)),
            )
            if caught_up and caught_up[0][0]:
                return True
            time.sleep(_POLL_S)
        return False

    def freeze_differences(self, database: str, verified: dict) -> tuple[list[str], list[str]]:
        """In the freeze, after the catch-up: the differences between the two sides, without re-reading what the
        live verification already compared. The decoding slots say which rows changed since: on the source, the
        chunks holding them (and those that still differed) are hashed again on both sides; on the destination,
        any change not applied by the replication is a difference. Tables the live verification did not verify,
        tables changed without a readable key, and the sequences are hashed whole. Returns (differences, tables
        hashed whole, sequences aside); the decoding slots are gone afterwards."""
        differences: list[str] = []
        verified = verified.get("tables") or {}
        try:
            with self.connected("source", database) as source, self.connected("destination", database) as dest:
                to_hash = set(_relations(source)) | set(_relations(dest))
                sequences = set(_relations(source, "S")) | set(_relations(dest, "S"))
                source_changes = self._recorded(source, database) if verified else None
                local_changes = self._recorded(dest, database, only_local=True) if verified else None
                if source_changes is not None and local_changes is not None:
                    for table, count in sorted(pg_decoding.touched_tables(local_changes).items()):
                        differences.append(
                            f"postgresql table {database}.{table}: {count} row change(s) made on the destination "
                            "outside the replication"
                        )
                    keys = {table: record["key"] for table, record in verified.items()}
                    try:
                        changed = pg_decoding.changed_rows(source_changes, keys)
                    except ValueError:  # text it cannot read: every table counts as changed
                        changed = dict.fromkeys(keys)
                    for table, record in verified.items():
                        rows = changed.get(table, set())
                        if rows is None:
                            continue  # stays in to_hash
                        to_hash.discard(table)
                        chunks = chunks_of(rows, record["pending"])
                        if chunks:
                            ours = _sums(source, table, record["key"], chunks)
                            theirs = _sums(dest, table, record["key"], chunks)
                            differences += chunk_differences("postgresql", database, table, record["key"], chunks,
                                                             ours, theirs)  # fmt: skip
                source_sums = table_checksums(source, database, only=to_hash)
                destination_sums = table_checksums(dest, database, only=to_hash)
        finally:
            self._drop_recording(database)
        differences += [
            f"postgresql table {database}.{table}: source {source_sums.get(table)} != destination "
            f"{destination_sums.get(table)}"
            for table in sorted(to_hash)
            if source_sums.get(table) != destination_sums.get(table)
        ]
        return differences, sorted(to_hash - sequences)

    # ---- what is left behind: nothing --------------------------------------------------------------------------

    def _subscription_exists(self, database: str) -> bool:
        name = replication_name(database)
        with self.connected("destination") as conn:
            return bool(_query(conn, "SELECT 1 FROM pg_subscription WHERE subname = %s", (name,)))

    def _publication(self, database: str) -> dict | None:
        """The publication's own record (tables, replica identities it changed), None if there is none."""
        try:
            with self.connected("source", database) as conn:
                rows = _query(
                    conn,
                    "SELECT obj_description(oid, 'pg_publication') FROM pg_publication WHERE pubname = %s",
                    (replication_name(database),),
                )
        except CopyError:
            return None  # no such database on the source
        if not rows:
            return None
        try:
            record = json.loads(rows[0][0] or "{}")
        except ValueError:
            record = {}
        return record if isinstance(record, dict) else {}

    def drop_replication(self, database: str) -> None:
        """Remove everything replication and verification set up for the database; idempotent."""
        self._drop_subscription(database)
        self._drop_recording(database)

    def _drop_recording(self, database: str) -> None:
        """The verification's decoding slots, on both sides (idle outside a peek: dropped at once)."""
        for side in ("source", "destination"):
            with self.connected(side) as conn:
                _query(conn, _DROP_SLOT, (verification_slot(database),))

    def _drop_subscription(self, database: str) -> None:
        """Remove subscription, slot, publication and the replica identities the publication set; idempotent."""
        name = replication_name(database)
        with self.connected("destination") as conn:
            on_destination = _query(
                conn,
                "SELECT d.datname FROM pg_subscription s JOIN pg_database d ON d.oid = s.subdbid WHERE s.subname = %s",
                (name,),
            )
        for (subscription_db,) in on_destination:
            with self.connected("destination", subscription_db) as conn:
                identifier = sql.Identifier(name)
                _query(conn, sql.SQL("ALTER SUBSCRIPTION {} DISABLE").format(identifier))
                # Detached from its slot first: the drop then never depends on reaching the source.
                _query(conn, sql.SQL("ALTER SUBSCRIPTION {} SET (slot_name = NONE)").format(identifier))
                _query(conn, sql.SQL("DROP SUBSCRIPTION {}").format(identifier))
        with self.connected("source") as conn:
            deadline = time.monotonic() + 10
            while _query(conn, "SELECT active FROM pg_replication_slots WHERE slot_name = %s AND active", (name,)):
                if time.monotonic() > deadline:
                    raise CopyError(f"postgresql: the replication slot {name} on the source is still in use")
                time.sleep(_POLL_S)  # its WAL sender ends once the disabled subscription's worker has gone
            _query(conn, _DROP_SLOT, (name,))
        record = self._publication(database)
        if record is not None:
            with self.connected("source", database) as conn:
                current = _tables(conn)
                for schema, table in record.get("replica_identity_full", []):
                    if [schema, table] in current:
                        target = _identifier(schema, table)
                        _query(conn, sql.SQL("ALTER TABLE {} REPLICA IDENTITY DEFAULT").format(target))
                _query(conn, sql.SQL("DROP PUBLICATION IF EXISTS {}").format(sql.Identifier(name)))
        self._remove_passfile(name)

    def _remove_passfile(self, name: str) -> None:
        with self.connected("destination") as conn:
            home = self._server_home(conn)
        if home is not None:
            path = os.path.join(home, ".hosting-migration", f"{name}.pgpass")
            if os.path.lexists(path):
                os.unlink(path)
