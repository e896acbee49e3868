# Copyright: hosting.migration contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""PostgreSQL for account moves: endpoints whose password never reaches a command line, the account's databases
and roles (exactly `<account>_*` and `<account>`/`<account>_*`), role export with password hashes, attributes and
memberships, freezing them, order-independent table checksums, and the dump copy method (PostgresDumpCopy).

Identifiers are validated, then quoted with psycopg2.sql.Identifier; values are bound parameters.
"""

from __future__ import annotations

import re
import traceback
from collections.abc import Callable, Collection, Iterator
from contextlib import contextmanager
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
    import psycopg2
    from psycopg2 import sql
except ImportError:
    HAS_PSYCOPG2 = False
    DRIVER_IMPORT_ERROR: str | None = traceback.format_exc()
else:
    HAS_PSYCOPG2 = True
    DRIVER_IMPORT_ERROR = None

# The same names in mariadb.py let callers treat the engines alike (missing_required_lib(DRIVER_NAME)).
HAS_DRIVER = HAS_PSYCOPG2
DRIVER_NAME = "psycopg2"
# Role attributes copied as [NO]<flag>, in pg_roles' column order.
_ROLE_FLAGS = {
    "SUPERUSER": "rolsuper",
    "INHERIT": "rolinherit",
    "CREATEROLE": "rolcreaterole",
    "CREATEDB": "rolcreatedb",
    "LOGIN": "rolcanlogin",
    "REPLICATION": "rolreplication",
    "BYPASSRLS": "rolbypassrls",
}
# Settings whose stored text is a list (`"$user", public`): set element by element, not as one string.
_LIST_SETTINGS = ("search_path", "temp_tablespaces", "local_preload_libraries", "session_preload_libraries")
_SETTING_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_.]*")
_LIST_ELEMENT = re.compile(r'\s*("(?:[^"]|"")*"|[^,]*?)\s*(?:,|$)')
# Text forms the checksums and text COPY rely on, the same on both servers whatever their defaults.
_CANONICAL_SETTINGS = {
    "DateStyle": "ISO",
    "IntervalStyle": "postgres",
    "TimeZone": "UTC",
    "extra_float_digits": "3",
    "bytea_output": "hex",
    "statement_timeout": "0",
}
# Loading sessions on the destination: commits do not wait for the disk (a crash loses a copy that is redone
# anyway), index builds sort in memory, one process each (pg_restore --jobs already builds several at once).
_LOAD_SETTINGS = {"synchronous_commit": "off", "maintenance_work_mem": "512MB", "max_parallel_maintenance_workers": "0"}
# Objects below this OID are built in: their binary COPY format is the same on every server of a major version.
_FIRST_USER_OID = 16384
# User relations: not in system schemas, not members of an extension (pg_dump does not dump their rows either).
_USER_RELATIONS = """
    FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
    WHERE c.relkind = ANY(%s) AND c.relpersistence <> 't'
      AND n.nspname NOT IN ('pg_catalog', 'information_schema') AND n.nspname NOT LIKE 'pg\\_%%'
      AND NOT EXISTS (SELECT 1 FROM pg_depend d
                      WHERE d.classid = 'pg_class'::regclass AND d.objid = c.oid AND d.deptype = 'e')
