"""Writes during a move (issue 7): a load generator writes rows, mail and files to alice where her users reach
her while she is pre-copied, frozen and switched to transit, keeps writing there, and again through a rollback
home. Every write acknowledged anywhere is on the client at the end, once; writes during each freeze were refused
(the generator saw refusals of each kind), never acknowledged and lost."""

from __future__ import annotations

import json
import time

import pytest
from faults import fresh_lab, ledger, serving_side
from lab_state import JOURNAL, in_host, playbook
from load import Load
from manifest import manifest

pytestmark = pytest.mark.lab

FILES = "/home/alice/files/load"


@pytest.fixture(scope="module")
def fresh(lab):
    lab = fresh_lab(lab)
    # The suite moves accounts on from wherever the modules before left them (the links test moves alice).
    if serving_side(lab, "alice") == "transit":
        home = playbook("rollback.yml", "-e", "account=alice", check=False)
        assert home.returncode == 0, home.stdout[-3000:]
    in_host("client", f"install -d -o 2001 -g 2001 {FILES}")
    return lab


def present(lab, mariadb) -> dict[str, list[str]]:
    """What alice's side holds of the generator's writes: row tags, the Message-IDs of her Maildir, file names."""
    with mariadb("client", database="alice_shop").cursor() as cursor:
        cursor.execute("SELECT message FROM audit_log WHERE message LIKE 'load-%'")
        rows = [row[0] for row in cursor.fetchall()]
    mail = in_host(
        "client", "cd /var/mail/alice/info && grep -h -i -m1 '^Message-ID: <load-' new/* cur/* || true"
    ).stdout.split()
    files = in_host("client", f"ls {FILES}").stdout.split()
    return {"rows": rows, "mail": [m for m in mail if m.startswith("<load-")], "files": files}


def mail_trail(message_ids: list[str]) -> str:
    """What each server's Postfix did with these messages (for a failure's report)."""
    trail = []
    for message_id in message_ids[:3]:
        for host in ("client", "transit"):
            script = (
                f"for id in $(grep -F -- '{message_id}' /var/log/postfix.log | sed -E 's/.*: ([0-9A-F]+): .*/\\1/'); "
                'do grep -F -- "$id" /var/log/postfix.log; done; postqueue -p | tail -3'
            )
            trail.append(f"--- {message_id} on {host}:\n{in_host(host, script, check=False).stdout[-3000:]}")
    return "\n".join(trail)


def queues_empty() -> bool:
    """Mail accepted (250) is delivered by Postfix a moment later: wait for both servers' queues to drain."""
    return all(in_host(h, "postqueue -j").stdout.strip() == "" for h in ("client", "transit"))


def test_every_acknowledged_write_survives_a_move_and_a_rollback(fresh, mariadb, postgresql, record_property):
    assert serving_side(fresh, "alice") == "client", "alice starts at home"
    load = Load(fresh, "alice", "alice_shop", "info", FILES).start()
    try:
        load.serve_from("client")
        moved = playbook("step4_migrate.yml", "-e", "account=alice", check=False)
        assert moved.returncode == 0, moved.stdout[-3000:]
        assert serving_side(fresh, "alice") == "transit"
        refused_in_move = dict(load.refused)
        load.serve_from("transit")
        before_rollback = load.acknowledged()
        deadline_writes = before_rollback + 30
        while load.acknowledged() < deadline_writes:  # writes on transit before going home
            time.sleep(0.05)
        back = playbook("rollback.yml", "-e", "account=alice", check=False)
        assert back.returncode == 0, back.stdout[-3000:]
        load.serve_from("client")
        assert serving_side(fresh, "alice") == "client"
        after_rollback = load.acknowledged()
        while load.acknowledged() < after_rollback + 15:
            time.sleep(0.05)
    finally:
        load.finish()

    deadline = time.monotonic() + 60
    while not queues_empty() and time.monotonic() < deadline:
        time.sleep(0.5)
    held = present(fresh, mariadb)
    acknowledged = {"rows": load.rows, "mail": load.mail, "files": load.files}
    lost = {kind: sorted(set(names) - set(held[kind])) for kind, names in acknowledged.items()}
    duplicated = {kind: sorted({n for n in held[kind] if held[kind].count(n) > 1}) for kind in held}
    expected = manifest(fresh, "client", "alice", mariadb, postgresql)
    compared = sum(len(names) for names in acknowledged.values()) + len(expected)
    ledger(record_property, "writes (rows, mail, files) through a move and a rollback", runs=2, converged=True,
           compared=compared, lost=sum(len(v) for v in lost.values()),
           unexpected=sum(len(v) for v in duplicated.values()))  # fmt: skip
    trail = mail_trail(lost["mail"])
    assert lost == {"rows": [], "mail": [], "files": []}, f"acknowledged writes lost: {lost}\n{trail}"
    assert duplicated == {"rows": [], "mail": [], "files": []}, f"duplicated: {duplicated}"
    assert all(refused_in_move[kind] > 0 for kind in ("rows", "mail", "files")), (
        f"the freeze refused nothing of some kind: {refused_in_move}"
    )
    assert all(len(names) > 20 for names in acknowledged.values()), {k: len(v) for k, v in acknowledged.items()}


def test_no_secret_in_either_servers_journal(fresh):
    """After the suite's moves, kills and rollbacks: the journals hold where accounts are, never a password."""
    secrets = [fresh.vars["hosting_db_admin_password"], fresh.vars["hosting_tsig_secret"]]
    secrets += [user["password"] for account in fresh.seed["accounts"].values() for user in account["db_users"]]
    for host in ("client", "transit"):
        journal = in_host(host, f"find {JOURNAL} -type f -exec cat {{}} + 2>/dev/null || true").stdout
        assert "left_manifest" in journal or host == "client", f"{host}: no move in the journal to look at"
        found = [secret[:4] + "…" for secret in secrets if secret in journal or json.dumps(secret)[1:-1] in journal]
        assert found == [], f"{host}'s journal holds secrets: {found}"
