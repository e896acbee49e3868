# Copyright: hosting.migration contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The two sides of a move seen through one interface: the host the module runs on, and the other one over SSH.

account_move runs on the destination and acts on the source (its web front, sessions, journal) through SSH, so
each step that touches "a server" takes a Host and works the same on either side.
"""

from __future__ import annotations

import os
import subprocess
import tempfile
from typing import Protocol

from ansible_collections.hosting.migration.plugins.module_utils.ssh import SshTarget


class HostError(RuntimeError):
    """A command or file operation failed on a host; the message names the host."""


class Host(Protocol):
    name: str

    def run(self, argv: list[str], input: str | None = None, timeout: float | None = None) -> tuple[int, str, str]: ...

    def read_text(self, path: str) -> str | None: ...

    def write_text(self, path: str, text: str, mode: int = 0o644) -> None: ...


def run_checked(host: Host, argv: list[str], input: str | None = None, timeout: float | None = None) -> str:
    rc, out, err = host.run(argv, input=input, timeout=timeout)
    if rc != 0:
        raise HostError(f"{argv[0]} failed on {host.name} (exit {rc}): {(err or out).strip()[:500]}")
    return out


class LocalHost:
    def __init__(self, name: str = "destination") -> None:
        self.name = name

    def run(self, argv: list[str], input: str | None = None, timeout: float | None = None) -> tuple[int, str, str]:
        proc = subprocess.run(argv, input=input, capture_output=True, text=True, timeout=timeout, check=False)
        return proc.returncode, proc.stdout, proc.stderr

    def read_text(self, path: str) -> str | None:
        try:
            with open(path, encoding="utf-8") as handle:
                return handle.read()
        except FileNotFoundError:
            return None

    def write_text(self, path: str, text: str, mode: int = 0o644) -> None:
        directory = os.path.dirname(path)
        os.makedirs(directory, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=directory, prefix=".hm-")
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as handle:
                handle.write(text)
                handle.flush()
                os.fsync(handle.fileno())
            os.chmod(tmp, mode)
            os.replace(tmp, path)
        except BaseException:
            if os.path.exists(tmp):
                os.unlink(tmp)
            raise


# The remote side of write_text: same temp-then-rename, so a reader never sees half a file.
_REMOTE_WRITE = (
    'umask 077; mkdir -p "$(dirname "$1")" && cat > "$1.hm-tmp" && chmod "$2" "$1.hm-tmp" && mv -f "$1.hm-tmp" "$1"'
)


class RemoteHost:
    def __init__(self, target: SshTarget, name: str = "source") -> None:
        self.target = target
        self.name = f"{name} ({target.host})"

    def run(self, argv: list[str], input: str | None = None, timeout: float | None = None) -> tuple[int, str, str]:
        result = self.target.run(argv, input=input, timeout=timeout)
        return result.rc, result.stdout, result.stderr

    def read_text(self, path: str) -> str | None:
        rc, out, err = self.run(["sh", "-c", 'test -e "$1" || exit 3; cat -- "$1"', "sh", path])
        if rc == 3:
            return None
        if rc != 0:
            raise HostError(f"cannot read {path} on {self.name}: {err.strip()}")
        return out

    def write_text(self, path: str, text: str, mode: int = 0o644) -> None:
        run_checked(self, ["sh", "-c", _REMOTE_WRITE, "sh", path, format(mode, "o")], input=text)
