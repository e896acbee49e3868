# Copyright: hosting.migration contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Pull a directory tree from another server with rsync over SSH, check mode by rsync's own dry run, progress, and
the verification that a copy is identical to its source; plus the per-mailbox message sets of Maildirs.

Choices (see also the notes on each function):
- `-aHAX --numeric-ids --delete`: owners by number (the uids exist on both servers), hard links, ACLs, xattrs;
  what is no longer on the source goes. Symlinks are copied as links, never followed (-l, part of -a).
- `--protect-args` (-s): file names and most options travel inside rsync's protocol, not through the remote shell.
  rsync >= 3.2.4 already backslash-escapes remote arguments by default, but RSYNC_OLD_ARGS in the environment
  turns that off; -s does not depend on it, and the older rsync of an old-generation source server knows the
  option by this name (3.2.4 renamed it --secluded-args and kept --protect-args as an alias). With -s the remote
  rsync still expands wildcards in the source path, so source paths with * ? [ ] or a backslash are refused.
- Partial files: `--partial-dir=.hosting-migration-partial`, not --delay-updates. rsync always writes a file into
  a temporary name and renames it when complete; the partial dir keeps an interrupted file's data out of its final
  name *and* lets the next run resume it (a cut link during a multi-GB pre-copy does not restart that file).
  --delay-updates would also make the whole tree switch at once, but nothing serves the copy before the move's
  switch, and it needs room for a second copy of everything updated. The partial dir is a relative one, so rsync
  excludes that name (perishable) from the transfer and from deletion: an entry of that name in a source tree is
  neither copied nor compared.
- Output: `--out-format='%i %n'`, which is what --itemize-changes prints minus the link target (%L) whose
  " -> " could not be told apart from a name. rsync prints one line per item and escapes every control character
  (newline included) and non-printable byte as \\#ooo, and a literal backslash-hash-digits as \\#134, so lines are
  records and unescaping is exact (parse_change).
"""

from __future__ import annotations

import os
import re
import subprocess
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import IO, cast

from ansible_collections.hosting.migration.plugins.module_utils.account import is_subpath
from ansible_collections.hosting.migration.plugins.module_utils.ssh import SshTarget, die_with_parent

PARTIAL_DIR = ".hosting-migration-partial"
OUT_FORMAT = "%i %n"
# rsync exit codes: 24 = some source files vanished during the transfer, normal while the account is live.
RC_VANISHED = 24
# On SIGTERM rsync moves the file in flight to the partial dir and stops its other processes; SIGKILL would leave
# its forked receiver writing on.
STOP_GRACE_SECONDS = 30
_ITEM_RE = re.compile(rb"(\*deleting  |[<>ch.][fdLDS].{9}) (.*)", re.DOTALL)
_ESCAPE_RE = re.compile(rb"\\#([0-7]{3})")
_PROGRESS_RE = re.compile(rb"\s*(\d+)\s+\d+%")
# to-chk=R/T: R of T files left to check (ir-chk while incremental recursion still grows T).
_TO_CHECK_RE = re.compile(rb"(?:to|ir)-chk=(\d+)/(\d+)")
_STATS = {
    "number_of_files": "Number of files",
    "files_transferred": "Number of regular files transferred",
    "total_size": "Total file size",
    "bytes_transferred": "Total transferred file size",
    "bytes_received": "Total bytes received",
}
_STAT_RE = re.compile(rb"(" + b"|".join(re.escape(label.encode()) for label in _STATS.values()) + rb"): (\d+)")
# Positions 2..10 of an itemize string and what a letter there means.
_ATTRIBUTES = {2: "content", 3: "size", 4: "mtime", 5: "mode", 6: "owner", 7: "group", 9: "acl", 10: "xattr"}


class RsyncError(Exception):
    """rsync (or the Maildir listing) failed, or its output was not what this module understands."""


@dataclass(frozen=True)
class Change:
    """One itemized line: `flags` is rsync's 11-character itemize string (e.g. '>fc.t......', '*deleting  '),
    `path` the item relative to the tree's root ('.' for the root itself), exactly, odd characters included."""

    flags: str
    path: str

    @property
    def deleted(self) -> bool:
        return self.flags.startswith("*")

    def reasons(self) -> list[str]:
        """Why the item differs, in words: 'extra' (only in the copy), 'missing' (only in the source),
        'hard link' (should be a link to another file), or the attributes ('content', 'owner', 'acl', ...);
        'content' of a symlink means its target."""
        if self.deleted:
            return ["extra"]
        if set(self.flags[2:]) == {"+"}:
            return ["missing"]
        reasons = ["hard link"] if self.flags[0] == "h" else []
        return reasons + [word for pos, word in _ATTRIBUTES.items() if self.flags[pos] not in ". "]


@dataclass(frozen=True)
class Progress:
    """From --info=progress2: file data transferred so far in this run, and (once known) files checked of all."""

    bytes_done: int
    files_checked: int | None = None
    files_total: int | None = None


