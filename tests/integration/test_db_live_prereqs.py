"""db_live_prereqs against the lab's real PostgreSQL on transit (replica WAL, 10 slots as seeded): check mode
plans and changes nothing; the real run writes the settings, restarts PostgreSQL once through the given command and
measures it; a second run changes nothing and does not restart; a failing restart command says the settings wait
for the next restart; bad parameters are refused before anything is read."""

from __future__ import annotations

import pytest
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
