# Copyright: hosting.migration contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Language runtimes of a hosting server against an architecture's support matrix, and their reversible removal.

The server contract (DESIGN §1): runtimes are installed as `<langs_dir>/<language>/<version>/`, the server profile
lists them under `languages`, and each account's registry file names the language and version of its sites.

The support matrix of each architecture generation ships here as data (SUPPORT_MATRIX); an explicit old -> new
map says which supported version replaces a dropped one, and `replacement_for` computes one where the map is
silent (the closest supported version of the same language that is not older, else the newest).

Removal is a quarantine, not a deletion. For each runtime, in this order:

    1. the journal record gains an entry for it ("moving"), durably;
    2. a manifest of every entry of the tree (relative path, type, sha256 of files, uid, gid, mode, symlink target)
       is written durably next to where the tree goes: `<quarantine_dir>/<language>/<version>.manifest.json`;
    3. the tree is moved with one rename(2) to `<quarantine_dir>/<language>/<version>` (same file system: atomic,
       no copy, owners, modes, hard links, ACLs and xattrs untouched), and both parent directories are fsynced;
    4. the record's entry becomes "quarantined".

A kill at any point leaves each tree whole in exactly one of the two places, and the record names it. Restoring
first checks every recorded runtime wherever it is against its manifest (and fails before any change if anything
differs), then renames back; a restore also finishes a prune or a restore that was killed half-way.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import posixpath
import re
import stat
from collections.abc import Callable
from typing import Any

from ansible_collections.hosting.migration.plugins.module_utils.account import validate_account_name, validate_domain
from ansible_collections.hosting.migration.plugins.module_utils.journal import (
    fsync_dir,
    utc_now,
    write_json_atomic,
)

LANGUAGE_PATTERN = r"[a-z][a-z0-9]{0,31}"
VERSION_PATTERN = r"[0-9]{1,5}(?:\.[0-9]{1,5}){0,3}"
ARCHITECTURE_PATTERN = r"[A-Za-z0-9][A-Za-z0-9_-]{0,31}"
_LANGUAGE_RE = re.compile(LANGUAGE_PATTERN)
_VERSION_RE = re.compile(VERSION_PATTERN)
_ARCHITECTURE_RE = re.compile(ARCHITECTURE_PATTERN)

RECORD_NAME = "lang_prune"
RECORD_VERSION = 1
MANIFEST_SUFFIX = ".manifest.json"

# Languages and versions each architecture generation offers, and which supported version takes over the sites of
# a version it drops (a minor is replaced by the closest supported major, as provider migrations do).
SUPPORT_MATRIX: dict[str, dict[str, Any]] = {
    "2020": {
        "languages": {"php": ["5.6", "7.4", "8.1"], "python": ["3.7", "3.9"]},
        "replacements": {},
    },
    "2024": {
        "languages": {"php": ["8.1", "8.2", "8.3"], "python": ["3.11", "3.12"]},
        "replacements": {"php": {"5.6": "8.1", "7.4": "8.1"}, "python": {"3.7": "3.11", "3.9": "3.11"}},
    },
}


class LangError(Exception):
    """Something read or asked for is not acceptable; nothing was changed because of it."""


# ---- validation -----------------------------------------------------------------------------------------------------


def _checked(value: object, regex: re.Pattern, what: str, pattern: str) -> str:
    if not isinstance(value, str) or regex.fullmatch(value) is None:
        shown = value if not isinstance(value, str) or len(value) <= 40 else value[:40] + "..."
        raise LangError(f"invalid {what} {shown!r}: it must match ^{pattern}$")
    return value


def validate_language(value: object) -> str:
    return _checked(value, _LANGUAGE_RE, "language", LANGUAGE_PATTERN)


def validate_version(value: object) -> str:
    return _checked(value, _VERSION_RE, "version", VERSION_PATTERN)


def validate_architecture(value: object) -> str:
    return _checked(value, _ARCHITECTURE_RE, "architecture", ARCHITECTURE_PATTERN)


