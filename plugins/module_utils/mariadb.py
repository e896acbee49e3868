# Copyright: hosting.migration contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""MariaDB for account moves: endpoints whose password never reaches a command line, the account's databases and
users (exactly `<account>_*` and `<account>`/`<account>_*`), their export with password hashes and grants, freezing
them, order-independent table checksums, and the dump copy method (MariaDBDumpCopy).

Identifiers are validated, then quoted by backtick-doubling; values are bound parameters (PyMySQL escapes them
client-side, which also works in statements the server cannot prepare, like SHOW GRANTS FOR %s@%s).
"""

from __future__ import annotations

import re
import traceback
from collections.abc import Callable, Sequence
from typing import Any

from ansible_collections.hosting.migration.plugins.module_utils.account import validate_account_name
from ansible_collections.hosting.migration.plugins.module_utils.dbcopy import (
    CopyError,
    DumpCopy,
    Job,
    Stage,
    owned_name,
)
from ansible_collections.hosting.migration.plugins.module_utils.dbcopy import (
    Endpoint as BaseEndpoint,
)

try:
    import pymysql
except ImportError:
    HAS_PYMYSQL = False
    DRIVER_IMPORT_ERROR: str | None = traceback.format_exc()
else:
    HAS_PYMYSQL = True
    DRIVER_IMPORT_ERROR = None

# The same names in postgres.py let callers treat the engines alike (missing_required_lib(DRIVER_NAME)).
HAS_DRIVER = HAS_PYMYSQL
DRIVER_NAME = "PyMySQL"

# Host part of a user account: names, addresses, wildcards, netmasks.
_HOST_RE = re.compile(r"[A-Za-z0-9.%_:/-]{1,255}")
# MariaDB's error for KILL of a connection that ended meanwhile.
_UNKNOWN_THREAD = 1094
# Loading sessions: the data is the source's, so strict mode turns any conversion into an error instead of a
# silent change; zero and invalid dates the source holds stay loadable; an explicit 0 stays 0 in AUTO_INCREMENT.
_LOAD_SQL_MODE = "STRICT_ALL_TABLES,NO_AUTO_VALUE_ON_ZERO,ALLOW_INVALID_DATES"
WORKER_SESSION = (
    "SET SESSION foreign_key_checks = 0, unique_checks = 0, max_statement_time = 0, innodb_lock_wait_timeout = 86400, "
    "sql_mode = 'NO_AUTO_VALUE_ON_ZERO'"
)
_STATS_AUTO_RECALC = re.compile(r" STATS_AUTO_RECALC=(\d)")


class Endpoint(BaseEndpoint):
    ENGINE = "MariaDB"
    DEFAULT_PORT = 3306

    def option_file(self) -> str:
        """A [client] section for --defaults-extra-file (written 0600): the password stays out of argv and env."""
        return (
            "[client]\n"
            f"host={_option_value(self.host)}\n"
            f"port={int(self.port)}\n"
            f"user={_option_value(self.user)}\n"
            f"password={_option_value(self.password)}\n"
            "protocol=tcp\n"
        )


# The module builds endpoints from its options: endpoint(host=..., user=..., password=..., port=None).
endpoint = Endpoint.from_options


def _option_value(value: str) -> str:
    # A double-quoted option value takes backslash escapes, and '#' inside it does not start a comment.
    escaped = (
        value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n").replace("\r", "\\r").replace("\t", "\\t")
    )
    return f'"{escaped}"'


def connect(endpoint: Endpoint, database: str | None = None) -> Any:
    return pymysql.connect(
        host=endpoint.host,
        port=endpoint.port,
        user=endpoint.user,
        password=endpoint.password,
        database=database,
        charset="utf8mb4",
        autocommit=True,
        connect_timeout=10,
    )


def quote_identifier(name: str) -> str:
    if not name or "\0" in name:
        raise ValueError(f"invalid MariaDB identifier {name!r}")
    return "`" + name.replace("`", "``") + "`"


def _query(conn: Any, statement: str, args: Sequence[Any] | None = None) -> list[tuple]:
    """Run one statement; without args PyMySQL leaves '%' alone (server-generated DDL may contain it)."""
    with conn.cursor() as cursor:
        cursor.execute(statement, args)
        return list(cursor.fetchall())


def server_version(conn: Any) -> tuple[int, ...]:
    (version,) = _query(conn, "SELECT VERSION()")[0]
    return tuple(int(part) for part in re.match(r"(\d+)\.(\d+)\.(\d+)", version).groups())


def _like_prefix(account: str) -> str:
    # `_` is a LIKE wildcard: unescaped, account "ali" would match "alice_shop".
    return validate_account_name(account) + "\\_%"


def _valid_host(host: object) -> str:
    if isinstance(host, str) and _HOST_RE.fullmatch(host):
        return host
    raise ValueError(f"MariaDB account host {host!r} is not a host name, address, netmask or wildcard")


def account_databases(conn: Any, account: str) -> list[str]:
    """The account's databases on this server: exactly `<account>_*`, each name checked again."""
    rows = _query(
        conn, "SELECT SCHEMA_NAME FROM information_schema.SCHEMATA WHERE SCHEMA_NAME LIKE %s", (_like_prefix(account),)
    )
    # information_schema compares case-insensitively; MariaDB on Linux does not.
    names = [name for (name,) in rows if name.startswith(account + "_")]
    return sorted(owned_name(name, account, "MariaDB database", bare=False) for name in names)


