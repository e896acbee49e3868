"""Running commands on the machine and inside a lab host (its network, mount and UTS namespaces)."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from collections.abc import Sequence

from .config import NETNS_DIR, NS_HANDLES, STATE_DIR


class LabError(RuntimeError):
    """A lab operation failed; the message says what and where."""


def run(argv: Sequence[str], *, input: str | None = None, check: bool = True) -> str:
    proc = subprocess.run(list(argv), input=input, capture_output=True, text=True, check=False)
    if check and proc.returncode != 0:
        raise LabError(f"{' '.join(argv)!s} exited {proc.returncode}: {proc.stderr.strip() or proc.stdout.strip()}")
    return proc.stdout


def in_host(host: str, argv: Sequence[str]) -> list[str]:
    return [
        "nsenter",
        f"--net={NETNS_DIR / host}",
        f"--mount={NS_HANDLES / (host + '.mnt')}",
        f"--uts={NS_HANDLES / (host + '.uts')}",
        "--",
        *argv,
    ]


def run_in(host: str, argv: Sequence[str], **kwargs) -> str:
    return run(in_host(host, argv), **kwargs)


def sh_in(host: str, script: str, **kwargs) -> str:
    return run_in(host, ["sh", "-euc", script], **kwargs)


def start_daemon(host: str, name: str, argv: Sequence[str]) -> int:
    """Start a foreground daemon inside a host, detached from our stdio (CI must not wait on its pipes)."""
    log_dir = STATE_DIR / "logs"
    log_dir.mkdir(parents=True, exist_ok=True)
    with open(log_dir / f"{host}-{name}.log", "ab") as log:
        proc = subprocess.Popen(
            in_host(host, argv), stdin=subprocess.DEVNULL, stdout=log, stderr=log, start_new_session=True
        )
    return proc.pid


def netns_pids(host: str) -> list[int]:
    """PIDs of every process in the host's network namespace (what `ip netns pids` reports)."""
    try:
        target = os.stat(NETNS_DIR / host)
    except FileNotFoundError:
        return []
    pids = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            st = os.stat(f"/proc/{entry}/ns/net")
        except OSError:
            continue
        if (st.st_dev, st.st_ino) == (target.st_dev, target.st_ino):
            pids.append(int(entry))
    return pids


def kill_netns_processes(host: str, grace: float = 5.0) -> None:
    """Stop every process of a host by PID (TERM, then KILL), never by name."""
    for sig in (signal.SIGTERM, signal.SIGKILL):
        pids = netns_pids(host)
        for pid in pids:
            try:
                os.kill(pid, sig)
            except ProcessLookupError:
                pass
        deadline = time.monotonic() + grace
        while netns_pids(host) and time.monotonic() < deadline:
            time.sleep(0.1)
        if not netns_pids(host):
            return
    left = netns_pids(host)
    if left:
        raise LabError(f"processes {left} in lab host {host} survived SIGKILL")