"""


class Endpoint(BaseEndpoint):
    ENGINE = "PostgreSQL"
    DEFAULT_PORT = 5432

    def passfile(self) -> str:
        """A pgpass line for this server and user (written 0600): the password stays out of argv and env."""
        if any(c in self.password for c in "\0\n\r"):
            raise ValueError("a PostgreSQL password with a line break cannot travel in a pass file")
        fields = (self.host, str(self.port), "*", self.user, self.password)
        return ":".join(f if f == "*" else f.replace("\\", "\\\\").replace(":", "\\:") for f in fields) + "\n"

    def conninfo(self, database: str, passfile: str, settings: dict[str, str] | None = None) -> str:
        """A libpq connection string for the command-line tools (no password: it names the pass file)."""
        params = {
            "host": self.host,
            "port": str(self.port),
            "user": self.user,
            "dbname": database,
            "passfile": passfile,
            "connect_timeout": "10",
            "application_name": "hosting-migration",
            "options": " ".join(
                f"-c {name}={value}" for name, value in {**_CANONICAL_SETTINGS, **(settings or {})}.items()
            ),
        }
        return " ".join(f"{key}={_conninfo_value(value)}" for key, value in params.items())


def _conninfo_value(value: str) -> str:
    return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"


# The module builds endpoints from its options: endpoint(host=..., user=..., password=..., port=None).
endpoint = Endpoint.from_options


def connect(endpoint: Endpoint, database: str | None = None) -> Any:
    conn = psycopg2.connect(
        host=endpoint.host,
        port=endpoint.port,
        user=endpoint.user,
        password=endpoint.password,
        dbname=database or "postgres",
        connect_timeout=10,
        application_name="hosting-migration",
    )
    conn.autocommit = True
    return conn


def _query(conn: Any, statement: Any, args: Any = None) -> list[tuple]:
    with conn.cursor() as cursor:
        cursor.execute(statement, args)
        return list(cursor.fetchall()) if cursor.description else []


def _identifier(*names: str) -> Any:
    return sql.SQL(".").join(sql.Identifier(name) for name in names)


def alter_system(conn: Any, name: str, value: Any) -> None:
    """ALTER SYSTEM SET one setting (the name checked, the value a literal); it takes effect at reload/restart."""
    if not _SETTING_NAME.fullmatch(name):
        raise ValueError(f"not a setting name: {name!r}")
    _query(conn, sql.SQL("ALTER SYSTEM SET {} = {}").format(sql.Identifier(name), sql.Literal(str(value))))


def server_version(conn: Any) -> tuple[int, ...]:
    return divmod(conn.server_version, 10000)


def _like_prefix(account: str) -> str:
    # `_` is a LIKE wildcard: unescaped, account "bo" would match "bob_app".
    return validate_account_name(account) + "\\_%"


def account_databases(conn: Any, account: str) -> list[str]:
    """The account's databases on this server: exactly `<account>_*`, each name checked again."""
    rows = _query(
        conn, "SELECT datname FROM pg_database WHERE NOT datistemplate AND datname LIKE %s", (_like_prefix(account),)
    )
    return sorted(owned_name(name, account, "PostgreSQL database", bare=False) for (name,) in rows)


def account_roles(conn: Any, account: str) -> list[str]:
    """The account's roles: `<account>` and `<account>_*`."""
    rows = _query(
        conn, "SELECT rolname FROM pg_roles WHERE rolname = %s OR rolname LIKE %s", (account, _like_prefix(account))
    )
    return sorted(owned_name(name, account, "PostgreSQL role", bare=True) for (name,) in rows)


def export_roles(conn: Any, account: str) -> list[dict]:
    """Each role with what recreates it: attributes, connection limit, expiry, the password hash of pg_authid,
    memberships and settings. Database ownership, database-level and object grants travel with each database
    (pg_dump). The result holds password hashes: never return it from a module."""
    names = account_roles(conn, account)
    flags = ", ".join(f"r.{column}" for column in _ROLE_FLAGS.values())
    roles = {}
    for name, *flag_values, connection_limit, valid_until, password in _query(
        conn,
        f"SELECT r.rolname, {flags}, r.rolconnlimit, r.rolvaliduntil::text, a.rolpassword "
        "FROM pg_roles r JOIN pg_authid a ON a.oid = r.oid WHERE r.rolname = ANY(%s) ORDER BY r.rolname",
        (names,),
    ):
        roles[name] = {
            "name": name,
            "attributes": dict(zip(_ROLE_FLAGS, flag_values, strict=True)),
            "connection_limit": connection_limit,
            "valid_until": valid_until,
            "password": password,
            "member_of": [],
            "settings": [],
        }
    for member, role, admin in _memberships(conn, names):
        roles[member]["member_of"].append({"role": role, "admin": admin})
    for name, settings in _query(
        conn,
        "SELECT r.rolname, s.setconfig FROM pg_db_role_setting s JOIN pg_roles r ON r.oid = s.setrole "
        "WHERE s.setdatabase = 0 AND r.rolname = ANY(%s)",
        (names,),
    ):
        roles[name]["settings"] = list(settings)
    return list(roles.values())


