"""account_move's live method for MariaDB (issue 8) against the lab: with both servers' binary logs on (ROW,
server_ids apart), alice's alice_shop is loaded on transit from one snapshot and replicated from the pre-copy on
while a writer inserts, updates and deletes as alice (also in audit_log, a table without a key); the freeze catches
up and re-hashes only what the binary logs say changed since the live verification, and a row changed on transit
outside the replication fails the move. Every acknowledged write is on transit, both sides match by the test's own
hashes, the auto-increment goes on without collision, and no replication connection or replication user is left.
An account without MariaDB databases starts no replication connection (an empty filter would replay the whole
server), removes one an older attempt left, and its users travel at the freeze. The rollback runs from transit with
its binary log turned off again: it falls back to the dump method, says why, and brings a row written on transit
home. Two accounts moved at once take turns on the one replication connection MariaDB allows per source server, and
both go live. A move killed once its replication runs leaves nothing behind once re-run."""

from __future__ import annotations

import json
import time

import pymysql
import pytest
import yaml
from conftest import LAB, REPO, run
from lab_state import JOURNAL, in_host, mariadb_rows, playbook, start_playbook
from live_servers import AccountWriter, at_home, nothing_left, replication_left, set_binlog

from ansible_collections.hosting.migration.plugins.module_utils import dbcopy
from ansible_collections.hosting.migration.plugins.module_utils import mariadb as mariadb_lib

pytestmark = pytest.mark.lab

SEED = yaml.safe_load((REPO / "lab" / "seed.yml").read_text())
ALICE = {u["name"]: u["password"] for u in SEED["accounts"]["alice"]["db_users"]}
LIVE = ["-e", "account=alice", "-e", "account_migrate_db_method=live"]


@pytest.fixture(scope="module")
def binlog_client(lab):
    """alice at home; both servers' MariaDB write a ROW binary log with server_ids apart (what step 3 sets up)."""
    at_home("alice")
    set_binlog(lab, "client", True)
    set_binlog(lab, "transit", True)
    yield lab
    # The writer changed alice's seeded rows, which the modules after this one expect; a reset rebuilds both
    # servers as seeded (binary logs off too).
    run([LAB, "reset"])


CORRUPT = ["mariadb", "alice_shop", "-e", "UPDATE products SET name = CONCAT(name, ' (corrupted)') WHERE id = 390"]


class Writer(AccountWriter):
    """alice's shop: an order, a product touched (its trigger sets created_at), an audit line added and an old one
    deleted, in each transaction; the order's id acknowledged."""

    refusals = (pymysql.Error,)

    def connect(self):
        return pymysql.connect(host=self.lab.hosts["client"].ipv4, user="alice", password=ALICE["alice"],
                               database="alice_shop", connect_timeout=3)  # fmt: skip

    def write(self, cursor, n):
        cursor.execute("INSERT INTO orders (product_id, qty, note) VALUES (%s, 1, %s)", (1 + n % 400, f"live-{n}"))
        order = cursor.lastrowid
        cursor.execute("UPDATE products SET price = price + 1 WHERE id = %s", (1 + (n * 7) % 400,))
        cursor.execute("INSERT INTO audit_log VALUES (NOW(), %s)", (f"live-{n}",))
        cursor.execute("DELETE FROM audit_log WHERE message = %s", (f"event {n}",))
        return order


