"""db_live_prereqs against the lab's real PostgreSQL and MariaDB on transit (replica WAL and 10 slots; no binary
log, MIXED, server_id 1, as seeded): check mode plans and changes nothing; the real run writes the settings,
restarts the server once through the given command and measures it; a second run changes nothing and does not
restart; a failing restart command says the settings wait for the next restart; MariaDB's server_id, when not
given, differs between client and transit; bad parameters are refused before anything is read."""

from __future__ import annotations

import pytest
from hostinglab import services as lab_services
from lab_state import in_host

pytestmark = pytest.mark.lab

MODULE = "hosting.migration.db_live_prereqs"
RESTART = ["pg_ctlcluster", "15", "main", "restart"]
SETTINGS = (
    "SELECT name, setting FROM pg_settings WHERE name IN ('wal_level', 'max_replication_slots', 'max_wal_senders')"
)


def running(postgresql):
    with postgresql("transit").cursor() as cursor:
        cursor.execute(SETTINGS)
        settings = dict(cursor.fetchall())
        cursor.execute("SELECT pg_postmaster_start_time()")
        return settings, cursor.fetchone()[0]


@pytest.fixture
def seeded_transit(lab, postgresql):
    """transit's PostgreSQL as seeded before and after the test (its settings reset, restarted if needed)."""
    yield {"host": "127.0.0.1", "user": lab.vars["hosting_db_admin_user"],
           "password": lab.vars["hosting_db_admin_password"]}  # fmt: skip
    with postgresql("transit").cursor() as cursor:
        for name in ("wal_level", "max_replication_slots", "max_wal_senders"):
            cursor.execute(f"ALTER SYSTEM RESET {name}")
    in_host("transit", " ".join(RESTART))


def test_plan_then_one_measured_restart_then_nothing(module, seeded_transit, postgresql):
    before, started = running(postgresql)
    assert before["wal_level"] == "replica", "the lab seeds replica WAL"
    auto_conf = in_host("transit", "cat /var/lib/postgresql/15/main/postgresql.auto.conf").stdout

    plan = module("transit", MODULE, {"postgresql": seeded_transit, "restart_command": RESTART}, check_mode=True,
                  diff=True)[0]  # fmt: skip
    assert plan["changed"] is True and plan["restart_needed"] is True
    assert plan["changes"] == {"wal_level": "logical", "max_replication_slots": 16, "max_wal_senders": 16}
    assert plan["diff"]["after"]["wal_level"] == "logical"
    assert running(postgresql) == (before, started), "check mode restarted or changed PostgreSQL"
    assert in_host("transit", "cat /var/lib/postgresql/15/main/postgresql.auto.conf").stdout == auto_conf

    done = module("transit", MODULE, {"postgresql": seeded_transit, "restart_command": RESTART})[0]
    assert done["changed"] is True and 0 < done["restart_downtime_s"] < 30
    after, restarted = running(postgresql)
    assert after == {"wal_level": "logical", "max_replication_slots": "16", "max_wal_senders": "16"}
    assert restarted > started
    assert seeded_transit["password"] not in str(done)

    again = module("transit", MODULE, {"postgresql": seeded_transit, "restart_command": RESTART})[0]
    assert again["changed"] is False and again["changes"] == {} and "restart_downtime_s" not in again
    assert running(postgresql)[1] == restarted, "a run with nothing to change restarted PostgreSQL"


def test_a_failing_restart_command_says_the_settings_wait(module, seeded_transit, postgresql):
    before, started = running(postgresql)
    failed = module("transit", MODULE, {"postgresql": seeded_transit, "restart_command": ["false"]})[0]
    assert failed["_status"] == "failed"
    assert "the restart command failed" in failed["msg"] and "next restart" in failed["msg"]
    assert running(postgresql) == (before, started)


@pytest.mark.parametrize(
    ("args", "message"),
    [({"replication_slots": 0}, "between 1 and 1000"), ({"restart_command": []}, "must name a command")],
)
def test_bad_parameters_are_refused(module, seeded_transit, args, message):
    refused = module("transit", MODULE, {"postgresql": seeded_transit, **args})[0]
    assert refused["_status"] == "failed" and message in refused["msg"]