def _memberships(conn: Any, members: list[str]) -> list[tuple[str, str, bool]]:
    return _query(
        conn,
        "SELECT m.rolname, g.rolname, am.admin_option FROM pg_auth_members am "
        "JOIN pg_roles m ON m.oid = am.member JOIN pg_roles g ON g.oid = am.roleid "
        "WHERE m.rolname = ANY(%s) ORDER BY 1, 2",
        (members,),
    )


def import_roles(conn: Any, roles: list[dict], account: str) -> list[str]:
    """Create or alter the exported roles to match exactly (a re-run converges); returns their names."""
    names = [owned_name(role["name"], account, "PostgreSQL role", bare=True) for role in roles]
    existing = dict(_query(conn, "SELECT rolname, rolvaliduntil::text FROM pg_roles WHERE rolname = ANY(%s)", (names,)))
    for name, role in zip(names, roles, strict=True):
        target = sql.Identifier(name)
        if name not in existing:
            _query(conn, sql.SQL("CREATE ROLE {}").format(target))
        attributes = sql.SQL(" ").join(
            sql.SQL(flag if role["attributes"][flag] else f"NO{flag}") for flag in _ROLE_FLAGS
        )
        # No expiry is NULL, which SQL cannot set again: a new role keeps it, an existing one gets 'infinity'.
        valid_until = role["valid_until"] or ("infinity" if existing.get(name) else None)
        _query(
            conn,
            sql.SQL("ALTER ROLE {} WITH {} CONNECTION LIMIT %s PASSWORD %s{}").format(
                target, attributes, sql.SQL(" VALID UNTIL %s" if valid_until else "")
            ),
            (int(role["connection_limit"]), role["password"], *([valid_until] if valid_until else [])),
        )
        _query(conn, sql.SQL("ALTER ROLE {} RESET ALL").format(target))
        for setting in role["settings"]:
            _apply_setting(conn, target, setting)
    wanted = {
        (name, m["role"], bool(m["admin"])) for name, role in zip(names, roles, strict=True) for m in role["member_of"]
    }
    present = set(_memberships(conn, names))
    for member, role, _admin in present - wanted:
        _query(conn, sql.SQL("REVOKE {} FROM {}").format(sql.Identifier(role), sql.Identifier(member)))
    known = {name for (name,) in _query(conn, "SELECT rolname FROM pg_roles")}
    for member, role, admin in sorted(wanted - present):
        if role not in known:
            raise ValueError(f"role {member} is a member of {role}, which does not exist on this server")
        grant = "GRANT {} TO {} WITH ADMIN OPTION" if admin else "GRANT {} TO {}"
        _query(conn, sql.SQL(grant).format(sql.Identifier(role), sql.Identifier(member)))
    return names


def _apply_setting(conn: Any, role: Any, setting: str) -> None:
    name, _equals, value = setting.partition("=")
    if not _SETTING_NAME.fullmatch(name):
        raise ValueError(f"unexpected role setting {setting!r}")
    if name.lower() in _LIST_SETTINGS:
        elements = [e[1:-1].replace('""', '"') if e.startswith('"') else e for e in _LIST_ELEMENT.findall(value) if e]
    else:
        elements = [value]
    statement = sql.SQL("ALTER ROLE {} SET {} TO {}").format(
        role, sql.Identifier(name), sql.SQL(", ").join(sql.Placeholder() * len(elements))
    )
    _query(conn, statement, elements)


