"""The network between the two servers fails during a move (issue 7): an nftables drop rule on the destination
cuts every packet to and from the source while rsync or the database copy runs, then goes; or 5 % of the source's
packets are dropped at random for the whole move. The move rides it out or fails within its timeouts instead of
hanging; either way one side serves the account with everything, and a re-run converges. A slow lossy link (5 %
loss, plus 20 ms each way through a delaying proxy: this kernel has no netem) only slows a move down.

All in `make test-long` (make test's rsync tests cut a connection too): 5 s in the database phase, 30 s in the
pre-copy (rsync) and in the database phase, and a whole move over the slow lossy link."""

from __future__ import annotations

import subprocess
import time

import pytest
from conftest import LAB
from faults import DELAY_PROXY, MOVES, PhaseWatcher, fresh_lab, kill_marked, ledger, serving_side
from lab_state import in_host, playbook
from manifest import compare, manifest

pytestmark = pytest.mark.lab

TABLE = "hosting_lab_fault"


def nft_drop(peer: str, rule: str = "") -> str:
    """nft commands that drop every packet (or, with `rule`, those it matches too) to and from `peer`."""
    return (
        f"nft add table inet {TABLE} && "
        f"nft add chain inet {TABLE} input '{{ type filter hook input priority -10; }}' && "
        f"nft add chain inet {TABLE} output '{{ type filter hook output priority -10; }}' && "
        f"nft 'add rule inet {TABLE} input ip saddr {peer} {rule} drop' && "
        f"nft 'add rule inet {TABLE} output ip daddr {peer} {rule} drop'"
    )


def heal(host: str) -> None:
    in_host(host, f"nft delete table inet {TABLE} 2>/dev/null || true")


@pytest.fixture(scope="module")
def fresh(lab):
    return fresh_lab(lab)


@pytest.mark.parametrize(
    ("phase", "seconds"),
    [
        pytest.param("databases", 5, marks=pytest.mark.long),
        pytest.param("precopy", 30, marks=pytest.mark.long),
        pytest.param("databases", 30, marks=pytest.mark.long),
    ],
)
def test_a_cut_between_the_servers_is_ridden_out_or_fails_in_time(
    fresh, phase, seconds, mariadb, postgresql, record_property
):
    source = serving_side(fresh, "dave")
    play, destination = MOVES[source]
    peer = fresh.hosts[source].ipv4
    expected = manifest(fresh, source, "dave", mariadb, postgresql)
    cut = f"{nft_drop(peer)} && sleep {seconds}; nft delete table inet {TABLE}"
    watcher = PhaseWatcher(destination, "dave", phase, action=cut)
    started = time.monotonic()
    try:
        first = playbook(play, "-e", "account=dave", check=False)
        took = time.monotonic() - started
        seen = watcher.result()
    finally:
        heal(destination)
    assert seen["phase"] == phase, f"the cut never happened:\n{first.stdout[-2000:]}"
    # SSH gives up after 3 unanswered keepalives 10 s apart, rsync after its I/O timeout: never an endless hang.
    assert took < seconds + 120, f"the move took {took:.0f}s for a {seconds}s cut"
    side = serving_side(fresh, "dave")
    compared, lost, unexpected = compare(expected, manifest(fresh, side, "dave", mariadb, postgresql))
    assert (lost, unexpected) == ([], []), f"after the cut, {side} lost {lost}, gained {unexpected}"
    runs, result = 1, first
    if first.returncode != 0:
        assert side == source and "move of dave failed" in first.stdout, first.stdout[-3000:]
        result, runs = playbook(play, "-e", "account=dave", check=False), 2
    converged = result.returncode == 0 and serving_side(fresh, "dave") == destination
    count, lost2, unexpected2 = compare(expected, manifest(fresh, destination, "dave", mariadb, postgresql))
    outcome = "ridden out" if runs == 1 else "failed, re-run"
    ledger(record_property, f"{seconds}s network cut in {phase} ({outcome})", runs=runs, converged=converged,
           compared=compared + count, lost=len(lost) + len(lost2),
           unexpected=len(unexpected) + len(unexpected2))  # fmt: skip
    assert converged, result.stdout[-3000:]
    assert (lost2, unexpected2) == ([], [])


PROXY_MARK = 0x77
PROXY_PORTS = {22: 40022, 3306: 43306, 5432: 45432}


@pytest.mark.long
def test_a_move_over_a_slow_lossy_link_completes_and_verifies(fresh, mariadb, postgresql, record_property):
    """5 % of the source's packets dropped at random, and every chunk between the servers delayed 20 ms each way
    by a proxy that nftables puts in the path of the destination's SSH and database connections to the source."""
    source = serving_side(fresh, "dave")
    play, destination = MOVES[source]
    source_ip, destination_ip = fresh.hosts[source].ipv4, fresh.hosts[destination].ipv4
    expected = manifest(fresh, source, "dave", mariadb, postgresql)
    pairs = [f"{listen}:{port}" for port, listen in PROXY_PORTS.items()]
    proxy = subprocess.Popen([LAB, "exec", destination, "--", "python3", "-c", DELAY_PROXY, "hm-delay-proxy", "0.02",
                              source_ip, str(PROXY_MARK), *pairs], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                             text=True)  # fmt: skip
    try:
        assert proxy.stdout.readline().strip() == "ready"
        nat = [
            f"nft add table ip {TABLE}_nat",
            f"nft add chain ip {TABLE}_nat out '{{ type nat hook output priority -100; }}'",
        ]
        nat += [f"nft add rule ip {TABLE}_nat out ip daddr {source_ip} tcp dport {port} meta mark != {PROXY_MARK}"
                f" dnat to {destination_ip}:{listen}" for port, listen in PROXY_PORTS.items()]  # fmt: skip
        in_host(destination, " && ".join([*nat, nft_drop(source_ip, "numgen random mod 100 < 5")]))
        result = playbook(play, "-e", "account=dave", check=False)
    finally:
        heal(destination)
        in_host(destination, f"nft delete table ip {TABLE}_nat 2>/dev/null || true")
        try:
            relayed = proxy.communicate(timeout=10)[0]  # closes its stdin: the proxy's cue to go
        except subprocess.TimeoutExpired:
            kill_marked(destination, "hm-delay-proxy")
            relayed = proxy.communicate(timeout=30)[0]
    # The move's SSH (rsync) and database connections really went through the delaying proxy.
    assert "connection 22" in relayed and ("connection 3306" in relayed or "connection 5432" in relayed), relayed
    converged = result.returncode == 0 and serving_side(fresh, "dave") == destination
    compared, lost, unexpected = compare(expected, manifest(fresh, destination, "dave", mariadb, postgresql))
    ledger(record_property, "5 % loss + 20 ms delay each way for a whole move", runs=1, converged=converged,
           compared=compared, lost=len(lost), unexpected=len(unexpected))  # fmt: skip
    assert converged, result.stdout[-3000:]
    assert (lost, unexpected) == ([], [])
