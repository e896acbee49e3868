"""Database phase of an account move: seconds per GB of the dump copy method (dbcopy) against the plain pipes
`mariadb-dump | mariadb` and `pg_dump | psql`, client -> transit, in one run on the same machine.

For each engine and size, a database `dbbench_data` of the bench-only account `dbbench` is generated on the
client server, then each contender copies it to the transit server into a database that does not exist yet (each
run starts with the transit copy dropped, a PostgreSQL checkpoint, and a machine that has been idle for a second).
Every contender runs its tools on this controller, so they share its cores and the lab bridge alike; passwords
travel in 0600 files. The dump copy's result is verified with table_checksums. With --repeat N the contenders
alternate N times and the best time of each is reported (other work on a shared machine only ever adds time).
The bench databases are dropped on both servers at the end.

    PATH=/tmp/venvtest/bin:$PATH python bench/account_move_db.py --sizes 0.25,1

Needs the running lab (lab/lab up) and PyMySQL + psycopg2.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "lab"))
sys.path.insert(0, str(REPO / "collections"))

from hostinglab import config as lab_config  # noqa: E402

from ansible_collections.hosting.migration.plugins.module_utils import dbcopy, mariadb, postgres  # noqa: E402

ACCOUNT = "dbbench"
DATABASE = "dbbench_data"
PROVIDER_S_PER_GB = 60.0
GB = 2**30

# The bench database: a few tables of different shapes, as a shop or CMS has them (a large table of
# measurements, orders with a foreign key and an ENUM, events with nullable text and JSON, a log without primary
# key). Shares of the requested size and approximate on-disk bytes per row in PostgreSQL, to size the row counts
# (an engine's ROW_BYTES_FACTOR scales them; the size printed is always the one measured).
SHAPE = {"measurements": (0.35, 240), "events": (0.30, 260), "orders": (0.20, 120), "access_log": (0.15, 110)}

MARIADB_SCHEMA = """
CREATE TABLE measurements (id BIGINT AUTO_INCREMENT PRIMARY KEY, sensor INT NOT NULL, taken_at DATETIME NOT NULL,
  value DOUBLE NOT NULL, payload VARCHAR(255) NOT NULL, KEY idx_sensor_time (sensor, taken_at)) ENGINE=InnoDB;
INSERT INTO measurements (sensor, taken_at, value, payload)
  SELECT seq % 97, '2023-01-01' + INTERVAL seq SECOND, seq / 7e0, REPEAT(CHAR(65 + seq % 26), 120 + seq % 60)
  FROM seq_1_to_{measurements};
CREATE TABLE customers (id INT AUTO_INCREMENT PRIMARY KEY, email VARCHAR(190) NOT NULL, name VARCHAR(100) NOT NULL,
  UNIQUE KEY email (email)) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4;
INSERT INTO customers (email, name) SELECT CONCAT('c', seq, '@example.test'), CONCAT('Kundin ', seq, ' Müller')
  FROM seq_1_to_1000;
CREATE TABLE orders (id INT AUTO_INCREMENT PRIMARY KEY, customer_id INT NOT NULL, total DECIMAL(12,2) NOT NULL,
  status ENUM('new','paid','shipped') NOT NULL, note TEXT NULL, created_at TIMESTAMP NOT NULL,
  KEY idx_status (status, created_at), CONSTRAINT fk_customer FOREIGN KEY (customer_id) REFERENCES customers (id))
  ENGINE=InnoDB DEFAULT CHARSET=utf8mb4;
INSERT INTO orders (customer_id, total, status, note, created_at)
  SELECT 1 + seq % 1000, seq % 100000 / 100, ELT(1 + seq % 3, 'new', 'paid', 'shipped'),
         IF(seq % 4 = 0, NULL, CONCAT('Lieferung ', seq, ' – bitte klingeln')), '2024-01-01' + INTERVAL seq SECOND
  FROM seq_1_to_{orders};
CREATE TABLE events (id BIGINT AUTO_INCREMENT PRIMARY KEY, kind VARCHAR(20) NOT NULL, body TEXT NULL,
  data JSON NULL, created DATETIME NOT NULL, KEY idx_kind (kind)) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4;
