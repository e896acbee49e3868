# Copyright: hosting.migration contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The web front of DESIGN §1: nginx maps with one entry per domain.

``docroots.map`` (domain -> document root) serves an account on the server that holds it; ``backends.map``
(domain -> ``host:port`` or ``maintenance``) on the server that holds the public IPs sends a moved account's
domains to the server that now holds it, or answers the maintenance page while the account is frozen. An absent
backend entry means "served locally".
"""

from __future__ import annotations

import hashlib
import ipaddress
import random
import re
import time

from ansible_collections.hosting.migration.plugins.module_utils.hosts import Host, HostError, run_checked

MAINTENANCE = "maintenance"
DOCROOTS_MAP = "docroots.map"
BACKENDS_MAP = "backends.map"

_MAP_LINE_RE = re.compile(r"^\s*(\S+)\s+(\S+?);\s*$")


def validate_backend(value: object) -> str:
    """``maintenance`` or ``host:port`` with an IP address (``[v6]:port`` for IPv6): nothing nginx could misread."""
    if value == MAINTENANCE:
        return value
    if isinstance(value, str):
        match = re.fullmatch(r"\[([0-9a-fA-F:.]+)\]:(\d{1,5})|([0-9.]+):(\d{1,5})", value)
        if match:
            address, port = (match.group(1), match.group(2)) if match.group(1) else (match.group(3), match.group(4))
            try:
                ipaddress.ip_address(address)
            except ValueError:
                pass
            else:
                if 0 < int(port) < 65536:
                    return value
    raise ValueError(f"invalid backend {value!r}: expected 'maintenance', 'IPv4:port' or '[IPv6]:port'")


def backend_address(backend: str) -> str:
    """The IP address of a validated ``host:port`` / ``[v6]:port`` backend."""
    return validate_backend(backend).rpartition(":")[0].strip("[]")


def validate_docroot(value: object) -> str:
    if not isinstance(value, str) or not value.startswith("/") or re.search(r"[\s;{}'\"\\$]|\.\.", value):
        raise ValueError(f"invalid document root {value!r}: an absolute path without spaces, quotes, ';' or '..'")
    return value


def parse_map(text: str | None) -> dict[str, str]:
    entries: dict[str, str] = {}
    for line in (text or "").splitlines():
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        match = _MAP_LINE_RE.match(line)
        if match is None:
            raise ValueError(f"unexpected line in an nginx map: {line!r}")
        entries[match.group(1)] = match.group(2)
    return entries


def render_map(entries: dict[str, str]) -> str:
    header = "# Managed by hosting.migration: one entry per domain.\n"
    return header + "".join(f"{key} {value};\n" for key, value in sorted(entries.items()))


def apply_changes(text: str | None, changes: dict[str, str | None]) -> tuple[str, dict[str, str | None]]:
    """The map text with ``changes`` applied (None removes an entry), and each changed entry's previous value."""
    entries = parse_map(text)
    previous: dict[str, str | None] = {}
    for key, value in changes.items():
        if entries.get(key) != value:
            previous[key] = entries.get(key)
            if value is None:
                entries.pop(key, None)
            else:
                entries[key] = value
    return render_map(entries), previous


# Several moves at once share one front (step 4 moves accounts concurrently): a read-modify-write of a map could
# write back an entry another move had just changed, e.g. leave a switched account on the maintenance page. So the
# write is a compare-and-swap under flock(1) on the host: it lands only if the file is still what was read.
_MAP_SWAP = (
    'exec 9>>"$1.lock" && flock 9 || exit 5; '
    'if [ -e "$1" ]; then current=$(sha256sum < "$1" | cut -c1-64); else current=none; fi; '
    '[ "$current" = "$2" ] || exit 4; '
    'tmp="$1.hm-swap.$$"; cat > "$tmp" && chmod 0644 "$tmp" && mv -f "$tmp" "$1"'
)
SWAP_DEADLINE_S = 60.0


def update_map(
    host: Host, path: str, changes: dict[str, str | None], check_mode: bool = False
) -> dict[str, str | None]:
    """Apply ``changes`` to the map file at ``path`` on ``host``; return the previous value of each changed entry."""
    deadline = time.monotonic() + SWAP_DEADLINE_S
    attempt = 0
    while time.monotonic() < deadline:
        if attempt:
            # Lost the race: step back a random moment so the contenders do not collide again in lockstep.
            time.sleep(random.uniform(0, 0.01 * min(attempt, 20)))
        attempt += 1
        text = host.read_text(path)
        new_text, previous = apply_changes(text, changes)
        if not previous or check_mode:
            return previous
        expected = "none" if text is None else hashlib.sha256(text.encode("utf-8")).hexdigest()
        rc, out, err = host.run(["sh", "-c", _MAP_SWAP, "sh", path, expected], input=new_text)
        if rc == 0:
            return previous
        if rc != 4:
            raise HostError(f"cannot write {path} on {host.name} (exit {rc}): {(err or out).strip()[:500]}")
    raise HostError(f"{path} on {host.name} kept changing under concurrent updates for {SWAP_DEADLINE_S:.0f} s")


def reload_nginx(host: Host) -> None:
    """Check the configuration first: a broken map must never take the front down."""
    run_checked(host, ["nginx", "-t", "-q"])
    run_checked(host, ["nginx", "-s", "reload"])
