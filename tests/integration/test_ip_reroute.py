"""ip_reroute on the lab: transit takes over client's public IPv4/IPv6 (gw's host routes point at it) and gives them
back, while a prober in another namespace (thirdparty-dns) asks both addresses over HTTP every 50 ms which server
answers. gw's routes and transit's addresses are checked by this test's own `ip` calls, and put back as they were
in teardown whatever happens (other tests use the same lab at the same time)."""

from __future__ import annotations

import json
import subprocess
import time
import uuid

import pytest
from conftest import LAB, run

from ansible_collections.hosting.migration.plugins.module_utils.reroute import parse_routes, route_command

pytestmark = pytest.mark.lab

MODULE = "hosting.migration.ip_reroute"
KEY = "/root/.ssh/hosting_migration_reroute_test_ed25519"
KNOWN_HOSTS = "/root/.ssh/hosting_migration_reroute_test_known_hosts"
KEY_COMMENT = "hosting-migration-test-ip-reroute"
JOURNAL = f"/var/tmp/hm-reroute-test-{uuid.uuid4().hex[:12]}"
CLIENT_FQDN, TRANSIT_FQDN = "srv1.provider.test", "srv2.provider.test"
MAX_LOSS_WINDOW_S = 1.0
INTERVAL_S = 0.05

# Removes the lines of authorized_keys that end with this test's key comment, in place (every other key stays).
REMOVE_KEY = (
    "python3 -c 'import sys\n"
    "path, comment = sys.argv[1:]\n"
    'with open(path, "r+") as f:\n'
    '    kept = [l for l in f.read().splitlines(True) if not l.rstrip("\\n").endswith(" " + comment)]\n'
    "    f.seek(0); f.writelines(kept); f.truncate()\n"
    f"' /root/.ssh/authorized_keys {KEY_COMMENT}"
)

# Runs in thirdparty-dns until its stdin closes: per address, an HTTP GET (unknown Host header, so the default
# page with the server's fqdn answers) every 50 ms with a short timeout; prints [[address, t, who], ...] with who
# the fqdn that answered or "lost".
PROBER = r"""
import json, socket, sys, threading, time
interval, timeout, names = float(sys.argv[1]), float(sys.argv[2]), sys.argv[3].split(",")
addresses = sys.argv[4:]
results, stop = [], threading.Event()

def ask(address):
    try:
        with socket.create_connection((address, 8080), timeout=timeout) as conn:  # 80 redirects to HTTPS
            conn.settimeout(timeout)
            conn.sendall(b"GET / HTTP/1.0\r\nHost: prober.invalid\r\n\r\n")
            data = b""
            while True:
                chunk = conn.recv(65536)
                if not chunk:
                    break
                data += chunk
    except OSError:
        return "lost"
    text = data.decode("utf-8", "replace")
    return next((name for name in names if name in text), "other")

def probe(address):
    due = time.monotonic()
    while not stop.is_set():
        started = time.time()
        results.append((address, started, ask(address)))
        due += interval
        time.sleep(max(0.0, due - time.monotonic()))

threads = [threading.Thread(target=probe, args=(a,)) for a in addresses]
for thread in threads:
    thread.start()
print("started", flush=True)
sys.stdin.read()
stop.set()
for thread in threads:
    thread.join()
print(json.dumps(sorted(results, key=lambda r: r[1])))
"""


def in_host(host: str, argv: list[str], check: bool = True) -> subprocess.CompletedProcess:
    return run([LAB, "exec", host, "--", *argv], check=check)


def gw_routes() -> str:
    """gw's routes as `ip route show` prints them, both families (the byte-for-byte reference)."""
    return in_host("gw", ["ip", "route", "show"]).stdout + in_host("gw", ["ip", "-6", "route", "show"]).stdout


def gw_route_objects() -> dict:
    out = in_host("gw", ["ip", "-j", "-d", "-4", "route", "show", "table", "main"]).stdout
    routes = parse_routes(out)
    routes.update(parse_routes(in_host("gw", ["ip", "-j", "-d", "-6", "route", "show", "table", "main"]).stdout))
    return routes


def transit_addresses() -> str:
    return in_host("transit", ["ip", "-j", "addr", "show"]).stdout


@pytest.fixture(scope="module")
def public(lab):
    client = lab.hosts["client"]
    return [*client.public_ipv4, *client.public_ipv6]


@pytest.fixture(scope="module")
def pristine(lab, public):
    """gw's routes and transit's addresses as found; in teardown, put back whatever a failed test left."""
    before = {"routes": gw_routes(), "objects": gw_route_objects(), "addresses": transit_addresses()}
    yield before
    if gw_routes() != before["routes"]:
        lines = "".join(" ".join(route_command(before["objects"][a][0])) + "\n" for a in public)
        run([LAB, "exec", "gw", "--", "ip", "-batch", "-"], input=lines)
    for address in public:
        if f'"{address}"' in transit_addresses() and f'"{address}"' not in before["addresses"]:
            prefix = 128 if ":" in address else 32
            in_host("transit", ["ip", "addr", "del", f"{address}/{prefix}", "dev", "lo"], check=False)
    in_host("transit", ["rm", "-rf", "--one-file-system", JOURNAL])
    assert gw_routes() == before["routes"]
    assert transit_addresses() == before["addresses"]


