"""SIGKILL of account_move in each of its phases (issue 7): after the kill the account is served by exactly one
side, which holds everything (the seeded data plus what the test wrote before the move); the lock is free; a re-run
converges to the destination with nothing lost and nothing duplicated.

carol carries files, mail and both engines. Each case first writes a file, a mail and a row where she is served,
as her owner would, then moves her the other way: step 4 to transit, or the rollback home (the same module, the
same guarantees), so no case needs a move of its own to set up."""

from __future__ import annotations

import pytest
from faults import MOVES, fresh_lab, journal_state, kill_in_phase_then_rerun, lock_is_free, serving_side
from lab_state import in_host
from manifest import manifest

pytestmark = pytest.mark.lab

ACCOUNT = "carol"
# `make test-long` kills in every phase, the unfreeze included (after the switch: the guardian finishes the
# arrival); the short suite's kill is tests/integration/test_account_move.py's, mid-copy of the databases.
PHASES = [
    pytest.param(phase, marks=pytest.mark.long)
    for phase in ("precopy", "freeze", "final_delta", "databases", "verify", "switch", "unfreeze")
]


@pytest.fixture(scope="module")
def fresh(lab):
    return fresh_lab(lab)


def owner_writes(lab, host: str, tag: str, mariadb) -> None:
    """A file, a mail and a row, written on the side that serves carol, as her owner and her mail would."""
    in_host(
        host,
        f"printf 'note {tag}\\n' > /home/carol/files/note-{tag}.txt && chown 2003:2003 /home/carol/files/note-{tag}.txt"
        f" && printf 'Subject: {tag}\\n\\nbody {tag}\\n' > /var/mail/carol/carol/new/1800000000.{tag}.lab"
        f" && chown 2003:2003 /var/mail/carol/carol/new/1800000000.{tag}.lab",
    )
    password = next(u["password"] for u in lab.seed["accounts"][ACCOUNT]["db_users"] if u["engine"] == "mariadb")
    with mariadb(host, user="carol", password=password, database="carol_blog").cursor() as cursor:
        cursor.execute("INSERT INTO posts (title, published_at) VALUES (%s, '2024-01-01')", (f"Post {tag}",))


@pytest.mark.parametrize("phase", PHASES)
def test_sigkill_in_each_phase_then_a_rerun_converges(fresh, phase, mariadb, postgresql, record_property):
    source = serving_side(fresh, ACCOUNT)
    owner_writes(fresh, source, f"before-{phase}", mariadb)
    expected = manifest(fresh, source, ACCOUNT, mariadb, postgresql)
    assert f"file:/home/carol/files/note-before-{phase}.txt" in expected

    destination = MOVES[source][1]
    kill_in_phase_then_rerun(fresh, ACCOUNT, phase, expected, mariadb, postgresql, what="a move",
                             record_property=record_property)  # fmt: skip
    state = journal_state(destination, ACCOUNT)
    assert (state.get("location"), state.get("status")) == (destination, "done")
    assert lock_is_free(destination, ACCOUNT)