def _user_states(conn: Any, account: str) -> list[tuple[str, str, bool]]:
    """(user, host, locked) of the account's users; roles (empty host) are not users."""
    rows = _query(
        conn,
        "SELECT User, Host, IFNULL(JSON_VALUE(Priv, '$.account_locked'), 'false') IN ('true', '1') "
        "FROM mysql.global_priv WHERE Host <> '' AND (User = %s OR User LIKE %s) ORDER BY User, Host",
        (account, _like_prefix(account)),
    )
    return [
        (owned_name(user, account, "MariaDB user", bare=True), _valid_host(host), bool(locked))
        for user, host, locked in rows
    ]


def account_users(conn: Any, account: str) -> list[tuple[str, str]]:
    """The account's users as (user, host): `<account>` and `<account>_*`."""
    return [(user, host) for user, host, _locked in _user_states(conn, account)]


def export_users(conn: Any, account: str) -> list[dict]:
    """Each user with the statements that recreate it: SHOW CREATE USER (password hash, lock state, limits) and
    SHOW GRANTS. The result holds password hashes: never return it from a module."""
    exported = []
    for user, host in account_users(conn, account):
        create = _query(conn, "SHOW CREATE USER %s@%s", (user, host))[0][0]
        grants = [row[0] for row in _query(conn, "SHOW GRANTS FOR %s@%s", (user, host))]
        exported.append({"user": user, "host": host, "create": create, "grants": grants})
    return exported


def import_users(conn: Any, users: list[dict], account: str) -> list[str]:
    """Recreate exported users exactly (dropped first, so a re-run converges); returns 'user@host' names."""
    done = []
    for entry in users:
        user = owned_name(entry["user"], account, "MariaDB user", bare=True)
        host = _valid_host(entry["host"])
        statements = [entry["create"], *entry["grants"]]
        for statement in statements:
            if not statement.startswith(("CREATE USER ", "GRANT ", "SET DEFAULT ROLE ")):
                raise ValueError(f"unexpected statement in the export of {user}@{host}: {statement[:40]!r}")
        _query(conn, "DROP USER IF EXISTS %s@%s", (user, host))
        for statement in statements:
            _query(conn, statement)
        done.append(f"{user}@{host}")
    return done


def freeze_users(conn: Any, account: str) -> dict:
    """Lock the account's users (ACCOUNT LOCK: no new session) and end their sessions. Returns what it changed, for
    unfreeze_users: users already locked (by the provider, or by a previous freeze) are not listed, so they stay
    locked. Idempotent; a re-run after a crash changes nothing more and returns no user, so keep the first record."""
    states = _user_states(conn, account)
    locked = []
    for user, host, is_locked in states:
        if not is_locked:
            _query(conn, "ALTER USER %s@%s ACCOUNT LOCK", (user, host))
            locked.append({"user": user, "host": host})
    return {
        "account": account,
        "users": locked,
        "sessions_ended": _end_sessions(conn, {user for user, _host, _locked in states}),
    }


