"""SIGKILL of a live move in each of its phases (issue 8): both servers prepared as step 3 leaves them, so carol's
MariaDB and PostgreSQL databases replicate from the pre-copy on (step 4 to transit, the rollback home: the same
module, alternately). After the kill one side serves carol and holds everything (the seeded data plus a file and a
row in each engine written before the move); the re-run converges with nothing lost or duplicated; once it has, no
publication, slot, subscription, pass file, replication connection or replication user is left on either server."""

from __future__ import annotations

import pytest
from faults import fresh_lab, kill_in_phase_then_rerun, serving_side
from lab_state import in_host
from live_servers import nothing_left, replication_left, set_live
from manifest import manifest

pytestmark = [pytest.mark.lab, pytest.mark.long]

ACCOUNT = "carol"
PHASES = ["precopy", "freeze", "databases", "verify", "switch"]


@pytest.fixture(scope="module")
def live_lab(lab, admin):
    fresh = fresh_lab(lab)
    set_live(fresh, admin, True)
    yield fresh
    set_live(fresh, admin, False)


def owner_writes(lab, host: str, tag: str, mariadb, postgresql) -> None:
    """A file and a row in each engine, written on the side that serves carol, as her site would."""
    path = f"/home/carol/files/live-{tag}.txt"
    in_host(host, f"printf 'note {tag}\\n' > {path} && chown 2003:2003 {path}")
    users = {u["engine"]: u["password"] for u in lab.seed["accounts"][ACCOUNT]["db_users"]}
    with mariadb(host, user="carol", password=users["mariadb"], database="carol_blog").cursor() as cursor:
        cursor.execute("INSERT INTO posts (title, published_at) VALUES (%s, '2024-01-01')", (f"Live {tag}",))
    with postgresql(host, user="carol", password=users["postgresql"], database="carol_legacy").cursor() as cursor:
        cursor.execute("CREATE TABLE IF NOT EXISTS live_notes (id serial PRIMARY KEY, note text)")
        cursor.execute("INSERT INTO live_notes (note) VALUES (%s)", (tag,))


@pytest.mark.parametrize("phase", PHASES)
def test_sigkill_of_a_live_move_in_each_phase_then_a_rerun_converges(
    live_lab, admin, phase, mariadb, postgresql, record_property
):
    source = serving_side(live_lab, ACCOUNT)
    owner_writes(live_lab, source, f"live-{phase}", mariadb, postgresql)
    expected = manifest(live_lab, source, ACCOUNT, mariadb, postgresql)

    rerun = kill_in_phase_then_rerun(live_lab, ACCOUNT, phase, expected, mariadb, postgresql, what="a live move",
                                     record_property=record_property, rerun=["-v"])  # fmt: skip
    if phase in ("precopy", "freeze"):  # later kills leave the databases copied: the re-run does not copy again
        said = " ".join(rerun.stdout.split())  # the YAML callback wraps long lines
        assert "method: live" in said, "the re-run did not move the databases live"
    assert nothing_left(left := replication_left(live_lab, admin)), f"after the re-run: {left}"