INSERT INTO events (kind, body, data, created)
  SELECT CONCAT('k', seq % 50), IF(seq % 10 = 0, NULL, CONCAT('Größe ', MD5(seq), '\t', REPEAT('é', seq % 40), '\n')),
         JSON_OBJECT('n', seq, 'tags', JSON_ARRAY('a', 'b')), '2024-01-01' + INTERVAL seq MINUTE
  FROM seq_1_to_{events};
CREATE TABLE access_log (at DATETIME NOT NULL, ip VARBINARY(16) NOT NULL, path VARCHAR(255) NOT NULL,
  status SMALLINT NOT NULL) ENGINE=InnoDB;
INSERT INTO access_log SELECT '2024-01-01' + INTERVAL seq SECOND, INET6_ATON(CONCAT('10.0.', seq % 256, '.1')),
  CONCAT('/shop/item/', seq, '?ref=', MD5(seq)), 200 + seq % 5 FROM seq_1_to_{access_log};
"""

POSTGRES_SCHEMA = """
CREATE TABLE measurements (id bigserial PRIMARY KEY, sensor int NOT NULL, taken_at timestamptz NOT NULL,
  value double precision NOT NULL, payload text NOT NULL);
INSERT INTO measurements (sensor, taken_at, value, payload)
  SELECT g % 97, timestamptz '2023-01-01 00:00+00' + g * interval '1 second', g / 7.0,
         repeat(chr(65 + g % 26), 120 + g % 60)
  FROM generate_series(1, {measurements}) g;
CREATE INDEX measurements_sensor_time ON measurements (sensor, taken_at);
CREATE TABLE customers (id serial PRIMARY KEY, email text NOT NULL UNIQUE, name text NOT NULL);
INSERT INTO customers (email, name) SELECT 'c' || g || '@example.test', 'Kundin ' || g || ' Müller'
  FROM generate_series(1, 1000) g;
CREATE TABLE orders (id serial PRIMARY KEY, customer_id int NOT NULL REFERENCES customers (id),
  total numeric(12,2) NOT NULL, status text NOT NULL, note text, created_at timestamptz NOT NULL);
INSERT INTO orders (customer_id, total, status, note, created_at)
  SELECT 1 + g % 1000, g % 100000 / 100.0, (ARRAY['new', 'paid', 'shipped'])[1 + g % 3],
         CASE WHEN g % 4 = 0 THEN NULL ELSE 'Lieferung ' || g || ' – bitte klingeln' END,
         timestamptz '2024-01-01 00:00+00' + g * interval '1 second'
  FROM generate_series(1, {orders}) g;
CREATE INDEX orders_status ON orders (status, created_at);
CREATE TABLE events (id bigserial PRIMARY KEY, kind text NOT NULL, body text, data jsonb, created timestamp NOT NULL);
INSERT INTO events (kind, body, data, created)
  SELECT 'k' || g % 50,
         CASE WHEN g % 10 = 0 THEN NULL ELSE 'Größe ' || md5(g::text) || E'\\t' || repeat('é', g % 40) END,
         jsonb_build_object('n', g, 'tags', ARRAY['a', 'b']), timestamp '2024-01-01' + g * interval '1 minute'
  FROM generate_series(1, {events}) g;
CREATE INDEX events_kind ON events (kind);
CREATE TABLE access_log (at timestamp NOT NULL, ip inet NOT NULL, path text NOT NULL, status smallint NOT NULL);
INSERT INTO access_log SELECT timestamp '2024-01-01' + g * interval '1 second', ('10.0.' || g % 256 || '.1')::inet,
  '/shop/item/' || g || '?ref=' || md5(g::text), 200 + g % 5 FROM generate_series(1, {access_log}) g;