def _end_sessions(conn: Any, users: set[str]) -> int:
    if not users:
        return 0
    marks = ", ".join(["%s"] * len(users))
    ended = 0
    for (session,) in _query(
        conn, f"SELECT ID FROM information_schema.PROCESSLIST WHERE USER IN ({marks})", sorted(users)
    ):
        try:
            _query(conn, "KILL CONNECTION %s", (int(session),))
            ended += 1
        except pymysql.err.MySQLError as error:
            if error.args[0] != _UNKNOWN_THREAD:
                raise
    return ended


def unfreeze_users(conn: Any, changes: dict) -> dict:
    """Undo freeze_users exactly: unlock the users it locked (checked again: the record may come from a journal).
    Idempotent; users gone since are skipped."""
    account = validate_account_name(changes["account"])
    locked_now = {(user, host) for user, host, is_locked in _user_states(conn, account) if is_locked}
    unlocked = []
    for entry in changes.get("users", []):
        user = owned_name(entry["user"], account, "MariaDB user", bare=True)
        host = _valid_host(entry["host"])
        if (user, host) in locked_now:
            _query(conn, "ALTER USER %s@%s ACCOUNT UNLOCK", (user, host))
            unlocked.append({"user": user, "host": host})
    return {"account": account, "users": unlocked}


def _columns(conn: Any, database: str, table_types: tuple[str, ...], *, generated: bool) -> dict[str, list[str]]:
    """Columns per table of `database` (tables of the given TABLE_TYPEs), in table order."""
    marks = ", ".join(["%s"] * len(table_types))
    rows = _query(
        conn,
        "SELECT c.TABLE_NAME, c.COLUMN_NAME FROM information_schema.COLUMNS c JOIN information_schema.TABLES t "
        "ON t.TABLE_SCHEMA = c.TABLE_SCHEMA AND t.TABLE_NAME = c.TABLE_NAME "
        f"WHERE c.TABLE_SCHEMA = %s AND t.TABLE_TYPE IN ({marks})"
        + ("" if generated else " AND c.IS_GENERATED = 'NEVER'")
        + " ORDER BY c.TABLE_NAME, c.ORDINAL_POSITION",
        (database, *table_types),
    )
    columns: dict[str, list[str]] = {}
    for table, column in rows:
        columns.setdefault(table, []).append(column)
    return columns


def table_checksums(conn: Any, database: str, only: set[str] | None = None) -> dict[str, tuple[int, str]]:
    """{table: (row_count, content_hash)} for the base tables and sequences of `database`, computed by the server.

    The hash is the sum over rows of a 60-bit slice of MD5 of the row's canonical text (every column's bytes joined
    by '#', plus which columns are NULL), as pt-table-checksum does: independent of row order, equal on two servers
    with the same data, different when a byte changes or a row is swapped for another. Times are read in UTC so the
    servers' time zones do not matter. `only`: these tables alone."""
    sums = {}
    quoted_db = quote_identifier(database)
    for table, columns in _columns(conn, database, ("BASE TABLE", "SEQUENCE"), generated=True).items():
        if only is not None and table not in only:
            continue
        count, total = _query(
            conn,
            "SET STATEMENT time_zone = '+00:00', max_statement_time = 0 FOR "
            f"SELECT COUNT(*), {rows_hash(columns)} FROM {quoted_db}.{quote_identifier(table)}",
        )[0]
        sums[table] = (int(count), format(int(total), "x"))
    return sums


def rows_hash(columns: list[str]) -> str:
    """The aggregate of table_checksums' hash over the rows a query selects (from a table with these columns)."""
    quoted = [quote_identifier(column) for column in columns]
    row_text = (
        "CONCAT_WS('#', "
        + ", ".join(f"CAST({c} AS BINARY)" for c in quoted)
        + ", CONCAT("
        + ", ".join(f"ISNULL({c})" for c in quoted)
        + "))"
    )
    return f"COALESCE(SUM(CAST(CONV(LEFT(MD5({row_text}), 15), 16, 10) AS UNSIGNED)), 0)"


