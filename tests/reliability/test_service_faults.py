"""Faults of the destination's services and disk in the middle of a move, and links that point out of a home
(issue 7). After each: a clear failure (or a move that rode it out), the source untouched and serving, and a
re-run, once the service is back, that converges with nothing lost. The short suite kills MariaDB and
follows links; `make test-long` also kills PostgreSQL, terminates its copy sessions and fills the disk.

dave (both engines, the largest databases) takes the database faults, moving the other way each time (step 4 to
transit, the rollback home); alice fills a small disk and carries the links."""

from __future__ import annotations

import pytest
from faults import (
    MOVES,
    PhaseWatcher,
    fresh_lab,
    ledger,
    lock_is_free,
    restart_mariadb,
    restart_postgresql,
    serving_side,
)
from lab_state import in_host, playbook
from manifest import compare, manifest

pytestmark = pytest.mark.lab

TERMINATE_COPY_SESSIONS = (
    'for i in $(seq 500); do n=$(runuser -u postgres -- psql -XAtc "SELECT count(pg_terminate_backend(pid)) '
    "FROM pg_stat_activity WHERE datname LIKE 'dave%' AND pid <> pg_backend_pid()\"); "
    '[ "$n" -gt 0 ] && echo "terminated $n" && break; sleep 0.01; done'
)


@pytest.fixture(scope="module")
def fresh(lab):
    return fresh_lab(lab)


def interrupted_move(lab, account, action, mariadb, postgresql):
    """Move `account` the next way with `action` done on its destination when the database phase starts;
    returns the source, destination, expected manifest, the playbook's result and what the watcher saw."""
    source = serving_side(lab, account)
    play, destination = MOVES[source]
    expected = manifest(lab, source, account, mariadb, postgresql)
    watcher = PhaseWatcher(destination, account, "databases", action=action)
    result = playbook(play, "-e", f"account={account}", check=False)
    return source, destination, expected, result, watcher.result()


@pytest.mark.parametrize(
    ("fault", "action", "restart", "engine"),
    [
        ("MariaDB on the destination killed in the copy", "kill-service:mariadbd", restart_mariadb, "mariadb"),
        pytest.param(
            "PostgreSQL on the destination killed in the copy",
            "kill-service:postgres",
            restart_postgresql,
            "postgres",
            marks=pytest.mark.long,
        ),
        pytest.param(
            "PostgreSQL copy sessions terminated", TERMINATE_COPY_SESSIONS, None, "postgres", marks=pytest.mark.long
        ),
    ],
    ids=["mariadb-killed", "postgresql-killed", "pg-terminate-backend"],
)
def test_a_destination_database_fault_fails_clearly_and_a_rerun_converges(
    fresh, fault, action, restart, engine, mariadb, postgresql, record_property
):
    source, destination, expected, result, seen = interrupted_move(fresh, "dave", action, mariadb, postgresql)
    assert seen["phase"] == "databases", f"the fault was never injected:\n{result.stdout[-2000:]}"
    if restart is None:
        assert "terminated" in seen["output"], "no copy session to terminate"
    runs, lost, compared, unexpected = 1, [], 0, []
    if result.returncode != 0:
        # A clear failure: the task says what broke, and the source still serves everything.
        message = result.stdout.lower()
        assert "move of dave failed" in message and engine in message, result.stdout[-3000:]
        assert serving_side(fresh, "dave") == source
        compared, lost, unexpected = compare(expected, manifest(fresh, source, "dave", mariadb, postgresql))
        assert (lost, unexpected) == ([], []), f"{fault}: the source lost {lost}, gained {unexpected}"
        assert lock_is_free(destination, "dave")
        if restart is not None:
            restart(fresh, destination)
        result = playbook(MOVES[source][0], "-e", "account=dave", check=False)
        runs = 2
    converged = result.returncode == 0 and serving_side(fresh, "dave") == destination
    count, lost2, unexpected2 = compare(expected, manifest(fresh, destination, "dave", mariadb, postgresql))
    ledger(record_property, fault, runs=runs, converged=converged, compared=compared + count,
           lost=len(lost) + len(lost2), unexpected=len(unexpected) + len(unexpected2))  # fmt: skip
    assert converged, result.stdout[-3000:]
    assert (lost2, unexpected2) == ([], []), f"{fault}: the destination lost {lost2}, gained {unexpected2}"


