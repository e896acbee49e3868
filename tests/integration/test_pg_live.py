"""account_move's live method for PostgreSQL (issue 8) against the lab: with wal_level=logical on both servers, bob's
bob_app replicates to transit from the pre-copy on while a writer keeps inserting, updating and deleting as bob
(also in tags_nopk, a table without a primary key); the freeze catches up and re-hashes what changed since the live
verification, and a row changed on transit outside the replication fails the move. Every acknowledged write is on
transit, the source and destination match by the test's own hashes, the sequences go on without collision, and no
publication, subscription, slot, pass file or changed replica identity is left on either server. The rollback runs
from transit set back to wal_level replica: it falls back to the dump method, says why, and brings everything home.
A move killed while the subscription syncs leaves nothing behind once re-run."""

from __future__ import annotations

import json
import time

import psycopg2
import pytest
import yaml
from conftest import LAB, REPO, run
from lab_state import JOURNAL, in_host, playbook, postgresql_rows, start_playbook
from live_servers import AccountWriter, at_home, nothing_left, replication_left, set_wal_level

pytestmark = pytest.mark.lab

SEED = yaml.safe_load((REPO / "lab" / "seed.yml").read_text())
BOB = {u["name"]: u["password"] for u in SEED["accounts"]["bob"]["db_users"]}


@pytest.fixture(scope="module")
def logical_client(lab, admin):
    """bob at home; both servers with wal_level=logical, as step 3 sets them up."""
    at_home("bob")
    set_wal_level(lab, admin, "client", "logical")
    set_wal_level(lab, admin, "transit", "logical")
    yield lab
    # The writer changed bob's seeded rows, which the modules after this one expect; a reset rebuilds both
    # servers as seeded (wal_level replica too).
    run([LAB, "reset"])


class Writer(AccountWriter):
    """bob's application: an insert into visits, an insert, an update and a delete in tags_nopk, in each
    transaction; the visit's id acknowledged."""

    refusals = (psycopg2.Error,)

    def connect(self):
        return psycopg2.connect(host=self.lab.hosts["client"].ipv4, user="bob", password=BOB["bob"],
                                dbname="bob_app", connect_timeout=3)  # fmt: skip

    def write(self, cursor, n):
        cursor.execute("INSERT INTO visits (plant_id, at, note) VALUES (%s, now(), %s) RETURNING id",
                       (1 + n % 300, f"live-{n}"))  # fmt: skip
        visit = cursor.fetchone()[0]
        cursor.execute("INSERT INTO tags_nopk VALUES (%s, 'live')", (1 + n % 300,))
        cursor.execute("UPDATE tags_nopk SET tag = tag || '+' WHERE plant_id = %s", (1 + n % 300,))
        cursor.execute("DELETE FROM tags_nopk WHERE plant_id = %s AND tag LIKE %s", (1 + (n * 7) % 300, "%++"))
        return visit


CORRUPT = ["runuser", "-u", "postgres", "--", "psql", "-X", "-q", "-d", "bob_app", "-c",
           "UPDATE plants SET name = name || ' (corrupted)' WHERE id = 7"]  # fmt: skip