@dataclass(frozen=True)
class PullResult:
    rc: int  # 0, or RC_VANISHED (files vanished on the live source: the next pass picks up what changed)
    dry_run: bool
    changes: list[Change]
    number_of_files: int  # in the source tree (files, directories, links, ...)
    total_size: int  # bytes in the source tree: every hard link counted, a symlink as its target's length
    files_transferred: int  # regular files whose data was (or, in a dry run, would be) sent
    bytes_transferred: int  # size of those files: what a dry run predicts the real run copies
    bytes_received: int  # on the wire, compressed by the delta algorithm (small in a dry run)
    seconds: float
    stderr: str = field(repr=False)

    @property
    def changed(self) -> bool:
        return bool(self.changes)


def _remote_spec(target: SshTarget, path: str) -> str:
    """`host:path` as rsync wants it; an IPv6 address goes in brackets."""
    host = f"[{target.host}]" if ":" in target.host else target.host
    return f"{host}:{path}"


def pull_argv(
    target: SshTarget,
    source: str,
    dest: str,
    *,
    excludes: Sequence[str] = (),
    dry_run: bool = False,
    checksum: bool = False,
    io_timeout: int = 300,
    progress: bool = False,
) -> list[str]:
    """The rsync command line that makes local directory `dest` an exact copy of directory `source` on `target`."""
    if not is_subpath(source, "/") or re.search(r"[*?\[\]\\]", source):
        raise ValueError(
            f"source must be an absolute path without '..', wildcards (* ? [ ]) or backslashes, got {source!r}"
        )
    if not is_subpath(dest, "/"):
        raise ValueError(f"dest must be an absolute path without '..', got {dest!r}")
    if not (isinstance(io_timeout, int) and io_timeout > 0):
        raise ValueError(f"io_timeout must be a positive integer, got {io_timeout!r}")
    argv = [
        "rsync",
        "-aHAX",
        "--numeric-ids",
        "--delete",
        "--protect-args",
        f"--partial-dir={PARTIAL_DIR}",
        f"--out-format={OUT_FORMAT}",
        "--stats",
        "--no-human-readable",  # plain numbers in --stats and progress, whatever the locale
        f"--timeout={io_timeout}",
        "--rsh",
        target.rsh(),
    ]
    if dry_run:
        argv.append("--dry-run")
    if checksum:
        argv.append("--checksum")
    if progress:
        # The whole file list first, so that to-chk counts all files from the start.
        argv += ["--info=progress2", "--no-inc-recursive"]
    argv += [f"--exclude={pattern}" for pattern in excludes]
    # Trailing slashes: the contents of source become the contents of dest.
    argv += ["--", _remote_spec(target, source.rstrip("/") + "/"), dest.rstrip("/") + "/"]
    return argv


def pull(
    target: SshTarget,
    source: str,
    dest: str,
    *,
    excludes: Sequence[str] = (),
    dry_run: bool = False,
    io_timeout: int = 300,
    progress: Callable[[Progress], None] | None = None,
) -> PullResult:
    """Make local `dest` an exact copy of `source` on `target`: what is in `dest` but not in `source` is deleted,
    except entries matching `excludes` (rsync filter patterns, neither copied nor deleted). The parent of `dest`
    must exist.

    `dry_run=True` is the check mode: rsync's own --dry-run, the same itemized plan and the same statistics
    (bytes_transferred is what the real run would copy), nothing written. `progress` is called with a Progress
    while data flows (it adds --info=progress2 --no-inc-recursive). `io_timeout`: rsync gives up after that many
    seconds without data. Raises RsyncError unless rsync exits 0 or RC_VANISHED.
    """
    argv = pull_argv(
        target, source, dest, excludes=excludes, dry_run=dry_run, io_timeout=io_timeout, progress=progress is not None
    )
    return _run(argv, dry_run, progress, accepted=(0, RC_VANISHED))


def differences(target: SshTarget, source: str, dest: str, *, excludes: Sequence[str] = ()) -> list[Change]:
    """What differs between `source` on `target` and local `dest`; an empty list means identical.

    A dry run of the same pull with --checksum: every regular file's content is hashed on both sides (rsync's
    quick check by size and mtime would miss a changed byte), and mode, owner, group, mtime, ACLs, xattrs, hard
    links, symlink targets and entries present on one side only are compared. A broken hard link is reported on
    the members of the group that are no longer linked to its first name. Anything but exit code 0 (also a file
    vanishing from a source that should be frozen) raises RsyncError.
    """
    argv = pull_argv(target, source, dest, excludes=excludes, dry_run=True, checksum=True)
    return _run(argv, True, None, accepted=(0,)).changes


def unescape(raw: bytes) -> bytes:
    """Undo rsync's \\#ooo escapes of an output line."""
    return _ESCAPE_RE.sub(lambda match: bytes([int(match.group(1), 8)]), raw)


def parse_change(line: bytes) -> Change | None:
    """The Change an output line of OUT_FORMAT stands for, or None if it is no itemized line."""
    match = _ITEM_RE.fullmatch(line)
    if match is None:
        return None
    # %n marks directories with a trailing slash; the root itself is './', hence '.'.
    return Change(match.group(1).decode("ascii"), os.fsdecode(unescape(match.group(2))).rstrip("/"))