def test_alice_moves_live_with_writes_running_and_nothing_is_left(binlog_client, admin, mariadb):
    writer = Writer(binlog_client)
    writer.start()
    try:
        writer.until(20)
        # products' row 390 is not written meanwhile: the live verification finds its chunk equal and the freeze
        # would not hash it again, but transit's binary log records the row changed there (a test hook).
        corrupted = playbook("step4_migrate.yml", *LIVE, "-e",
                             json.dumps({"account_migrate_before_verify_command": CORRUPT}), check=False)  # fmt: skip
        assert corrupted.returncode != 0 and "verification found" in corrupted.stdout, corrupted.stdout[-2000:]
        failure = " ".join(corrupted.stdout.split())  # the YAML callback wraps long lines
        assert "alice_shop.products: rows changed on the destination outside the replication" in failure, failure
        assert nothing_left(left := replication_left(binlog_client, admin)), f"a failed move left {left}"
        moved = playbook("step4_migrate.yml", *LIVE)
    finally:
        writer.stop.set()
        writer.join(timeout=30)
    assert "alice: now on transit" in moved.stdout
    # orders and products, written throughout, were compared while live and only the chunks of the rows written
    # since hashed in the freeze; audit_log, written too, has no key to chunk by: hashed whole.
    summary = " ".join(moved.stdout.split())  # the YAML callback wraps long lines
    assert "alice_shop by live (hashed whole in the freeze: audit_log)" in summary, moved.stdout[-2000:]
    assert len(writer.acknowledged) > 40 and writer.refused > 0, (len(writer.acknowledged), writer.refused)

    with mariadb("transit", database="alice_shop").cursor() as cursor:
        cursor.execute("SELECT COUNT(*) FROM orders WHERE id IN %s", (writer.acknowledged,))
        assert cursor.fetchone()[0] == len(writer.acknowledged), "acknowledged writes missing on transit"
    assert mariadb_rows(mariadb, "client", "alice_shop") == mariadb_rows(mariadb, "transit", "alice_shop")
    with mariadb("transit", user="alice", password=ALICE["alice"], database="alice_shop").cursor() as cursor:
        cursor.execute("INSERT INTO orders (product_id, qty, note) VALUES (1, 1, 'after')")
        assert cursor.lastrowid > max(writer.acknowledged), "the auto-increment restarted below the copied rows"
    assert nothing_left(left := replication_left(binlog_client, admin)), left


def test_an_account_without_mariadb_databases_replicates_nothing_and_its_users_travel_at_the_freeze(
    binlog_client, admin, mariadb, tmp_path
):
    # bob has PostgreSQL databases only. A MariaDB connection for him would carry an empty filter, which replays the
    # whole client server into transit: other accounts' rows, and their moves' ACCOUNT LOCKs after those moves
    # unlocked their users on transit (a user of another account found locked after concurrent moves).
    client = mariadb("client")
    with client.cursor() as cursor:
        cursor.execute("CREATE USER 'bob_reports'@'%' IDENTIFIED BY 'r3ports pw'")
        cursor.execute("SELECT authentication_string FROM mysql.user WHERE User = 'bob_reports'")
        (hashed,) = cursor.fetchone()
    source, destination = (
        mariadb_lib.endpoint(binlog_client.hosts[host].ipv4, *admin) for host in ("client", "transit")
    )
    with mariadb("transit").cursor() as cursor:
        # What an attempt of the old code could leave behind: bob's connection, with no filter.
        cursor.execute(
            "CHANGE MASTER 'hm_bob' TO MASTER_HOST = %s, MASTER_USER = 'hm_repl_bob', MASTER_PASSWORD = 'gone'",
            (binlog_client.hosts["client"].ipv4,),
        )
    copier = dbcopy.database_copy("mariadb", "live", source, destination, "bob", tmpdir=str(tmp_path))
    try:
        started = copier.precopy(lambda phase, **counters: None)
        with mariadb("transit").cursor() as cursor:
            cursor.execute("SHOW ALL SLAVES STATUS")
            assert cursor.fetchall() == (), "a replication connection for an account without MariaDB databases"
        copied = copier.copy(lambda phase, **counters: None)
    finally:
        copier.cleanup()
    assert started == {"method": "live", "databases": {}}
    assert copied["databases"] == {} and copied["users"] == ["bob_reports@%"], copied
    transit = mariadb("transit")
    with transit.cursor() as cursor:
        cursor.execute("SELECT authentication_string FROM mysql.user WHERE User = 'bob_reports'")
        assert cursor.fetchall() == ((hashed,),)
    for conn in (client, transit):
        with conn.cursor() as cursor:
            cursor.execute("DROP USER 'bob_reports'@'%'")
    assert nothing_left(left := replication_left(binlog_client, admin)), left


