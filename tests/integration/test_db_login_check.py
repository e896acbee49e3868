"""db_login_check against the lab's real MariaDB and PostgreSQL: md5 roles that a SCRAM-only server refuses are
found (and the lab's own login with the password agrees), a locked user is found, nothing is changed."""

from __future__ import annotations

import psycopg2
import pytest

pytestmark = pytest.mark.lab

MODULE = "hosting.migration.db_login_check"


@pytest.fixture(scope="module")
def endpoints(lab):
    admin = {"host": "127.0.0.1", "user": lab.vars["hosting_db_admin_user"],
             "password": lab.vars["hosting_db_admin_password"]}  # fmt: skip
    return {"mariadb": admin, "postgresql": admin}


def test_old_md5_roles_log_in_on_the_old_server_but_not_under_scram(module, endpoints, postgresql):
    here = module("client", MODULE, {"account": "bob", **endpoints, "client_address": "10.77.0.1"})[0]
    assert here["_status"] == "ok" and here["changed"] is False and here["ok"] is True
    assert {u["user"] for u in here["users"]} == {"bob", "bob_ro"}
    assert all(u["password_kind"] == "md5" and u["method"] == "md5" for u in here["users"])
    # From the server itself Debian's default rules already ask for SCRAM: those roles cannot log in from there.
    local = module("client", MODULE, {"account": "bob", **endpoints})[0]
    assert local["ok"] is False and {u["method"] for u in local["users"]} == {"scram-sha-256"}
    scram = module("client", MODULE, {"account": "bob", **endpoints, "pg_auth_method": "scram-sha-256",
                                      "client_address": "10.77.0.1"}, check_mode=True)[0]  # fmt: skip
    assert scram["ok"] is False and len(scram["problems"]) == 2
    assert all("set the password again" in p for p in scram["problems"])
    # The new architecture (testdb) agrees: a role with an md5 hash cannot log in there with its password, and the
    # module says so against that server's own pg_hba.conf.
    with postgresql("testdb").cursor() as cursor:
        cursor.execute("DROP ROLE IF EXISTS e2e_md5")
        cursor.execute("SET password_encryption = 'md5'")
        cursor.execute("CREATE ROLE e2e_md5 LOGIN PASSWORD 'e2e-pw'")
    try:
        with pytest.raises(psycopg2.OperationalError, match="password authentication failed"):
            postgresql("testdb", user="e2e_md5", password="e2e-pw")
    finally:
        with postgresql("testdb").cursor() as cursor:
            cursor.execute("DROP ROLE e2e_md5")


def test_a_locked_mariadb_user_cannot_log_in(module, endpoints, mariadb):
    with mariadb("client").cursor() as cursor:
        cursor.execute("ALTER USER 'alice_ro'@'%' ACCOUNT LOCK")
    try:
        result = module("client", MODULE, {"account": "alice", "mariadb": endpoints["mariadb"]})[0]
        assert result["ok"] is False
        assert result["problems"] == ["mariadb alice_ro@%: the account is locked"]
    finally:
        with mariadb("client").cursor() as cursor:
            cursor.execute("ALTER USER 'alice_ro'@'%' ACCOUNT UNLOCK")
    assert module("client", MODULE, {"account": "alice", "mariadb": endpoints["mariadb"]})[0]["ok"] is True


@pytest.mark.parametrize("account", ["a';DROP USER x;--", "../etc", "Alice", "alice\n", "a" * 40])
def test_hostile_account_names_are_refused(module, endpoints, account):
    result = module("client", MODULE, {"account": account, **endpoints})[0]
    assert result["_status"] == "failed" and "invalid account name" in result["msg"]