def validate_abs_path(value: object, option: str) -> str:
    """`value` if it is an absolute, normalised path (no '.', '..', repeated or trailing '/', NUL or control
    characters) other than '/'; LangError otherwise. Nothing is repaired: a path that needs it is refused."""
    if (
        not isinstance(value, str)
        or not value.startswith("/")
        or value == "/"
        or value.startswith("//")
        or posixpath.normpath(value) != value
        or any(ord(char) < 32 or ord(char) == 127 for char in value)
    ):
        raise LangError(f"{option} must be an absolute, normalised path (no '.', '..', '//', NUL), got {value!r}")
    return value


def version_key(version: str) -> tuple[int, ...]:
    return tuple(int(part) for part in validate_version(version).split("."))


def runtime_id(language: str, version: str) -> str:
    return f"{language}/{version}"


# ---- support matrix -------------------------------------------------------------------------------------------------


def load_matrix(architecture: str, override: dict[str, Any] | None = None) -> dict[str, Any]:
    """The validated support matrix of `architecture`: {"languages": {lang: [versions]}, "replacements":
    {lang: {old: new}}}. An architecture in `override` (same shape) replaces the shipped one."""
    validate_architecture(architecture)
    matrices = dict(SUPPORT_MATRIX)
    if override:
        if not isinstance(override, dict):
            raise LangError("support_matrix must be a dict of architectures")
        for name in override:
            validate_architecture(name)
        matrices.update(override)
    if architecture not in matrices:
        raise LangError(f"no support matrix for architecture {architecture!r} (known: {', '.join(sorted(matrices))})")
    raw = matrices[architecture]
    if not isinstance(raw, dict) or not isinstance(raw.get("languages"), dict):
        raise LangError(f"support matrix of {architecture} must be a dict with a 'languages' dict")
    languages: dict[str, list[str]] = {}
    for language, versions in raw["languages"].items():
        if not isinstance(versions, list):
            raise LangError(f"support matrix of {architecture}: versions of {language!r} must be a list")
        languages[validate_language(language)] = sorted({validate_version(v) for v in versions}, key=version_key)
    replacements: dict[str, dict[str, str]] = {}
    raw_replacements = raw.get("replacements") or {}
    if not isinstance(raw_replacements, dict):
        raise LangError(f"support matrix of {architecture}: replacements must be a dict")
    for language, mapping in raw_replacements.items():
        validate_language(language)
        if not isinstance(mapping, dict):
            raise LangError(f"support matrix of {architecture}: replacements of {language!r} must be a dict")
        for old, new in mapping.items():
            validate_version(old)
            if validate_version(new) not in languages.get(language, []):
                raise LangError(f"support matrix of {architecture}: replacement {language} {new} is not supported")
        replacements[language] = dict(mapping)
    return {"languages": languages, "replacements": replacements}


def replacement_for(language: str, version: str, matrix: dict[str, Any]) -> str | None:
    """The supported version that takes over from `language` `version`: the explicit map's, else the closest
    supported version that is not older, else the newest supported one; None if the language is not supported."""
    explicit = matrix["replacements"].get(language, {}).get(version)
    if explicit:
        return explicit
    supported = matrix["languages"].get(language, [])
    if not supported:
        return None
    newer = [v for v in supported if version_key(v) >= version_key(version)]
    return newer[0] if newer else supported[-1]


def is_supported(language: str, version: str, matrix: dict[str, Any]) -> bool:
    return version in matrix["languages"].get(language, [])


# ---- what the server has and what uses it ---------------------------------------------------------------------------


def scan_installed(langs_dir: str) -> tuple[dict[str, list[str]], list[str]]:
    """Installed runtimes {language: [versions]} (real directories only) and the entries that are left alone
    (names that are not a language or a version, symlinks, files), as paths relative to `langs_dir`."""
    installed: dict[str, list[str]] = {}
    ignored: list[str] = []
    for language in sorted(os.listdir(langs_dir)):
        path = os.path.join(langs_dir, language)
        if _LANGUAGE_RE.fullmatch(language) is None or not stat.S_ISDIR(os.lstat(path).st_mode):
            ignored.append(language)
            continue
        versions = []
        for version in os.listdir(path):
            if _VERSION_RE.fullmatch(version) and stat.S_ISDIR(os.lstat(os.path.join(path, version)).st_mode):
                versions.append(version)
            else:
                ignored.append(runtime_id(language, version))
        installed[language] = sorted(versions, key=version_key)
    return installed, sorted(ignored)


