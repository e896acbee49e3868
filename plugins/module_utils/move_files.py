# Copyright: hosting.migration contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The files half of an account move: the account's home and its Maildirs, pulled from the
source with rsync over SSH, verified by content hash and metadata, and their state recorded for a rollback."""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Callable

from ansible_collections.hosting.migration.plugins.module_utils import rsync
from ansible_collections.hosting.migration.plugins.module_utils.ssh import SshTarget

# size, mtime, mode, owner, group and type of every entry: what a change since the switch would alter.
_MANIFEST_FORMAT = "%P\\0%s:%T@:%m:%U:%G:%y\\0"


class FileSide:
    def __init__(self, target: SshTarget, paths: dict, account: str) -> None:
        self.target = target
        self.account = account
        self.trees = [f"{paths['home_root']}/{account}", f"{paths['mail_root']}/{account}"]
        self.mail = self.trees[1]
        self.home_root = paths["home_root"]
        # Entries rsync created or updated so far (a pre-copy that found nothing to do reports no change).
        self.items_changed = 0

    def _source_trees(self) -> list[str]:
        """The account's trees that exist on the source (an account may have no mail)."""
        found = []
        for tree in self.trees:
            result = self.target.run(["test", "-d", tree])
            if result.rc == 0:
                found.append(tree)
        return found

    def plan(self) -> dict:
        """rsync's own dry run: what a pull would copy now, nothing written."""
        plan = {"files_to_copy": 0, "bytes_to_copy": 0, "total_bytes": 0}
        for tree in self._source_trees():
            result = rsync.pull(self.target, tree, tree, dry_run=True)
            plan["files_to_copy"] += result.files_transferred
            plan["bytes_to_copy"] += result.bytes_transferred
            plan["total_bytes"] += result.total_size
        return plan

    def source_size(self) -> int:
        trees = self._source_trees()
        if not trees:
            return 0
        result = self.target.run(["du", "-s", "-b", "--", *trees])
        return sum(int(line.split("\t", 1)[0]) for line in result.stdout.splitlines() if line)

    def check_space(self, database_bytes: int) -> None:
        needed = int((self.source_size() + database_bytes) * 1.1)
        free = shutil.disk_usage(self.home_root).free
        if needed > free:
            raise RuntimeError(
                f"not enough disk space for {self.account}: {needed // 1048576} MB needed (files, mail, databases "
                f"+10 %), {free // 1048576} MB free under {self.home_root}"
            )

    def pull(self, progress: Callable[..., None]) -> int:
        """Bring every tree up to date with the source; bytes of file data sent."""
        sent = 0
        for tree in self._source_trees():
            os.makedirs(os.path.dirname(tree), exist_ok=True)

            def report(step: rsync.Progress, done_before: int = sent) -> None:
                progress("files", bytes_done=done_before + step.bytes_done)

            pulled = rsync.pull(self.target, tree, tree, progress=report)
            sent += pulled.bytes_transferred
            self.items_changed += len(pulled.changes)
        return sent

    def differences(self) -> list[str]:
        found = []
        trees = self._source_trees()  # one look at the source: this runs inside the freeze window
        for tree in trees:
            found += [f"{tree}/{c.path}: {', '.join(c.reasons())}" for c in rsync.differences(self.target, tree, tree)]
        if self.mail in trees:
            mailboxes = rsync.compare_maildirs(
                rsync.maildir_messages(self.mail, self.target), rsync.maildir_messages(self.mail)
            )
            found += [f"mailbox {self.mail}/{box}: {diff}" for box, diff in mailboxes.items()]
        return found

    def _manifest(self, target: SshTarget | None) -> dict[str, str]:
        entries: dict[str, str] = {}
        for tree in self.trees:
            argv = ["find", tree, "-printf", _MANIFEST_FORMAT]
            if target is None:
                proc = subprocess.run(argv, capture_output=True, check=False)
                rc, out = proc.returncode, os.fsdecode(proc.stdout)
            else:
                result = target.run(argv)
                rc, out = result.rc, result.stdout
            if rc != 0:
                continue  # a tree that does not exist has no entries
            fields = out.split("\0")
            for path, stat in zip(fields[0::2], fields[1::2], strict=False):
                entries[f"{tree}/{path}"] = stat
        return entries

    def source_manifest(self) -> dict[str, str]:
        """The source's trees as the account leaves them: the reference a rollback checks for changes."""
        return self._manifest(self.target)

    def changed_since(self, manifest: dict[str, str]) -> list[str]:
        """Entries of this server's trees that differ from `manifest` (taken when the account left)."""
        current = self._manifest(None)
        changed = [
            f"file {path} changed since the switch" for path in sorted(current) if manifest.get(path) != current[path]
        ]
        changed += [f"file {path} removed since the switch" for path in sorted(manifest.keys() - current.keys())]
        return changed
