"""Real faults in the lab's real services, and what the reliability tests check after each: where the account is
served, whether a lock is still held, and the ledger line the suite's summary table is made of.

The lab's hosts share the machine's PID namespace (they have their own network, mount and UTS namespaces), so a
service is killed by the PIDs of its own host's network namespace, never by name across the machine.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time

from conftest import LAB
from hostinglab import proc as lab_proc
from hostinglab import services as lab_services
from lab_state import JOURNAL, http, in_host, playbook, start_playbook
from manifest import compare, manifest

TRANSIT_BACKEND = "10.77.0.11:8080"


# Watches the journal's progress file inside the destination host every millisecond and acts when a new run (not
# the pid that was there before) reports the wanted phase: prints what it saw as one JSON line.
WATCH = r"""
import json, os, signal, subprocess, sys, time
path, phase, old, action = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4]
deadline = time.monotonic() + float(sys.argv[5])
while time.monotonic() < deadline:
    try:
        with open(path) as handle:
            state = json.load(handle)
    except (OSError, ValueError):
        state = {}
    if str(state.get("pid")) != old and state.get("phase") == phase:
        if action == "kill":
            os.kill(int(state["pid"]), signal.SIGKILL)
        elif action.startswith("kill-service:"):
            # Every process of this host's network namespace with that command name (not the machine's).
            own = os.stat("/proc/self/ns/net")
            for entry in filter(str.isdigit, os.listdir("/proc")):
                try:
                    net = os.stat(f"/proc/{entry}/ns/net")
                    with open(f"/proc/{entry}/comm") as comm:
                        name = comm.read().strip()
                except OSError:
                    continue
                if (net.st_dev, net.st_ino) == (own.st_dev, own.st_ino) and name == action.split(":", 1)[1]:
                    os.kill(int(entry), signal.SIGKILL)
        else:
            subprocess.run(["sh", "-c", action], check=False)
        print(json.dumps({"pid": state["pid"], "phase": phase}), flush=True)
        sys.exit(0)
    time.sleep(0.001)