def loadable_table(create: str) -> tuple[str, str | None]:
    """SHOW CREATE TABLE turned into the table to load: InnoDB's background statistics off (they would be
    recomputed at every 10% of growth, on the loader's CPU). Returns it with the table's own STATS_AUTO_RECALC to
    put back afterwards ("DEFAULT" when it had none), or None for other engines."""
    lines = create.split("\n")
    close = next(i for i, line in enumerate(lines) if line.startswith(")"))
    if " ENGINE=InnoDB" not in lines[close]:
        return create, None
    head, comment, rest = lines[close].partition(" COMMENT='")
    found = _STATS_AUTO_RECALC.search(head)
    lines[close] = _STATS_AUTO_RECALC.sub("", head) + " STATS_AUTO_RECALC=0" + comment + rest
    return "\n".join(lines), found.group(1) if found else "DEFAULT"


class MariaDBDumpCopy(DumpCopy):
    """The dump method for MariaDB, streaming each table with the mariadb client on both ends:

    source `SELECT QUOTE(col), ...` (every value as an SQL literal, NULL as the word NULL) | destination
    `LOAD DATA LOCAL INFILE '/dev/stdin' ... ENCLOSED BY "'"` in sessions without unique and foreign key checks,
    into tables created from SHOW CREATE TABLE without background statistics. Tables load in parallel; each gets
    its statistics setting back and an ANALYZE as soon as its rows are in. Then triggers (after the rows, so that
    they do not fire on them), sequence values, and last the users (their grants may name tables).
    Keys stay in the tables while loading: with InnoDB's change buffer that measured as fast at 0.25 GB and 8%
    faster at 1 GB than building them afterwards (innodb_sort_buffer_size is small and cannot change at runtime).
    Every setting is per session or per table on the destination: nothing global changes, so a killed copy leaves
    no server setting behind (a re-run drops and recreates the databases)."""

    engine = "mariadb"
    SECONDS_PER_GB = 24.0  # bench/account_move_db.py in the lab: 25.3 at 0.25 GB, 23.7 at 1 GB (2 cores)
    USERS_AFTER_DATABASES = True

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._statistics: dict[str, dict[str, str | None]] = {}
        self._source_file = self._destination_file = ""

    def connect(self, endpoint: Endpoint, database: str | None = None) -> Any:
        return connect(endpoint, database)

    def databases(self, conn: Any) -> list[str]:
        return account_databases(conn, self.account)

    def users(self, conn: Any) -> list[str]:
        return [f"{user}@{host}" for user, host in account_users(conn, self.account)]

    def database_sizes(self, conn: Any, databases: list[str]) -> dict[str, int]:
        if not databases:
            return {}
        marks = ", ".join(["%s"] * len(databases))
        rows = _query(
            conn,
            "SELECT TABLE_SCHEMA, SUM(IFNULL(DATA_LENGTH, 0) + IFNULL(INDEX_LENGTH, 0)) FROM information_schema.TABLES "
            f"WHERE TABLE_SCHEMA IN ({marks}) GROUP BY TABLE_SCHEMA",
            databases,
        )
        sizes = {name: int(size or 0) for name, size in rows}
        return {name: sizes.get(name, 0) for name in databases}

    def check_destination(self, conn: Any) -> list[str]:
        if _query(conn, "SELECT @@GLOBAL.local_infile")[0][0]:
            return []
        return ["local_infile is OFF, and the dump method loads tables with LOAD DATA LOCAL INFILE"]

    def write_credentials(self) -> None:
        self._source_file = self.private_file("mariadb-source.cnf", self.source.option_file())
        self._destination_file = self.private_file("mariadb-destination.cnf", self.destination.option_file())

    def _client(self, options_file: str, *arguments: str) -> list[str]:
        # --defaults-extra-file must come first; utf8mb4 for statements and schema text.
        return ["mariadb", f"--defaults-extra-file={options_file}", "--default-character-set=utf8mb4", *arguments]

    def _dump(self, *arguments: str) -> list[str]:
        return [
            "mariadb-dump",
            f"--defaults-extra-file={self._source_file}",
            "--default-character-set=utf8mb4",
            "--skip-lock-tables",
            "--skip-comments",
            *arguments,
        ]

    def copy_users(self, source: Any, destination: Any) -> list[str]:
        return import_users(destination, export_users(source, self.account), self.account)

    def prepare_database(self, database: str, source: Any, destination: Any) -> None:
        unsupported = _query(
            source,
            "SELECT TABLE_NAME, TABLE_TYPE FROM information_schema.TABLES WHERE TABLE_SCHEMA = %s "
            "AND TABLE_TYPE NOT IN ('BASE TABLE', 'VIEW', 'SEQUENCE')",
            (database,),
        )
        if unsupported:
            kinds = ", ".join(f"{table} ({kind})" for table, kind in unsupported)
            raise CopyError(f"{database} has tables the dump method cannot copy with their history: {kinds}")
        quoted = quote_identifier(database)
        _query(destination, f"DROP DATABASE IF EXISTS {quoted}")
        _query(destination, _query(source, f"SHOW CREATE DATABASE {quoted}")[0][1])
        _query(destination, f"USE {quoted}")
        # As mariadb-dump does: tables in any order (foreign keys unchecked), explicit zeros kept, times in UTC.
        _query(
            destination,
            "SET SESSION foreign_key_checks = 0, sql_mode = 'NO_AUTO_VALUE_ON_ZERO', time_zone = '+00:00'",
        )
        statistics = self._statistics[database] = {}
        for table in self._tables(source, database, "BASE TABLE"):
            create = _query(source, f"SHOW CREATE TABLE {quoted}.{quote_identifier(table)}")[0][1]
            loadable, statistics[table] = loadable_table(create)
            _query(destination, loadable)
        if self._has_objects(source, database):
            # Views, routines, events and sequences as mariadb-dump writes them; the tables exist already.
            ignored = [f"--ignore-table={database}.{table}" for table in statistics]
            self._load_dump(database, "schema", "--no-data", "--skip-triggers", "--routines", "--events", *ignored)

    def _load_dump(self, database: str, what: str, *arguments: str) -> None:
        self.run(
            [
                Stage(f"mariadb-dump of {database} {what} on the source", self._dump(*arguments, database)),
                Stage(
                    f"mariadb loading {database} {what} on the destination",
                    self._client(self._destination_file, "--binary-mode", database),
                ),
            ]
        )

    @staticmethod
    def _tables(conn: Any, database: str, table_type: str) -> list[str]:
        rows = _query(
            conn,
            "SELECT TABLE_NAME FROM information_schema.TABLES WHERE TABLE_SCHEMA = %s AND TABLE_TYPE = %s "
            "ORDER BY TABLE_NAME",
            (database, table_type),
        )
        return [name for (name,) in rows]

    @staticmethod
    def _has_objects(conn: Any, database: str) -> bool:
        return bool(
            _query(
                conn,
                "SELECT EXISTS (SELECT 1 FROM information_schema.TABLES WHERE TABLE_SCHEMA = %s "
                "AND TABLE_TYPE IN ('VIEW', 'SEQUENCE')) "
                "OR EXISTS (SELECT 1 FROM information_schema.ROUTINES WHERE ROUTINE_SCHEMA = %s) "
                "OR EXISTS (SELECT 1 FROM information_schema.EVENTS WHERE EVENT_SCHEMA = %s)",
                (database, database, database),
            )[0][0]
        )

    def table_jobs(self, database: str, source: Any) -> list[Job]:
        sizes = dict(
            _query(
                source,
                "SELECT TABLE_NAME, IFNULL(DATA_LENGTH, 0) + IFNULL(INDEX_LENGTH, 0) FROM information_schema.TABLES "
                "WHERE TABLE_SCHEMA = %s AND TABLE_TYPE = 'BASE TABLE'",
                (database,),
            )
        )
        statistics = self._statistics.pop(database)
        jobs = []
        for table, columns in _columns(source, database, ("BASE TABLE",), generated=False).items():
            target = f"{quote_identifier(database)}.{quote_identifier(table)}"
            has_rows = _query(source, f"SELECT EXISTS (SELECT 1 FROM {target})")[0][0]
            stages = self._table_stages(database, table, target, columns) if has_rows else []
            work = self._table_work(database, target, stages, statistics[table])
            jobs.append(Job(f"{database}.{table}", int(sizes.get(table) or 0), work))
        return jobs

    def _table_work(
        self, database: str, target: str, stages: list[Stage], stats_auto_recalc: str | None
    ) -> Callable[[], None]:
        """Load the table, give back its own statistics setting and compute its statistics: they were off while
        loading, and the optimizer needs them before the first query after the switch."""

        def work() -> None:
            if stages:
                self.run(stages)
            conn = self.worker_connection(database)
            if stats_auto_recalc is not None:
                _query(conn, f"ALTER TABLE {target} STATS_AUTO_RECALC={stats_auto_recalc}")
            _query(conn, f"ANALYZE TABLE {target}")

        return work

    def _table_stages(
        self, database: str, table: str, target: str, columns: list[str], before: str = ""
    ) -> list[Stage]:
        """Reader and loader of one table; `before`: statements the reader runs first (the live method's
        snapshot)."""
        quoted = [quote_identifier(column) for column in columns]
        # Raw bytes both ways (results and the LOAD are in the binary character set): no conversion anywhere.
        select = (
            f"{before}SET SESSION character_set_results = binary, time_zone = '+00:00', net_write_timeout = 3600, "
            "max_statement_time = 0; "
            f"SELECT {', '.join(f'QUOTE({c})' for c in quoted)} FROM {target}"
        )
        load = (
            "SET SESSION foreign_key_checks = 0, unique_checks = 0, time_zone = '+00:00', max_statement_time = 0, "
            f"sql_mode = '{_LOAD_SQL_MODE}'; "
            f"LOAD DATA LOCAL INFILE '/dev/stdin' INTO TABLE {target} CHARACTER SET binary "
            "FIELDS TERMINATED BY '\\t' ENCLOSED BY '\\'' ESCAPED BY '\\\\' LINES TERMINATED BY '\\n' "
            f"({', '.join(quoted)})"
        )
        return [
            Stage(
                f"mariadb reading {database}.{table} on the source",
                self._client(self._source_file, "--batch", "--raw", "--quick", "--skip-column-names", "-e", select),
            ),
            Stage(
                f"mariadb loading {database}.{table} on the destination",
                self._client(self._destination_file, "--local-infile=1", "-e", load),
            ),
        ]

    def worker_connection_for(self, database: str) -> Any:
        conn = connect(self.destination, database)
        # A table's ALTER waits while another table whose foreign key names it is still loading: as long as that.
        # The tables were created as the source had them (prepare_database's sql_mode): an ALTER of a table option
        # under the destination's strict default would re-check every column default and refuse what the source
        # accepted, e.g. WordPress's DEFAULT '0000-00-00 00:00:00' on a server with NO_ZERO_DATE.
        _query(conn, WORKER_SESSION)
        return conn

    def finish_database(self, database: str, source: Any, destination: Any) -> None:
        triggers = _query(
            source, "SELECT EXISTS (SELECT 1 FROM information_schema.TRIGGERS WHERE TRIGGER_SCHEMA = %s)", (database,)
        )
        if triggers[0][0]:
            self._load_dump(database, "triggers", "--no-create-info", "--no-data", "--triggers", "--skip-routines")
        self.copy_sequences(database, source, destination)

    def copy_sequences(self, database: str, source: Any, destination: Any) -> None:
        """Each sequence's next value from the source (the live method's catch-up sets them again)."""
        for sequence in self._tables(source, database, "SEQUENCE"):
            target = f"{quote_identifier(database)}.{quote_identifier(sequence)}"
            (next_value,) = _query(source, f"SELECT next_not_cached_value FROM {target}")[0]
            _query(destination, f"SELECT SETVAL({target}, %s, 0)", (int(next_value),))