def test_bob_moves_live_with_writes_running_and_nothing_is_left(logical_client, admin, postgresql):
    writer = Writer(logical_client)
    writer.start()
    try:
        writer.until(20)
        # plants is not written meanwhile: the live verification finds it equal and the freeze would skip it, but
        # the destination's decoding slot records a row changed there (a test hook before the verification).
        corrupted = playbook("step4_migrate.yml", "-e", "account=bob", "-e",
                             json.dumps({"account_migrate_before_verify_command": CORRUPT}), check=False)  # fmt: skip
        assert corrupted.returncode != 0 and "verification found" in corrupted.stdout, corrupted.stdout[-2000:]
        assert "bob_app.public.plants: 1 row change(s) made on the destination outside the replication" in (
            corrupted.stdout
        ), corrupted.stdout[-2000:]
        assert nothing_left(left := replication_left(logical_client, admin)), f"a failed move left {left}"
        moved = playbook("step4_migrate.yml", "-e", "account=bob")
    finally:
        writer.stop.set()
        writer.join(timeout=30)
    assert "bob: now on transit" in moved.stdout
    # visits, written throughout, was compared while live and only the chunks of its new rows hashed in the
    # freeze; tags_nopk, written too, has no key to chunk by: hashed whole.
    summary = " ".join(moved.stdout.split())  # the YAML callback wraps long lines
    assert "bob_app by live (hashed whole in the freeze: public.tags_nopk)" in summary, moved.stdout[-2000:]
    assert len(writer.acknowledged) > 40 and writer.refused > 0, (len(writer.acknowledged), writer.refused)

    with postgresql("transit", database="bob_app").cursor() as cursor:
        cursor.execute("SELECT id FROM visits WHERE id = ANY(%s)", (writer.acknowledged,))
        assert len(cursor.fetchall()) == len(writer.acknowledged), "acknowledged writes missing on transit"
    assert postgresql_rows(postgresql, "client", "bob_app") == postgresql_rows(postgresql, "transit", "bob_app")
    with postgresql("transit", user="bob", password=BOB["bob"], database="bob_app").cursor() as cursor:
        cursor.execute("INSERT INTO visits (plant_id, at, note) VALUES (1, now(), 'after') RETURNING id")
        assert cursor.fetchone()[0] > max(writer.acknowledged), "the sequence restarted below the copied rows"
    assert nothing_left(left := replication_left(logical_client, admin)), left


def test_the_rollback_from_a_source_without_logical_wal_falls_back_to_dump(logical_client, admin, postgresql):
    set_wal_level(logical_client, admin, "transit", "replica")
    with postgresql("transit", database="bob_app").cursor() as cursor:
        cursor.execute("INSERT INTO plants (name) VALUES ('planted on transit')")
    back = playbook("rollback.yml", "-e", "account=bob", "-v")
    assert "bob: back on client" in back.stdout
    said = " ".join(back.stdout.split())  # the YAML callback wraps long lines
    assert "wal_level on the source is replica, not logical" in said, back.stdout[-2000:]
    assert postgresql_rows(postgresql, "client", "bob_app") == postgresql_rows(postgresql, "transit", "bob_app")
    with postgresql("client", database="bob_app").cursor() as cursor:
        cursor.execute("SELECT count(*) FROM plants WHERE name = 'planted on transit'")
        assert cursor.fetchone()[0] == 1
    assert nothing_left(left := replication_left(logical_client, admin)), left


@pytest.mark.long
def test_a_move_killed_while_the_subscription_syncs_leaves_nothing_once_re_run(logical_client, admin, postgresql):
    proc = start_playbook("step4_migrate.yml", "-e", "account=bob")
    killed = None
    deadline = time.monotonic() + 120
    client = postgresql("client")
    try:
        while time.monotonic() < deadline and proc.poll() is None:
            with client.cursor() as cursor:
                cursor.execute("SELECT count(*) FROM pg_replication_slots WHERE slot_name = 'hm_bob_app'")
                started = cursor.fetchone()[0]
            if started:
                progress = in_host("transit", f"cat {JOURNAL}/accounts/bob/progress.json").stdout
                killed = json.loads(progress)["pid"]
                in_host("transit", f"kill -KILL {killed}")
                break
            time.sleep(0.02)
    finally:
        proc.communicate(timeout=300)
    assert killed, "the move never started its replication"
    again = playbook("step4_migrate.yml", "-e", "account=bob")
    said = " ".join(again.stdout.split())  # the YAML callback wraps long lines
    assert "bob: now on transit" in said and "bob_app by live" in said, again.stdout[-2000:]
    assert postgresql_rows(postgresql, "client", "bob_app") == postgresql_rows(postgresql, "transit", "bob_app")
    assert nothing_left(left := replication_left(logical_client, admin)), left
    playbook("rollback.yml", "-e", "account=bob")
    assert nothing_left(left := replication_left(logical_client, admin)), left