print(json.dumps({"pid": None, "phase": None}), flush=True)
"""


class PhaseWatcher:
    """On `host`, when the move of `account` enters `phase`: SIGKILL the module (action "kill") or run a shell
    command inside that host. Start it before the move; result() says whether and where it acted."""

    def __init__(self, host: str, account: str, phase: str, action: str = "kill", timeout: float = 180.0):
        progress = f"{JOURNAL}/accounts/{account}/progress.json"
        before = in_host(host, f"cat {progress} 2>/dev/null || echo null", check=False).stdout
        try:
            old = (json.loads(before) or {}).get("pid")
        except ValueError:
            old = None
        self.proc = subprocess.Popen(
            [LAB, "exec", host, "--", "python3", "-c", WATCH, progress, phase, str(old), action, str(timeout)],
            stdout=subprocess.PIPE,
            text=True,
        )

    def result(self, timeout: float = 200.0) -> dict:
        """{"pid", "phase"} of the run it acted on (None if it never saw the phase), and "output": what a shell
        action printed."""
        out = self.proc.communicate(timeout=timeout)[0]
        lines = out.strip().splitlines()
        return {**json.loads(lines[-1]), "output": "\n".join(lines[:-1])}


_SESSION = {"reset": False}


def fresh_lab(lab):
    """A freshly seeded lab, and what step 3 gives transit (the client's language runtimes): once per session.
    The suite's modules then run in file order, each moving its accounts on from wherever the previous left them
    (MOVES), so one reset serves them all."""
    if not _SESSION["reset"]:
        subprocess.run([str(LAB), "reset"], check=True, capture_output=True)
        in_host("transit", "mkdir -p /opt/hosting/langs && cp -a /opt/hosting/packages/2020/. /opt/hosting/langs/")
        _SESSION["reset"] = True
    return lab


def reseed(lab):
    """A freshly seeded lab again, for the modules after one that carried it through whole steps."""
    _SESSION["reset"] = False
    return fresh_lab(lab)


# Which way an account moves next: step 4 to transit, or the rollback home (the same module, the same guarantees).
MOVES = {"client": ("step4_migrate.yml", "transit"), "transit": ("rollback.yml", "client")}


MOVE_LABELS = {"step4_migrate.yml": "step 4", "rollback.yml": "the rollback"}


def kill_in_phase_then_rerun(lab, account, phase, expected, mariadb, postgresql, *, what, record_property, rerun=()):
    """Move `account` away from the side serving it, SIGKILL the move in `phase`, then run it again. Right after the
    kill one side serves the account and holds all of `expected` (the test's own manifest), and the lock is free;
    the re-run converges to the other side with nothing lost or duplicated. Writes the ledger line ("SIGKILL of
    `what` ..."); returns the re-run (run with the extra arguments `rerun`)."""
    play, destination = MOVES[serving_side(lab, account)]
    watcher = PhaseWatcher(destination, account, phase)
    killed_run = start_playbook(play, "-e", f"account={account}")
    output = killed_run.communicate(timeout=300)[0]
    seen = watcher.result()
    assert seen["phase"] == phase, f"{play}: the move was not caught in {phase}:\n{output[-2000:]}"
    assert killed_run.returncode != 0, "the killed move reported success"

    side = serving_side(lab, account)
    compared, lost, unexpected = compare(expected, manifest(lab, side, account, mariadb, postgresql))
    assert (lost, unexpected) == ([], []), f"after a kill in {phase}, {side} lost {lost}, gained {unexpected}"
    assert lock_is_free(destination, account), "the dead run's lock is still held"

    again = playbook(play, "-e", f"account={account}", *rerun, check=False)
    converged = again.returncode == 0 and serving_side(lab, account) == destination
    compared2, lost2, unexpected2 = compare(expected, manifest(lab, destination, account, mariadb, postgresql))
    ledger(record_property, f"SIGKILL of {what} ({MOVE_LABELS[play]}) in {phase}", runs=2, converged=converged,
           compared=compared + compared2, lost=len(lost) + len(lost2),
           unexpected=len(unexpected) + len(unexpected2))  # fmt: skip
    assert converged, again.stdout[-3000:]
    assert (lost2, unexpected2) == ([], []), f"the re-run lost {lost2}, duplicated or added {unexpected2}"
    return again


def front_backends(lab, account: str) -> set[str | None]:
    """The client front's backend for each of the account's domains (None: served by the client itself)."""
    entries = {}
    for line in in_host("client", "cat /etc/nginx/hosting/backends.map 2>/dev/null || true").stdout.splitlines():
        parts = line.rstrip(";").split()
        if len(parts) == 2:
            entries[parts[0]] = parts[1]
    return {entries.get(site["domain"]) for site in lab.seed["accounts"][account]["sites"]}


def serving_side(lab, account: str) -> str:
    """The one server that serves the account; fails if its domains point at both, or its pages do not answer."""
    backends = front_backends(lab, account)
    assert len(backends) == 1, f"{account}: domains split between servers: {backends}"
    side = "transit" if backends == {TRANSIT_BACKEND} else "client"
    assert backends in ({None}, {TRANSIT_BACKEND}), f"{account}: unknown backend {backends}"
    for site in lab.seed["accounts"][account]["sites"]:
        status, page = http(site["domain"], address=lab.hosts["client"].public_ipv4[0])
        assert (status, f"<title>{site['title']}</title>" in page) == (200, True), f"{site['domain']}: {status}"
    return side


def lock_is_free(host: str, account: str) -> bool:
    """Nobody holds the account's journal lock (flock(2) is released by the kernel when its holder dies)."""
    script = (
        f"python3 -c 'import fcntl,os,sys; fd=os.open(sys.argv[1], os.O_RDWR|os.O_CREAT, 0o600); "
        f"fcntl.flock(fd, fcntl.LOCK_EX|fcntl.LOCK_NB)' {JOURNAL}/accounts/{account}/lock"
    )
    return in_host(host, script, check=False).returncode == 0


def journal_state(host: str, account: str) -> dict:
    out = in_host(host, f"cat {JOURNAL}/accounts/{account}/state.json 2>/dev/null || echo null").stdout
    return json.loads(out) or {}


# ---- services of one host ----------------------------------------------------------------------------------------


def host_pids(host: str, command: str) -> list[int]:
    pids = []
    for pid in lab_proc.netns_pids(host):
        try:
            with open(f"/proc/{pid}/comm", encoding="utf-8") as comm:
                if comm.read().strip() == command:
                    pids.append(pid)
        except OSError:
            continue
    return pids


def kill_service(host: str, command: str) -> list[int]:
    pids = host_pids(host, command)
    for pid in pids:
        os.kill(pid, signal.SIGKILL)
    deadline = time.monotonic() + 30
    while host_pids(host, command) and time.monotonic() < deadline:
        time.sleep(0.1)
    return pids


def restart_mariadb(lab, host: str) -> None:
    """Start a killed MariaDB again on its data directory (crash recovery, as after a power cut)."""
    lab_proc.start_daemon(host, "mariadb", ["/usr/sbin/mariadbd", "--user=mysql"])
    lab_services.wait_port(lab.hosts[host].ipv4, 3306, f"MariaDB on {host}")


def ledger(record_property, fault: str, *, runs: int, converged: bool, compared: int, lost: int, unexpected: int = 0):
    """One line of the summary table (tests/conftest.py prints them at the end of the session)."""
    record_property(
        "reliability",
        {"fault": fault, "runs": runs, "converged": converged, "compared": compared, "lost": lost,
         "unexpected": unexpected},
    )  # fmt: skip


def restart_postgresql(lab, host: str) -> None:
    """Start a killed PostgreSQL again (crash recovery); pg_ctlcluster clears the dead postmaster's pid file."""
    in_host(host, "pg_ctlcluster 15 main start")
    lab_services.wait_port(lab.hosts[host].ipv4, 5432, f"PostgreSQL on {host}")


# A TCP proxy that delays every chunk it forwards, in both directions (this kernel has no netem). It runs inside
# the destination host; nftables there sends the destination's connections to the source's SSH and database
# ports through it (its own connections carry a firewall mark, so they pass).
DELAY_PROXY = r"""
import asyncio, socket, sys
# argv: a marker (to find it), the delay in seconds, the source address, the mark, LISTEN:TARGET port pairs
delay, source, mark = float(sys.argv[2]), sys.argv[3], int(sys.argv[4])
ports = [(int(listen), int(target)) for listen, target in (pair.split(":") for pair in sys.argv[5:])]

async def pump(reader, writer):
    try:
        while data := await reader.read(65536):
            await asyncio.sleep(delay)
            writer.write(data)
            await writer.drain()
    finally:
        writer.close()

def handler(target):
    async def handle(reader, writer):
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_MARK, mark)
        sock.setblocking(False)
        await asyncio.get_running_loop().sock_connect(sock, (source, target))
        up_reader, up_writer = await asyncio.open_connection(sock=sock)
        print(f"connection {target}", flush=True)
        await asyncio.gather(pump(reader, up_writer), pump(up_reader, writer), return_exceptions=True)
    return handle

async def main():
    servers = [await asyncio.start_server(handler(target), "0.0.0.0", listen) for listen, target in ports]
    print("ready", flush=True)
    # Gone when whoever started it closes its stdin.
    await asyncio.get_running_loop().run_in_executor(None, sys.stdin.read)

asyncio.run(main())
"""


def kill_marked(host: str, marker: str) -> None:
    """SIGKILL the processes of `host` whose command line holds `marker`."""
    for pid in lab_proc.netns_pids(host):
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as cmdline:
                if marker.encode() in cmdline.read():
                    os.kill(pid, signal.SIGKILL)
        except OSError:
            continue