@pytest.fixture(scope="module")
def router(lab, ssh, pristine):
    """transit reaches gw over SSH with a key of its own, accepted by gw from transit's address only, and gw's host
    key pinned in a known_hosts file of its own; all of it removed afterwards."""
    gw, transit = lab.hosts["gw"], lab.hosts["transit"]
    ssh("gw", REMOVE_KEY)  # a crashed run's
    ssh("transit", f"rm -f {KEY} {KEY}.pub {KNOWN_HOSTS}")
    ssh("transit", f"ssh-keygen -q -t ed25519 -N '' -C {KEY_COMMENT} -f {KEY}")
    public_key = ssh("transit", f"cat {KEY}.pub").stdout.strip()
    ssh("gw", f"""printf '%s\\n' 'restrict,from="{transit.ipv4}" {public_key}' >> /root/.ssh/authorized_keys""")
    host_key = " ".join(ssh("gw", "cat /etc/ssh/ssh_host_ed25519_key.pub").stdout.split()[:2])
    ssh("transit", f"umask 077 && printf '%s\\n' '{gw.ipv4} {host_key}' > {KNOWN_HOSTS}")
    yield {"host": gw.ipv4, "name": "gw", "ssh_key_file": KEY, "known_hosts_file": KNOWN_HOSTS}
    ssh("gw", REMOVE_KEY)
    ssh("transit", f"rm -f {KEY} {KEY}.pub {KNOWN_HOSTS}")
    assert KEY_COMMENT not in ssh("gw", "cat /root/.ssh/authorized_keys").stdout


@pytest.fixture(scope="module")
def args(lab, router, public):
    transit = lab.hosts["transit"]

    def make(state="rerouted", **extra):
        return {
            "addresses": public,
            "state": state,
            "router": router,
            "via": {"ipv4": transit.ipv4, "ipv6": transit.ipv6},
            "journal_dir": JOURNAL,
            "wait_timeout": 10,
            **extra,
        }

    return make


class Prober:
    """The prober process in thirdparty-dns; stop() returns its [(address, time, who)] records."""

    def __init__(self, addresses: list[str]) -> None:
        argv = ["ip", "netns", "exec", "thirdparty-dns", "python3", "-c", PROBER, str(INTERVAL_S), "0.2"]
        argv += [f"{CLIENT_FQDN},{TRANSIT_FQDN}", *addresses]
        self.proc = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        assert self.proc.stdout.readline().strip() == "started"

    def stop(self) -> list[tuple[str, float, str]]:
        out = self.proc.communicate("", timeout=30)[0]
        return [tuple(record) for record in json.loads(out)]

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()


def loss(records: list, address: str, start: float, end: float) -> tuple[int, float]:
    """Lost probes of `address` between `start` and `end`, and the loss window: the longest time between two
    answered probes in that span (what a client sees as the outage)."""
    mine = [(t, who) for a, t, who in records if a == address and start <= t <= end]
    answered = [t for t, who in mine if who != "lost"]
    gaps = [later - earlier for earlier, later in zip(answered, answered[1:], strict=False)]
    return sum(1 for moment in mine if moment[1] == "lost"), round(max(gaps, default=0.0), 3)


def who_answered(records: list, address: str, start: float, end: float) -> set[str]:
    return {who for a, t, who in records if a == address and start <= t <= end}


def test_check_mode_changes_nothing(module, args, pristine):
    result, proc = module("transit", MODULE, args(), check_mode=True, diff=True)
    assert result["_status"] == "ok", proc.stdout
    assert result["changed"] is True
    assert set(result["plan"]["routes"]) == set(args()["addresses"])
    assert result["plan"]["add_addresses"] == args()["addresses"]
    assert result["diff"]["before"]["local_addresses"] == []
    assert result["diff"]["after"]["local_addresses"] == sorted(args()["addresses"])
    assert gw_routes() == pristine["routes"]
    assert transit_addresses() == pristine["addresses"]
    assert in_host("transit", ["test", "-e", f"{JOURNAL}/server/ip_reroute.json"], check=False).returncode == 1


