# Copyright: hosting.migration contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""SSH from a managed host to another server (e.g. the transit server pulling from the client server): the ssh
command line, the matching rsync -e string, and remote commands run with their arguments quoted.

Only key authentication in batch mode is ever used: no password prompt, no agent forwarding, and a connection that
stops answering fails after connect_timeout or server_alive_interval * server_alive_count_max seconds instead of
hanging a move.
"""

from __future__ import annotations

import ctypes
import ipaddress
import os
import re
import shlex
import signal
import subprocess
from collections.abc import Callable, Sequence
from dataclasses import dataclass

# ssh returns 255 for its own errors (connection, authentication, host key); a remote command's own 255 looks the
# same and is reported as an SSH failure too.
SSH_FAILURE_RC = 255
_HOSTNAME_RE = re.compile(r"[A-Za-z0-9_](?:[A-Za-z0-9_.-]*[A-Za-z0-9_])?")
_USER_RE = re.compile(r"[a-z_][a-z0-9_.-]{0,31}")
# ssh splits these option values on whitespace and expands %-tokens in them; such paths are refused, not escaped.
_UNSAFE_PATH_RE = re.compile(r"[\s%\"'\\]|[\x00-\x1f\x7f]")
_PR_SET_PDEATHSIG = 1  # from <linux/prctl.h>


class SshError(Exception):
    """SSH itself failed (no connection, authentication or host key refused, timeout): the remote side never ran
    the command, or its outcome is unknown."""


@dataclass(frozen=True)
class SshResult:
    rc: int
    # Decoded as UTF-8 with surrogateescape: os.fsencode(stdout) gives back the exact bytes (e.g. file names).
    stdout: str
    stderr: str


@dataclass(frozen=True)
class SshTarget:
    host: str
    user: str = "root"
    port: int = 22
    key_file: str | None = None
    # With a known_hosts file, only the keys in it are trusted (the global files are not consulted).
    known_hosts_file: str | None = None
    connect_timeout: int = 10
    server_alive_interval: int = 10
    server_alive_count_max: int = 3
    # A control socket shared by every ssh and rsync of one move: one TCP+key exchange instead of one per step,
    # which is most of what a remote step costs inside the freeze window.
    control_path: str | None = None

    def __post_init__(self) -> None:
        if not _is_host(self.host):
            raise ValueError(f"invalid SSH host {self.host!r}: expected a host name or an IP address")
        if not (isinstance(self.user, str) and _USER_RE.fullmatch(self.user)):
            raise ValueError(f"invalid SSH user {self.user!r}")
        if not (_is_positive_int(self.port) and self.port < 65536):
            raise ValueError(f"invalid SSH port {self.port!r}")
        for name in ("connect_timeout", "server_alive_interval", "server_alive_count_max"):
            value = getattr(self, name)
            if not _is_positive_int(value):
                raise ValueError(f"{name} must be a positive integer, got {value!r}")
        for name in ("key_file", "known_hosts_file", "control_path"):
            path = getattr(self, name)
            if path is not None and not (
                isinstance(path, str) and path.startswith("/") and not _UNSAFE_PATH_RE.search(path)
            ):
                raise ValueError(
                    f"{name} must be an absolute path without whitespace, quotes, backslashes, % or control "
                    f"characters, got {path!r}"
                )

    def options(self) -> list[str]:
        """`ssh` and its options, without the host: what rsync -e wants (rsync appends the host itself)."""
        argv = [
            "ssh",
            "-T",
            "-o", "BatchMode=yes",
            "-o", "PasswordAuthentication=no",
            "-o", "KbdInteractiveAuthentication=no",
            "-o", "ForwardAgent=no",
            "-o", "StrictHostKeyChecking=yes",
            "-o", f"ConnectTimeout={self.connect_timeout}",
            "-o", f"ServerAliveInterval={self.server_alive_interval}",
            "-o", f"ServerAliveCountMax={self.server_alive_count_max}",
            "-p", str(self.port),
            "-l", self.user,
        ]  # fmt: skip
        if self.known_hosts_file is not None:
            argv += ["-o", f"UserKnownHostsFile={self.known_hosts_file}", "-o", "GlobalKnownHostsFile=/dev/null"]
        if self.control_path is not None:
            argv += ["-o", "ControlMaster=auto", "-o", f"ControlPath={self.control_path}", "-o", "ControlPersist=30"]
        if self.key_file is not None:
            argv += ["-o", "IdentitiesOnly=yes", "-i", self.key_file]
        return argv

    def argv(self, command: Sequence[str] | None = None) -> list[str]:
        """The ssh command line to this target, running `command` (an argv, quoted for the remote shell) if given.

        `--` before the host: OpenSSH parses options again after the host, so a command starting with '-' would
        otherwise be taken as an ssh option.
        """
        argv = [*self.options(), "--", self.host]
        if command is not None:
            argv.append(remote_command(command))
        return argv

    def rsh(self) -> str:
        """options() as one string for rsync -e (--rsh), quoted the way rsync splits it."""
        return " ".join(rsync_rsh_quote(arg) for arg in self.options())

    def run(
        self,
        command: Sequence[str],
        input: bytes | str | None = None,
        timeout: float | None = 300,
    ) -> SshResult:
        """Run `command` (an argv) on the target; its exit code, output and errors come back in the result.

        Raises SshError, naming the host, when ssh itself fails (exit code 255) or `timeout` seconds pass.
        """
        data = input.encode() if isinstance(input, str) else input
        try:
            proc = subprocess.run(
                self.argv(command),
                input=data,
                stdin=subprocess.DEVNULL if data is None else None,
                capture_output=True,
                timeout=timeout,
                check=False,
                preexec_fn=die_with_parent(),
            )
        except subprocess.TimeoutExpired:
            raise SshError(f"SSH to {self.user}@{self.host}:{self.port} timed out after {timeout} s") from None
        stdout = proc.stdout.decode("utf-8", "surrogateescape")
        stderr = proc.stderr.decode("utf-8", "surrogateescape")
        if proc.returncode == SSH_FAILURE_RC:
            raise SshError(f"SSH to {self.user}@{self.host}:{self.port} failed: {stderr.strip() or 'exit code 255'}")
        return SshResult(proc.returncode, stdout, stderr)


def die_with_parent() -> Callable[[], None]:
    """A subprocess preexec_fn: the child gets SIGTERM when the process that started it dies, even by SIGKILL.

    Without it, an ssh or rsync started by a killed module runs on unwatched; an rsync still writing into a copy
    after a re-run has verified it could put an older file back. The flock on the journal cannot guard that, as
    it dies with the module by design. (Linux sends the signal when the *thread* that started the child ends, so
    that thread must be the one waiting for it, as in SshTarget.run and rsync.pull.) Between fork and exec it only
    makes the prctl system call, resolved beforehand, and touches no lock another thread could hold.
    """
    parent = os.getpid()
    prctl = ctypes.CDLL(None, use_errno=True).prctl

    def preexec() -> None:
        prctl(_PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0)
        if os.getppid() != parent:  # the parent died before the signal was armed
            os._exit(1)

    return preexec


def remote_command(command: Sequence[str]) -> str:
    """`command` as one string for the remote POSIX shell, each argument quoted (shlex.join)."""
    if isinstance(command, str) or not command:
        raise ValueError("a remote command must be a non-empty list of arguments")
    return shlex.join(command)


def rsync_rsh_quote(arg: str) -> str:
    """Quote `arg` for rsync's own -e splitting: on spaces only, no backslash escapes, and inside single quotes a
    doubled single quote stands for one. (shlex.quote's '"'"' would not survive that.)"""
    return "'" + arg.replace("'", "''") + "'"


def _is_positive_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value > 0


def _is_host(host: object) -> bool:
    if not isinstance(host, str):
        return False
    try:
        ipaddress.ip_address(host)
        return True
    except ValueError:
        return _HOSTNAME_RE.fullmatch(host) is not None and len(host) <= 253