# ---- MariaDB: binary log on (one restart), ROW format and the server_id (no restart) ------------------------------

MARIADB_CONF = "/etc/mysql/mariadb.conf.d/90-hosting-migration.cnf"
MARIADB_RESTART = ["sh", "-c", "mariadb-admin shutdown && setsid -f /usr/sbin/mariadbd --user=mysql "
                   "</dev/null >>/var/log/mysql/restart.log 2>&1"]  # fmt: skip


def mariadb_running(mariadb, host="transit"):
    with mariadb(host).cursor() as cursor:
        cursor.execute("SELECT @@log_bin, @@binlog_format, @@server_id, UNIX_TIMESTAMP() - VARIABLE_VALUE "
                       "FROM information_schema.GLOBAL_STATUS WHERE VARIABLE_NAME = 'UPTIME'")  # fmt: skip
        log_bin, binlog_format, server_id, started = cursor.fetchone()
    return {"log_bin": int(log_bin), "binlog_format": binlog_format, "server_id": int(server_id)}, int(started)


@pytest.fixture
def seeded_transit_mariadb(lab, mariadb):
    """transit's MariaDB as seeded (no binary log, MIXED, server_id 1) before and after the test."""
    yield {"host": "127.0.0.1", "user": lab.vars["hosting_db_admin_user"],
           "password": lab.vars["hosting_db_admin_password"]}  # fmt: skip
    in_host("transit", f"rm -f {MARIADB_CONF}")
    in_host("transit", " ".join(f"'{part}'" for part in MARIADB_RESTART))
    lab_services.wait_port(lab.hosts["transit"].ipv4, 3306, "MariaDB on transit")
    with mariadb("transit").cursor() as cursor:
        cursor.execute("SET GLOBAL binlog_format = 'MIXED'")
        cursor.execute("SET GLOBAL server_id = 1")


def test_mariadb_plan_then_one_measured_restart_then_nothing(module, seeded_transit_mariadb, mariadb):
    before, started = mariadb_running(mariadb)
    assert before == {"log_bin": 0, "binlog_format": "MIXED", "server_id": 1}, "the lab seeds no binary log"
    args = {"mariadb": seeded_transit_mariadb, "server_id": 12, "restart_command": MARIADB_RESTART}

    plan = module("transit", MODULE, args, check_mode=True, diff=True)[0]
    assert plan["changed"] is True and plan["restart_needed"] is True and plan["engine"] == "mariadb"
    assert plan["changes"] == {"log_bin": True, "binlog_format": "ROW", "server_id": 12}
    assert "log_bin = mysql-bin" in plan["diff"][1]["after"]
    assert mariadb_running(mariadb) == (before, started), "check mode restarted or changed MariaDB"
    assert in_host("transit", f"test -e {MARIADB_CONF}", check=False).returncode != 0

    done = module("transit", MODULE, args)[0]
    assert done["changed"] is True and 0 < done["restart_downtime_s"] < 60, done
    after, restarted = mariadb_running(mariadb)
    assert after == {"log_bin": 1, "binlog_format": "ROW", "server_id": 12}
    assert restarted >= started
    assert seeded_transit_mariadb["password"] not in str(done)

    again = module("transit", MODULE, args)[0]
    assert again["changed"] is False and again["changes"] == {} and "restart_downtime_s" not in again
    assert mariadb_running(mariadb)[0] == after


def test_mariadb_without_a_server_id_derives_one_per_host(module, lab):
    admin = {"host": "127.0.0.1", "user": lab.vars["hosting_db_admin_user"],
             "password": lab.vars["hosting_db_admin_password"]}  # fmt: skip
    plans = [module(host, MODULE, {"mariadb": admin}, check_mode=True)[0] for host in ("client", "transit")]
    ids = [plan["changes"]["server_id"] for plan in plans]
    assert ids[0] != ids[1] and all(1 < server_id <= 2**28 for server_id in ids), ids


def test_one_engine_per_run(module, seeded_transit, lab):
    refused = module("transit", MODULE, {"postgresql": seeded_transit, "mariadb": seeded_transit})[0]
    assert refused["_status"] == "failed" and "mutually exclusive" in refused["msg"]
