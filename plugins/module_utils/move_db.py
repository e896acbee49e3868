# Copyright: hosting.migration contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The databases half of an account move, for every engine both servers run: plan, freeze the account's users
on the source, copy through the method interface of dbcopy, compare per-table checksums, thaw."""

from __future__ import annotations

from collections.abc import Callable

from ansible.module_utils.basic import missing_required_lib

from ansible_collections.hosting.migration.plugins.module_utils import dbcopy, mariadb, postgres

ENGINES = {"mariadb": mariadb, "postgresql": postgres}


class EngineError(RuntimeError):
    """A database step failed; the message names the engine and the server."""


def user_names(changes: dict) -> list[str]:
    """The users of a freeze or unfreeze record as names a person reads: `user@host` (MariaDB), role (PostgreSQL)."""
    return [f"{u['user']}@{u['host']}" if isinstance(u, dict) else u for u in changes.get("users", [])]


def merge_freeze(previous: dict | None, changes: dict) -> dict:
    """A re-run after a crash finds the first attempt's users already locked (freeze_users leaves them out): keep
    the first record of what was locked, plus any user this run locked for the first time (created or unlocked in
    between), so the unfreeze and a thaw give every one of them back its login."""
    if not previous:
        return changes
    known = previous.get("users", [])
    return {**previous, "users": known + [user for user in changes.get("users", []) if user not in known]}


class DatabaseSide:
    def __init__(self, module, params: dict, account: str) -> None:
        self.module = module
        self.account = account
        self.method = params["db_method"]
        self.parallel = params["db_parallel"]
        self.engines: dict[str, tuple] = {}
        for engine, lib in ENGINES.items():
            source, destination = params["source"].get(engine), params["destination"].get(engine)
            if source and destination:
                self.engines[engine] = (lib.endpoint(**source), lib.endpoint(**destination))
        self._connections: dict[tuple[str, str], object] = {}
        self.source_checksums: dict[str, dict] = {}
        # Per engine and live-replicated database: what its live verification found ({"tables": ...}).
        self.live_verified: dict[str, dict] = {}
        # What copy() did per database (engine, method), for the verification that follows.
        self.copied: dict[str, dict] = {}

    def _lib(self, engine: str):
        lib = ENGINES[engine]
        if not lib.HAS_DRIVER:
            self.module.fail_json(msg=missing_required_lib(lib.DRIVER_NAME), exception=lib.DRIVER_IMPORT_ERROR)
        return lib

    def _connect(self, engine: str, side: str, database: str | None):
        endpoint = self.engines[engine][0 if side == "source" else 1]
        try:
            return self._lib(engine).connect(endpoint, database)
        except Exception as error:
            raise EngineError(f"cannot connect to {engine} on the {side} ({endpoint.host}): {error}") from error

    def connection(self, engine: str, side: str):
        """The server-level admin connection of one side, kept for the move (never one into an account database:
        the copy drops and recreates those)."""
        if (engine, side) not in self._connections:
            self._connections[engine, side] = self._connect(engine, side, None)
        return self._connections[engine, side]

    def close(self) -> None:
        for conn in self._connections.values():
            try:
                conn.close()
            except Exception:  # closing is best effort: the move's outcome is already decided
                pass
        self._connections.clear()

    def databases(self, engine: str) -> list[str]:
        return self._lib(engine).account_databases(self.connection(engine, "source"), self.account)

    def method_of(self, engine: str) -> str:
        """`live` means live where the engine has a live method, `auto` where that method is the default (a live
        method itself falls back to dump where its prerequisites do not hold); dump elsewhere."""
        engines = dbcopy.AUTO_LIVE_ENGINES if self.method == "auto" else dbcopy.LIVE_ENGINES
        if self.method == "dump" or engine not in engines:
            return "dump"
        return "live"

    def copier(self, engine: str) -> dbcopy.DatabaseCopy:
        source, destination = self.engines[engine]
        return dbcopy.database_copy(
            engine,
            self.method_of(engine),
            source,
            destination,
            self.account,
            parallel=self.parallel,
            tmpdir=self.module.tmpdir,
        )

    def plan(self, entry: dict) -> dict:
        """Each engine's own plan; the estimate is theirs (measured seconds per GB of their copy method)."""
        plan: dict = {"engines": {}, "bytes": 0, "estimated_seconds": 0.0}
        for engine in self.engines:
            engine_plan = self.copier(engine).plan()
            plan["engines"][engine] = engine_plan
            plan["bytes"] += int(engine_plan.get("bytes", 0))
            plan["estimated_seconds"] += float(engine_plan.get("estimated_seconds", 0.0))
        plan["estimated_seconds"] = round(plan["estimated_seconds"], 1)
        return plan

    def size(self, entry: dict) -> int:
        return self.plan(entry)["bytes"]

    def precheck(self, entry: dict) -> None:
        for engine in self.engines:
            lib = self._lib(engine)
            source = lib.server_version(self.connection(engine, "source"))
            destination = lib.server_version(self.connection(engine, "destination"))
            if destination < source:
                raise EngineError(
                    f"{engine} on the destination ({'.'.join(map(str, destination))}) is older than on the source "
                    f"({'.'.join(map(str, source))}); a copy could use features it lacks"
                )

    def precopy(self, entry: dict, progress: Callable[..., None]) -> dict:
        """The live methods start replicating here; what each engine did (and why not live, if so)."""
        started = {}
        for engine in self.engines:
            copier = self.copier(engine)
            try:
                started[engine] = copier.precopy(progress)
                if started[engine].get("method") == "live":
                    self.live_verified[engine] = {
                        database: copier.verify_live(database) for database in started[engine].get("databases", {})
                    }
                    started[engine]["verified_live"] = {
                        d: len(v.get("tables") or {}) for d, v in self.live_verified[engine].items()
                    }
            except Exception:
                # A half-started replication must not stay behind a failed move.
                try:
                    self.drop_replication(engine)
                except Exception:  # the first failure is the news; a re-run drops what is left
                    pass
                raise
            finally:
                copier.cleanup()
        return started

    def drop_replication(self, engine: str | None = None) -> None:
        """Remove whatever replication a live method set up for the account (subscriptions, slots,
        publications); nothing for the dump method. Idempotent."""
        for name in [engine] if engine else list(self.engines):
            if self.method_of(name) == "dump":
                continue  # nothing to remove, and no reason to reach a server that may be the failure's cause
            copier = self.copier(name)
            try:
                copier.drop_account_replication(self.databases(name))
            finally:
                copier.cleanup()

    def freeze_source(self, entry: dict, previous: dict | None) -> dict:
        """Lock the account's DB users and end their sessions on the source; what to undo, per engine."""
        frozen = dict(previous or {})
        for engine in self.engines:
            changes = self._lib(engine).freeze_users(self.connection(engine, "source"), self.account)
            frozen[engine] = merge_freeze(frozen.get(engine), changes)
        return frozen

    def thaw_source(self, frozen: dict) -> None:
        self._unfreeze("source", frozen)

    def unfreeze_destination(self, frozen: dict) -> dict[str, list[str]]:
        """The users arrive as the source had them during the freeze (locked): give them their real state. Returns
        the users given back their logins here, per engine."""
        return self._unfreeze("destination", frozen)

    def _unfreeze(self, side: str, frozen: dict) -> dict[str, list[str]]:
        unfrozen = {}
        for engine, changes in frozen.items():
            if engine in self.engines and changes:
                done = self._lib(engine).unfreeze_users(self.connection(engine, side), changes)
                unfrozen[engine] = user_names(done)
        return unfrozen

    def reconnect(self) -> None:
        """A forked guardian must not share the move's sockets."""
        self._connections = {}

    def copy(self, entry: dict, progress: Callable[..., None]) -> dict:
        copied: dict = {}
        for engine in self.engines:
            copier = self.copier(engine)
            try:
                result = copier.copy(progress)
            finally:
                copier.cleanup()
            for name, info in result.get("databases", {}).items():
                copied[name] = {"method": result.get("method"), **info, "engine": engine}
        self.copied = copied
        return copied

    def checksums(self, engine: str, side: str, databases: list[str] | None = None) -> dict:
        lib = self._lib(engine)
        sums = {}
        for database in self.databases(engine) if databases is None else databases:
            conn = self._connect(engine, side, database)
            try:
                sums[database] = {table: list(value) for table, value in lib.table_checksums(conn, database).items()}
            finally:
                conn.close()
        return sums

    def differences(self, entry: dict) -> list[str]:
        """Source against destination, in the freeze. A database that replicated live was compared while the
        account ran: only its tables written since (or never found equal) are hashed now."""
        found = []
        self.source_checksums = {}
        for engine in self.engines:
            databases = self.databases(engine)
            live = [
                d
                for d in databases
                if self.copied.get(d, {}).get("engine") == engine and self.copied[d].get("method") == "live"
            ]
            if live:
                copier = self.copier(engine)
                try:
                    for database in live:
                        verified = self.live_verified.get(engine, {}).get(database, {})
                        differences, hashed = copier.freeze_differences(database, verified)
                        self.copied[database]["hashed_in_freeze"] = hashed
                        found += differences
                finally:
                    copier.cleanup()
            dumped = [d for d in databases if d not in live]
            source = self.checksums(engine, "source", dumped)
            destination = self.checksums(engine, "destination", dumped)
            self.source_checksums[engine] = source
            for database in sorted(dumped):
                src, dst = source.get(database, {}), destination.get(database, {})
                for table in sorted(src.keys() | dst.keys()):
                    if src.get(table) != dst.get(table):
                        found.append(
                            f"{engine} table {database}.{table}: "
                            f"source {src.get(table)} != destination {dst.get(table)}"
                        )
        return found

    def departure_checksums(self, known: dict) -> dict:
        """After the switch (the source stays frozen, so this is no downtime): the source's checksums of the
        databases `known` lacks (those verified live), for the rollback's conflict check."""
        tables = {engine: dict(sums) for engine, sums in known.items()}
        for engine in self.engines:
            missing = [d for d in self.databases(engine) if d not in tables.get(engine, {})]
            if missing:
                tables.setdefault(engine, {}).update(self.checksums(engine, "source", missing))
        return tables

    def changed_since(self, tables: dict) -> list[str]:
        """Rollback: tables of this server (the destination) that differ from what they were when the account left."""
        changed = []
        for engine, databases in tables.items():
            if engine not in self.engines:
                continue
            current = self.checksums(engine, "destination")
            for database, sums in databases.items():
                for table, value in sums.items():
                    if current.get(database, {}).get(table) != value:
                        changed.append(f"{engine} table {database}.{table} changed since the switch")
        return changed
