"""account_move and the account_migrate role against the lab: real rsync over SSH, real MariaDB and PostgreSQL,
real nginx on the client's public IPs. Identity is checked with the tests' own hashes, never the module's.

The tests of this module run in file order and share the lab's state: alice and bob go to transit and back."""

from __future__ import annotations

import json
import os
import time

import pytest
import yaml
from conftest import LAB, REPO, run
from lab_state import (
    JOURNAL,
    http,
    in_host,
    mariadb_rows,
    playbook,
    postgresql_rows,
    recap,
    ssh_password_login,
    start_playbook,
    state_snapshot,
    tree_snapshot,
    unix_snapshot,
)

pytestmark = pytest.mark.lab

SEED = yaml.safe_load((REPO / "lab" / "seed.yml").read_text())
ADDRESS = {"client": "10.77.0.10", "transit": "10.77.0.11"}
# alice's Unix user and crontab as seeded on the client, before any move (test_move_alice_to_transit fills it).
SEEDED_UNIX: dict[str, str] = {}


def assert_unix_account_served_by(side, account, expected, password):
    """The user (passwd, shadow, groups) and crontab where the account is served are `expected`; its password
    logs in over SSH there and not on the other side, whose copy stays held."""
    other = "transit" if side == "client" else "client"
    assert unix_snapshot(side, account) == expected
    assert "crontab" not in in_host(other, f"ls /var/spool/cron/crontabs/{account} 2>/dev/null; true").stdout
    assert ssh_password_login(ADDRESS[side], account, password) == "shell", f"{account}: no login on {side}"
    assert ssh_password_login(ADDRESS[other], account, password) == "refused", f"{account}: on {other}"


def front_map(host):
    return in_host(host, "cat /etc/nginx/hosting/backends.map 2>/dev/null || true").stdout


def journal_state(host, account):
    out = in_host(host, f"cat {JOURNAL}/accounts/{account}/state.json 2>/dev/null || echo null").stdout
    return json.loads(out)


def can_log_in(host, account):
    """A login through PAM's account stack (as sshd and cron do; runuser skips it)."""
    result = in_host(host, f"su -s /bin/sh -c 'exit 0' {account}", check=False)
    return result.returncode == 0


@pytest.fixture(scope="module")
def transit(lab):
    """Every seeded account at home on the client (a fresh lab if an earlier run moved one), and what step 3
    (transit_server role, issue #5) provides: the client's language runtimes on transit."""
    if any((journal_state("client", name) or {}).get("location") not in (None, "client") for name in SEED["accounts"]):
        run([LAB, "reset"])
    in_host("transit", "mkdir -p /opt/hosting/langs && cp -a /opt/hosting/packages/2020/. /opt/hosting/langs/")
    return lab


def assert_account_identical(account, mariadb, postgresql):
    assert tree_snapshot("client", account) == tree_snapshot("transit", account)
    for database in SEED["accounts"][account]["databases"]:
        if database["engine"] == "mariadb":
            assert mariadb_rows(mariadb, "client", database["name"]) == mariadb_rows(
                mariadb, "transit", database["name"]
            )
        else:
            assert postgresql_rows(postgresql, "client", database["name"]) == postgresql_rows(
                postgresql, "transit", database["name"]
            )


def test_check_mode_changes_nothing(transit, mariadb, postgresql):
    before = state_snapshot(transit, mariadb, postgresql)
    result = playbook("step4_migrate.yml", "-e", "account=alice", "--check")
    assert "would move" in result.stdout and "estimated_downtime_s" in result.stdout
    assert state_snapshot(transit, mariadb, postgresql) == before


