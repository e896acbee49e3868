"""The lab's database servers as live moves need them (what step 3 sets up: PostgreSQL wal_level=logical, MariaDB a
ROW binary log with server_ids apart) and back as seeded, and every trace a live move could leave on them. Shared by
the live-method tests (tests/integration/test_pg_live.py, test_mariadb_live.py, tests/reliability/)."""

from __future__ import annotations

import json
import threading
import time

import psycopg2
import pymysql
from conftest import LAB, run
from hostinglab import proc as lab_proc
from hostinglab import services as lab_services
from lab_state import JOURNAL, in_host

BINLOG_CONF = "/etc/mysql/mariadb.conf.d/91-live-test.cnf"
SERVER_IDS = {"client": 11, "transit": 12}


class AccountWriter(threading.Thread):
    """An account's application writing every 20 ms, one transaction a write; `acknowledged` holds the id each
    committed write returned. A refused write (the freeze) counts in `refused`, and the next one reconnects.
    Subclasses say how to connect, how to write (returning the id), and which errors are refusals."""

    refusals: tuple[type[Exception], ...] = ()

    def __init__(self, lab):
        super().__init__(daemon=True)
        self.lab, self.stop, self.acknowledged, self.refused, self.n = lab, threading.Event(), [], 0, 0

    def connect(self):
        raise NotImplementedError

    def write(self, cursor, n):
        raise NotImplementedError

    def run(self):
        conn = None
        while not self.stop.is_set():
            self.n += 1
            try:
                if conn is None:
                    conn = self.connect()
                with conn.cursor() as cursor:
                    written = self.write(cursor, self.n)
                conn.commit()
                self.acknowledged.append(written)
            except self.refusals:
                self.refused += 1
                conn = None
                time.sleep(0.2)
            time.sleep(0.02)

    def until(self, writes):
        while len(self.acknowledged) < writes:
            time.sleep(0.05)


def at_home(account):
    """The account on the client (a lab reset if a move left it elsewhere), and transit with the client's language
    runtimes (what step 3 installs)."""
    state = in_host("client", f"cat {JOURNAL}/accounts/{account}/state.json 2>/dev/null || echo null").stdout
    if (json.loads(state) or {}).get("location") not in (None, "client"):
        run([LAB, "reset"])
    in_host("transit", "mkdir -p /opt/hosting/langs && cp -a /opt/hosting/packages/2020/. /opt/hosting/langs/")


def set_wal_level(lab, admin, host, level):
    def admin_conn():
        conn = psycopg2.connect(host=lab.hosts[host].ipv4, user=admin[0], password=admin[1], dbname="postgres",
                                connect_timeout=5)  # fmt: skip
        conn.autocommit = True
        return conn

    conn = admin_conn()
    with conn.cursor() as cursor:
        cursor.execute(f"ALTER SYSTEM SET wal_level = '{level}'")
    conn.close()
    in_host(host, "pg_ctlcluster 15 main restart")
    conn = admin_conn()
    with conn.cursor() as cursor:
        cursor.execute("SHOW wal_level")
        assert cursor.fetchone()[0] == level
    conn.close()


def restart_mariadb(lab, host):
    in_host(host, "mariadb-admin shutdown")
    lab_proc.start_daemon(host, "mariadb", ["/usr/sbin/mariadbd", "--user=mysql"])
    lab_services.wait_port(lab.hosts[host].ipv4, 3306, f"MariaDB on {host}")


def set_binlog(lab, host, on):
    """A ROW binary log and the host's server_id on its MariaDB (off: back to the lab's, no log), restarted."""
    if on:
        settings = f"[mariadbd]\\nlog_bin = mysql-bin\\nbinlog_format = ROW\\nserver_id = {SERVER_IDS[host]}\\n"
        in_host(host, f"printf '{settings}' > {BINLOG_CONF}")
    else:
        in_host(host, f"rm -f {BINLOG_CONF}")
    restart_mariadb(lab, host)


def set_live(lab, admin, on, hosts=("client", "transit")):
    for host in hosts:
        set_wal_level(lab, admin, host, "logical" if on else "replica")
        set_binlog(lab, host, on)


def replication_left(lab, admin) -> dict:
    """Every trace of the live methods on both servers, per server: PostgreSQL publications (in any database),
    slots, subscriptions, tables whose replica identity is not the default, pass files; MariaDB replication
    connections and replication users."""
    left = {}
    for host in ("client", "transit"):
        address = lab.hosts[host].ipv4
        conn = psycopg2.connect(host=address, user=admin[0], password=admin[1], dbname="postgres", connect_timeout=5)
        conn.autocommit = True
        with conn.cursor() as cursor:
            cursor.execute("SELECT datname FROM pg_database WHERE datallowconn AND NOT datistemplate")
            databases = [row[0] for row in cursor.fetchall()]
            cursor.execute("SELECT slot_name FROM pg_replication_slots")
            left[f"{host} slots"] = sorted(row[0] for row in cursor.fetchall())
            cursor.execute("SELECT subname FROM pg_subscription")
            left[f"{host} subscriptions"] = sorted(row[0] for row in cursor.fetchall())
        conn.close()
        publications, identities = [], []
        for database in databases:
            conn = psycopg2.connect(host=address, user=admin[0], password=admin[1], dbname=database,
                                    connect_timeout=5)  # fmt: skip
            conn.autocommit = True
            with conn.cursor() as cursor:
                cursor.execute("SELECT pubname FROM pg_publication")
                publications += [f"{database}.{row[0]}" for row in cursor.fetchall()]
                cursor.execute(
                    "SELECT relname FROM pg_class WHERE relkind = 'r' AND relreplident <> 'd' "
                    "AND relnamespace = 'public'::regnamespace"
                )
                identities += [f"{database}.{row[0]}" for row in cursor.fetchall()]
            conn.close()
        left[f"{host} publications"] = sorted(publications)
        left[f"{host} replica identities"] = sorted(identities)
        left[f"{host} pass files"] = in_host(
            host, "ls -A /var/lib/postgresql/.hosting-migration 2>/dev/null || true"
        ).stdout.split()
        conn = pymysql.connect(host=address, user=admin[0], password=admin[1], connect_timeout=5)
        with conn.cursor() as cursor:
            cursor.execute("SHOW ALL SLAVES STATUS")
            left[f"{host} connections"] = [row[0] for row in cursor.fetchall()]
            cursor.execute("SELECT CONCAT(User, '@', Host) FROM mysql.user WHERE User LIKE 'hm\\_%'")
            left[f"{host} replication users"] = [row[0] for row in cursor.fetchall()]
        conn.close()
    return left


def nothing_left(left: dict) -> bool:
    return not any(left.values())
