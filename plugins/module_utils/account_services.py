# Copyright: hosting.migration contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""An account's own services: its PHP-FPM pool, its supervised application server. Each service manager of a
server reads an account's definition from ``<dir>/<account>.conf`` and re-reads its directory when told
(``reload``). A move carries the definitions as it carries the crontab: the freeze sets them aside on the source
(its managers stop the account's processes there), the final delta copies them beside the destination's held
copies, and the destination installs them and has its managers start them just before the switch, so the account
runs on one server at a time. The side left keeps its copies aside for a rollback."""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass

from ansible_collections.hosting.migration.plugins.module_utils.hosts import Host, run_checked

_NAME_RE = re.compile(r"[a-z0-9][a-z0-9_-]{0,31}\Z")


class ServiceError(RuntimeError):
    """A service manager refused a definition or its reload failed; the message names the server and manager."""


@dataclass(frozen=True)
class Manager:
    name: str
    directory: str
    reload: tuple[str, ...]

    def live(self, account: str) -> str:
        return f"{self.directory}/{account}.conf"

    def held(self, held_dir: str, account: str) -> str:
        return f"{held_dir}/{account}.service.{self.name}.conf"


def managers_from_options(options: list[dict] | None) -> list[Manager]:
    """Validated managers from the module's ``services`` option (names unique, absolute directories, a command)."""
    managers = []
    for option in options or []:
        name, directory, reload = option.get("name"), option.get("dir"), option.get("reload") or []
        if not isinstance(name, str) or not _NAME_RE.match(name):
            raise ValueError(f"invalid service manager name {name!r}: expected ^[a-z0-9][a-z0-9_-]{{0,31}}$")
        if not isinstance(directory, str) or not directory.startswith("/") or ".." in directory.split("/"):
            raise ValueError(f"service manager {name}: dir must be an absolute path without '..', not {directory!r}")
        if not reload or not all(isinstance(arg, str) and arg for arg in reload):
            raise ValueError(f"service manager {name}: reload must be a command (a list of arguments)")
        if any(m.name == name for m in managers):
            raise ValueError(f"service manager {name} is listed twice")
        managers.append(Manager(name, directory.rstrip("/"), tuple(reload)))
    return managers


def _reload(host: Host, manager: Manager) -> None:
    rc, out, err = host.run(list(manager.reload))
    if rc != 0:
        raise ServiceError(f"{manager.name} on {host.name}: reload failed (exit {rc}): {(err or out).strip()[:500]}")


def _move(host: Host, source: str, target: str) -> bool:
    """Rename source to target when source exists; True if it did."""
    script = 'test -e "$1" || exit 3; mkdir -p "$(dirname "$2")" && mv -f "$1" "$2"'
    rc, _out, err = host.run(["sh", "-c", script, "sh", source, target])
    if rc == 3:
        return False
    if rc != 0:
        raise ServiceError(f"cannot move {source} to {target} on {host.name}: {err.strip()}")
    return True


def stop(host: Host, managers: list[Manager], held_dir: str, account: str) -> list[str]:
    """Set the account's definitions aside and have each manager stop its processes; the managers that had one.
    A definition already aside (a re-run) is not taken again, and its manager is not reloaded."""
    stopped = []
    for manager in managers:
        if _move(host, manager.live(account), manager.held(held_dir, account)):
            stopped.append(manager.name)
            _reload(host, manager)
    return stopped


def start(host: Host, managers: list[Manager], held_dir: str, account: str) -> list[str]:
    """Install the account's held definitions and have each manager start them; the managers that had one."""
    started = []
    for manager in managers:
        if _move(host, manager.held(held_dir, account), manager.live(account)):
            started.append(manager.name)
            _reload(host, manager)
    return started


def copy_held(source: Host, destination: Host, managers: list[Manager], held_dir: str, account: str) -> None:
    """The source's held definitions, copied aside on the destination (and stale ones there removed)."""
    for manager in managers:
        path = manager.held(held_dir, account)
        text = source.read_text(path)
        if text is None:
            run_checked(destination, ["rm", "-f", "--", path])
        else:
            destination.write_text(path, text, 0o644)


def fingerprints(host: Host, managers: list[Manager], held_dir: str, account: str) -> dict[str, str | None]:
    """sha256 of each held definition (None: the account has none for that manager)."""
    result = {}
    for manager in managers:
        text = host.read_text(manager.held(held_dir, account))
        result[manager.name] = hashlib.sha256(text.encode("utf-8")).hexdigest() if text is not None else None
    return result