@pytest.mark.long
def test_a_full_destination_disk_fails_clearly_leaves_no_partial_file_and_the_source_serves(
    fresh, mariadb, postgresql, record_property
):
    """alice's home on transit is a 4 MB filesystem; her home on the client holds a 6 MB file."""
    assert serving_side(fresh, "alice") == "client", "alice starts at home (the suite moves her back afterwards)"
    in_host(
        "client",
        "head -c 6000000 /dev/urandom > /home/alice/files/big.bin && chown 2001:2001 /home/alice/files/big.bin",
    )
    in_host("transit", "truncate -s 4M /root/alice-home.img && mkfs.ext4 -q -F /root/alice-home.img"
            " && mkdir -p /home/alice && mount -o loop /root/alice-home.img /home/alice")  # fmt: skip
    try:
        expected = manifest(fresh, "client", "alice", mariadb, postgresql)
        result = playbook("step4_migrate.yml", "-e", "account=alice", check=False)
        assert result.returncode != 0, "the move fit on a disk too small for it"
        assert "No space left on device" in result.stdout, result.stdout[-3000:]
        # rsync keeps what it got in its partial directory (a re-run resumes from it), never under the final name.
        leftovers = in_host("transit", "find /home/alice -path '*/files/big.bin' -o -name '.big.bin.*'").stdout.split()
        assert leftovers == [], f"a partial file under its final name: {leftovers}"
        assert serving_side(fresh, "alice") == "client"
        compared, lost, unexpected = compare(expected, manifest(fresh, "client", "alice", mariadb, postgresql))
        assert (lost, unexpected) == ([], [])
    finally:
        in_host("transit", "umount /home/alice; rm -f /root/alice-home.img", check=False)
    # With room on the disk, the same move converges.
    rerun = playbook("step4_migrate.yml", "-e", "account=alice", check=False)
    converged = rerun.returncode == 0 and serving_side(fresh, "alice") == "transit"
    count, lost2, unexpected2 = compare(expected, manifest(fresh, "transit", "alice", mariadb, postgresql))
    ledger(record_property, "destination disk full (4 MB home)", runs=2, converged=converged,
           compared=compared + count, lost=len(lost) + len(lost2), unexpected=len(unexpected2))  # fmt: skip
    assert converged, rerun.stdout[-3000:]
    assert (lost2, unexpected2) == ([], [])


def test_links_pointing_out_of_a_home_are_copied_as_links_never_followed(fresh, mariadb, postgresql, record_property):
    source = serving_side(fresh, "alice")
    play, destination = MOVES[source]
    # What the links point at (/etc/shadow aside from alice's own line: the move may create her user there), and
    # anything of alice's (uid 2001) that following them would have put there.
    outside = ("stat -c '%n %U %a' /etc/shadow /etc /root; grep -v '^alice:' /etc/shadow | sha256sum;"
               " find /etc /root -uid 2001")  # fmt: skip
    in_host(source, "cd /home/alice/files && ln -s /etc/shadow shadow-link && ln -s /root root-link"
            " && ln -s ../../../etc up-link && chown -h 2001:2001 shadow-link root-link up-link")  # fmt: skip
    before = in_host(destination, outside).stdout
    expected = manifest(fresh, source, "alice", mariadb, postgresql)
    assert expected["file:/home/alice/files/root-link"].endswith("-> /root")
    result = playbook(play, "-e", "account=alice", check=False)
    converged = result.returncode == 0 and serving_side(fresh, "alice") == destination
    compared, lost, unexpected = compare(expected, manifest(fresh, destination, "alice", mariadb, postgresql))
    ledger(record_property, "links out of the home", runs=1, converged=converged, compared=compared,
           lost=len(lost), unexpected=len(unexpected))  # fmt: skip
    assert converged, result.stdout[-3000:]
    # The links arrive as links with their targets (the manifest holds lstat, not what they point at) ...
    assert (lost, unexpected) == ([], []), f"lost {lost}, gained {unexpected}"
    # ... and nothing they point at on the destination was read, written or re-owned through them.
    assert in_host(destination, outside).stdout == before