def test_restored_without_record_changes_nothing(module, args, pristine):
    result, proc = module("transit", MODULE, args("restored"), diff=True)
    assert result["_status"] == "ok", proc.stdout
    assert result["changed"] is False
    assert gw_routes() == pristine["routes"]


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ({"addresses": ["198.51.100.0/24"]}, "is a network"),
        ({"addresses": ["198.51.100.10/32"]}, "is a network"),
        ({"addresses": ["srv1.provider.test"]}, "is not an IPv4 or IPv6 address"),
        ({"addresses": ["198.51.100.10; ip route flush all"]}, "is not an IPv4 or IPv6 address"),
        ({"addresses": ["127.0.0.1"]}, "cannot be rerouted"),
        ({"addresses": []}, "no address"),
        ({"addresses": ["198.51.100.99"]}, "no host route for 198.51.100.99"),
        ({"via": {"ipv4": "10.77.0.11"}}, "via.ipv6 is required"),
        ({"via": {"ipv4": "10.77.0.11 dev lo", "ipv6": "fd77::11"}}, "is not a unicast ipv4 address"),
        ({"via": {"ipv4": "fd77::11", "ipv6": "fd77::11"}}, "is not a unicast ipv4 address"),
        ({"interface": "lo; reboot"}, "invalid interface name"),
        ({"journal_dir": "/var/lib/../../etc"}, "journal_dir"),
        ({"probe_port": 70000}, "is not a TCP port"),
    ],
)
def test_hostile_input_refused(module, args, pristine, override, message):
    result, proc = module("transit", MODULE, args(**override))
    assert result["_status"] == "failed", proc.stdout
    assert message in result["msg"]
    assert gw_routes() == pristine["routes"]
    assert transit_addresses() == pristine["addresses"]


@pytest.mark.parametrize(
    ("router_override", "message"),
    [
        ({"host": "-oProxyCommand=touch /tmp/hm-pwned"}, "invalid SSH host"),
        ({"host": "gw;touch /tmp/hm-pwned"}, "invalid SSH host"),
        ({"ssh_key_file": "/root/.ssh/key %h"}, "key_file must be an absolute path"),
        ({"known_hosts_file": "relative/known_hosts"}, "known_hosts_file must be an absolute path"),
        ({"ssh_user": "root -oProxyCommand=x"}, "invalid SSH user"),
    ],
)
def test_hostile_router_refused(module, args, router, pristine, router_override, message):
    result, proc = module("transit", MODULE, args(router={**router, **router_override}))
    assert result["_status"] == "failed", proc.stdout
    assert message in result["msg"]
    assert gw_routes() == pristine["routes"]
    assert in_host("transit", ["test", "-e", "/tmp/hm-pwned"], check=False).returncode == 1


def test_reroute_and_restore_lose_at_most_a_second(module, args, pristine, public, lab):
    """The acceptance test: both directions, each run twice, with the prober watching."""
    transit = lab.hosts["transit"]
    prober = Prober(public)
    try:
        time.sleep(0.5)
        t_reroute = time.time()
        rerouted, proc = module("transit", MODULE, args(), diff=True)
        t_rerouted = time.time()
        assert rerouted["_status"] == "ok", proc.stdout
        again, proc = module("transit", MODULE, args())
        record = json.loads(in_host("transit", ["cat", f"{JOURNAL}/server/ip_reroute.json"]).stdout)
        routes_rerouted = gw_route_objects()
        t_restore = time.time()
        restored, proc_restored = module("transit", MODULE, args("restored"), diff=True)
        t_restored = time.time()
        restored_again, proc_again = module("transit", MODULE, args("restored"))
        time.sleep(0.5)
        records = prober.stop()
    finally:
        prober.kill()

    assert rerouted["changed"] is True
    assert sorted(rerouted["added_addresses"]) == sorted(public)
    assert again["_status"] == "ok" and again["changed"] is False, again
    assert restored["_status"] == "ok", proc_restored.stdout
    assert restored["changed"] is True
    assert sorted(restored["removed_addresses"]) == sorted(public)
    assert restored_again["_status"] == "ok" and restored_again["changed"] is False, proc_again.stdout

    # While rerouted, gw pointed each address at transit, and the journal held the exact previous routes.
    for address in public:
        hop = transit.ipv6 if ":" in address else transit.ipv4
        assert routes_rerouted[address][0]["gateway"] == hop
        assert record["entries"][address]["previous"] == pristine["objects"][address][0]
        assert record["entries"][address]["added"] is True
    # Restored exactly: gw's routes byte for byte, transit's addresses as found, the record spent.
    assert gw_routes() == pristine["routes"]
    assert transit_addresses() == pristine["addresses"]
    assert in_host("transit", ["test", "-e", f"{JOURNAL}/server/ip_reroute.json"], check=False).returncode == 1

    windows = []
    for address in public:
        before = who_answered(records, address, 0, t_reroute)
        during = who_answered(records, address, t_rerouted, t_restore)
        after = who_answered(records, address, t_restored, float("inf"))
        assert before == {CLIENT_FQDN}, (address, before)
        assert during == {TRANSIT_FQDN}, (address, during)
        assert after == {CLIENT_FQDN}, (address, after)
        lost_there, window_there = loss(records, address, t_reroute - 0.3, t_rerouted)
        lost_back, window_back = loss(records, address, t_restore - 0.3, t_restored)
        windows += [window_there, window_back]
        print(
            f"\n{address}: reroute lost {lost_there} probe(s), window {window_there} s "
            f"(module switch_time_s {rerouted['switch_time_s']}); restore lost {lost_back} probe(s), "
            f"window {window_back} s (switch_time_s {restored['switch_time_s']}); "
            f"{len([r for r in records if r[0] == address])} probes"
        )
    assert max(windows) <= MAX_LOSS_WINDOW_S, windows
