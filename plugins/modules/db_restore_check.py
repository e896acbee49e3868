#!/usr/bin/python
# Copyright: hosting.migration contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
module: db_restore_check
short_description: Test-restore an account's databases on a server of the new architecture, leaving nothing behind
version_added: 0.1.0
description:
  - Runs on a test database server set up as the new architecture (its MariaDB and PostgreSQL versions, SQL
    modes and defaults). Step 1 of the migration uses it to find the databases the new servers refuse before any
    account moves.
  - For each database C(<account>_*) of the account on the O(source) servers (reached over TCP with an admin
    user), it creates a scratch database on the O(test_server) with the source database's character set and
    collation (MariaDB) or encoding and locale (PostgreSQL), as a move creates it, and streams the dump into it -
    C(mariadb-dump | mariadb), C(pg_dump | psql) with C(ON_ERROR_STOP) - checking every stage's exit status.
  - Records per database its engine, size, the seconds the restore took, whether it succeeded, the errors the test
    server raised, and findings - what restores silently but is wrong on the new architecture - a PostgreSQL
    database in C(SQL_ASCII) (with the number of text values that are not valid UTF-8), MariaDB date columns whose
    default is a zero date (refused by C(NO_ZERO_DATE)).
  - The scratch databases are named C(<scratch_prefix>_<database>) (C(<scratch_prefix>_<account>_<hash>) when that
    is too long), are dropped after each database's check, also when it fails, and any that an earlier, killed run
    of the same account left are dropped first. A run holds a lock per account and engine on the test server
    (C(GET_LOCK), C(pg_try_advisory_lock)), so two checks of one account cannot drop each other's scratch databases.
  - Reads only, on the source. Credentials reach the tools through 0600 files in the module's temporary directory,
    never on a command line; no result carries them.
extends_documentation_fragment:
  - hosting.migration.account