VACUUM ANALYZE;
"""


class Engine:
    """What the bench needs of one engine: generate the database, drop it, the plain pipe, a cache flush."""

    name = ""
    lib = None
    ROW_BYTES_FACTOR = 1.0

    def __init__(self, lab, tmp: str) -> None:
        self.tmp = tmp
        user, password = lab.vars["hosting_db_admin_user"], lab.vars["hosting_db_admin_password"]
        self.client = self.lib.endpoint(lab.hosts["client"].ipv4, user, password)
        self.transit = self.lib.endpoint(lab.hosts["transit"].ipv4, user, password)

    def generate(self, gigabytes: float) -> None:
        rows = {
            table: max(1, int(gigabytes * GB * share / (row_bytes * self.ROW_BYTES_FACTOR)))
            for table, (share, row_bytes) in SHAPE.items()
        }
        self.drop(self.client)
        self.create_and_fill(self.SCHEMA.format(**rows))

    def size(self) -> int:
        copier = dbcopy.database_copy(self.name, "dump", self.client, self.transit, ACCOUNT, tmpdir=self.tmp)
        return copier.plan()["databases"][DATABASE]["bytes"]


class MariaDB(Engine):
    name = "mariadb"
    lib = mariadb
    ROW_BYTES_FACTOR = 0.885  # InnoDB stores these rows in less than PostgreSQL does
    SCHEMA = MARIADB_SCHEMA

    def __init__(self, lab, tmp: str) -> None:
        super().__init__(lab, tmp)
        self.client_cnf = dbcopy.write_private_file(tmp, "bench-client.cnf", self.client.option_file())
        self.transit_cnf = dbcopy.write_private_file(tmp, "bench-transit.cnf", self.transit.option_file())

    def drop(self, endpoint) -> None:
        with _closing(mariadb.connect(endpoint)) as conn, conn.cursor() as cursor:
            cursor.execute(f"DROP DATABASE IF EXISTS {mariadb.quote_identifier(DATABASE)}")

    def create_and_fill(self, script: str) -> None:
        script = f"CREATE DATABASE {DATABASE} DEFAULT CHARACTER SET utf8mb4;\nUSE {DATABASE};\n{script}"
        subprocess.run(["mariadb", f"--defaults-extra-file={self.client_cnf}"], input=script, text=True, check=True)
        with _closing(mariadb.connect(self.client, DATABASE)) as conn, conn.cursor() as cursor:
            cursor.execute("SELECT TABLE_NAME FROM information_schema.TABLES WHERE TABLE_SCHEMA = %s", (DATABASE,))
            for (table,) in cursor.fetchall():
                cursor.execute(f"ANALYZE TABLE {mariadb.quote_identifier(table)}")
                cursor.fetchall()

    def settle(self) -> None:
        wait_for_idle_machine()

    def plain_pipe(self) -> list[list[str]]:
        return [
            ["mariadb-dump", f"--defaults-extra-file={self.client_cnf}", "--single-transaction", "--routines",
             "--events", "--triggers", "--databases", DATABASE],
            ["mariadb", f"--defaults-extra-file={self.transit_cnf}"],
        ]  # fmt: skip


class PostgreSQL(Engine):
    name = "postgresql"
    lib = postgres
    SCHEMA = POSTGRES_SCHEMA

    def __init__(self, lab, tmp: str) -> None:
        super().__init__(lab, tmp)
        self.passfile = dbcopy.write_private_file(tmp, "bench.pgpass", self.client.passfile() + self.transit.passfile())

    def drop(self, endpoint) -> None:
        with _closing(postgres.connect(endpoint)) as conn, conn.cursor() as cursor:
            cursor.execute(f'DROP DATABASE IF EXISTS "{DATABASE}" WITH (FORCE)')

    def create_and_fill(self, script: str) -> None:
        with _closing(postgres.connect(self.client)) as conn, conn.cursor() as cursor:
            cursor.execute(f'CREATE DATABASE "{DATABASE}"')
        subprocess.run(
            ["psql", "-X", "-q", "-v", "ON_ERROR_STOP=1", "-d", self.client.conninfo(DATABASE, self.passfile)],
            input=script,
            text=True,
            check=True,
        )

    def settle(self) -> None:
        with _closing(postgres.connect(self.transit)) as conn, conn.cursor() as cursor:
            cursor.execute("CHECKPOINT")
        wait_for_idle_machine()

    def plain_pipe(self) -> list[list[str]]:
        return [
            ["pg_dump", "--create", f"--dbname={self.client.conninfo(DATABASE, self.passfile)}"],
            [
                "psql",
                "-X",
                "-q",
                "-v",
                "ON_ERROR_STOP=1",
                f"--dbname={self.transit.conninfo('postgres', self.passfile)}",
            ],
        ]


class _closing:
    def __init__(self, conn) -> None:
        self.conn = conn

    def __enter__(self):
        return self.conn

    def __exit__(self, *exc) -> None:
        self.conn.close()


def wait_for_idle_machine(limit: float = 120.0) -> None:
    """Wait until the machine's CPUs have been under 5% busy for a second (or give up after `limit` seconds)."""

    def sample() -> tuple[int, int]:
        with open("/proc/stat") as stat:
            fields = [int(value) for value in stat.readline().split()[1:]]
        return sum(fields[:3]) + sum(fields[5:8]), sum(fields)

    deadline = time.monotonic() + limit
    while time.monotonic() < deadline:
        busy, total = sample()
        time.sleep(1)
        busy_after, total_after = sample()
        if (busy_after - busy) < 0.05 * (total_after - total):
            return
    print("warning: the machine stayed busy, figures include other work", file=sys.stderr)


