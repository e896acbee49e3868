# Copyright: hosting.migration contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Whether an account's database users can still log in on a server, judged without their passwords: the user
exists, is not locked or expired, has a password, and the server's authentication accepts the kind of password
hash it has. The classic trap of a generation change: PostgreSQL roles carried over with `md5` hashes to a server
whose pg_hba.conf requires `scram-sha-256` exist, look right, and can never log in again.
"""

from __future__ import annotations

import ipaddress
import json
from datetime import datetime, timezone
from typing import Any

from ansible_collections.hosting.migration.plugins.module_utils import mariadb, postgres
from ansible_collections.hosting.migration.plugins.module_utils.account import validate_account_name

# What a pg_hba method accepts, by password hash kind.
_PG_METHOD_ACCEPTS = {
    "md5": {"md5", "scram"},  # md5 falls back to SCRAM for SCRAM verifiers
    "password": {"md5", "scram"},
    "scram-sha-256": {"scram"},
    "trust": {"md5", "scram", "none"},
}


def pg_hash_kind(password: str | None) -> str:
    if not password:
        return "none"
    if password.startswith("SCRAM-SHA-256$"):
        return "scram"
    if password.startswith("md5") and len(password) == 35:
        return "md5"
    return "unknown"


def pg_login_problems(role: dict, method: str | None, now: datetime | None = None) -> list[str]:
    """Why `role` ({name, can_login, valid_until, password_kind}) cannot log in with pg_hba `method`."""
    problems = []
    if not role["can_login"]:
        problems.append("the role has no LOGIN")
    valid_until = role.get("valid_until")
    if valid_until and valid_until != "infinity":
        moment = datetime.fromisoformat(valid_until)
        if moment.tzinfo is None:
            moment = moment.replace(tzinfo=timezone.utc)  # noqa: UP017 - older python3 on old servers
        if moment <= (now or datetime.now(timezone.utc)):  # noqa: UP017
            problems.append(f"its password expired on {valid_until}")
    kind = role["password_kind"]
    if method is None:
        problems.append("no pg_hba.conf rule lets it connect over TCP")
    elif method == "reject":
        problems.append("pg_hba.conf rejects it")
    elif method in _PG_METHOD_ACCEPTS and kind not in _PG_METHOD_ACCEPTS[method]:
        if kind == "md5" and method == "scram-sha-256":
            problems.append(
                "its password hash is md5 but the server requires scram-sha-256: its owner must set the password "
                "again (with password_encryption = 'scram-sha-256')"
            )
        else:
            problems.append(f"a {kind} password hash cannot log in with method {method}")
    return problems


def _hba_matches(values: list[str] | None, wanted: set[str]) -> bool:
    return bool(values) and ("all" in values or bool(wanted & set(values)))


def _address_matches(address: str | None, netmask: str | None, client: str) -> bool:
    if address in (None, "all", "samehost", "samenet"):
        return True
    try:
        network = ipaddress.ip_network(f"{address}/{netmask}" if netmask else address, strict=False)
        return ipaddress.ip_address(client) in network
    except ValueError:
        return False  # a host name rule: not judged


def pg_method_for(rules: list[tuple], role: str, databases: list[str], client: str) -> str | None:
    """The method of the first TCP rule of pg_hba_file_rules (type, database[], user_name[], address, netmask,
    auth_method) that matches the role, one of its databases (or any) and the client address; None if none does."""
    wanted_databases = set(databases) | {"sameuser"}
    for kind, rule_databases, users, address, netmask, method in rules:
        if (
            kind in ("host", "hostssl")
            and _hba_matches(users, {role})
            and _hba_matches(rule_databases, wanted_databases)
            and _address_matches(address, netmask, client)
        ):
            return method
    return None


def postgresql_logins(conn: Any, account: str, method: str = "server", client: str = "127.0.0.1") -> list[dict]:
    """Per role of the account: can it log in over TCP from `client` (method `server`: as this server's
    pg_hba.conf says; any other method: as if every TCP login used it)."""
    validate_account_name(account)
    roles = postgres.account_roles(conn, account)
    databases = postgres.account_databases(conn, account)
    rules = []
    if method == "server":
        rules = postgres._query(
            conn, "SELECT type, database, user_name, address, netmask, auth_method FROM pg_hba_file_rules "
            "WHERE error IS NULL "
            "ORDER BY line_number")  # fmt: skip
    found = []
    rows = postgres._query(
        conn,
        "SELECT r.rolname, r.rolcanlogin, r.rolvaliduntil::text, a.rolpassword FROM pg_roles r "
        "JOIN pg_authid a ON a.oid = r.oid WHERE r.rolname = ANY(%s) ORDER BY r.rolname",
        (roles,),
    )
    for name, can_login, valid_until, password in rows:
        role = {
            "name": name,
            "can_login": can_login,
            "valid_until": valid_until,
            "password_kind": pg_hash_kind(password),
        }
        used = pg_method_for(rules, name, databases, client) if method == "server" else method
        if not can_login:
            continue  # a group role: nobody logs in as it
        problems = pg_login_problems(role, used)
        found.append({"engine": "postgresql", "user": name, "method": used, "password_kind": role["password_kind"],
                      "can_login": not problems, "problems": problems})  # fmt: skip
    return found


def mariadb_logins(conn: Any, account: str) -> list[dict]:
    """Per user@host of the account: not locked, a password, an authentication plugin the server has."""
    validate_account_name(account)
    plugins = {name for (name,) in mariadb._query(
        conn, "SELECT PLUGIN_NAME FROM information_schema.PLUGINS WHERE PLUGIN_TYPE = 'AUTHENTICATION' "
        "AND PLUGIN_STATUS = 'ACTIVE'")}  # fmt: skip
    found = []
    for user, host in mariadb.account_users(conn, account):
        (priv,) = mariadb._query(conn, "SELECT Priv FROM mysql.global_priv WHERE User = %s AND Host = %s",
                                 (user, host))[0]  # fmt: skip
        details = json.loads(priv or "{}")
        problems = []
        if details.get("account_locked") in (True, 1, "true"):
            problems.append("the account is locked")
        plugin = details.get("plugin", "mysql_native_password")
        if plugin not in plugins:
            problems.append(f"its authentication plugin {plugin} is not active on this server")
        if not details.get("authentication_string") and plugin in ("mysql_native_password", "ed25519"):
            problems.append("it has no password")
        if details.get("password_last_changed") == 0:
            problems.append("its password is marked expired")
        found.append({"engine": "mariadb", "user": f"{user}@{host}", "plugin": plugin, "can_login": not problems,
                      "problems": problems})  # fmt: skip
    return found
