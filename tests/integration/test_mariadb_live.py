"""account_move's live method for MariaDB (issue 8) against the lab: with both servers' binary logs on (ROW,
server_ids apart), alice's alice_shop is loaded on transit from one snapshot and replicated from the pre-copy on
while a writer inserts, updates and deletes as alice (also in audit_log, a table without a key); the freeze catches
up and re-hashes only what the binary logs say changed since the live verification, and a row changed on transit
outside the replication fails the move. Every acknowledged write is on transit, both sides match by the test's own
hashes, the auto-increment goes on without collision, and no replication connection or replication user is left.
The rollback runs from transit with its binary log turned off again: it falls back to the dump method, says why,
and brings a row written on transit home. A move killed once its replication runs leaves nothing behind once
re-run."""

from __future__ import annotations

import json
import threading
import time

import pymysql
import pytest
import yaml
from conftest import LAB, REPO, run
from hostinglab import proc as lab_proc
from hostinglab import services as lab_services
from lab_state import JOURNAL, in_host, mariadb_rows, playbook, start_playbook

pytestmark = pytest.mark.lab

SEED = yaml.safe_load((REPO / "lab" / "seed.yml").read_text())
ALICE = {u["name"]: u["password"] for u in SEED["accounts"]["alice"]["db_users"]}
LIVE = ["-e", "account=alice", "-e", "account_migrate_db_method=live"]
BINLOG_CONF = "/etc/mysql/mariadb.conf.d/91-live-test.cnf"


def restart_mariadb(lab, host):
    in_host(host, "mariadb-admin shutdown")
    lab_proc.start_daemon(host, "mariadb", ["/usr/sbin/mariadbd", "--user=mysql"])
    lab_services.wait_port(lab.hosts[host].ipv4, 3306, f"MariaDB on {host}")


def set_binlog(lab, host, server_id):
    """A ROW binary log and this server_id on the host's MariaDB (None: back to the lab's, no log), restarted."""
    if server_id is None:
        in_host(host, f"rm -f {BINLOG_CONF}")
    else:
        settings = f"[mariadbd]\\nlog_bin = mysql-bin\\nbinlog_format = ROW\\nserver_id = {server_id}\\n"
        in_host(host, f"printf '{settings}' > {BINLOG_CONF}")
    restart_mariadb(lab, host)


@pytest.fixture(scope="module")
def binlog_client(lab):
    """alice at home; both servers' MariaDB write a ROW binary log with server_ids apart (what step 3 sets up)."""
    state = in_host("client", f"cat {JOURNAL}/accounts/alice/state.json 2>/dev/null || echo null").stdout
    if (json.loads(state) or {}).get("location") not in (None, "client"):
        run([LAB, "reset"])
    in_host("transit", "mkdir -p /opt/hosting/langs && cp -a /opt/hosting/packages/2020/. /opt/hosting/langs/")
    set_binlog(lab, "client", 11)
    set_binlog(lab, "transit", 12)
    yield lab
    set_binlog(lab, "client", None)
    set_binlog(lab, "transit", None)
    run([LAB, "reset"])  # the writer changed alice's seeded rows: the modules after this one expect the seed


def replication_left(mariadb) -> dict:
    left = {}
    for host in ("client", "transit"):
        with mariadb(host).cursor() as cursor:
            cursor.execute("SHOW ALL SLAVES STATUS")
            left[f"{host} connections"] = [row[0] for row in cursor.fetchall()]
            cursor.execute("SELECT CONCAT(User, '@', Host) FROM mysql.user WHERE User LIKE 'hm\\_%'")
            left[f"{host} replication users"] = [row[0] for row in cursor.fetchall()]
    return left


CORRUPT = ["mariadb", "alice_shop", "-e", "UPDATE products SET name = CONCAT(name, ' (corrupted)') WHERE id = 390"]
NOTHING_LEFT = {"client connections": [], "client replication users": [], "transit connections": [],
                "transit replication users": []}  # fmt: skip