def test_move_alice_to_transit(transit, mariadb):
    SEEDED_UNIX["alice"] = unix_snapshot("client", "alice")
    assert "sftpusers webdev" in SEEDED_UNIX["alice"] and "cron.sh" in SEEDED_UNIX["alice"]
    result = playbook("step4_migrate.yml", "-e", "account=alice")
    assert "alice: now on transit" in result.stdout
    assert_account_identical("alice", mariadb, None)
    assert_unix_account_served_by(
        "transit", "alice", SEEDED_UNIX["alice"], SEED["accounts"]["alice"]["unix"]["password"]
    )
    assert "alice-shop.test 10.77.0.11:8080;" in front_map("client")
    # Transit itself serves her domain over HTTPS with her own certificate, which travelled in her home (the
    # switch's front_refresh): what its public addresses answer once step 6 routes the client's there.
    status, body = http("alice-shop.test", address="198.51.100.20")
    assert status == 200 and "<title>Alice's Shop</title>" in body, (status, body[:300])
    key = in_host("transit", "stat -L -c '%U %a' /home/alice/.tls/live/alice-shop.test/privkey.pem").stdout.split()
    assert key == ["alice", "600"]
    # The client's public IP now serves what transit holds: a file only transit has answers.
    in_host("transit", "echo served-by-transit > /home/alice/www/alice-shop.test/where.txt")
    try:
        assert http("alice-shop.test", "/where.txt") == (200, "served-by-transit\n")
    finally:
        in_host("transit", "rm -f /home/alice/www/alice-shop.test/where.txt")
    status, body = http("alice-shop.test")
    assert status == 200 and "<title>Alice's Shop</title>" in body
    # Her WordPress runs in her PHP-FPM pool on transit only: the definition moved, the client keeps it aside.
    pool = "/etc/hosting/php-fpm/alice.conf"
    assert in_host("transit", f"test -e {pool} && test -S /run/php/hosting-alice.sock && echo running").stdout
    assert in_host("client", f"test -e {pool} || test -S /run/php/hosting-alice.sock || echo stopped").stdout
    assert (
        in_host("client", "cat /var/lib/hosting-migration/held/alice.service.php-fpm.conf").stdout
        == in_host("transit", f"cat {pool}").stdout
    )
    # alice's DB users log in on transit with their unchanged passwords.
    users = {u["name"]: u["password"] for u in SEED["accounts"]["alice"]["db_users"]}
    with mariadb("transit", user="alice", password=users["alice"], database="alice_shop").cursor() as cur:
        cur.execute("SELECT COUNT(*) FROM products")
        assert cur.fetchone()[0] == 400
    # The move's result names the DB users its freeze locked on client and those it gave back their logins here.
    record = json.loads(in_host("transit", "cat /var/lib/hosting-migration/results/alice.step4.json").stdout)
    names = sorted(f"{name}@%" for name in users)
    assert record["db_users"]["frozen"]["mariadb"] == names == record["db_users"]["unfrozen"]["mariadb"], record
    state = journal_state("transit", "alice")
    assert state["location"] == "transit" and state["status"] == "done"
    assert journal_state("client", "alice")["location"] == "transit"


def test_a_finished_move_reports_no_change(transit):
    result = playbook("step4_migrate.yml", "-e", "account=alice")
    assert "changed: False" in result.stdout
    assert recap(result.stdout)["transit"]["changed"] == 0


def test_two_moves_of_one_account_at_once_the_second_fails_fast(transit, mariadb, postgresql):
    procs = [start_playbook("step4_migrate.yml", "-e", "account=bob") for _attempt in range(2)]
    outputs = [p.communicate(timeout=600)[0] for p in procs]
    codes = sorted(p.returncode for p in procs)
    assert codes[0] == 0 and codes[1] != 0, outputs
    loser = outputs[[p.returncode for p in procs].index(codes[1])]
    assert "is locked by" in loser or "locked" in loser, loser
    assert_account_identical("bob", mariadb, postgresql)
    users = {u["name"]: u["password"] for u in SEED["accounts"]["bob"]["db_users"]}
    with postgresql("transit", user="bob", password=users["bob"], database="bob_app").cursor() as cur:
        cur.execute("SELECT COUNT(*) FROM plants")
        assert cur.fetchone()[0] == 300
    assert http("bobs-garden.test")[0] == 200


