"""Downtime of a PostgreSQL database move by the live method (logical replication from the pre-copy on) against
the dump method and the plain pipe `pg_dump | psql`, client -> transit, with a light write load on the source, in
one run on the same machine.

For each size, `dbbench_data` (the shapes of bench/account_move_db.py) is generated on the client. Both servers
get wal_level=logical for the bench (restored at the end), as step 3 sets them. A writer commits about 20 inserts
and 10 updates a second into it for as long as the account is "live". The contenders, each into a transit that
holds no copy yet:

- plain: `pg_dump --create | psql`, all of it downtime (the writer is stopped first, as a freeze would);
- dump: dbcopy's dump method, `copy()` only, all of it downtime (writer stopped);
- live: `precopy()` and the live verification (`verify_live`) while the writer runs (not downtime: the account is
  live), then the writer stops (the freeze) and `copy()` - catch-up to the source's WAL position, sequences,
  subscription, slot and publication dropped - plus the freeze's verification (`freeze_differences`: re-hashes the
  chunks of the rows the decoding slots recorded as changed since they were found equal; `hashed` counts the
  tables it hashed whole) is the downtime. It runs inside the transit host (`lab exec transit`), as account_move
  does: the subscription's pass file must be readable by the transit server. The copy is verified again with
  table_checksums on both sides afterwards.

It prints the downtime of each contender, its s/GB, live/plain and live/dump, and for the live method the ratio of
its downtime at the largest size to that at the smallest (the target: flat in size).

    PATH=/tmp/venvtest/bin:$PATH python bench/account_move_pg_live.py --sizes 0.25,1

Needs the running lab (lab/lab up) and psycopg2.
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

from ansible_collections.hosting.migration.plugins.module_utils import postgres  # noqa: E402

LAB = dbbench.REPO / "lab" / "lab"

# Runs inside the transit host: the live copier's precopy, then (on "freeze" from stdin) its copy; JSON lines out.
IN_TRANSIT = r"""
import json, sys, tempfile, time
config = json.loads(sys.stdin.readline())
sys.path.insert(0, config["collections"])
from ansible_collections.hosting.migration.plugins.module_utils import dbcopy, postgres
source, destination = (postgres.endpoint(**config[side]) for side in ("source", "destination"))
copier = dbcopy.database_copy("postgresql", "live", source, destination, config["account"],
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

    def __init__(self, endpoint) -> None:
        super().__init__(daemon=True)
        self.endpoint, self.stop, self.commits = endpoint, threading.Event(), 0

    def run(self) -> None:
        conn = postgres.connect(self.endpoint, dbbench.DATABASE)
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


def set_wal_level(engine, level: str) -> None:
    """On both servers: the source replicates, and the live verification records changes on both sides."""
    for host, endpoint in (("client", engine.client), ("transit", engine.transit)):
        conn = postgres.connect(endpoint)
        try:
            with conn.cursor() as cursor:
                cursor.execute(f"ALTER SYSTEM SET wal_level = '{level}'")
        finally:
            conn.close()
        subprocess.run([str(LAB), "exec", host, "--", "pg_ctlcluster", "15", "main", "restart"], check=True)


def endpoint_options(endpoint) -> dict:
    return {"host": endpoint.host, "user": endpoint.user, "password": endpoint.password, "port": endpoint.port}


def timed_live(engine, parallel: int) -> tuple[float, float, int]:
    """(pre-copy seconds, downtime seconds, commits by the writer) of one live move, verified."""
    writer = Writer(engine.client)
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
        conn = postgres.connect(endpoint, dbbench.DATABASE)
        try:
            sums.append(postgres.table_checksums(conn, dbbench.DATABASE))
        finally:
            conn.close()
    if sums[0] != sums[1]:
        raise SystemExit(f"the live copy differs from the source: {sums[0]} != {sums[1]}")
    return precopied["precopy_s"], copied["downtime_s"], copied["hashed"], writer.commits


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", default="0.05,0.2", help="database sizes in GB, comma-separated")
    parser.add_argument("--parallel", type=int, default=2)
    args = parser.parse_args()
    sizes = [float(size) for size in args.sizes.split(",")]
    lab = dbbench.lab_config.load()
    print("client -> transit, PostgreSQL; downtime = what the account waits while frozen; the live pre-copy runs while "
          "a writer commits ~30 writes/s")  # fmt: skip
    print(f"{'size GB':>8}  {'plain s':>8}{'s/GB':>7}  {'dump s':>8}{'s/GB':>7}  {'live pre s':>10}{'live s':>8}"
          f"{'s/GB':>7}  {'live/plain':>10}{'live/dump':>10}{'writes':>8}{'hashed':>8}")  # fmt: skip
    downtimes = []
    with tempfile.TemporaryDirectory(prefix="bench-live-") as tmp:
        engine = dbbench.PostgreSQL(lab, tmp)
        set_wal_level(engine, "logical")
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
                print(f"{measured:>8.3f}  {plain:>8.2f}{plain / measured:>7.1f}  {dump:>8.2f}{dump / measured:>7.1f}  "
                      f"{precopy:>10.2f}{live:>8.2f}{live / measured:>7.1f}  {live / plain:>10.3f}{live / dump:>10.3f}"
                      f"{writes:>8}{hashed:>8}", flush=True)  # fmt: skip
        finally:
            engine.drop(engine.transit)
            engine.drop(engine.client)
            set_wal_level(engine, "replica")
    if len(downtimes) > 1:
        print(f"live downtime at {sizes[-1]:g} GB / at {sizes[0]:g} GB: {downtimes[-1] / downtimes[0]:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