options:
  source:
    description: The account's current servers (the client server), as the test server reaches them.
    type: dict
    required: true
    suboptions:
      mariadb:
        description: Admin endpoint of the source's MariaDB/MySQL; omit if it has none.
        type: dict
        suboptions: &db_suboptions
          host:
            description: Host name or address.
            type: str
            required: true
          port:
            description: TCP port (the engine's default when omitted).
            type: int
          user:
            description: Administrative user.
            type: str
            required: true
          password:
            description: Its password. Travels in a 0600 defaults/pass file, never on a command line.
            type: str
            required: true
      postgresql:
        description: Admin endpoint of the source's PostgreSQL; omit if it has none.
        type: dict
        suboptions: *db_suboptions
  test_server:
    description:
      - The test database server of the new architecture (usually this host, C(127.0.0.1)).
      - An engine is checked when both O(source) and O(test_server) name an endpoint for it.
    type: dict
    required: true
    suboptions:
      mariadb:
        description: Admin endpoint of the test server's MariaDB.
        type: dict
        suboptions: *db_suboptions
      postgresql:
        description: Admin endpoint of the test server's PostgreSQL.
        type: dict
        suboptions: *db_suboptions
  scratch_prefix:
    description:
      - First part of the scratch databases' names. Lowercase letters and digits, starting with a letter, 2 to 16
        characters; the databases of other prefixes are never touched.
    type: str
    default: hmcheck
attributes:
  check_mode:
    description: Can run in check_mode and return changed status prediction without modifying target.
    support: full
    details: Returns the plan - the account's databases with their sizes and scratch names, and the scratch
      databases an earlier run left (which a real run would drop) - having restored and dropped nothing.
  diff_mode:
    description: Will return details on what has changed (or possibly needs changing in check_mode), when in diff mode.
    support: none
  idempotent:
    description: When run twice in a row outside check mode, with the same arguments, the second invocation
      indicates no change.
    support: full
    details:
      - Nothing changes on the source. On the test server every scratch database is dropped before the module
        returns, so the server is left as it was found and the result is C(changed=false).
      - Only when scratch databases of an earlier, killed run of the account were found and dropped is the result
        C(changed=true) (they are listed in RV(dropped_leftovers)).
  platform:
    description: Target OS/families that can be operated against.
    support: N/A
    platforms: posix
requirements:
  - PyMySQL (for MariaDB)
  - psycopg2 (for PostgreSQL)
  - the C(mariadb-dump) and C(mariadb) clients, C(pg_dump) and C(psql) on the test server
author:
  - hosting.migration contributors (@hosting-migration)
"""

EXAMPLES = r"""
- name: Test-restore carol's databases on the test DB server
  hosting.migration.db_restore_check:
    account: carol
    source:
      mariadb: {host: 10.77.0.10, user: hosting_admin, password: "{{ hosting_db_admin_password }}"}
      postgresql: {host: 10.77.0.10, user: hosting_admin, password: "{{ hosting_db_admin_password }}"}
    test_server:
      mariadb: {host: 127.0.0.1, user: hosting_admin, password: "{{ hosting_db_admin_password }}"}
      postgresql: {host: 127.0.0.1, user: hosting_admin, password: "{{ hosting_db_admin_password }}"}
  delegate_to: testdb
  register: restore_check
"""

RETURN = r"""
databases:
  description:
    - One entry per database of the account, per engine. In check mode only C(engine), C(database), C(size_bytes)
      and C(scratch).
    - C(errors) are the failures the test server (or a tool) raised, each naming the stage that failed.
    - C(findings) are problems the restore does not raise; each has C(kind) (V(sql_ascii_encoding),
      V(zero_date_default), V(zero_date_default_wordpress)) and C(message); a finding with C(blocking=false) is a
      note (WordPress's zero-date defaults - WordPress sets its own sql_mode) that does not make the account
      unready, and for V(sql_ascii_encoding) C(invalid_utf8_values) (null when the
      restore failed) and C(columns) (C(schema.table.column) to the count of its values that are not valid UTF-8).
  returned: always
  type: list
  elements: dict
  sample:
    - {engine: mariadb, database: carol_blog, scratch: hmcheck_carol_blog, size_bytes: 16384, seconds: 0.21,
       ok: false, findings: [], errors: ["mariadb restoring carol_blog into hmcheck_carol_blog on the test server
       exited with status 1: ERROR 1118 (42000) at line 23: Row size too large. ..."]}
    - {engine: postgresql, database: carol_legacy, scratch: hmcheck_carol_legacy, size_bytes: 49152, seconds: 0.3,
       ok: true, errors: [], findings: [{kind: sql_ascii_encoding, invalid_utf8_values: 20,
       columns: {public.notes.body: 20}, message: "..."}]}
ready:
  description: Whether every database restored and none has a blocking finding (null in check mode).
  returned: always
  type: bool
size_bytes:
  description: Bytes of all the account's databases on the source.
  returned: always
  type: int
dropped_leftovers:
  description: Scratch databases of an earlier, killed run of this account that this run dropped first.
  returned: always
  type: list
  elements: str
leftovers:
  description: In check mode, the scratch databases of an earlier run that a real run would drop first.
  returned: check mode
  type: list
  elements: str
"""

import hashlib
import re
import time
import traceback
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from typing import Any

from ansible.module_utils.basic import AnsibleModule, missing_required_lib

from ansible_collections.hosting.migration.plugins.module_utils import dbcopy, mariadb, postgres
from ansible_collections.hosting.migration.plugins.module_utils.account import validate_account_name

try:
    from psycopg2 import sql
except ImportError:
    sql = None

DB_OPTIONS = dbcopy.endpoint_options()
ENGINE_LIBS = {"mariadb": mariadb, "postgresql": postgres}
_PREFIX_RE = re.compile(r"[a-z][a-z0-9]{1,15}")
# Both engines take 63 characters (MariaDB 64).
_MAX_NAME = 63
_CHARSET_RE = re.compile(r"[A-Za-z0-9_]{1,64}")
_LOCALE_RE = re.compile(r"[A-Za-z0-9_.@-]{1,64}")
# A whole value that is valid UTF-8, for a SQL_ASCII database: its regular expressions see one character per byte.
VALID_UTF8 = (
    r"^([\x01-\x7f]|[\xc2-\xdf][\x80-\xbf]|\xe0[\xa0-\xbf][\x80-\xbf]|[\xe1-\xec\xee\xef][\x80-\xbf]{2}"
    r"|\xed[\x80-\x9f][\x80-\xbf]|\xf0[\x90-\xbf][\x80-\xbf]{2}|[\xf1-\xf3][\x80-\xbf]{3}|\xf4[\x80-\x8f][\x80-\xbf]{2})*$"
)
# Columns named in a finding's message; the result lists them all.
_SHOWN_COLUMNS = 5


class CheckFailed(Exception):
    """The check cannot go on (connection, lock, a scratch database that would not go away)."""


def argument_spec() -> dict:
    db = {"type": "dict", "options": DB_OPTIONS}
    servers = {"mariadb": db, "postgresql": db}
    return {
        "account": {"type": "str", "required": True},
        "source": {"type": "dict", "required": True, "options": servers},
        "test_server": {"type": "dict", "required": True, "options": servers},
        "scratch_prefix": {"type": "str", "default": "hmcheck"},
    }


def validate_prefix(prefix: object) -> str:
    if not isinstance(prefix, str) or not _PREFIX_RE.fullmatch(prefix):
        raise ValueError(
            f"invalid scratch_prefix {prefix!r}: 2 to 16 lowercase letters and digits, starting with a letter"
        )
    return prefix


def scratch_name(prefix: str, account: str, database: str) -> str:
    """The scratch database for `database` of `account`: `<prefix>_<database>`, or `<prefix>_<account>_<hash>` when
    that would be too long. Either way it starts with `<prefix>_<account>_`, which no other account's does."""
    owned = dbcopy.owned_name(database, account, "database", bare=False)
    name = f"{validate_prefix(prefix)}_{owned}"
    if len(name) > _MAX_NAME:
        name = f"{prefix}_{account}_{hashlib.sha256(owned.encode()).hexdigest()[:16]}"
    return name


def scratch_pattern(prefix: str, account: str) -> str:
    """LIKE pattern of the account's scratch databases (`_` escaped: it is a wildcard)."""
    return f"{validate_prefix(prefix)}\\_{validate_account_name(account)}\\_%"


def _rows(conn: Any, statement: Any, args: Any = None) -> list[tuple]:
    with conn.cursor() as cursor:
        cursor.execute(statement, args)
        return list(cursor.fetchall()) if cursor.description else []


def _lock_key(text: str) -> int:
    """A signed 64-bit advisory lock key for PostgreSQL."""
    return int.from_bytes(hashlib.sha256(text.encode()).digest()[:8], "big", signed=True)


class EngineCheck:
    """What one engine needs for a test restore; the subclasses hold each engine's statements and tools. `copier` is
    the engine's dump copier (dbcopy.database_copy) from the source to the test server: its connections, catalog
    reads, private credential files and checked pipelines are reused here."""

    engine = ""

    def __init__(self, copier: Any, prefix: str) -> None:
        self.copier = copier
        self.account = copier.account
        self.prefix = prefix
        self.lock_name = f"hosting.migration.db_restore_check.{self.account}"

    def scratch(self, database: str) -> str:
        return scratch_name(self.prefix, self.account, database)

    def leftovers(self, test: Any) -> list[str]:
        raise NotImplementedError

    def lock(self, test: Any) -> bool:
        raise NotImplementedError

    def drop(self, test: Any, name: str) -> None:
        raise NotImplementedError

    def create_scratch(self, source: Any, test: Any, database: str, scratch: str) -> None:
        raise NotImplementedError

    def write_credentials(self) -> None:
        raise NotImplementedError

    def restore_stages(self, database: str, scratch: str) -> list[dbcopy.Stage]:
        raise NotImplementedError

    def findings(self, source: Any, test: Any, database: str, restored: str | None) -> list[dict]:
        raise NotImplementedError

    def owned_scratch(self, names: list[str]) -> list[str]:
        start = f"{self.prefix}_{self.account}_"
        return sorted(name for name in names if name.startswith(start))


class MariaDBCheck(EngineCheck):
    engine = "mariadb"

    def leftovers(self, test: Any) -> list[str]:
        rows = _rows(
            test,
            "SELECT SCHEMA_NAME FROM information_schema.SCHEMATA WHERE SCHEMA_NAME LIKE %s",
            (scratch_pattern(self.prefix, self.account),),
        )
        return self.owned_scratch([name for (name,) in rows])

    def lock(self, test: Any) -> bool:
        return _rows(test, "SELECT GET_LOCK(%s, 0)", (self.lock_name,))[0][0] == 1

    def drop(self, test: Any, name: str) -> None:
        _rows(test, f"DROP DATABASE IF EXISTS {mariadb.quote_identifier(self.owned_scratch([name])[0])}")

    def create_scratch(self, source: Any, test: Any, database: str, scratch: str) -> None:
        charset, collation = _rows(
            source,
            "SELECT DEFAULT_CHARACTER_SET_NAME, DEFAULT_COLLATION_NAME FROM information_schema.SCHEMATA "
            "WHERE SCHEMA_NAME = %s",
            (database,),
        )[0]
        for value in (charset, collation):
            if not _CHARSET_RE.fullmatch(value):
                raise ValueError(f"unexpected character set or collation {value!r} of {database}")
        _rows(test, f"CREATE DATABASE {mariadb.quote_identifier(scratch)} CHARACTER SET {charset} COLLATE {collation}")

    def write_credentials(self) -> None:
        self.source_file = self.copier.private_file("check-mariadb-source.cnf", self.copier.source.option_file())
        self.test_file = self.copier.private_file("check-mariadb-test.cnf", self.copier.destination.option_file())

    def restore_stages(self, database: str, scratch: str) -> list[dbcopy.Stage]:
        # As a user restores a dump: the dump's own session settings, the test server's defaults for the rest
        # (innodb_strict_mode, character sets).
        return [
            dbcopy.Stage(
                f"mariadb-dump of {database} on the source",
                ["mariadb-dump", f"--defaults-extra-file={self.source_file}", "--default-character-set=utf8mb4",
                 "--single-transaction", "--skip-lock-tables", "--skip-comments", "--routines", "--events",
                 "--triggers", "--hex-blob", database],
            ),
            dbcopy.Stage(
                f"mariadb restoring {database} into {scratch} on the test server",
                ["mariadb", f"--defaults-extra-file={self.test_file}", "--default-character-set=utf8mb4",
                 "--binary-mode", scratch],
            ),
        ]  # fmt: skip

    def findings(self, source: Any, test: Any, database: str, restored: str | None) -> list[dict]:
        rows = _rows(
            source,
            "SELECT TABLE_NAME, COLUMN_NAME FROM information_schema.COLUMNS WHERE TABLE_SCHEMA = %s "
            "AND DATA_TYPE IN ('date', 'datetime', 'timestamp') AND COLUMN_DEFAULT LIKE %s "
            "ORDER BY TABLE_NAME, COLUMN_NAME",
            (database, "%0000-00-00%"),
        )
        if not rows:
            return []
        tables = {name for (name,) in _rows(source, _TABLES, (database,))}
        wordpress, columns = [], []
        for table, column in rows:
            (wordpress if _wordpress_column(table, column, tables) else columns).append(f"{table}.{column}")
        found = []
        if columns:
            found.append({
                "kind": "zero_date_default",
                "columns": columns,
                "message": (
                    f"{database}: {len(columns)} date column(s) default to a zero date ({', '.join(columns)}), "
                    "which the new servers' sql_mode (NO_ZERO_DATE) refuses: inserts that rely on the default fail"
                ),
            })  # fmt: skip
        if wordpress:
            found.append({
                "kind": "zero_date_default_wordpress",
                "blocking": False,
                "columns": wordpress,
                "message": (
                    f"{database}: WordPress's {len(wordpress)} date column(s) default to a zero date; WordPress "
                    "removes NO_ZERO_DATE from its own connections' sql_mode, so they keep working (a note)"
                ),
            })  # fmt: skip
        return found


_TABLES = "SELECT TABLE_NAME FROM information_schema.TABLES WHERE TABLE_SCHEMA = %s"
# The zero-date defaults WordPress's own schema has (wp-admin/includes/schema.php), by table without its prefix.
_WORDPRESS_ZERO_DATES = {
    "comments": {"comment_date", "comment_date_gmt"},
    "links": {"link_updated"},
    "posts": {"post_date", "post_date_gmt", "post_modified", "post_modified_gmt"},
    "users": {"user_registered"},
}


def _wordpress_column(table: str, column: str, tables: set[str]) -> bool:
    """A zero-date column of WordPress's own schema: its table is <prefix><base> beside a <prefix>options table."""
    for base, columns in _WORDPRESS_ZERO_DATES.items():
        if table.endswith(base) and column in columns and f"{table[: -len(base)]}options" in tables:
            return True
    return False


class PostgresCheck(EngineCheck):
    engine = "postgresql"

    def leftovers(self, test: Any) -> list[str]:
        rows = _rows(
            test,
            "SELECT datname FROM pg_database WHERE datname LIKE %s",
            (scratch_pattern(self.prefix, self.account),),
        )
        return self.owned_scratch([name for (name,) in rows])

    def lock(self, test: Any) -> bool:
        return bool(_rows(test, "SELECT pg_try_advisory_lock(%s)", (_lock_key(self.lock_name),))[0][0])

    def drop(self, test: Any, name: str) -> None:
        owned = self.owned_scratch([name])[0]
        _rows(test, sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(owned)))

    def create_scratch(self, source: Any, test: Any, database: str, scratch: str) -> None:
        """With the source's encoding and locale, as a move (pg_restore --create) creates the database."""
        encoding, collate, ctype = _rows(
            source,
            "SELECT pg_encoding_to_char(encoding), datcollate, datctype FROM pg_database WHERE datname = %s",
            (database,),
        )[0]
        for value in (encoding, collate, ctype):
            if not _LOCALE_RE.fullmatch(value):
                raise ValueError(f"unexpected encoding or locale {value!r} of {database}")
        _rows(
            test,
            sql.SQL("CREATE DATABASE {} TEMPLATE template0 ENCODING %s LC_COLLATE %s LC_CTYPE %s").format(
                sql.Identifier(scratch)
            ),
            (encoding, collate, ctype),
        )

    def write_credentials(self) -> None:
        self.source_file = self.copier.private_file("check-pg-source.pgpass", self.copier.source.passfile())
        self.test_file = self.copier.private_file("check-pg-test.pgpass", self.copier.destination.passfile())

    def restore_stages(self, database: str, scratch: str) -> list[dbcopy.Stage]:
        # The account's roles do not exist on the test server: objects go to the admin, grants stay out.
        source = self.copier.source.conninfo(database, self.source_file)
        test = self.copier.destination.conninfo(scratch, self.test_file)
        return [
            dbcopy.Stage(
                f"pg_dump of {database} on the source",
                ["pg_dump", "--format=plain", "--no-owner", "--no-privileges", "--no-subscriptions",
                 f"--dbname={source}"],
            ),
            dbcopy.Stage(
                f"psql restoring {database} into {scratch} on the test server",
                ["psql", "--no-psqlrc", "--quiet", "--set=ON_ERROR_STOP=1", "--single-transaction",
                 f"--dbname={test}"],
            ),
        ]  # fmt: skip

    def findings(self, source: Any, test: Any, database: str, restored: str | None) -> list[dict]:
        encoding = _rows(
            source, "SELECT pg_encoding_to_char(encoding) FROM pg_database WHERE datname = %s", (database,)
        )
        if encoding[0][0] != "SQL_ASCII":
            return []
        columns = self.invalid_utf8(restored) if restored else None
        invalid = sum(columns.values()) if columns is not None else None
        if invalid is None:
            counted = "its values could not be checked (the restore failed)"
        else:
            shown = ", ".join(f"{name}: {count}" for name, count in list(columns.items())[:_SHOWN_COLUMNS])
            counted = f"{invalid} text value(s) are not valid UTF-8" + (f" ({shown})" if shown else "")
        return [
            {
                "kind": "sql_ascii_encoding",
                "invalid_utf8_values": invalid,
                "columns": columns or {},
                "message": (
                    f"{database} has encoding SQL_ASCII: PostgreSQL stored its text unchecked and it restores "
                    f"silently, but the new architecture's databases are UTF8; {counted}. Convert the data to "
                    "UTF-8 (and the database to UTF8) before the move"
                ),
            }
        ]

    def invalid_utf8(self, scratch: str) -> dict[str, int]:
        """{schema.table.column: values that are not valid UTF-8} in the restored copy (only columns that have
        some). Counted by the test server, one scan per table."""
        with self.copier.connected("destination", scratch) as conn:
            rows = _rows(
                conn,
                "SELECT n.nspname, c.relname, array_agg(a.attname ORDER BY a.attnum) "
                "FROM pg_attribute a JOIN pg_class c ON c.oid = a.attrelid "
                "JOIN pg_namespace n ON n.oid = c.relnamespace JOIN pg_type t ON t.oid = a.atttypid "
                "WHERE c.relkind IN ('r', 'm') AND a.attnum > 0 AND NOT a.attisdropped "
                "AND (t.typcategory = 'S' OR t.typname IN ('json', 'jsonb')) "
                "AND n.nspname NOT IN ('pg_catalog', 'information_schema') AND n.nspname NOT LIKE 'pg\\_%%' "
                "GROUP BY 1, 2 ORDER BY 1, 2",
            )
            found = {}
            for schema, table, columns in rows:
                counts = sql.SQL(", ").join(
                    sql.SQL("count(*) FILTER (WHERE {}::text !~ %(valid)s)").format(sql.Identifier(column))
                    for column in columns
                )
                statement = sql.SQL("SELECT {} FROM {}.{}").format(
                    counts, sql.Identifier(schema), sql.Identifier(table)
                )
                for column, count in zip(columns, _rows(conn, statement, {"valid": VALID_UTF8})[0], strict=True):
                    if count:
                        found[f"{schema}.{table}.{column}"] = int(count)
        return found


CHECKS = {"mariadb": MariaDBCheck, "postgresql": PostgresCheck}


class RestoreCheck:
    def __init__(self, module: AnsibleModule) -> None:
        self.module = module
        params = module.params
        self.account = validate_account_name(params["account"])
        self.prefix = validate_prefix(params["scratch_prefix"])
        self.endpoints: dict[str, tuple] = {}
        for engine, lib in ENGINE_LIBS.items():
            source, test = (params["source"] or {}).get(engine), (params["test_server"] or {}).get(engine)
            if source and test:
                self.endpoints[engine] = (lib.endpoint(**source), lib.endpoint(**test))
            elif source or test:
                side = "test_server" if source else "source"
                raise ValueError(f"{engine} is given on one side only: name its {side} endpoint too, or neither")
        self.result: dict[str, Any] = {"changed": False, "databases": [], "size_bytes": 0, "dropped_leftovers": []}

    def run(self) -> dict:
        leftovers = []
        for engine in self.endpoints:
            leftovers += self.run_engine(engine)
        databases = self.result["databases"]
        if self.module.check_mode:
            self.result.update(leftovers=leftovers, ready=None)
        else:
            self.result["ready"] = all(
                entry["ok"] and not any(f.get("blocking", True) for f in entry["findings"]) for entry in databases
            )
            self.result["changed"] = bool(self.result["dropped_leftovers"])
        return self.result

    def run_engine(self, engine: str) -> list[str]:
        lib = ENGINE_LIBS[engine]
        if not lib.HAS_DRIVER:
            self.module.fail_json(msg=missing_required_lib(lib.DRIVER_NAME), exception=lib.DRIVER_IMPORT_ERROR)
        source, test = self.endpoints[engine]
        copier = dbcopy.database_copy(engine, "dump", source, test, self.account, parallel=1, tmpdir=self.module.tmpdir)
        check = CHECKS[engine](copier, self.prefix)
        try:
            with ExitStack() as stack:
                source_conn = stack.enter_context(copier.connected("source"))
                test_conn = stack.enter_context(copier.connected("destination"))
                names = copier.databases(source_conn)
                sizes = copier.database_sizes(source_conn, names)
                self.result["size_bytes"] += sum(sizes.values())
                if self.module.check_mode:
                    for name in names:
                        self.result["databases"].append(
                            {
                                "engine": engine,
                                "database": name,
                                "size_bytes": sizes[name],
                                "scratch": check.scratch(name),
                            }
                        )
                    return [f"{engine}:{name}" for name in check.leftovers(test_conn)]
                # The lock lives as long as test_conn, this engine's admin session on the test server.
                if not check.lock(test_conn):
                    raise CheckFailed(
                        f"another db_restore_check of account {self.account} is running on the {engine} test server "
                        f"({test.host}); try again when it has finished"
                    )
                for name in check.leftovers(test_conn):
                    check.drop(test_conn, name)
                    self.result["dropped_leftovers"].append(f"{engine}:{name}")
                check.write_credentials()
                for name in names:
                    with self.scratch_database(check, test_conn, name) as scratch:
                        self.result["databases"].append(
                            self.check_database(check, source_conn, test_conn, name, sizes[name], scratch)
                        )
                left = check.leftovers(test_conn)
                if left:
                    raise CheckFailed(f"scratch databases are left on the {engine} test server: {', '.join(left)}")
        finally:
            copier.cleanup()
        return []

    @contextmanager
    def scratch_database(self, check: EngineCheck, test: Any, database: str) -> Iterator[str]:
        """The scratch name for `database`, dropped when the block ends however it ends."""
        scratch = check.scratch(database)
        try:
            yield scratch
        finally:
            try:
                check.drop(test, scratch)
            except Exception as error:
                raise CheckFailed(
                    f"cannot drop the scratch database {scratch} on the {check.engine} test server: {error}"
                ) from error

    def check_database(
        self, check: EngineCheck, source: Any, test: Any, database: str, size: int, scratch: str
    ) -> dict:
        started = time.monotonic()
        entry: dict[str, Any] = {
            "engine": check.engine,
            "database": database,
            "scratch": scratch,
            "size_bytes": size,
            "ok": False,
            "errors": [],
            "findings": [],
        }
        try:
            check.create_scratch(source, test, database, scratch)
            check.copier.run(check.restore_stages(database, scratch))
            entry["ok"] = True
        except Exception as error:  # whatever the test server or a tool refused is the result, not a module failure
            entry["errors"].append(_one_line(error))
        entry["seconds"] = round(time.monotonic() - started, 3)
        try:
            entry["findings"] = check.findings(source, test, database, scratch if entry["ok"] else None)
        except Exception as error:
            entry["errors"].append(f"looking for findings failed: {_one_line(error)}")
            entry["ok"] = False
        return entry


# A failed stage's message up to "status N: ", then the server's error without the statement the client echoed.
_ECHOED_STATEMENT = re.compile(r"(.*? exited with status -?\d+: ).*?((?:psql:\S+ )?ERROR\b.*)")


def _one_line(error: Exception) -> str:
    text = " ".join(str(error).split()) or type(error).__name__
    echoed = _ECHOED_STATEMENT.fullmatch(text)
    return echoed.group(1) + echoed.group(2) if echoed else text


def main() -> None:
    module = AnsibleModule(argument_spec=argument_spec(), supports_check_mode=True)
    try:
        check = RestoreCheck(module)
    except ValueError as error:
        module.fail_json(msg=str(error))
    if not check.endpoints:
        module.fail_json(msg="no engine to check: give source and test_server endpoints for mariadb and/or postgresql")
    try:
        result = check.run()
    except (CheckFailed, dbcopy.CopyError, ValueError) as error:
        module.fail_json(msg=str(error), **check.result)
    except Exception as error:  # a driver or OS error outside any one database's restore
        module.fail_json(
            msg=f"db_restore_check of account {check.account} failed: {_one_line(error)}",
            exception=traceback.format_exc(),
            **check.result,
        )
    module.exit_json(**result)


if __name__ == "__main__":
    main()