def parse_progress(segment: bytes) -> Progress | None:
    match = _PROGRESS_RE.match(segment)
    if match is None:
        return None
    files = _TO_CHECK_RE.search(segment)
    if files is None:
        return Progress(int(match.group(1)))
    remaining, total = int(files.group(1)), int(files.group(2))
    return Progress(int(match.group(1)), total - remaining, total)


def parse_stats(output: bytes) -> dict[str, int]:
    """The --stats figures PullResult reports, keyed by its field names."""
    found = {label.decode(): int(value) for label, value in _STAT_RE.findall(output)}
    missing = [label for label in _STATS.values() if label not in found]
    if missing:
        raise RsyncError(f"rsync --stats output lacks {', '.join(missing)}")
    return {name: found[label] for name, label in _STATS.items()}


def _run(
    argv: list[str],
    dry_run: bool,
    progress: Callable[[Progress], None] | None,
    accepted: tuple[int, ...],
) -> PullResult:
    started = time.monotonic()
    changes: list[Change] = []
    other: list[bytes] = []  # the lines that are neither items nor progress: the statistics

    def consume(segment: bytes) -> None:
        change = parse_change(segment)
        if change is not None:
            changes.append(change)
            return
        update = parse_progress(segment) if progress is not None else None
        if update is not None:
            progress(update)
        elif segment:
            other.append(segment)

    # stderr goes to a file, so neither pipe can fill up while the other is read.
    with tempfile.TemporaryFile() as errors:
        with subprocess.Popen(
            argv,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=errors,
            preexec_fn=die_with_parent(),
        ) as proc:
            stdout = cast(IO[bytes], proc.stdout)  # a pipe: stdout=PIPE
            pending = b""
            try:
                # Items end with \n; progress2 rewrites its line with \r. Names hold neither (rsync escapes them).
                for chunk in iter(lambda: stdout.read1(65536), b""):
                    *segments, pending = re.split(rb"[\r\n]", pending + chunk)
                    for segment in segments:
                        consume(segment)
            except BaseException:
                _stop(proc)  # e.g. the progress callback failed: no rsync keeps running unwatched
                raise
            consume(pending)
        errors.seek(0)
        stderr = errors.read().decode("utf-8", "surrogateescape")
    if proc.returncode not in accepted:
        raise RsyncError(f"rsync from {argv[-2]} to {argv[-1]} exited {proc.returncode}: {stderr.strip()[-2000:]}")
    return PullResult(
        rc=proc.returncode,
        dry_run=dry_run,
        changes=changes,
        seconds=round(time.monotonic() - started, 3),
        stderr=stderr,
        **parse_stats(b"\n".join(other)),
    )


def _stop(proc: subprocess.Popen) -> None:
    proc.terminate()
    try:
        proc.communicate(timeout=STOP_GRACE_SECONDS)  # drains stdout, so rsync cannot block writing to it
    except subprocess.TimeoutExpired:
        proc.kill()


def maildir_messages(root: str, target: SshTarget | None = None) -> dict[str, set[str]]:
    """Per mailbox under `root` (on `target` over SSH, or locally if None), the set of its messages' unique names.

    A mailbox is any directory with messages in cur/ or new/, named by its path relative to `root` ('.' for
    `root` itself). A message's unique name is its file name up to the ':' that starts its flags, so a message
    that was read (new/ -> cur/) or flagged is still the same message; tmp/ holds deliveries not finished yet.
    """
    if not is_subpath(root, "/"):
        raise ValueError(f"maildir root must be an absolute path without '..', got {root!r}")
    command = ["find", root, "-mindepth", "2", "-type", "f", "-printf", "%P\\0"]
    if target is None:
        proc = subprocess.run(command, capture_output=True, check=False)
        rc, listing, stderr = proc.returncode, os.fsdecode(proc.stdout), os.fsdecode(proc.stderr)
    else:
        result = target.run(command)
        rc, listing, stderr = result.rc, result.stdout, result.stderr
    if rc != 0:
        where = f"{target.host}:{root}" if target else root
        raise RsyncError(f"cannot list the Maildirs in {where}: {stderr.strip()}")
    mailboxes: dict[str, set[str]] = {}
    for relative in filter(None, listing.split("\0")):
        *mailbox, folder, name = relative.split("/")  # -mindepth 2: at least folder and name
        if folder in ("cur", "new"):
            mailboxes.setdefault("/".join(mailbox) or ".", set()).add(name.split(":", 1)[0])
    return mailboxes


def compare_maildirs(source: dict[str, set[str]], copy: dict[str, set[str]]) -> dict[str, dict[str, list[str]]]:
    """Per mailbox whose message sets differ: the unique names 'missing' from the copy and 'extra' in it."""
    differing = {}
    for mailbox in sorted(source.keys() | copy.keys()):
        missing = source.get(mailbox, set()) - copy.get(mailbox, set())
        extra = copy.get(mailbox, set()) - source.get(mailbox, set())
        if missing or extra:
            differing[mailbox] = {"missing": sorted(missing), "extra": sorted(extra)}
    return differing