def validate_registry_entry(account: str, entry: object) -> list[dict[str, str]]:
    """The sites of one account's registry entry, each {account, domain, language, version}, all validated."""
    validate_account_name(account)
    if not isinstance(entry, dict):
        raise LangError(f"registry entry of {account} is not a mapping")
    if entry.get("name", account) != account:
        raise LangError(f"registry file of {account} names another account ({entry.get('name')!r})")
    sites = entry.get("sites") or []
    if not isinstance(sites, list):
        raise LangError(f"registry entry of {account}: sites must be a list")
    result = []
    for site in sites:
        if not isinstance(site, dict):
            raise LangError(f"registry entry of {account}: a site is not a mapping")
        try:
            domain = validate_domain(site.get("domain"))
        except ValueError as error:
            raise LangError(f"registry entry of {account}: {error}") from None
        result.append(
            {
                "account": account,
                "domain": domain,
                "language": validate_language(site.get("language")),
                "version": validate_version(str(site.get("version"))),
            }
        )
    return result


def usage_by_runtime(sites: list[dict[str, str]]) -> dict[str, list[dict[str, str]]]:
    """{"<language>/<version>": [{account, domain}, ...]} sorted by account and domain."""
    usage: dict[str, list[dict[str, str]]] = {}
    for site in sorted(sites, key=lambda s: (s["account"], s["domain"])):
        usage.setdefault(runtime_id(site["language"], site["version"]), []).append(
            {"account": site["account"], "domain": site["domain"]}
        )
    return usage


def build_plan(
    installed: dict[str, list[str]],
    matrix: dict[str, Any],
    sites: list[dict[str, str]],
    quarantined: list[str],
    force: bool,
) -> list[dict[str, Any]]:
    """Per unsupported version (installed, quarantined or used by a site): language, version, replacement, the
    sites still using it (blockers), whether it is installed, and `prune` (whether state=pruned removes it)."""
    usage = usage_by_runtime(sites)
    candidates = {runtime_id(lang, v) for lang, versions in installed.items() for v in versions}
    candidates |= set(quarantined) | set(usage)
    plan = []
    for rid in candidates:
        language, version = rid.split("/")
        if is_supported(language, version, matrix):
            continue
        is_installed = version in installed.get(language, [])
        blockers = usage.get(rid, [])
        if not is_installed:
            action = "already quarantined" if rid in quarantined else "not installed"
        elif blockers and not force:
            action = "kept: in use"
        else:
            action = "prune"
        plan.append(
            {
                "language": language,
                "version": version,
                "replacement": replacement_for(language, version, matrix),
                "installed": is_installed,
                "blockers": blockers,
                "action": action,
            }
        )
    return sorted(plan, key=lambda item: (item["language"], version_key(item["version"])))