def test_rollback_brings_home_what_was_written_on_transit(transit, mariadb):
    new_file = "/home/alice/files/new-on-transit.txt"
    in_host("transit", f"echo written-on-transit > {new_file}; chown alice: {new_file}")
    message = "From: a@example.org\r\nTo: info@alice-shop.test\r\nMessage-ID: <after-switch@transit>\r\n\r\nhello\r\n"
    new_mail = "/var/mail/alice/info/new/1800000000.after.transit"
    in_host("transit", f"printf '%s' '{message}' > {new_mail}; chown alice: {new_mail}")
    users = {u["name"]: u["password"] for u in SEED["accounts"]["alice"]["db_users"]}
    with mariadb("transit", user="alice", password=users["alice"], database="alice_shop").cursor() as cur:
        cur.execute("INSERT INTO products (sku, name, price, created_at) VALUES ('SKU-NEW', 'after switch', 1, NOW())")
    # alice changes her Unix password and her crontab while she lives on transit: both come home too.
    in_host(
        "transit",
        "printf 'alice:alice-New-pw3\\n' | chpasswd && echo '0 4 * * * date' >> /var/spool/cron/crontabs/alice",
    )
    on_transit = unix_snapshot("transit", "alice")
    assert on_transit != SEEDED_UNIX["alice"] and "0 4 * * * date" in on_transit
    result = playbook("rollback.yml", "-e", "account=alice")
    assert "alice: back on client" in result.stdout
    assert_unix_account_served_by("client", "alice", on_transit, "alice-New-pw3")
    assert in_host("client", "cat /home/alice/files/new-on-transit.txt").stdout == "written-on-transit\n"
    assert "after-switch@transit" in in_host("client", "cat /var/mail/alice/info/new/1800000000.after.transit").stdout
    with mariadb("client", database="alice_shop").cursor() as cur:
        cur.execute("SELECT COUNT(*) FROM products WHERE sku = 'SKU-NEW'")
        assert cur.fetchone()[0] == 1
    assert "alice-shop.test" not in front_map("client")
    in_host("client", "echo served-by-client > /home/alice/www/alice-shop.test/where.txt")
    try:
        assert http("alice-shop.test", "/where.txt") == (200, "served-by-client\n")
    finally:
        in_host("client", "rm -f /home/alice/www/alice-shop.test/where.txt")
    assert journal_state("client", "alice")["location"] == "client"
    assert can_log_in("client", "alice") and not can_log_in("transit", "alice"), "logins follow the account"
    # A second rollback has nothing to do.
    assert recap(playbook("rollback.yml", "-e", "account=alice").stdout)["client"]["changed"] == 0


def move_carol(*extra, check=True):
    return playbook("step4_migrate.yml", "-e", "account=carol", *extra, check=check)


def hook_vars(command):
    return ["-e", json.dumps({"account_migrate_before_verify_command": command})]


def assert_served_by_client(domain, title):
    status, body = http(domain)
    assert status == 200 and f"<title>{title}</title>" in body, (status, body[:200])
    assert domain not in front_map("client")


def test_a_flipped_byte_in_a_copied_file_fails_before_the_switch(transit):
    flip = ["sh", "-c", "printf X | dd of=/home/carol/files/document-03.txt bs=1 seek=5 conv=notrunc status=none"]
    result = move_carol(*hook_vars(flip), check=False)
    assert result.returncode != 0
    assert "verification found" in result.stdout and "document-03.txt" in result.stdout
    assert_served_by_client("carol-blog.test", "Carol's Blog")
    # The failed move left a held copy of carol on transit; a rollback from it would hold and overwrite carol on
    # the client, which serves her: refused, and the client's carol keeps her logins and crontab.
    unix_before = unix_snapshot("client", "carol")
    refused = playbook("rollback.yml", "-e", "account=carol", check=False)
    assert refused.returncode != 0 and "carol lives on client, not on the source transit" in refused.stdout
    assert unix_snapshot("client", "carol") == unix_before and can_log_in("client", "carol")
    assert_served_by_client("carol-blog.test", "Carol's Blog")