def test_the_rollback_from_a_source_without_binary_log_falls_back_to_dump(binlog_client, admin, mariadb):
    set_binlog(binlog_client, "transit", False)
    with mariadb("transit", database="alice_shop").cursor() as cursor:
        cursor.execute("INSERT INTO orders (product_id, qty, note) VALUES (2, 3, 'ordered on transit')")
    back = playbook("rollback.yml", *LIVE, "-v")
    assert "alice: back on client" in back.stdout
    said = " ".join(back.stdout.split())  # the YAML callback wraps long lines
    assert "the source writes no binary log" in said, back.stdout[-2000:]
    assert mariadb_rows(mariadb, "client", "alice_shop") == mariadb_rows(mariadb, "transit", "alice_shop")
    with mariadb("client", database="alice_shop").cursor() as cursor:
        cursor.execute("SELECT COUNT(*) FROM orders WHERE note = 'ordered on transit'")
        assert cursor.fetchone()[0] == 1
    assert nothing_left(left := replication_left(binlog_client, admin)), left


# make test-long: the short suite meets turns in the end-to-end test (steps 4 and 7 move every account at once).
@pytest.mark.long
def test_two_accounts_moved_at_once_from_one_source_take_turns_and_both_go_live(binlog_client, admin, mariadb):
    # MariaDB gives transit one replication connection per source server: carol's move waits for alice's to end.
    set_binlog(binlog_client, "transit", True)
    both = playbook("step4_migrate.yml", "-e", "accounts=alice,carol", "-e", "account_migrate_db_method=live")
    said = " ".join(both.stdout.split())  # the YAML callback wraps long lines
    assert "alice_shop by live" in said and "carol_blog by live" in said, both.stdout[-3000:]
    for database in ("alice_shop", "carol_blog"):
        assert mariadb_rows(mariadb, "client", database) == mariadb_rows(mariadb, "transit", database), database
    assert nothing_left(left := replication_left(binlog_client, admin)), left
    for account in ("alice", "carol"):
        playbook("rollback.yml", "-e", f"account={account}")
    assert nothing_left(left := replication_left(binlog_client, admin)), left


@pytest.mark.long
def test_a_move_killed_while_it_replicates_leaves_nothing_once_re_run(binlog_client, admin, mariadb):
    proc = start_playbook("step4_migrate.yml", *LIVE)
    killed = None
    deadline = time.monotonic() + 120
    transit = mariadb("transit")
    try:
        while time.monotonic() < deadline and proc.poll() is None:
            with transit.cursor() as cursor:
                cursor.execute("SHOW ALL SLAVES STATUS")
                started = cursor.fetchall()
            if started:
                progress = in_host("transit", f"cat {JOURNAL}/accounts/alice/progress.json").stdout
                killed = json.loads(progress)["pid"]
                in_host("transit", f"kill -KILL {killed}")
                break
            time.sleep(0.02)
    finally:
        proc.communicate(timeout=300)
    assert killed, "the move never started its replication"
    again = playbook("step4_migrate.yml", *LIVE)
    said = " ".join(again.stdout.split())  # the YAML callback wraps long lines
    assert "alice: now on transit" in said and "alice_shop by live" in said, again.stdout[-2000:]
    assert mariadb_rows(mariadb, "client", "alice_shop") == mariadb_rows(mariadb, "transit", "alice_shop")
    assert nothing_left(left := replication_left(binlog_client, admin)), left
    playbook("rollback.yml", *LIVE)
    assert nothing_left(left := replication_left(binlog_client, admin)), left