def timed_plain_pipe(engine: Engine) -> float:
    stages = [dbcopy.Stage(argv[0], argv) for argv in engine.plain_pipe()]
    started = time.monotonic()
    dbcopy.run_pipeline(stages)
    return time.monotonic() - started


def timed_copy(engine: Engine, parallel: int, verify: bool) -> float:
    copier = dbcopy.database_copy(engine.name, "dump", engine.client, engine.transit, ACCOUNT,
                                  parallel=parallel, tmpdir=engine.tmp)  # fmt: skip
    started = time.monotonic()
    try:
        copier.copy(lambda phase, **counters: None)
    finally:
        copier.cleanup()
    seconds = time.monotonic() - started
    if verify:
        sums = []
        for endpoint in (engine.client, engine.transit):
            with _closing(engine.lib.connect(endpoint, DATABASE)) as conn:
                sums.append(engine.lib.table_checksums(conn, DATABASE))
        if sums[0] != sums[1]:
            raise SystemExit(f"{engine.name}: the copy differs from the source: {sums[0]} != {sums[1]}")
    return seconds


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", default="0.05,0.2", help="database sizes in GB, comma-separated")
    parser.add_argument("--engines", default="mariadb,postgresql")
    parser.add_argument("--parallel", type=int, default=2, help="the copy's parallel table jobs (default 2)")
    parser.add_argument("--repeat", type=int, default=1, help="runs per contender; the best is reported")
    parser.add_argument("--no-verify", dest="verify", action="store_false", help="skip the checksum comparison")
    args = parser.parse_args()
    sizes = [float(size) for size in args.sizes.split(",")]
    lab = lab_config.load()
    engines = {"mariadb": MariaDB, "postgresql": PostgreSQL}
    print(f"client -> transit, the tools of every contender on this controller, best of {args.repeat}; size = tables "
          "and indexes on the client\nplain: mariadb-dump | mariadb, pg_dump | psql; copy: dbcopy's dump method, "
          f"parallel={args.parallel}; vs 60s/GB: copy s/GB / the provider's 60 s/GB")  # fmt: skip
    print(f"{'engine':<11}{'size GB':>8}  {'plain s':>8}{'s/GB':>7}  {'copy s':>8}{'s/GB':>7}  "
          f"{'copy/plain':>10}{'vs 60s/GB':>10}")  # fmt: skip
    with tempfile.TemporaryDirectory(prefix="bench-db-") as tmp:
        for name in args.engines.split(","):
            engine = engines[name](lab, tmp)
            try:
                for size in sizes:
                    engine.generate(size)
                    measured = engine.size() / GB
                    plain, copy = [], []
                    for _attempt in range(args.repeat):
                        engine.drop(engine.transit)
                        engine.settle()
                        plain.append(timed_plain_pipe(engine))
                        engine.drop(engine.transit)
                        engine.settle()
                        copy.append(timed_copy(engine, args.parallel, args.verify))
                    p, c = min(plain), min(copy)
                    print(f"{name:<11}{measured:>8.3f}  {p:>8.2f}{p / measured:>7.1f}  {c:>8.2f}{c / measured:>7.1f}  "
                          f"{c / p:>10.2f}{c / measured / PROVIDER_S_PER_GB:>10.2f}", flush=True)  # fmt: skip
            finally:
                engine.drop(engine.transit)
                engine.drop(engine.client)
    return 0


if __name__ == "__main__":
    sys.exit(main())