def test_a_row_changed_on_the_destination_fails_before_the_switch(transit):
    change = ["mariadb", "--protocol=socket", "-e", "UPDATE carol_blog.posts SET title = 'Post X' WHERE id = 1"]
    result = move_carol(*hook_vars(change), check=False)
    assert result.returncode != 0
    assert "verification found" in result.stdout and "posts" in result.stdout
    assert_served_by_client("carol-blog.test", "Carol's Blog")
    # Without the corruption the same move converges.
    move_carol()
    assert "carol-blog.test 10.77.0.11:8080;" in front_map("client")


def test_kill_during_the_database_phase_leaves_the_source_serving_and_a_rerun_completes(transit, mariadb, postgresql):
    progress = f"{JOURNAL}/accounts/dave/progress.json"
    # A progress file left by an earlier run names a dead pid: only this run's pid counts.
    earlier = json.loads(in_host("transit", f"cat {progress} 2>/dev/null || echo null").stdout) or {}
    proc = start_playbook("step4_migrate.yml", "-e", "account=dave")
    deadline = time.monotonic() + 120
    pid = None
    while time.monotonic() < deadline:
        out = in_host("transit", f"cat {progress} 2>/dev/null || echo null", check=False).stdout
        try:
            state = json.loads(out) or {}
        except ValueError:
            state = {}  # read while being replaced
        if state.get("pid") != earlier.get("pid") and state.get("phase") == "databases":
            pid = state["pid"]
            in_host("transit", f"kill -KILL {pid}")
            break
        time.sleep(0.05)
    proc.communicate(timeout=300)
    assert pid, "the move never reached the database phase"
    time.sleep(2)  # the guardian notices the pipe close at once; give nginx its reload
    assert_served_by_client("dave-data.test", "Dave's Data")
    assert can_log_in("client", "dave"), "the guardian's thaw left dave unable to log in on the client"
    users = {u["name"]: u["password"] for u in SEED["accounts"]["dave"]["db_users"] if u["engine"] == "mariadb"}
    with mariadb("client", user="dave", password=users["dave"], database="dave_data").cursor() as cur:
        cur.execute("INSERT INTO measurements (sensor, taken_at, value, payload) VALUES (1, NOW(), 1, 'after kill')")
    playbook("step4_migrate.yml", "-e", "account=dave")
    assert_account_identical("dave", mariadb, postgresql)
    assert "dave-data.test 10.77.0.11:8080;" in front_map("client")
    # The side left stays frozen (its copy must not diverge): no login starts there; the new side takes them.
    assert can_log_in("transit", "dave") and not can_log_in("client", "dave"), "logins follow the account"


def test_hostile_account_names_are_refused_before_anything_runs(transit):
    for name in ["a';DROP DATABASE x;--", "../etc", "-rf", "alice\n", "Alice", "a" * 40, "al/ice"]:
        result = playbook("step4_migrate.yml", "-e", json.dumps({"account": name}), check=False)
        assert result.returncode != 0 and "invalid account name" in result.stdout, name


def test_the_admin_password_never_appears_in_output_or_process_lists(transit, lab):
    password = lab.vars["hosting_db_admin_password"]
    proc = start_playbook("rollback.yml", "-e", "account=bob", "-vvv")
    seen_in_ps = []
    while proc.poll() is None:
        for entry in os.listdir("/proc"):
            if entry.isdigit():
                try:
                    with open(f"/proc/{entry}/cmdline", "rb") as handle:
                        if password.encode() in handle.read():
                            seen_in_ps.append(entry)
                except OSError:
                    pass
        time.sleep(0.05)
    output = proc.stdout.read()
    assert proc.returncode == 0, output[-3000:]
    assert password not in output
    assert not seen_in_ps
    assert "bob: back on client" in output
