"""Downtime of a database move by the live method (replication from the pre-copy on) against the dump method and
the plain pipe, client -> transit, with a light write load on the source, in one run on the same machine, for
PostgreSQL (logical replication) and MariaDB (a snapshot, then binary-log replication).

For each engine and size, `dbbench_data` (the shapes of bench/account_move_db.py) is generated on the client. Both
servers get what step 3 sets up for the run (restored at the end): PostgreSQL wal_level=logical, MariaDB a ROW
binary log with server_ids apart. A writer commits about 20 inserts and 10 updates a second into it for as long as
the account is "live". The contenders, each into a transit that holds no copy yet:

- plain: `pg_dump --create | psql` or `mariadb-dump | mariadb`, all of it downtime (the writer is stopped first,
  as a freeze would);
- dump: dbcopy's dump method, `copy()` only, all of it downtime (writer stopped);
- live: `precopy()` and the live verification (`verify_live`) while the writer runs (not downtime: the account is
  live), then the writer stops (the freeze) and `copy()` - catch-up to the source's position, sequences, the
  replication removed - plus the freeze's verification (`freeze_differences`: re-hashes the chunks of the rows the
  decoding slots or binary logs recorded as changed since they were found equal; `hashed` counts the tables it
  hashed whole) is the downtime. It runs inside the transit host (`lab exec transit`), as account_move does: the
  subscription's pass file must be readable by the transit server, and MariaDB's replication user is allowed from
  transit's address only. The copy is verified again with table_checksums on both sides afterwards.

It prints the downtime of each contender, its s/GB, live/plain, live/dump and live against the provider's documented
60 s/GB, and for the live method the ratio of its downtime at the largest size to that at the smallest (the target:
flat in size).

    PATH=/tmp/venvtest/bin:$PATH python bench/account_move_live.py --sizes 1,4 [--engines mariadb,postgresql]

Needs the running lab (lab/lab up), psycopg2 and PyMySQL.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import account_move_db as dbbench  # noqa: E402
from hostinglab import services as lab_services  # noqa: E402

from ansible_collections.hosting.migration.plugins.module_utils import mariadb  # noqa: E402

LAB = dbbench.REPO / "lab" / "lab"
MARIADB_CONF = "/etc/mysql/mariadb.conf.d/91-bench-live.cnf"
MARIADB_RESTART = ("mariadb-admin shutdown && setsid -f /usr/sbin/mariadbd --user=mysql "
                   "</dev/null >>/var/log/mysql/restart.log 2>&1")  # fmt: skip

# Runs inside the transit host: the live copier's precopy, then (on "freeze" from stdin) its copy; JSON lines out.
IN_TRANSIT = r"""
import json, sys, tempfile, time
config = json.loads(sys.stdin.readline())
sys.path.insert(0, config["collections"])
from ansible_collections.hosting.migration.plugins.module_utils import dbcopy, mariadb, postgres
lib = postgres if config["engine"] == "postgresql" else mariadb
source, destination = (lib.endpoint(**config[side]) for side in ("source", "destination"))
copier = dbcopy.database_copy(config["engine"], "live", source, destination, config["account"],
                              parallel=config["parallel"], tmpdir=tempfile.mkdtemp())
try:
    started = time.monotonic()
    result = copier.precopy(lambda phase, **counters: None)
    verified = {database: copier.verify_live(database) for database in result.get("databases", {})}
    print(json.dumps({"precopy_s": time.monotonic() - started, "precopy": result}), flush=True)
    sys.stdin.readline()
    started = time.monotonic()
    result = copier.copy(lambda phase, **counters: None)
    copied_s = time.monotonic() - started
    differences, hashed = [], 0
    for database, info in result["databases"].items():
        if info.get("method") == "live":
            found, tables = copier.freeze_differences(database, verified.get(database, {}))
            differences += found
            hashed += len(tables)
    print(json.dumps({"downtime_s": time.monotonic() - started, "copy_s": copied_s, "hashed": hashed,
                      "differences": differences, "copy": result}), flush=True)
