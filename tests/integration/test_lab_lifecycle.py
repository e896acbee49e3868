"""The lab's own life cycle: `up` is idempotent, repairs a half-dead lab, `down` leaves nothing behind, and a
lab that is down refuses to send traffic. conftest runs this module last: it breaks and removes the lab."""

from __future__ import annotations

import contextlib
import os

import pytest
from conftest import LAB, run
from hostinglab import network
from hostinglab.proc import netns_pids

pytestmark = pytest.mark.lab


def running(pid: int) -> bool:
    """True unless the process is gone or a zombie waiting for its reaper (it runs no code either way)."""
    try:
        with open(f"/proc/{pid}/stat", encoding="utf-8") as stat:
            return stat.read().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return False


def test_up_again_changes_nothing(lab, mariadb):
    with mariadb("client").cursor() as cur:
        cur.execute("CREATE TABLE alice_shop.idempotence_marker (id INT PRIMARY KEY)")
        cur.execute("INSERT INTO alice_shop.idempotence_marker VALUES (42)")
    result = run([LAB, "up"])
    assert "already up and healthy" in result.stdout
    with mariadb("client").cursor() as cur:
        cur.execute("SELECT id FROM alice_shop.idempotence_marker")
        assert cur.fetchall() == ((42,),)
        cur.execute("DROP TABLE alice_shop.idempotence_marker")


def test_up_repairs_a_half_dead_lab_and_takes_its_parameters(lab, ssh, mariadb):
    """What a stopped session leaves to CI: namespaces and mounts present, daemons gone."""
    for host in lab.hosts.values():
        for pid in netns_pids(host.name):
            # A process listed may exit before its turn (a child dying with its killed parent): gone is the aim.
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, 9)
    assert run([LAB, "status"], check=False).returncode != 0
    result = run([LAB, "up", "--extra-accounts", "2", "--big-db-mb", "2"])
    assert "partial or stale lab" in result.stdout
    assert run([LAB, "status"]).returncode == 0
    assert "ping: pong" in run(["ansible", "-i", "inventories/lab", "client", "-m", "ansible.builtin.ping"]).stdout
    assert ssh("client", "ls /etc/hosting/accounts").stdout.split() == [
        "alice.yml", "bob.yml", "carol.yml", "dave.yml", "extra001.yml", "extra002.yml",
    ]  # fmt: skip
    with mariadb("client").cursor() as cur:
        cur.execute("SELECT COUNT(*) FROM extra002_site.products")
        assert cur.fetchone()[0] == 50
        cur.execute("SELECT SUM(data_length) FROM information_schema.tables WHERE table_schema = 'dave_data'")
        assert 1 * 2**20 < cur.fetchone()[0] < 8 * 2**20  # sized by --big-db-mb 2, not the default 8


def test_down_leaves_no_namespace_process_link_or_address(lab):
    pids = {pid for host in lab.hosts.values() for pid in netns_pids(host.name)}
    assert pids, "the lab should be running before down"
    run([LAB, "down"])
    assert network.leftovers(lab) == []
    assert not [pid for pid in pids if running(pid)]
    assert not set(run(["ip", "netns", "list"]).stdout.split()) & set(lab.hosts)
    addresses = run(["ip", "-o", "addr", "show"]).stdout
    for host in lab.hosts.values():
        for address in (host.ipv4, host.ipv6, *host.public_ipv4, *host.public_ipv6):
            assert f" {address}/" not in addresses
    assert "/run/hosting-lab" not in run(["findmnt", "-rn", "-o", "TARGET"]).stdout
    # down is safe to repeat.
    run([LAB, "down"])


def test_a_lab_that_is_down_refuses_to_send_traffic(lab):
    assert network.leftovers(lab) == [], "runs after down"
    guard = run([LAB, "connect", lab.hosts["client"].ipv4, "22"], check=False)
    assert guard.returncode == 2 and "the lab is down" in guard.stderr
    public = run([LAB, "connect", lab.hosts["client"].public_ipv4[0], "80"], check=False)
    assert public.returncode == 2 and "refusing to send traffic" in public.stderr
    assert run([LAB, "exec", "client", "--", "true"], check=False).returncode == 2
    # Ansible's SSH goes through the same guard (ssh silences a ProxyCommand's stderr under ControlPersist, so
    # the refusal shows as unreachable; the guard's own message is checked above).
    ping = run(["ansible", "-i", "inventories/lab", "client", "-m", "ansible.builtin.ping", "-vvv"], check=False)
    assert ping.returncode == 4 and "UNREACHABLE" in ping.stdout
    assert f"ProxyCommand={LAB} connect" in ping.stdout.replace("inventories/lab/../../", "")
    unknown = run([LAB, "connect", "192.0.2.1", "22"], check=False)
    assert unknown.returncode == 2 and "not a lab host" in unknown.stderr