def freeze_users(conn: Any, account: str) -> dict:
    """Take LOGIN from the account's roles and end their sessions. Returns what it changed, for unfreeze_users:
    roles that could not log in before stay that way. Idempotent; a re-run after a crash changes nothing more and
    returns no role, so keep the first record."""
    names = account_roles(conn, account)
    can_login = [
        name
        for (name,) in _query(conn, "SELECT rolname FROM pg_roles WHERE rolcanlogin AND rolname = ANY(%s)", (names,))
    ]
    for name in can_login:
        _query(conn, sql.SQL("ALTER ROLE {} NOLOGIN").format(sql.Identifier(name)))
    (ended,) = _query(
        conn,
        "SELECT count(*) FILTER (WHERE pg_terminate_backend(pid)) FROM pg_stat_activity "
        "WHERE usename = ANY(%s) AND pid <> pg_backend_pid()",
        (names,),
    )[0]
    return {"account": account, "users": sorted(can_login), "sessions_ended": int(ended)}


def unfreeze_users(conn: Any, changes: dict) -> dict:
    """Undo freeze_users exactly: give LOGIN back to the roles it took it from (checked again: the record may come
    from a journal). Idempotent; roles gone since are skipped."""
    account = validate_account_name(changes["account"])
    names = [owned_name(name, account, "PostgreSQL role", bare=True) for name in changes.get("users", [])]
    frozen = [
        name
        for (name,) in _query(
            conn, "SELECT rolname FROM pg_roles WHERE NOT rolcanlogin AND rolname = ANY(%s)", (names,)
        )
    ]
    for name in frozen:
        _query(conn, sql.SQL("ALTER ROLE {} LOGIN").format(sql.Identifier(name)))
    return {"account": account, "users": sorted(frozen)}


@contextmanager
def _read_only_snapshot(conn: Any) -> Iterator[Any]:
    """One repeatable-read, read-only transaction with canonical text settings, rolled back at the end."""
    with conn.cursor() as cursor:
        if conn.autocommit:
            cursor.execute("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY")
        try:
            for name, value in _CANONICAL_SETTINGS.items():
                cursor.execute("SELECT set_config(%s, %s, true)", (name, value))
            yield cursor
        finally:
            if conn.autocommit:
                cursor.execute("ROLLBACK")
            else:
                conn.rollback()


def table_checksums(conn: Any, database: str, only: Collection[str] | None = None) -> dict[str, tuple[int, str]]:
    """{schema.table: (row_count, content_hash)} for the tables and sequences of `database` (those named in `only`,
    if given); `conn` must be connected to that database. Computed by the server: the sum over rows of a 60-bit slice
    of MD5 of the row's text (the row value's output, which is NULL-safe and unambiguous), in canonical date, time
    zone and float formats, so it is independent of row order and of each server's settings. A sequence counts as
    one row of its state."""
    with _read_only_snapshot(conn) as cursor:
        cursor.execute("SELECT current_database()")
        if cursor.fetchone()[0] != database:
            raise ValueError(f"table_checksums of {database!r} needs a connection to that database")
        cursor.execute(f"SELECT c.relkind, n.nspname, c.relname {_USER_RELATIONS} ORDER BY 2, 3", (["r", "S"],))
        sums = {}
        for kind, schema, name in cursor.fetchall():
            if only is not None and f"{schema}.{name}" not in only:
                continue
            if kind == "S":
                query = (
                    "SELECT 1, ('x' || left(md5(last_value::text || ',' || is_called::text), 15))::bit(60)::bigint "
                    "FROM {}"
                )
            else:
                query = (
                    "SELECT count(*), coalesce(sum(('x' || left(md5(ROW(t.*)::text), 15))::bit(60)::bigint), 0) "
                    "FROM ONLY {} AS t"
                )
            cursor.execute(sql.SQL(query).format(_identifier(schema, name)))
            count, total = cursor.fetchone()
            sums[f"{schema}.{name}"] = (int(count), format(int(total), "x"))
    return sums