class Writer(threading.Thread):
    """alice's shop: every 20 ms an order, a product touched (its trigger sets created_at), an audit line added and
    an old one deleted, one transaction each; acknowledged = committed. Refused writes (the freeze) reconnect."""

    def __init__(self, lab):
        super().__init__(daemon=True)
        self.lab, self.stop, self.orders, self.refused, self.n = lab, threading.Event(), [], 0, 0

    def run(self):
        conn = None
        while not self.stop.is_set():
            self.n += 1
            try:
                if conn is None:
                    conn = pymysql.connect(host=self.lab.hosts["client"].ipv4, user="alice", password=ALICE["alice"],
                                           database="alice_shop", connect_timeout=3)  # fmt: skip
                with conn.cursor() as cursor:
                    cursor.execute("INSERT INTO orders (product_id, qty, note) VALUES (%s, 1, %s)",
                                   (1 + self.n % 400, f"live-{self.n}"))  # fmt: skip
                    order = cursor.lastrowid
                    cursor.execute("UPDATE products SET price = price + 1 WHERE id = %s", (1 + (self.n * 7) % 400,))
                    cursor.execute("INSERT INTO audit_log VALUES (NOW(), %s)", (f"live-{self.n}",))
                    cursor.execute("DELETE FROM audit_log WHERE message = %s", (f"event {self.n}",))
                conn.commit()
                self.orders.append(order)
            except pymysql.Error:
                self.refused += 1
                conn = None
                time.sleep(0.2)
            time.sleep(0.02)


def test_alice_moves_live_with_writes_running_and_nothing_is_left(binlog_client, mariadb):
    writer = Writer(binlog_client)
    writer.start()
    try:
        while len(writer.orders) < 20:
            time.sleep(0.05)
        # products' row 390 is not written meanwhile: the live verification finds its chunk equal and the freeze
        # would not hash it again, but transit's binary log records the row changed there (a test hook).
        corrupted = playbook("step4_migrate.yml", *LIVE, "-e",
                             json.dumps({"account_migrate_before_verify_command": CORRUPT}), check=False)  # fmt: skip
        assert corrupted.returncode != 0 and "verification found" in corrupted.stdout, corrupted.stdout[-2000:]
        failure = " ".join(corrupted.stdout.split())  # the YAML callback wraps long lines
        assert "alice_shop.products: rows changed on the destination outside the replication" in failure, failure
        assert replication_left(mariadb) == NOTHING_LEFT, "a failed move left its replication"
        moved = playbook("step4_migrate.yml", *LIVE)
    finally:
        writer.stop.set()
        writer.join(timeout=30)
    assert "alice: now on transit" in moved.stdout
    # orders and products, written throughout, were compared while live and only the chunks of the rows written
    # since hashed in the freeze; audit_log, written too, has no key to chunk by: hashed whole.
    summary = " ".join(moved.stdout.split())  # the YAML callback wraps long lines
    assert "alice_shop by live (hashed whole in the freeze: audit_log)" in summary, moved.stdout[-2000:]
    assert len(writer.orders) > 40 and writer.refused > 0, (len(writer.orders), writer.refused)

    with mariadb("transit", database="alice_shop").cursor() as cursor:
        cursor.execute("SELECT COUNT(*) FROM orders WHERE id IN %s", (writer.orders,))
        assert cursor.fetchone()[0] == len(writer.orders), "acknowledged writes missing on transit"
    assert mariadb_rows(mariadb, "client", "alice_shop") == mariadb_rows(mariadb, "transit", "alice_shop")
    with mariadb("transit", user="alice", password=ALICE["alice"], database="alice_shop").cursor() as cursor:
        cursor.execute("INSERT INTO orders (product_id, qty, note) VALUES (1, 1, 'after')")
        assert cursor.lastrowid > max(writer.orders), "the auto-increment restarted below the copied rows"
    assert replication_left(mariadb) == NOTHING_LEFT


def test_the_rollback_from_a_source_without_binary_log_falls_back_to_dump(binlog_client, mariadb):
    set_binlog(binlog_client, "transit", None)
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
    assert replication_left(mariadb) == NOTHING_LEFT


@pytest.mark.long
def test_a_move_killed_while_it_replicates_leaves_nothing_once_re_run(binlog_client, mariadb):
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
    assert replication_left(mariadb) == NOTHING_LEFT
    playbook("rollback.yml", *LIVE)
    assert replication_left(mariadb) == NOTHING_LEFT
