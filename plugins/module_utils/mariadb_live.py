# Copyright: hosting.migration contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The live method for MariaDB: a consistent snapshot loaded while the account runs, then binary-log replication
until the freeze, so the copy leaves the downtime window.

Pre-copy: users, every database's schema (as the dump method creates it), then one snapshot of all the account's
tables with its binary log position, the way mydumper takes one: a session holds READ locks on the account's
tables (a moment: other databases are not stopped) while every table's reader starts a consistent-snapshot
transaction and waits on a named lock; the position is read under the locks, the locks go, and the readers stream
their tables into the destination through the dump method's load path (LOAD DATA, in parallel). Then a named
replication connection `hm_<account>` on the destination replicates from that position, filtered to the account's
databases, as a replication user made for the move (allowed from the destination's address only, its password
random, given to the source as a hash). Freeze (copy): wait until the connection has executed up to the source's
current binary log position (bounded), carry sequence values over, stop and remove the connection and the user.

Verification (verify_live, while live): both servers' binary log positions are noted, then both sides are compared
by chunks of each table's integer key. In the freeze (freeze_differences) the logs since then say which rows
changed: only their chunks are hashed again, and a row the destination changed itself is a difference.

MariaDB gives a server one replication connection per source server: concurrent moves from one source take turns
(the next waits, live, before its snapshot, up to TURN_S). Where a prerequisite does not hold (binary log, distinct
server_id, no events in the databases, not too many tables), the turn did not come, or the connection broke or did
not catch up, the databases travel by the dump method and the result says
why. Nothing of the replication is left after a move, a failure or a rollback (drop_replication).
"""

from __future__ import annotations

import hashlib
import secrets
import subprocess
import threading
import time
from typing import Any

from ansible_collections.hosting.migration.plugins.module_utils import mariadb_binlog
from ansible_collections.hosting.migration.plugins.module_utils.dbcopy import CopyError, Job, Progress
from ansible_collections.hosting.migration.plugins.module_utils.live_verify import (
    CHUNK_KEYS,
    LivePlan,
    chunk_differences,
    chunks_of,
    compare_rounds,
)
from ansible_collections.hosting.migration.plugins.module_utils.mariadb import (
    HAS_PYMYSQL,
    MariaDBDumpCopy,
    _columns,
    _query,
    quote_identifier,
    rows_hash,
    table_checksums,
)

if HAS_PYMYSQL:
    import pymysql

# MariaDB's error for a second connection to the same source server (host and port).
_CONNECTION_CONFLICT = 1934
# Readers held in their snapshot at once: each is a connection to the source.
MAX_TABLES = 100
GATE_S = 60.0
# Longest wait for another account's live move from the same source to finish with its connection.
TURN_S = 900.0
CATCH_UP_S = 30.0
START_S = 20.0
_POLL_S = 0.05
NOT_STARTED = "no replication was set up in the pre-copy"
_INTEGER_TYPES = ("tinyint", "smallint", "mediumint", "int", "bigint")


def connection_name(account: str) -> str:
    """The destination's replication connection for the account (account names are [a-z][a-z0-9]{1,31})."""
    return f"hm_{account}"


def replication_user(account: str) -> str:
    return f"hm_repl_{account}"


def native_password_hash(password: str) -> str:
    """mysql_native_password's stored form: the source is given this, never the password."""
    return "*" + hashlib.sha1(hashlib.sha1(password.encode()).digest()).hexdigest().upper()  # noqa: S324 - the format


def _wild_pattern(database: str) -> str:
    """replicate_wild_do_table's pattern for every table of one database (its _ is a wildcard there)."""
    return database.replace("\\", "\\\\").replace("_", "\\_").replace("%", "\\%") + ".%"


def replication_filter(databases: list[str]) -> str:
    """replicate_wild_do_table for the account's databases. Never empty: an empty filter replicates the whole
    source server (every other account's rows and its user changes, such as another move's ACCOUNT LOCK)."""
    if not databases:
        raise CopyError("mariadb: no database to replicate; an empty filter would replicate the whole server")
    return ",".join(_wild_pattern(database) for database in databases)


def _statuses(conn: Any) -> list[dict]:
    """SHOW ALL SLAVES STATUS: one dict per replication connection."""
    with conn.cursor() as cursor:
        cursor.execute("SHOW ALL SLAVES STATUS")
        columns = [column[0] for column in cursor.description or []]
        return [{columns[i]: value for i, value in enumerate(row)} for row in cursor.fetchall()]


