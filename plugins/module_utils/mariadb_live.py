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

Where a prerequisite does not hold (binary log, distinct server_id, no events in the databases, not too many
tables) or the connection broke or did not catch up, the databases travel by the dump method and the result says
why. Nothing of the replication is left after a move, a failure or a rollback (drop_replication).
"""

from __future__ import annotations

import hashlib
import secrets
import threading
import time
from typing import Any

from ansible_collections.hosting.migration.plugins.module_utils.dbcopy import CopyError, Job, Progress
from ansible_collections.hosting.migration.plugins.module_utils.mariadb import (
    MariaDBDumpCopy,
    _columns,
    _query,
    quote_identifier,
    table_checksums,
)

# Readers held in their snapshot at once: each is a connection to the source.
MAX_TABLES = 100
GATE_S = 60.0
CATCH_UP_S = 30.0
START_S = 20.0
_POLL_S = 0.05
NOT_STARTED = "no replication was set up in the pre-copy"


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


def _status(conn: Any, name: str) -> dict | None:
    """SHOW SLAVE STATUS of one named connection, None if there is none."""
    with conn.cursor() as cursor:
        cursor.execute("SHOW ALL SLAVES STATUS")
        columns = [column[0] for column in cursor.description or []]
        for row in cursor.fetchall():
            status = {columns[i]: value for i, value in enumerate(row)}
            if status.get("Connection_name") == name:
                return status
    return None


def _master_position(conn: Any) -> tuple[str, int]:
    rows = _query(conn, "SHOW MASTER STATUS")
    if not rows:
        raise CopyError("mariadb: the source writes no binary log (SHOW MASTER STATUS is empty)")
    return rows[0][0], int(rows[0][1])


class MariaDBLiveCopy(MariaDBDumpCopy):
    method = "live"
    SECONDS_PER_GB = 0.0
    CATCH_UP_SECONDS = 3.0

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

    # ---- the interface -----------------------------------------------------------------------------------------

    def plan(self) -> dict:
        plan = super().plan()
        with self.connected("source") as source, self.connected("destination") as destination:
            reasons = self.live_problems(source, destination, list(plan["databases"]))
        if reasons:
            plan.update(method="dump", live_problems=reasons)
            plan["estimated_seconds"] = round(1 + plan["bytes"] / 2**30 * MariaDBDumpCopy.SECONDS_PER_GB, 1)
        else:
            plan["estimated_seconds"] = self.CATCH_UP_SECONDS
        return plan

    def precopy(self, progress: Progress) -> dict:
        self.write_credentials()
        with self.connected("source") as source, self.connected("destination") as destination:
            databases = self.databases(source)
            reasons = self.live_problems(source, destination, databases)
            if reasons:
                return {"method": "dump", "live_problems": reasons}
            if self._replicating(destination) is None:
                return {"method": "live", "databases": dict.fromkeys(databases, "resumed")}
            self.drop_replication()
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
            self._step("starting the replication", lambda: self._start(position, databases, source, destination))
        return {"method": "live", "databases": dict.fromkeys(databases, "started")}

    def _replicating(self, destination: Any) -> str | None:
        """Why the account's connection cannot simply go on (None: it runs, a re-run keeps it)."""
        status = _status(destination, connection_name(self.account))
        if status is None:
            return NOT_STARTED
        if status.get("Slave_SQL_Running") != "Yes":
            error = status.get("Last_SQL_Error") or status.get("Last_IO_Error") or "stopped"
            return f"the replication connection {connection_name(self.account)} is not running: {error}"
        return None

    def _load_snapshot(self, databases: list[str], source: Any, progress: Progress) -> tuple[str, int]:
        """Every table of the account as of one binary log position, which it returns."""
        gate = "hm_gate_" + secrets.token_hex(8)
        # The reader starts its snapshot, then waits for the gate: a named lock this session holds until every
        # reader waits (so every snapshot was taken under the READ locks below).
        before = f"START TRANSACTION WITH CONSISTENT SNAPSHOT; DO GET_LOCK('{gate}', 3600); DO RELEASE_LOCK('{gate}'); "
        jobs, targets = [], []
        for database in databases:
            statistics = self._statistics.pop(database)
            for table, columns in _columns(source, database, ("BASE TABLE",), generated=False).items():
                target = f"{quote_identifier(database)}.{quote_identifier(table)}"
                stages = self._table_stages(database, table, target, columns, before=before)
                work = self._table_work(database, target, stages, statistics[table])
                jobs.append(Job(f"{database}.{table}", 0, work))
                targets.append(target)
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
                if runner.is_alive() or runner.ident is not None:
                    runner.join()
                self.parallel = parallel
        if failures:
            raise failures[0]
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
            patterns = ",".join(_wild_pattern(database) for database in databases)
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
            databases = self.databases(source)
            sizes = self.database_sizes(source, databases)
            counters = {"bytes_done": 0, "bytes_total": sum(sizes.values()), "tables_done": 0, "tables_total": 0}
            reason = self._not_live(source, destination, databases)
            if reason is None:
                caught_up = time.monotonic()
                reason = self._catch_up(source, destination)
                waited = round(time.monotonic() - caught_up, 3)
            copied = {}
            if reason is None:
                for database in databases:
                    self.finish_sequences(database, source, destination)
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
        return {
            "engine": self.engine,
            "method": self.method,
            "seconds": round(time.monotonic() - started, 3),
            "bytes": counters["bytes_total"],
            "databases": copied,
            "users": users,
        }

    def _not_live(self, source: Any, destination: Any, databases: list[str]) -> str | None:
        """Why the databases cannot finish by catch-up (None: they can)."""
        reason = self._replicating(destination)
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

    def finish_sequences(self, database: str, source: Any, destination: Any) -> None:
        for sequence in self._tables(source, database, "SEQUENCE"):
            target = f"{quote_identifier(database)}.{quote_identifier(sequence)}"
            (next_value,) = _query(source, f"SELECT next_not_cached_value FROM {target}")[0]
            _query(destination, f"SELECT SETVAL({target}, %s, 0)", (int(next_value),))

    # ---- verification --------------------------------------------------------------------------------------------

    def verify_live(self, database: str) -> dict[str, dict]:
        """Nothing is compared while live yet: the freeze hashes every table (freeze_differences)."""
        return {}

    def freeze_differences(self, database: str, verified: dict[str, dict]) -> tuple[list[str], list[str]]:
        """In the freeze, after the catch-up: every table hashed on both sides. Returns (differences, tables
        hashed whole)."""
        with self.connected("source") as source, self.connected("destination") as destination:
            ours, theirs = table_checksums(source, database), table_checksums(destination, database)
        differences = [
            f"mariadb table {database}.{table}: source {ours.get(table)} != destination {theirs.get(table)}"
            for table in sorted(ours.keys() | theirs.keys())
            if ours.get(table) != theirs.get(table)
        ]
        return differences, sorted(ours.keys() | theirs.keys())

    # ---- what is left behind: nothing ------------------------------------------------------------------------------

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
