"""SIGKILL of account_move in each of its phases (issue 7): after the kill the account is served by exactly one
side, which holds everything (the seeded data plus what the test wrote before the move); the lock is free; a re-run
converges to the destination with nothing lost and nothing duplicated.

carol carries files, mail and both engines. Each case first writes a file, a mail and a row where she is served,
as her owner would, then moves her the other way: step 4 to transit, or the rollback home (the same module, the
same guarantees), so no case needs a move of its own to set up."""

from __future__ import annotations

import pytest
from faults import MOVES, PhaseWatcher, fresh_lab, journal_state, ledger, lock_is_free, serving_side
from lab_state import in_host, playbook, start_playbook
from manifest import compare, manifest

pytestmark = pytest.mark.lab

LABELS = {"step4_migrate.yml": "step 4", "rollback.yml": "the rollback"}

ACCOUNT = "carol"
# The short suite kills where a half-done move is most delicate, mid-switch of the front (tests/integration/
# test_account_move.py kills one mid-copy of the databases); `make test-long` kills in every phase.
PHASES = [
    pytest.param("precopy", marks=pytest.mark.long),
    pytest.param("freeze", marks=pytest.mark.long),
    pytest.param("final_delta", marks=pytest.mark.long),
    pytest.param("databases", marks=pytest.mark.long),
    pytest.param("verify", marks=pytest.mark.long),
    "switch",
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
    play, destination = MOVES[source]
    owner_writes(fresh, source, f"before-{phase}", mariadb)
    expected = manifest(fresh, source, ACCOUNT, mariadb, postgresql)
    assert f"file:/home/carol/files/note-before-{phase}.txt" in expected

    watcher = PhaseWatcher(destination, ACCOUNT, phase)
    killed_run = start_playbook(play, "-e", f"account={ACCOUNT}")
    output = killed_run.communicate(timeout=300)[0]
    seen = watcher.result()
    assert seen["phase"] == phase, f"{play}: the move was not caught in {phase}:\n{output[-2000:]}"
    assert killed_run.returncode != 0, "the killed move reported success"

    # Right after the kill: one side serves carol, and it holds everything.
    side = serving_side(fresh, ACCOUNT)
    compared, lost, unexpected = compare(expected, manifest(fresh, side, ACCOUNT, mariadb, postgresql))
    assert (lost, unexpected) == ([], []), f"after a kill in {phase}, {side} lost {lost}, gained {unexpected}"
    assert lock_is_free(destination, ACCOUNT), "the dead run's lock is still held"

    rerun = playbook(play, "-e", f"account={ACCOUNT}", check=False)
    converged = rerun.returncode == 0 and serving_side(fresh, ACCOUNT) == destination
    after = manifest(fresh, destination, ACCOUNT, mariadb, postgresql)
    compared2, lost2, unexpected2 = compare(expected, after)
    ledger(record_property, f"SIGKILL of {LABELS[play]} in {phase}", runs=2,
           converged=converged, compared=compared + compared2, lost=len(lost) + len(lost2),
           unexpected=len(unexpected) + len(unexpected2))  # fmt: skip
    assert converged, rerun.stdout[-3000:]
    assert (lost2, unexpected2) == ([], []), f"the re-run lost {lost2}, duplicated or added {unexpected2}"
    state = journal_state(destination, ACCOUNT)
    assert (state.get("location"), state.get("status")) == (destination, "done")
    assert lock_is_free(destination, ACCOUNT)
