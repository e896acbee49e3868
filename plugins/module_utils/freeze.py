# Copyright: hosting.migration contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Freezing an account on the side that serves it, and thawing it again, exactly.

The freeze record (what was changed, and its previous value) is written to the journal before each change, so
whoever thaws — the move itself on a handled failure, the guardian process when the move is killed, or a re-run —
restores precisely what the freeze changed and nothing else.
"""

from __future__ import annotations

import os
from collections.abc import Callable

from ansible_collections.hosting.migration.plugins.module_utils.hosts import Host, run_checked
from ansible_collections.hosting.migration.plugins.module_utils.webfront import (
    BACKENDS_MAP,
    MAINTENANCE,
    reload_nginx,
    update_map,
)


def hold_web(front: Host, map_dir: str, domains: list[str]) -> dict[str, str | None]:
    """Point the account's domains at the maintenance page on the front; return their previous backends."""
    previous = update_map(front, f"{map_dir}/{BACKENDS_MAP}", dict.fromkeys(domains, MAINTENANCE))
    if previous:
        reload_nginx(front)
    return previous


def release_web(front: Host, map_dir: str, previous: dict[str, str | None]) -> None:
    """Give each domain back the backend it had before hold_web (absent entries stay absent). nginx reloads even
    when the map already says so: a run killed between the write and the reload left it serving the old map."""
    update_map(front, f"{map_dir}/{BACKENDS_MAP}", previous)
    reload_nginx(front)


def end_sessions(host: Host, uid: int) -> None:
    """Stop every process of the account's user (shell sessions, PHP workers, cron jobs): nothing writes now."""
    rc, _out, err = host.run(["pkill", "-KILL", "-U", str(uid)])
    # pkill: 0 = killed some, 1 = none matched.
    if rc not in (0, 1):
        raise RuntimeError(f"could not end the sessions of uid {uid} on {host.name}: {err.strip()}")


def _hold(host: Host, what: str, script: str, *args: str) -> bool:
    """Run a hold's shell script (arguments $1...): exit 3 means already held or nothing to hold (False); True if
    this call took the hold."""
    rc, _out, err = host.run(["sh", "-c", script, "sh", *args])
    if rc == 3:
        return False
    if rc != 0:
        raise RuntimeError(f"could not hold {what} on {host.name}: {err.strip()}")
    return True


def hold_logins(host: Host, held_dir: str, account: str) -> bool:
    """Expire the account's user so no new login starts (ssh, sftp, su and cron all check expiry through PAM)
    until release_logins; its previous expiry date is kept in held_dir. True if this call took the hold."""
    script = (
        'f="$2/$1.expiry"; held=0; '
        'if [ ! -e "$f" ]; then held=1; previous=$(getent shadow "$1" | cut -d: -f8); '
        # Expired on day 1 with no record of its own date: held by a hold whose record is gone (or a copy that
        # never served); taking that as its own date would expire it for good at the release.
        '[ "$previous" != 1 ] || { echo "expired by a login hold whose record is missing" >&2; exit 1; }; '
        'mkdir -p -m 0700 "$2" && '
        'printf "%s\\n" "${previous:--1}" > "$f.new" && mv -f "$f.new" "$f" || exit 1; fi; '
        # Day 1 (1970-01-02): day 0 is read as "never expires" by some tools.
        'chage -E 1 "$1" || exit 1; [ "$held" = 1 ] || exit 3'
    )
    return _hold(host, f"the logins of {account}", script, account, held_dir)


def release_logins(host: Host, held_dir: str, account: str) -> None:
    """Give the user back the expiry date it had before hold_logins (none held: nothing to do)."""
    script = 'f="$2/$1.expiry"; test -e "$f" || exit 0; chage -E "$(cat "$f")" "$1" && rm -f "$f"'
    run_checked(host, ["sh", "-c", script, "sh", account, held_dir])


def hold_cron(host: Host, cron_dir: str, held_dir: str, account: str) -> bool:
    """Move the account's crontab aside so no job starts during the move; True if there was one."""
    script = 'test -e "$1" || exit 3; mkdir -p -m 0700 "$2" && mv -f "$1" "$2/"'
    return _hold(host, f"the crontab of {account}", script, f"{cron_dir}/{account}", held_dir)


def release_cron(host: Host, cron_dir: str, held_dir: str, account: str) -> None:
    script = 'test -e "$2/$3" || exit 0; mkdir -p "$1" && mv -f "$2/$3" "$1/$3"'
    run_checked(host, ["sh", "-c", script, "sh", cron_dir, held_dir, account])


def hold_mail(host: Host, hold_dir: str, account: str) -> bool:
    """Hold the account's mail: while the hold file exists the server's SMTP answers "try again later" at RCPT (the
    sender or relay keeps the message queued), delivers nothing into the account's mailboxes (what it accepted just
    before stays in its queue) and IMAP logins wait. True if this call set the hold."""
    script = 'test -e "$1/$2" && exit 3; mkdir -p "$1" && : > "$1/$2"'
    return _hold(host, f"the mail of {account}", script, hold_dir, account)


def redirect_mail(host: Host, hold_dir: str, account: str, address: str) -> None:
    """On the side an account has left, after the switch: its hold file names the server that holds the account
    now, and the server's MTA relays the account's mail there (what it had queued during the move, and what still
    reaches it, e.g. from a backup MX) instead of answering "try again later". The hold itself stays."""
    script = 'mkdir -p "$1" && printf "relay %s\\n" "$3" > "$1/.$2.new" && mv -f "$1/.$2.new" "$1/$2"'
    run_checked(host, ["sh", "-c", script, "sh", hold_dir, account, address])


def release_mail(host: Host, hold_dir: str, account: str) -> None:
    run_checked(host, ["rm", "-f", "--", f"{hold_dir}/{account}"])


def start_guardian(thaw: Callable[[], None]) -> int:
    """Fork a process that thaws the source if this process dies before telling it the move is over.

    Returns the write end of a pipe: write b"done" (switch succeeded or the failure was already thawed) and close
    it. If the move is killed (SIGKILL, OOM, lost controller), the pipe closes without "done" and the guardian
    thaws, so the account is served by its source again within a second instead of staying frozen.
    """
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid:
        os.close(read_end)
        return write_end
    try:
        os.setsid()
        os.close(write_end)
        # Detach from the module's stdio: Ansible waits for those to close.
        devnull = os.open(os.devnull, os.O_RDWR)
        for fd in (0, 1, 2):
            os.dup2(devnull, fd)
        message = b""
        while chunk := os.read(read_end, 16):
            message += chunk
        if message != b"done":
            thaw()
    finally:
        os._exit(0)


def release_guardian(write_end: int | None) -> None:
    if write_end is not None:
        os.write(write_end, b"done")
        os.close(write_end)