def copy_sequences(source: Any, destination: Any) -> None:
    """Every sequence's value (last_value, is_called) from the source database to the same one on the destination
    (neither rows nor logical replication carry them)."""
    for schema, name in _query(source, f"SELECT n.nspname, c.relname {_USER_RELATIONS}", (["S"],)):
        target = _identifier(schema, name)
        last_value, is_called = _query(source, sql.SQL("SELECT last_value, is_called FROM {}").format(target))[0]
        _query(
            destination, "SELECT setval(%s::regclass, %s, %s)", (target.as_string(destination), last_value, is_called)
        )


class PostgresDumpCopy(DumpCopy):
    """The dump method for PostgreSQL: roles first, then per database
    - pg_dump of the pre- and post-data sections (no rows) into tmpdir in custom format, pg_restore --create of the
      pre-data section: the database with its encoding, locale, owner, grants, tables without indexes;
    - each table in parallel: `psql COPY ... TO STDOUT | psql COPY ... FROM STDIN (FREEZE)` (binary when both
      servers run the same major version and the table has only built-in types);
    - sequence values, then post-data (indexes, keys, foreign keys, triggers, materialized views) with
      pg_restore --jobs. (Building each table's indexes right after its rows measured slower, not faster.)
    Loading sessions use synchronous_commit=off and a large maintenance_work_mem; nothing global changes. Planner
    statistics are left to autovacuum, which analyzes the new tables within its next round (an ANALYZE inside the
    downtime added about 15% at 0.2 GB)."""

    engine = "postgresql"
    SECONDS_PER_GB = 10.5  # bench/account_move_db.py in the lab: 10.3 at 0.25 GB, 10.4 at 1 GB (2 cores)

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._source_file = self._destination_file = ""
        self._archives: dict[str, str] = {}
        self._same_major = False

    def connect(self, endpoint: Endpoint, database: str | None = None) -> Any:
        return connect(endpoint, database)

    def databases(self, conn: Any) -> list[str]:
        return account_databases(conn, self.account)

    def users(self, conn: Any) -> list[str]:
        return account_roles(conn, self.account)

    def database_sizes(self, conn: Any, databases: list[str]) -> dict[str, int]:
        """Bytes of the tables, indexes, TOAST and sequences (not the catalogs every database carries)."""
        sizes = {}
        for database in databases:
            with self.connected("source", database) as source:
                rows = _query(
                    source,
                    f"SELECT coalesce(sum(pg_total_relation_size(c.oid)), 0) {_USER_RELATIONS}",
                    (["r", "m", "S"],),
                )
                sizes[database] = int(rows[0][0])
        return sizes

    def write_credentials(self) -> None:
        self._source_file = self.private_file("pg-source.pgpass", self.source.passfile())
        self._destination_file = self.private_file("pg-destination.pgpass", self.destination.passfile())

    def _source_db(self, database: str, **settings: str) -> str:
        return self.source.conninfo(database, self._source_file, settings)

    def _destination_db(self, database: str, **settings: str) -> str:
        return self.destination.conninfo(database, self._destination_file, settings)

    def copy_users(self, source: Any, destination: Any) -> list[str]:
        return import_roles(destination, export_roles(source, self.account), self.account)

    def prepare_database(self, database: str, source: Any, destination: Any) -> None:
        with self.connected("source", database) as conn:
            if _query(conn, "SELECT EXISTS (SELECT 1 FROM pg_largeobject_metadata)")[0][0]:
                raise CopyError(f"{database} holds large objects, which the dump method does not copy")
        # Binary COPY formats are the same within a major version (for built-in types).
        self._same_major = server_version(source)[0] == server_version(destination)[0]
        _query(destination, sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(database)))
        # The schema without rows, in custom format: pg_restore can then restore its post-data items in parallel.
        # Not --schema-only: that would also leave out the REFRESH of materialized views.
        archive = self._archives[database] = self.private_file(f"pg-{database}.schema", "")
        self.run(
            [
                Stage(
                    f"pg_dump of the {database} schema on the source",
                    ["pg_dump", "--format=custom", "--section=pre-data", "--section=post-data", f"--file={archive}",
                     f"--dbname={self._source_db(database)}"],
                )
            ]
        )  # fmt: skip
        self.run([self._restore_stage(database, "pre-data", self._destination_db("postgres"), "--create")])

    def _restore_stage(self, database: str, section: str, dbname: str, *options: str) -> Stage:
        return Stage(
            f"pg_restore of the {database} {section} on the destination",
            ["pg_restore", "--exit-on-error", f"--section={section}", *options, f"--dbname={dbname}",
             self._archives[database]],
        )  # fmt: skip

    def table_jobs(self, database: str, source: Any) -> list[Job]:
        with self.connected("source", database) as conn:
            encoding = _query(
                conn, "SELECT pg_encoding_to_char(encoding) FROM pg_database WHERE datname = current_database()"
            )[0][0]
            rows = _query(
                conn,
                "SELECT n.nspname, c.relname, pg_total_relation_size(c.oid), "
                f"(SELECT bool_and(a.atttypid < {_FIRST_USER_OID}) FROM pg_attribute a "
                "  WHERE a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped), "
                "(SELECT array_agg(a.attname ORDER BY a.attnum) FROM pg_attribute a "
                "  WHERE a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped AND a.attgenerated = '') "
                f"{_USER_RELATIONS}",
                (["r"],),
            )
            jobs = []
            for schema, table, size, builtin_types, columns in rows:
                target = _identifier(schema, table)
                has_rows = (
                    columns and _query(conn, sql.SQL("SELECT EXISTS (SELECT 1 FROM ONLY {})").format(target))[0][0]
                )
                stages = []
                if has_rows:
                    copy_format = sql.SQL("binary" if self._same_major and builtin_types else "text")
                    column_list = sql.SQL(", ").join(sql.Identifier(c) for c in columns)
                    stages = self._table_stages(
                        database,
                        f"{schema}.{table}",
                        sql.SQL("COPY {} ({}) TO STDOUT (FORMAT {})").format(target, column_list, copy_format),
                        sql.SQL("TRUNCATE ONLY {}").format(target),
                        sql.SQL("COPY {} ({}) FROM STDIN (FORMAT {}, FREEZE)").format(target, column_list, copy_format),
                        encoding,
                        conn,
                    )
                jobs.append(Job(f"{database}.{schema}.{table}", int(size), self._runner(stages)))
        return jobs

    def _runner(self, stages: list[Stage]) -> Callable[[], None]:
        def work() -> None:
            if stages:
                self.run(stages)

        return work

    def _table_stages(
        self, database: str, table: str, copy_out: Any, truncate: Any, copy_in: Any, encoding: str, conn: Any
    ) -> list[Stage]:
        psql = ["psql", "--no-psqlrc", "--quiet", "--set=ON_ERROR_STOP=1"]
        # The database's own encoding on both ends: text passes without conversion (also SQL_ASCII bytes).
        source = self._source_db(database, client_encoding=encoding)
        destination = self._destination_db(database, client_encoding=encoding, **_LOAD_SETTINGS)
        return [
            Stage(
                f"psql reading {database}.{table} on the source",
                [*psql, f"--dbname={source}", f"--command={copy_out.as_string(conn)}"],
            ),
            Stage(
                f"psql loading {database}.{table} on the destination",
                # FREEZE needs the table truncated in the same transaction: rows arrive already frozen and visible,
                # so the first reads (the verification) do not rewrite every page to set hint bits.
                [*psql, "--single-transaction", f"--dbname={destination}", f"--command={truncate.as_string(conn)}",
                 f"--command={copy_in.as_string(conn)}"],
            ),
        ]  # fmt: skip

    def finish_database(self, database: str, source: Any, destination: Any) -> None:
        with self.connected("source", database) as src, self.connected("destination", database) as dst:
            copy_sequences(src, dst)
        # Indexes, constraints, triggers, materialized views: in parallel sessions sized for index builds.
        destination_db = self._destination_db(database, **_LOAD_SETTINGS)
        self.run([self._restore_stage(database, "post-data", destination_db, f"--jobs={self.parallel}")])
        self._archives.pop(database)