def blocker_list(plan: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Every site on an unsupported version: what step 1 must resolve before the new architecture."""
    return [
        {**blocker, "language": item["language"], "version": item["version"], "replacement": item["replacement"]}
        for item in plan
        for blocker in item["blockers"]
    ]


def profile_languages_after(languages: dict[str, list[str]], removed: list[str]) -> dict[str, list[str]]:
    """The profile's `languages` without the removed runtimes (languages keep their key, possibly empty)."""
    gone = set(removed)
    return {lang: [v for v in versions if runtime_id(lang, str(v)) not in gone] for lang, versions in languages.items()}


# ---- files ----------------------------------------------------------------------------------------------------------


def same_filesystem(first: str, second: str) -> bool:
    """Whether `first` and `second` (or, where one does not exist yet, its nearest existing parent) share a device."""

    def device(path: str) -> int:
        while not os.path.lexists(path):
            path = os.path.dirname(path)
        return os.stat(path).st_dev

    return device(first) == device(second)


def _file_sha256(path: str) -> str:
    digest = hashlib.sha256()
    fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW)
    with os.fdopen(fd, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


_TYPES = {
    stat.S_IFDIR: "dir",
    stat.S_IFREG: "file",
    stat.S_IFLNK: "symlink",
    stat.S_IFIFO: "fifo",
    stat.S_IFSOCK: "socket",
    stat.S_IFCHR: "char",
    stat.S_IFBLK: "block",
}


def build_manifest(root: str) -> dict[str, Any]:
    """Every entry of the tree at `root` (itself as "."), never following symlinks: relative path, type, uid, gid,
    mode, and sha256 and size of files, target of symlinks. Sorted by path."""
    entries = []
    pending = ["."]
    while pending:
        rel = pending.pop()
        path = root if rel == "." else os.path.join(root, rel)
        info = os.lstat(path)
        kind = _TYPES.get(stat.S_IFMT(info.st_mode), "other")
        entry: dict[str, Any] = {
            "path": rel,
            "type": kind,
            "uid": info.st_uid,
            "gid": info.st_gid,
            "mode": f"{stat.S_IMODE(info.st_mode):04o}",
        }
        if kind == "file":
            entry.update(size=info.st_size, sha256=_file_sha256(path))
        elif kind == "symlink":
            entry["target"] = os.readlink(path)
        elif kind == "dir":
            pending.extend(name if rel == "." else os.path.join(rel, name) for name in os.listdir(path))
        entries.append(entry)
    entries.sort(key=lambda e: e["path"])
    files = [e for e in entries if e["type"] == "file"]
    return {"version": 1, "entries": entries, "files": len(files), "bytes": sum(e["size"] for e in files)}


def manifest_digest(manifest: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(manifest, sort_keys=True).encode("utf-8", "surrogateescape")).hexdigest()


def manifest_differences(expected: dict[str, Any], actual: dict[str, Any], limit: int = 20) -> list[str]:
    """What differs between two manifests, one sentence per entry (at most `limit`)."""
    want = {e["path"]: e for e in expected["entries"]}
    have = {e["path"]: e for e in actual["entries"]}
    differences = []
    for path in sorted(set(want) | set(have)):
        if path not in have:
            differences.append(f"{path}: missing")
        elif path not in want:
            differences.append(f"{path}: not in the manifest")
        elif want[path] != have[path]:
            fields = sorted(k for k in set(want[path]) | set(have[path]) if want[path].get(k) != have[path].get(k))
            differences.append(f"{path}: {', '.join(fields)} differ")
    return differences[:limit]


# ---- the quarantine -------------------------------------------------------------------------------------------------


class Quarantine:
    """Moves runtimes between `langs_dir` and `quarantine_dir` (same file system) with manifests and a journal
    record; `save_record(record)` must write it durably (Journal.write_record)."""

    def __init__(self, langs_dir: str, quarantine_dir: str, save_record: Callable[[dict[str, Any]], None]) -> None:
        self.langs_dir = langs_dir
        self.quarantine_dir = quarantine_dir
        self.save_record = save_record

    def live_path(self, rid: str) -> str:
        return os.path.join(self.langs_dir, rid)

    def quarantine_path(self, rid: str) -> str:
        return os.path.join(self.quarantine_dir, rid)

    def manifest_path(self, rid: str) -> str:
        return self.quarantine_path(rid) + MANIFEST_SUFFIX

    def check_filesystem(self) -> None:
        if not same_filesystem(self.langs_dir, self.quarantine_dir):
            raise LangError(
                f"quarantine_dir {self.quarantine_dir} is not on the file system of langs_dir {self.langs_dir}: "
                "runtimes are moved with rename(2), which cannot cross file systems"
            )

    @staticmethod
    def new_record(**fields: Any) -> dict[str, Any]:
        return {"version": RECORD_VERSION, "runtimes": [], "profile_written_sha256": [], **fields}

    def where(self, rid: str) -> str:
        """Where a recorded runtime is: "live", "quarantine", "both" or "lost"."""
        live, quarantined = os.path.lexists(self.live_path(rid)), os.path.lexists(self.quarantine_path(rid))
        return {(True, False): "live", (False, True): "quarantine", (True, True): "both"}.get(
            (live, quarantined), "lost"
        )

    def quarantined(self, record: dict[str, Any] | None) -> list[str]:
        """Recorded runtimes that are in the quarantine (a prune killed after its rename counts)."""
        if not record:
            return []
        return [e["id"] for e in record["runtimes"] if self.where(e["id"]) == "quarantine"]

    # -- prune --

    def prune(self, record: dict[str, Any], rids: list[str]) -> list[str]:
        """Move each runtime of `rids` (ids "<language>/<version>" still live) into the quarantine; returns the
        ids moved. The record is saved before each move and after it."""
        self.check_filesystem()
        if not os.path.isdir(self.quarantine_dir):
            os.mkdir(self.quarantine_dir, 0o700)
            os.chmod(self.quarantine_dir, 0o700)
            fsync_dir(os.path.dirname(self.quarantine_dir))
            record["created_quarantine_dir"] = True
        moved = []
        for rid in rids:
            if self.where(rid) != "live":
                raise LangError(f"{self.live_path(rid)} cannot be quarantined: {self.quarantine_path(rid)} exists")
            language_dir = os.path.dirname(self.quarantine_path(rid))
            if not os.path.isdir(language_dir):
                os.mkdir(language_dir, 0o700)
                fsync_dir(self.quarantine_dir)
            manifest = build_manifest(self.live_path(rid))
            entry = {
                "id": rid,
                "state": "moving",
                "manifest_sha256": manifest_digest(manifest),
                "files": manifest["files"],
                "bytes": manifest["bytes"],
                "at": utc_now(),
            }
            record["runtimes"] = [e for e in record["runtimes"] if e["id"] != rid] + [entry]
            self.save_record(record)
            write_json_atomic(self.manifest_path(rid), manifest)
            os.rename(self.live_path(rid), self.quarantine_path(rid))
            fsync_dir(os.path.dirname(self.live_path(rid)))
            fsync_dir(language_dir)
            entry["state"] = "quarantined"
            self.save_record(record)
            moved.append(rid)
        return moved

    # -- restore --

    def check_restore(self, record: dict[str, Any]) -> list[str]:
        """Check every recorded runtime against its manifest, wherever it is; LangError naming all problems.
        Returns the ids a restore must rename back (those in the quarantine). Reads only."""
        problems: list[str] = []
        to_move = []
        for entry in record["runtimes"]:
            rid = entry["id"]
            place = self.where(rid)
            if place == "both":
                problems.append(f"{rid}: both {self.live_path(rid)} and {self.quarantine_path(rid)} exist")
                continue
            if place == "lost":
                problems.append(f"{rid}: neither {self.live_path(rid)} nor {self.quarantine_path(rid)} exists")
                continue
            tree = self.quarantine_path(rid) if place == "quarantine" else self.live_path(rid)
            try:
                with open(self.manifest_path(rid), encoding="utf-8") as handle:
                    manifest = json.load(handle)
            except FileNotFoundError:
                if place == "live" and entry["state"] == "moving":
                    continue  # a prune killed before its manifest, so before its rename: never moved
                problems.append(f"{rid}: manifest {self.manifest_path(rid)} is missing")
                continue
            except (OSError, ValueError) as error:
                problems.append(f"{rid}: manifest {self.manifest_path(rid)} unreadable: {error}")
                continue
            if manifest_digest(manifest) != entry["manifest_sha256"]:
                problems.append(f"{rid}: manifest {self.manifest_path(rid)} is not the one recorded at the prune")
                continue
            differences = manifest_differences(manifest, build_manifest(tree))
            if differences:
                problems.append(f"{rid} ({tree}) differs from its manifest: {'; '.join(differences)}")
                continue
            if place == "quarantine":
                if not os.path.isdir(os.path.dirname(self.live_path(rid))):
                    problems.append(f"{rid}: {os.path.dirname(self.live_path(rid))} is missing")
                    continue
                to_move.append(rid)
        if problems:
            raise LangError("restore refused, nothing was changed: " + " | ".join(problems))
        return to_move

    def move_back(self, rids: list[str]) -> None:
        for rid in rids:
            os.rename(self.quarantine_path(rid), self.live_path(rid))
            fsync_dir(os.path.dirname(self.live_path(rid)))
            fsync_dir(os.path.dirname(self.quarantine_path(rid)))

    def clean(self, record: dict[str, Any]) -> None:
        """Remove the manifests and the quarantine's empty directories once everything is back."""
        for entry in record["runtimes"]:
            try:
                os.unlink(self.manifest_path(entry["id"]))
            except FileNotFoundError:
                pass
            try:
                os.rmdir(os.path.dirname(self.quarantine_path(entry["id"])))
            except OSError:
                pass  # not empty: something else lives there
        if record.get("created_quarantine_dir"):
            try:
                os.rmdir(self.quarantine_dir)
            except OSError:
                pass


def encode_bytes(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def decode_bytes(text: str) -> bytes:
    return base64.b64decode(text.encode("ascii"))


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()