finally:
    copier.cleanup()
"""


class Writer(threading.Thread):
    """The account's application: ~20 inserts into orders and ~10 updates of events a second, each committed."""

    def __init__(self, engine) -> None:
        super().__init__(daemon=True)
        self.engine, self.stop, self.commits = engine, threading.Event(), 0

    def run(self) -> None:
        conn = self.engine.lib.connect(self.engine.client, dbbench.DATABASE)
        try:
            n = 0
            while not self.stop.is_set():
                n += 1
                with conn.cursor() as cursor:
                    cursor.execute(
                        "INSERT INTO orders (customer_id, total, status, created_at) VALUES (%s, 1, 'new', now())",
                        (1 + n % 1000,),
                    )
                    if n % 2 == 0:
                        cursor.execute("UPDATE events SET kind = 'live' WHERE id = %s", (1 + n * 7919 % 1000,))
                self.commits += 1
                time.sleep(0.05)
        finally:
            conn.close()


class LiveMariaDB(dbbench.MariaDB):
    def create_and_fill(self, script: str) -> None:
        # The generated rows stay out of the binary log: the live method starts from a snapshot, not the log.
        super().create_and_fill("SET SESSION sql_log_bin = 0;\n" + script)

    def purge_logs(self) -> None:
        for endpoint in (self.client, self.transit):
            conn = mariadb.connect(endpoint)
            try:
                mariadb._query(conn, "RESET MASTER")
            finally:
                conn.close()


def set_live_prereqs(engine, on: bool) -> None:
    """What step 3 sets on both servers (on) or the lab's seeded settings (off), each server restarted."""
    for host, endpoint, server_id in (("client", engine.client, 11), ("transit", engine.transit, 12)):
        if engine.name == "postgresql":
            conn = engine.lib.connect(endpoint)
            try:
                with conn.cursor() as cursor:
                    cursor.execute(f"ALTER SYSTEM SET wal_level = '{'logical' if on else 'replica'}'")
            finally:
                conn.close()
            subprocess.run([str(LAB), "exec", host, "--", "pg_ctlcluster", "15", "main", "restart"], check=True)
            continue
        settings = f"[mariadbd]\\nlog_bin = mysql-bin\\nbinlog_format = ROW\\nserver_id = {server_id}\\n"
        write = f"printf '{settings}' > {MARIADB_CONF}" if on else f"rm -f {MARIADB_CONF}"
        subprocess.run([str(LAB), "exec", host, "--", "sh", "-c", f"{write} && {MARIADB_RESTART}"], check=True)
        lab_services.wait_port(endpoint.host, 3306, f"MariaDB on {host}")


def endpoint_options(endpoint) -> dict:
    return {"host": endpoint.host, "user": endpoint.user, "password": endpoint.password, "port": endpoint.port}