def _status(conn: Any, name: str) -> dict | None:
    """SHOW SLAVE STATUS of one named connection, None if there is none."""
    return next((status for status in _statuses(conn) if status.get("Connection_name") == name), None)


def _master_position(conn: Any) -> tuple[str, int]:
    rows = _query(conn, "SHOW MASTER STATUS")
    if not rows:
        raise CopyError("mariadb: the source writes no binary log (SHOW MASTER STATUS is empty)")
    return rows[0][0], int(rows[0][1])


# ---- what a source server needs (db_live_prereqs) -----------------------------------------------------------------


def binlog_settings(conn: Any) -> dict[str, Any]:
    """The running values live moves depend on."""
    log_bin, binlog_format, server_id = _query(conn, "SELECT @@log_bin, @@binlog_format, @@server_id")[0]
    return {"log_bin": bool(int(log_bin)), "binlog_format": binlog_format, "server_id": int(server_id)}


def missing_binlog_settings(settings: dict[str, Any], server_id: int) -> dict[str, Any]:
    """What to change (name: new value) so the server can be the source, and the destination, of live moves: its
    binary log on, in ROW format (the freeze reads changed rows from it), with the server_id it was given (the two
    servers' must differ, or replication would skip the source's events as its own)."""
    changes: dict[str, Any] = {}
    if not settings["log_bin"]:
        changes["log_bin"] = True
    if settings["binlog_format"] != "ROW":
        changes["binlog_format"] = "ROW"
    if settings["server_id"] != server_id:
        changes["server_id"] = server_id
    return changes


def binlog_config(server_id: int, log_bin: bool) -> str:
    """The option file that keeps the settings across restarts (log_bin: whether it turns the binary log on)."""
    lines = [
        "# Written by hosting.migration.db_live_prereqs: live account moves replicate from the binary log.",
        "[mariadbd]",
    ]
    if log_bin:
        lines.append("log_bin = mysql-bin")
    lines += ["binlog_format = ROW", f"server_id = {int(server_id)}"]
    return "\n".join(lines) + "\n"


def chunk_key(conn: Any, database: str, table: str) -> tuple[str, int] | None:
    """(name, column number) of `table`'s primary key if it is a single integer column, and the table has no
    generated column (the binary log's column numbers would not be the catalog's)."""
    columns = _query(
        conn,
        "SELECT c.COLUMN_NAME, c.ORDINAL_POSITION, c.DATA_TYPE, c.COLUMN_KEY, c.IS_GENERATED "
        "FROM information_schema.COLUMNS c WHERE c.TABLE_SCHEMA = %s AND c.TABLE_NAME = %s",
        (database, table),
    )
    if any(generated != "NEVER" for *_rest, generated in columns):
        return None
    (primary,) = _query(
        conn,
        "SELECT COUNT(*) FROM information_schema.STATISTICS WHERE TABLE_SCHEMA = %s AND TABLE_NAME = %s "
        "AND INDEX_NAME = 'PRIMARY'",
        (database, table),
    )[0]
    keys = [(name, int(ordinal)) for name, ordinal, kind, key, _generated in columns if key == "PRI"]
    if primary != 1 or len(keys) != 1:
        return None
    kind = next(kind for name, _ordinal, kind, _key, _generated in columns if name == keys[0][0])
    return keys[0] if kind in _INTEGER_TYPES else None


def _sums(
    conn: Any, database: str, table: str, columns: list[str], key: str | None, chunks: set[int] | None
) -> dict[int, tuple[int, str]]:
    """Row count and content hash (table_checksums' hash) of each chunk of CHUNK_KEYS values of `table`'s integer
    key `key` (the chunks named, or all), or of the whole table as chunk 0 when it has no such key."""
    target = f"{quote_identifier(database)}.{quote_identifier(table)}"
    prefix = "SET STATEMENT time_zone = '+00:00', max_statement_time = 0 FOR "
    hashed = rows_hash(columns)
    if key is None:
        rows = _query(conn, f"{prefix}SELECT 0, COUNT(*), {hashed} FROM {target}")
    elif chunks is None:
        column = quote_identifier(key)
        rows = _query(
            conn, f"{prefix}SELECT FLOOR({column} / {CHUNK_KEYS}), COUNT(*), {hashed} FROM {target} GROUP BY 1"
        )
    else:
        column = quote_identifier(key)
        rows = []
        for chunk in sorted(chunks):
            low, high = int(chunk) * CHUNK_KEYS, (int(chunk) + 1) * CHUNK_KEYS
            rows += _query(
                conn,
                f"{prefix}SELECT {int(chunk)}, COUNT(*), {hashed} FROM {target} "
                f"WHERE {column} >= {low} AND {column} < {high}",
            )
    return {int(chunk): (int(count), format(int(total), "x")) for chunk, count, total in rows if count}


