# Copyright: hosting.migration contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Account names, their domains and the paths that belong to an account: the checks every module runs before any
action."""

from __future__ import annotations

import re
from typing import Any

ACCOUNT_NAME_PATTERN = r"^[a-z][a-z0-9]{1,31}$"
_ACCOUNT_NAME_RE = re.compile(ACCOUNT_NAME_PATTERN)
# Lowercase LDH labels only: a domain lands in nginx configuration, DNS updates and file names.
_LABEL = r"(?!-)[a-z0-9-]{1,63}(?<!-)"
_DOMAIN_RE = re.compile(rf"{_LABEL}(?:\.{_LABEL})+")


def account_argument_spec() -> dict[str, Any]:
    """The `account` option shared by the modules; documented by the `hosting.migration.account` doc fragment."""
    return {"account": {"type": "str", "required": True}}


def validate_account_name(name: object) -> str:
    """Return `name` if it is a valid account name, else raise ValueError saying why.

    The name ends up in paths, SQL identifiers, rsync arguments and DNS updates, so only the plain
    `ACCOUNT_NAME_PATTERN` shape is let through; nothing is escaped or repaired.
    """
    if not isinstance(name, str):
        raise ValueError(f"account name must be a string, got {type(name).__name__}")
    # fullmatch, not match: `$` alone would also accept a trailing newline ("alice\n").
    if _ACCOUNT_NAME_RE.fullmatch(name) is None:
        shown = name if len(name) <= 40 else name[:40] + "..."
        raise ValueError(
            f"invalid account name {shown!r}: it must match {ACCOUNT_NAME_PATTERN} "
            "(2 to 32 characters, lowercase letters and digits, starting with a letter)"
        )
    return name


def validate_domain(name: object) -> str:
    if not isinstance(name, str) or len(name) > 253 or _DOMAIN_RE.fullmatch(name) is None:
        raise ValueError(f"invalid domain {name!r}: lowercase letters, digits and hyphens in dot-separated labels")
    return name


def _lexical_parts(path: str) -> list[str] | None:
    """Components of an absolute POSIX path without empty and '.' ones, or None if it cannot be judged by text alone."""
    if not path.startswith("/") or "\0" in path:
        return None
    parts = [part for part in path.split("/") if part not in ("", ".")]
    # A '..' is refused rather than collapsed: 'home/x/..' is 'home' only if x is not a symlink, which text can't tell.
    if ".." in parts:
        return None
    return parts


def is_subpath(path: object, root: str) -> bool:
    """Tell whether the absolute `path` is `root` itself or lies below it, judging by the text of both only.

    The paths usually name files on another host (the client or transit server) or files that do not exist yet,
    so resolving symlinks here (os.path.realpath) would check the controller's file system, not theirs. Instead the
    check is purely lexical and strict: `path` must be absolute and free of NUL and '..' components; anything else
    is refused (False). Repeated slashes and '.' components are ignored. Symlinks inside an account's tree are left
    to the tools that copy it (rsync -a copies links as links).

    `root` is configuration, not input: a relative root or one with '..' raises ValueError.
    """
    root_parts = _lexical_parts(root) if isinstance(root, str) else None
    if root_parts is None:
        raise ValueError(f"root must be an absolute path without '..' components, got {root!r}")
    path_parts = _lexical_parts(path) if isinstance(path, str) else None
    return path_parts is not None and path_parts[: len(root_parts)] == root_parts