def timed_live(engine, parallel: int) -> tuple[float, float, int, int]:
    """(pre-copy seconds, downtime seconds, tables hashed whole, commits by the writer) of one live move, verified."""
    writer = Writer(engine)
    writer.start()
    proc = subprocess.Popen(
        [str(LAB), "exec", "transit", "--", "python3", "-c", IN_TRANSIT],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        config = {
            "collections": str(dbbench.REPO / "collections"),
            "engine": engine.name,
            "account": dbbench.ACCOUNT,
            "parallel": parallel,
            "source": endpoint_options(engine.client),
            "destination": endpoint_options(engine.transit),
        }
        proc.stdin.write(json.dumps(config) + "\n")  # the passwords travel on stdin, never in argv
        proc.stdin.flush()
        precopied = json.loads(proc.stdout.readline())
        if precopied["precopy"].get("method") != "live":
            raise SystemExit(f"the live method did not run: {precopied['precopy']}")
        time.sleep(2)  # the account stays live a moment after its sync, as while files are pre-copied
    finally:
        writer.stop.set()  # the freeze
        writer.join()
    proc.stdin.write("freeze\n")
    proc.stdin.flush()
    copied = json.loads(proc.stdout.readline())
    if proc.wait() != 0:
        raise SystemExit("the live copy failed inside transit")
    if copied["differences"]:
        raise SystemExit(f"the freeze's verification found differences: {copied['differences'][:3]}")
    method = copied["copy"]["databases"][dbbench.DATABASE].get("method")
    if method != "live":
        raise SystemExit(f"the database fell back to {method}: {copied['copy']['databases'][dbbench.DATABASE]}")
    sums = []
    for endpoint in (engine.client, engine.transit):
        conn = engine.lib.connect(endpoint, dbbench.DATABASE)
        try:
            sums.append(engine.lib.table_checksums(conn, dbbench.DATABASE))
        finally:
            conn.close()
    if sums[0] != sums[1]:
        raise SystemExit(f"the live copy differs from the source: {sums[0]} != {sums[1]}")
    return precopied["precopy_s"], copied["downtime_s"], copied["hashed"], writer.commits


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", default="0.05,0.2", help="database sizes in GB, comma-separated")
    parser.add_argument("--engines", default="mariadb,postgresql")
    parser.add_argument("--parallel", type=int, default=2)
    args = parser.parse_args()
    sizes = [float(size) for size in args.sizes.split(",")]
    lab = dbbench.lab_config.load()
    print("client -> transit; downtime = what the account waits while frozen; the live pre-copy runs while a writer "
          "commits ~30 writes/s")  # fmt: skip
    print(f"{'engine':<11}{'size GB':>8}  {'plain s':>8}{'s/GB':>7}  {'dump s':>8}{'s/GB':>7}  {'live pre s':>10}"
          f"{'live s':>8}{'s/GB':>7}  {'live/plain':>10}{'live/dump':>10}{'vs 60s/GB':>10}{'writes':>8}"
          f"{'hashed':>8}")  # fmt: skip
    engines = {"mariadb": LiveMariaDB, "postgresql": dbbench.PostgreSQL}
    with tempfile.TemporaryDirectory(prefix="bench-live-") as tmp:
        for name in args.engines.split(","):
            engine = engines[name](lab, tmp)
            set_live_prereqs(engine, True)
            downtimes = []
            try:
                for size in sizes:
                    engine.generate(size)
                    measured = engine.size() / dbbench.GB
                    engine.drop(engine.transit)
                    engine.settle()
                    plain = dbbench.timed_plain_pipe(engine)
                    engine.drop(engine.transit)
                    engine.settle()
                    dump = dbbench.timed_copy(engine, args.parallel, verify=False)
                    engine.drop(engine.transit)
                    engine.settle()
                    precopy, live, hashed, writes = timed_live(engine, args.parallel)
                    downtimes.append(live)
                    print(f"{name:<11}{measured:>8.3f}  {plain:>8.2f}{plain / measured:>7.1f}  {dump:>8.2f}"
                          f"{dump / measured:>7.1f}  {precopy:>10.2f}{live:>8.2f}{live / measured:>7.1f}  "
                          f"{live / plain:>10.3f}{live / dump:>10.3f}"
                          f"{live / measured / dbbench.PROVIDER_S_PER_GB:>10.4f}{writes:>8}{hashed:>8}",
                          flush=True)  # fmt: skip
                    if isinstance(engine, LiveMariaDB):
                        engine.purge_logs()
            finally:
                engine.drop(engine.transit)
                engine.drop(engine.client)
                set_live_prereqs(engine, False)
            if len(downtimes) > 1:
                print(f"{name}: live downtime at {sizes[-1]:g} GB / at {sizes[0]:g} GB: "
                      f"{downtimes[-1] / downtimes[0]:.2f}", flush=True)  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