class MariaDBLiveCopy(LivePlan, MariaDBDumpCopy):
    method = "live"
    # Downtime is the catch-up and the verification, not the copy: bench/account_move_live.py measures it.
    SECONDS_PER_GB = 0.0
    DUMP_SECONDS_PER_GB = MariaDBDumpCopy.SECONDS_PER_GB

    # ---- prerequisites -----------------------------------------------------------------------------------------

    def live_problems(self, source: Any, destination: Any, databases: list[str]) -> list[str]:
        """Why the live method cannot run here (empty if it can)."""
        problems = []
        log_bin, binlog_format, source_id = _query(source, "SELECT @@log_bin, @@binlog_format, @@server_id")[0]
        (destination_id,) = _query(destination, "SELECT @@server_id")[0]
        if not int(log_bin):
            problems.append("the source writes no binary log (log_bin is off; step 3 turns it on)")
        elif binlog_format not in ("ROW", "MIXED"):
            problems.append(f"binlog_format on the source is {binlog_format}, not ROW or MIXED")
        if int(source_id) == int(destination_id):
            problems.append(f"source and destination have the same server_id {source_id} (step 3 sets distinct ones)")
        if databases:
            marks = ", ".join(["%s"] * len(databases))
            events = _query(
                source, f"SELECT EVENT_SCHEMA FROM information_schema.EVENTS WHERE EVENT_SCHEMA IN ({marks})", databases
            )
            if events:
                names = ", ".join(sorted({schema for (schema,) in events}))
                problems.append(f"{names} schedule events, which would run on both servers while replicating")
            (tables,) = _query(
                source,
                "SELECT COUNT(*) FROM information_schema.TABLES "
                f"WHERE TABLE_SCHEMA IN ({marks}) AND TABLE_TYPE = 'BASE TABLE'",
                databases,
            )[0]
            if tables > MAX_TABLES:
                problems.append(f"the databases hold {tables} tables, more than the {MAX_TABLES} one snapshot takes")
        problems += self.check_destination(destination)
        return problems

    def _wait_for_turn(self, destination: Any) -> str | None:
        """MariaDB gives a server one replication connection per source server: while another account's live move
        replicates from this source, wait (bounded; the account is live meanwhile). Returns why it gave up, if it
        did."""
        deadline = time.monotonic() + TURN_S
        while True:
            other = self._other_connection(destination)
            if other is None:
                return None
            if time.monotonic() > deadline:
                return f"{other} still after {TURN_S:g} s (MariaDB gives a server one connection per source server)"
            time.sleep(1.0)

    def _other_connection(self, destination: Any) -> str | None:
        """Another account's live move replicating from the same source server, if there is one."""
        source, ours = (self.source.host, int(self.source.port)), connection_name(self.account)
        for status in _statuses(destination):
            name = status.get("Connection_name")
            if name != ours and (status.get("Master_Host"), int(status.get("Master_Port") or 0)) == source:
                return f"the replication connection {name} (another account's live move) reads this source"
        return None

    # ---- the interface -----------------------------------------------------------------------------------------

    def precopy(self, progress: Progress) -> dict:
        self.write_credentials()
        with self.connected("source") as source, self.connected("destination") as destination:
            databases = self.databases(source)
            if not databases:
                # Nothing to replicate (the account's users travel at the freeze): no connection, no turn taken;
                # one an earlier attempt left (its databases dropped since) goes.
                self.drop_replication()
                return {"method": "live", "databases": {}}
            reasons = self.live_problems(source, destination, databases)
            if reasons:
                return {"method": "dump", "live_problems": reasons}
            if self._replicating(destination, databases) is None:
                return {"method": "live", "databases": dict.fromkeys(databases, "resumed")}
            self.drop_replication()
            waited = self._wait_for_turn(destination)
            if waited:
                return {"method": "dump", "live_problems": [waited]}
            self._step("copying users", lambda: self.copy_users(source, destination))
            for database in databases:
                self._step(
                    f"preparing database {database}", lambda d=database: self.prepare_database(d, source, destination)
                )
            position = self._load_snapshot(databases, source, progress)
            for database in databases:
                self._step(
                    f"finishing database {database}", lambda d=database: self.finish_database(d, source, destination)
                )
            while True:
                try:
                    self._start(position, databases, source, destination)
                    break
                except pymysql.err.OperationalError as error:
                    if error.args[0] != _CONNECTION_CONFLICT:
                        raise CopyError(f"mariadb: starting the replication failed: {error}") from error
                    # Another account's move started its connection from this source meanwhile: its turn first.
                    # The snapshot's position stays good (the source keeps its binary log).
                    self.drop_replication()
                    waited = self._wait_for_turn(destination)
                    if waited:
                        return {"method": "dump", "live_problems": [waited]}
                except Exception as error:
                    raise CopyError(f"mariadb: starting the replication failed: {error}") from error
        return {"method": "live", "databases": dict.fromkeys(databases, "started")}

    def _replicating(self, destination: Any, databases: list[str]) -> str | None:
        """Why the account's connection cannot simply go on (None: it runs, filtered to exactly `databases`, and a
        re-run keeps it)."""
        name = connection_name(self.account)
        status = _status(destination, name)
        if status is None:
            return NOT_STARTED
        if status.get("Slave_SQL_Running") != "Yes":
            error = status.get("Last_SQL_Error") or status.get("Last_IO_Error") or "stopped"
            return f"the replication connection {name} is not running: {error}"
        # A filter set with SET GLOBAL does not survive a restart of the destination server (the connection then
        # replicates the whole source), and the account's databases may have changed since the connection started.
        found = set(filter(None, (status.get("Replicate_Wild_Do_Table") or "").split(",")))
        if not databases or found != {_wild_pattern(database) for database in databases}:
            return f"the replication connection {name} is not filtered to the account's databases"
        return None

    def _load_snapshot(self, databases: list[str], source: Any, progress: Progress) -> tuple[str, int]:
        """Every table of the account as of one binary log position, which it returns."""
        gate = "hm_gate_" + secrets.token_hex(8)
        # The reader starts its snapshot, then waits for the gate: a named lock this session holds until every
        # reader waits (so every snapshot was taken under the READ locks below).
        before = f"START TRANSACTION WITH CONSISTENT SNAPSHOT; DO GET_LOCK('{gate}', 3600); DO RELEASE_LOCK('{gate}'); "
        jobs, targets, finishes = [], [], []
        for database in databases:
            statistics = self._statistics.pop(database)
            for table, columns in _columns(source, database, ("BASE TABLE",), generated=False).items():
                target = f"{quote_identifier(database)}.{quote_identifier(table)}"
                stages = self._table_stages(database, table, target, columns, before=before)
                jobs.append(Job(f"{database}.{table}", 0, lambda stages=stages: self.run(stages)))
                targets.append(target)
                # Statistics once every table is in: all load at once here, and an ALTER of a table that another
                # one's foreign key names waits for that one's whole load (a lock wait timeout at 4 GB).
                finishes.append(self._table_work(database, target, [], statistics[table]))
        counters = {"tables_done": 0, "tables_total": len(jobs)}
        progress("precopy", **counters)
        if not jobs:
            return _master_position(source)
        failures: list[BaseException] = []

        def done(job: Job) -> None:
            counters["tables_done"] += 1
            progress("precopy", **counters)

        def load() -> None:
            try:
                self.run_parallel(jobs, done)
            except BaseException as error:  # noqa: BLE001 - handed to the caller's thread
                failures.append(error)

        lock = self.connect(self.source)
        runner = threading.Thread(target=load, name="mariadb-snapshot")
        parallel, self.parallel = self.parallel, len(jobs)  # every reader holds its snapshot at once
        try:
            _query(lock, "SET SESSION lock_wait_timeout = 10")
            if not _query(lock, "SELECT GET_LOCK(%s, 0)", (gate,))[0][0]:
                raise CopyError("mariadb: could not take the snapshot's gate lock")
            _query(lock, "LOCK TABLES " + ", ".join(f"{target} READ" for target in targets))
            position = _master_position(lock)
            runner.start()
            self._wait_for_readers(source, gate, len(jobs), runner)
        finally:
            try:
                _query(lock, "UNLOCK TABLES")
                _query(lock, "DO RELEASE_LOCK(%s)", (gate,))
            finally:
                lock.close()
                if runner.ident is not None:  # started
                    runner.join()
                self.parallel = parallel
        if failures:
            raise failures[0]
        for finish in finishes:
            self._step("computing the loaded tables' statistics", finish)
        self._close_worker_connections()
        return position

    def _wait_for_readers(self, source: Any, gate: str, count: int, runner: threading.Thread) -> None:
        deadline = time.monotonic() + GATE_S
        while True:
            (waiting,) = _query(
                source,
                "SELECT COUNT(*) FROM information_schema.PROCESSLIST WHERE STATE = 'User lock' AND INFO LIKE %s",
                (f"%GET_LOCK('{gate}'%",),
            )[0]
            if waiting >= count:
                return
            if not runner.is_alive():
                return  # a reader failed: its error is raised once the locks are released
            if time.monotonic() > deadline:
                raise CopyError(f"mariadb: only {waiting} of {count} table readers took their snapshot in {GATE_S:g} s")
            time.sleep(_POLL_S)

    def _start(self, position: tuple[str, int], databases: list[str], source: Any, destination: Any) -> None:
        name, user = connection_name(self.account), replication_user(self.account)
        patterns = replication_filter(databases)  # before anything is created: a refusal leaves nothing behind
        password = secrets.token_urlsafe(24)
        # Where the source sees this host from: the destination server connects from here too.
        (address,) = _query(source, "SELECT SUBSTRING_INDEX(USER(), '@', -1)")[0]
        # Kept out of the binary log: the user must not replicate to the destination with the account's rows.
        _query(source, "SET SESSION sql_log_bin = 0")
        _query(source, "CREATE USER %s@%s IDENTIFIED BY PASSWORD %s", (user, address, native_password_hash(password)))
        _query(source, "GRANT REPLICATION SLAVE ON *.* TO %s@%s", (user, address))
        _query(
            destination,
            "CHANGE MASTER %s TO MASTER_HOST = %s, MASTER_PORT = %s, MASTER_USER = %s, MASTER_PASSWORD = %s, "
            "MASTER_LOG_FILE = %s, MASTER_LOG_POS = %s, MASTER_USE_GTID = no, MASTER_CONNECT_RETRY = 1",
            (name, self.source.host, int(self.source.port), user, password, position[0], position[1]),
        )
        _query(destination, "SET @@default_master_connection = %s", (name,))
        try:
            _query(destination, "SET GLOBAL replicate_wild_do_table = %s", (patterns,))
        finally:
            _query(destination, "SET @@default_master_connection = ''")
        _query(destination, "START SLAVE %s", (name,))
        deadline = time.monotonic() + START_S
        while True:
            status = _status(destination, name) or {}
            if status.get("Slave_IO_Running") == "Yes" and status.get("Slave_SQL_Running") == "Yes":
                return
            if time.monotonic() > deadline:
                error = status.get("Last_IO_Error") or status.get("Last_SQL_Error") or "no error given"
                raise CopyError(f"mariadb: the replication connection {name} did not start in {START_S:g} s: {error}")
            time.sleep(_POLL_S)

    def copy(self, progress: Progress) -> dict:
        started = time.monotonic()
        self.write_credentials()
        with self.connected("source") as source, self.connected("destination") as destination:
            databases, sizes, counters = self._inventory(source)
            reason = self._step("checking the replication", lambda: self._not_live(source, destination, databases))
            if reason is None:
                caught_up = time.monotonic()
                reason = self._step("catching up with the source", lambda: self._catch_up(source, destination))
                waited = round(time.monotonic() - caught_up, 3)
            copied = {}
            if reason is None:
                for database in databases:
                    self.copy_sequences(database, source, destination)
                self.drop_replication()
                for database in databases:
                    counters["bytes_done"] += sizes[database]
                    copied[database] = {"seconds": waited, "catch_up_seconds": waited, "bytes": sizes[database],
                                        "method": "live"}  # fmt: skip
                progress("databases", **counters)
            else:
                self.drop_replication()
                for database in databases:
                    copied[database] = self._copy_database(
                        database, sizes[database], source, destination, counters, progress
                    )
                    copied[database].update(method="dump", live_problem=reason)
            users = self._step("copying users", lambda: self.copy_users(source, destination))
        return self._copied(started, counters, copied, users)

    def _not_live(self, source: Any, destination: Any, databases: list[str]) -> str | None:
        """Why the databases cannot finish by catch-up (None: they can)."""
        if not databases:
            return "no MariaDB database to replicate"
        reason = self._replicating(destination, databases)
        if reason == NOT_STARTED:
            return "; ".join(self.live_problems(source, destination, databases)) or reason
        if reason is not None:
            return reason
        for database in databases:
            if sorted(_columns(source, database, ("BASE TABLE",), generated=True)) != sorted(
                _columns(destination, database, ("BASE TABLE",), generated=True)
            ):
                return f"the tables of {database} changed since the pre-copy"
        return None

    def _catch_up(self, source: Any, destination: Any) -> str | None:
        """Wait until the connection executed everything the source logged up to now; None, or why it did not."""
        name = connection_name(self.account)
        log_file, log_position = _master_position(source)
        (executed,) = _query(
            destination, "SELECT MASTER_POS_WAIT(%s, %s, %s, %s)", (log_file, log_position, CATCH_UP_S, name)
        )[0]
        if executed is not None and int(executed) >= 0:
            return None
        status = _status(destination, name) or {}
        error = status.get("Last_SQL_Error") or status.get("Last_IO_Error")
        if executed is None:
            return f"the replication connection {name} stopped: {error or 'no error given'}"
        return f"the replication connection {name} did not catch up with the source within {CATCH_UP_S:g} s"

    # ---- verification that does not grow the freeze with size --------------------------------------------------

    def verify_live(self, database: str, rounds: int = 3) -> dict:
        """While the account runs, compare both sides' content: the source's in one consistent snapshot, the
        destination's once it executed the source's position after that snapshot. Both servers' binary log
        positions are noted first, so the freeze reads from the logs which rows changed since (the source's: only
        their chunks are hashed again; the destination's: any change there is a difference). A table with a single
        integer primary key is compared by chunks of its key range, so later rounds re-hash only the chunks that
        differed (rows written meanwhile); other tables as a whole. Returns {"recording": positions, "tables":
        {table: its key, the key's column number and the chunks still differing}}; empty (the freeze hashes
        everything) where the logs cannot tell rows: the source's log not in ROW format, or no log here. A table
        never found equal as a whole is left out (the freeze hashes it)."""
        with self.connected("source", database) as source, self.connected("destination", database) as destination:
            (binlog_format,) = _query(source, "SELECT @@binlog_format")[0]
            (logging,) = _query(destination, "SELECT @@log_bin")[0]
            if binlog_format != "ROW" or not int(logging):
                return {}
            recording = {"source": _master_position(source), "destination": _master_position(destination)}
            columns = _columns(source, database, ("BASE TABLE",), generated=True)
            keys = {table: chunk_key(source, database, table) for table in columns}
            names = {table: key and key[0] for table, key in keys.items()}

            def sums(conn: Any, pending: dict[str, set[int] | None]) -> dict[str, dict]:
                return {t: _sums(conn, database, t, columns[t], names[t], chunks) for t, chunks in pending.items()}

            def source_sums(pending: dict[str, set[int] | None]) -> dict[str, dict]:
                _query(source, "START TRANSACTION WITH CONSISTENT SNAPSHOT, READ ONLY")
                try:
                    return sums(source, pending)
                finally:
                    _query(source, "COMMIT")

            tables = compare_rounds(
                names,
                source_sums,
                lambda pending: sums(destination, pending),
                lambda: self._catch_up(source, destination) is None,
                rounds,
            )
        for table, record in tables.items():
            record["ordinal"] = keys[table] and keys[table][1]
        return {"recording": recording, "tables": tables}

    def freeze_differences(self, database: str, verified: dict) -> tuple[list[str], list[str]]:
        """In the freeze, after the catch-up: the differences between the two sides, without re-reading what the
        live verification compared. From the binary logs since then: the chunks of the rows the source changed
        (and those that still differed) are hashed again on both sides; a row the destination changed itself is a
        difference. Tables not verified live, tables changed without a readable key, every table when a statement
        may have changed the database, and sequences are hashed whole. Returns (differences, tables hashed whole,
        sequences aside)."""
        tables, recording = verified.get("tables") or {}, verified.get("recording")
        differences: list[str] = []
        self.write_credentials()  # mariadb-binlog reads each server's log with its option file
        with self.connected("source") as source, self.connected("destination") as destination:
            sequences = set(self._tables(source, database, "SEQUENCE")) | set(
                self._tables(destination, database, "SEQUENCE")
            )
            columns = _columns(source, database, ("BASE TABLE",), generated=True)
            to_hash = set(columns) | set(_columns(destination, database, ("BASE TABLE",), generated=True))
            changes = self._logged_changes(database, tables, recording) if tables and recording else None
            if changes is not None:
                on_source, on_destination = changes
                for table in sorted(set(on_destination.rows) - sequences):
                    differences.append(
                        f"mariadb table {database}.{table}: rows changed on the destination outside the replication"
                    )
                for table, record in tables.items() if not on_source.statements else ():
                    rows = on_source.rows.get(table, set())
                    if rows is None:
                        continue  # stays in to_hash
                    to_hash.discard(table)
                    chunks = chunks_of(rows, record["pending"])
                    if chunks:
                        ours = _sums(source, database, table, columns[table], record["key"], chunks)
                        theirs = _sums(destination, database, table, columns[table], record["key"], chunks)
                        differences += chunk_differences(
                            "mariadb", database, table, record["key"], chunks, ours, theirs
                        )
            whole = to_hash | sequences
            ours, theirs = table_checksums(source, database, whole), table_checksums(destination, database, whole)
        differences += [
            f"mariadb table {database}.{table}: source {ours.get(table)} != destination {theirs.get(table)}"
            for table in sorted(whole)
            if ours.get(table) != theirs.get(table)
        ]
        return differences, sorted(to_hash)

    def _logged_changes(
        self, database: str, tables: dict[str, dict], recording: dict
    ) -> tuple[mariadb_binlog.Changes, mariadb_binlog.Changes] | None:
        """What the source's and the destination's binary logs say changed in the database since the live
        verification began; None when a log cannot be read (purged meanwhile, say): then everything is hashed."""
        keys = {table: record["ordinal"] for table, record in tables.items() if record["key"]}
        try:
            return (
                mariadb_binlog.read_changes(self._binlog(self._source_file, recording["source"]), database, keys),
                mariadb_binlog.read_changes(
                    self._binlog(self._destination_file, recording["destination"]), database, {}
                ),
            )
        except CopyError:
            return None

    def _binlog(self, options_file: str, start: list) -> list[str]:
        """A server's binary log from `start` (file, position) to its end, rows decoded."""
        if not options_file:  # without one it would read this host's own log, as root
            raise CopyError("mariadb-binlog: no option file for the server")
        command = [
            "mariadb-binlog",
            f"--defaults-extra-file={options_file}",
            "--read-from-remote-server",
            "--base64-output=decode-rows",
            "--verbose",
            f"--start-position={int(start[1])}",
            "--to-last-log",
            str(start[0]),
        ]
        try:
            done = subprocess.run(command, capture_output=True, timeout=CATCH_UP_S * 4, check=False)  # noqa: S603
        except (OSError, subprocess.TimeoutExpired) as error:
            raise CopyError(f"mariadb-binlog: {error}") from error
        if done.returncode != 0:
            raise CopyError(f"mariadb-binlog failed: {done.stderr.decode(errors='replace')[-500:]}")
        return done.stdout.decode("utf-8", errors="replace").splitlines()

    # ---- what is left behind: nothing ------------------------------------------------------------------------------

    def drop_account_replication(self, databases: list[str]) -> None:
        # One connection serves all the account's databases: removed even when the account has none left.
        self.drop_replication()

    def drop_replication(self, database: str | None = None) -> None:
        """Stop and remove the account's replication connection and its user on the source; idempotent. One
        connection serves all the account's databases, so any `database` removes it all."""
        name, user = connection_name(self.account), replication_user(self.account)
        with self.connected("destination") as destination:
            if _status(destination, name) is not None:
                _query(destination, "STOP SLAVE %s", (name,))
                _query(destination, "RESET SLAVE %s ALL", (name,))
        with self.connected("source") as source:
            _query(source, "SET SESSION sql_log_bin = 0")
            for (host,) in _query(source, "SELECT Host FROM mysql.user WHERE User = %s", (user,)):
                _query(source, "DROP USER %s@%s", (user, host))
