"""rsync.py against the real rsync, with a fake ssh that runs the "remote" side on this machine (test_ssh.py):
hostile names, hard links, ACLs, xattrs, owners and symlinks in tmp_path, checked by this file's own snapshot."""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
from pathlib import Path

import pytest
from test_ssh import install_fake_ssh, logged_calls

from ansible_collections.hosting.migration.plugins.module_utils.rsync import (
    PARTIAL_DIR,
    Change,
    Progress,
    RsyncError,
    compare_maildirs,
    differences,
    maildir_messages,
    parse_change,
    parse_progress,
    parse_stats,
    pull,
    pull_argv,
    unescape,
)
from ansible_collections.hosting.migration.plugins.module_utils.ssh import SshTarget

TARGET = SshTarget("client", key_file="/srv/key", known_hosts_file="/srv/known_hosts")

# File names rsync has to escape in its output, or that look like its output, or that a shell would misread.
ODD_NAMES = [
    "name with spaces.txt",
    "new\nline.txt",
    "carriage\rreturn",
    "tab\there",
    "ünïcödé-名前.txt",
    "-leading-dash.txt",
    "--delete",
    "quote'and\"double.txt",
    "back\\slash.txt",
    "literal \\#134 escape",
    "*glob?[chars].txt",
    "arrow -> target",
    "hard => link",
    ">f+++++++++ looks like an item",
    "*deleting   looks like a deletion",
    "trailing space ",
    "$(touch pwned)",
    "%i %n",
]
BAD_UTF8 = b"latin1-\xe9t\xe9.txt"
MTIME_NS = 1_700_000_000_123_456_789


def build_tree(root: Path) -> None:
    """A home like the lab's alice: odd names, hard links, ACL, xattr, foreign owners, symlinks, a FIFO."""
    root.mkdir()
    for i, name in enumerate(ODD_NAMES):
        (root / name).write_text(f"odd file {i}\n")
    with open(os.path.join(os.fsencode(root), BAD_UTF8), "wb") as handle:
        handle.write(b"not utf-8 name\n")
    odd_dir = root / "dir with\nnewline"
    odd_dir.mkdir()
    (odd_dir / "inner.txt").write_text("inner\n")
    (root / "data.bin").write_bytes(os.urandom(4096))
    os.link(root / "data.bin", root / "data-hardlink.bin")
    os.link(root / "data.bin", odd_dir / "third link")
    (root / "acl.txt").write_text("readable by nobody through an ACL\n")
    subprocess.run(["setfacl", "-m", "u:nobody:r", str(root / "acl.txt")], check=True)
    (root / "xattr.txt").write_text("carries a user xattr\n")
    os.setxattr(root / "xattr.txt", "user.hosting.comment", b"kept by rsync -X")
    os.symlink("/etc/hostname", root / "link-outside-home")
    os.symlink("data.bin", root / "link-inside")
    os.symlink("does-not-exist", root / "dangling")
    os.mkfifo(root / "fifo")
    (root / "empty-dir").mkdir()
    (root / "private.key").write_bytes(os.urandom(64))
    (root / "private.key").chmod(0o600)
    (root / "run.sh").write_text("#!/bin/sh\necho hello\n")
    (root / "run.sh").chmod(0o755)
    # Owners by number: no such user on this machine, --numeric-ids keeps them anyway. Times in the past: rsync
    # leaves the mtime of a new symlink, FIFO or directory alone when it falls in the current second (it seems
    # equal to the "now" of the new entry).
    for path, _dirs, files in os.walk(root, topdown=False):
        for name in files:
            os.chown(os.path.join(path, name), 4321, 4321, follow_symlinks=False)
            os.utime(os.path.join(path, name), ns=(MTIME_NS, MTIME_NS), follow_symlinks=False)
        os.chown(path, 4321, 4321)
        os.utime(path, ns=(MTIME_NS, MTIME_NS))


def snapshot(root: Path) -> dict:
    """Everything the copy must keep, read with the standard library and this file's own hashing."""
    entries = {}
    inodes: dict[int, list[bytes]] = {}
    base = os.fsencode(root)
    for directory, dirs, files in os.walk(base):
        for name in [b"", *dirs, *files] if directory == base else [*dirs, *files]:
            path = os.path.join(directory, name) if name else directory
            relative = os.path.relpath(path, base)
            info = os.lstat(path)
            entry = {"mode": info.st_mode, "uid": info.st_uid, "gid": info.st_gid, "mtime": info.st_mtime_ns}
            if os.path.islink(path):
                entry["target"] = os.readlink(path)
            else:
                entry["xattrs"] = {key: os.getxattr(path, key) for key in sorted(os.listxattr(path))}
            if os.path.isfile(path) and not os.path.islink(path):
                entry["sha256"] = hashlib.sha256(Path(os.fsdecode(path)).read_bytes()).hexdigest()
                inodes.setdefault(info.st_ino, []).append(relative)
            entries[relative] = entry
    entries["hard link groups"] = sorted(sorted(group) for group in inodes.values() if len(group) > 1)
    return entries


def relative_paths(root: Path) -> set[str]:
    found = {"."}
    for directory, dirs, files in os.walk(root):
        found |= {os.path.relpath(os.path.join(directory, name), root) for name in dirs + files}
    return found


@pytest.fixture
def trees(tmp_path, monkeypatch):
    """(source, copy) with the odd tree in the source and nothing yet in the copy; the fake ssh installed."""
    install_fake_ssh(tmp_path, monkeypatch)
    source = tmp_path / "source"
    build_tree(source)
    return source, tmp_path / "copy"


@pytest.fixture
def copied(trees):
    source, copy = trees
    pull(TARGET, str(source), str(copy))
    return source, copy


def test_pull_copies_names_contents_owners_modes_links_acls_xattrs(trees):
    source, copy = trees
    result = pull(TARGET, str(source), str(copy))
    assert snapshot(copy) == snapshot(source)
    assert os.readlink(copy / "link-outside-home") == "/etc/hostname"
    assert os.path.islink(copy / "link-outside-home")
    acl = subprocess.run(["getfacl", "-p", str(copy / "acl.txt")], capture_output=True, text=True, check=True)
    assert "user:nobody:r--" in acl.stdout
    # Every entry was itemized, each name read back exactly from rsync's escaped output.
    assert {change.path for change in result.changes} == relative_paths(source)
    assert os.fsdecode(BAD_UTF8) in {change.path for change in result.changes}
    assert result.rc == 0 and result.changed and not result.dry_run
    regular = [p for p in relative_paths(source) if os.path.isfile(source / p) and not os.path.islink(source / p)]
    # Hard links are made, not sent: three names, one transfer.
    assert result.files_transferred == len(regular) - 2
    assert result.number_of_files == len(relative_paths(source))
    assert result.bytes_transferred == sum(os.path.getsize(source / p) for p in regular) - 2 * 4096
    assert result.total_size >= result.bytes_transferred
    assert result.seconds > 0


def test_second_pull_transfers_nothing(copied):
    source, copy = copied
    result = pull(TARGET, str(source), str(copy))
    assert result.changes == []
    assert not result.changed
    assert (result.files_transferred, result.bytes_transferred) == (0, 0)


def test_dry_run_is_the_plan_and_writes_nothing(copied):
    source, copy = copied
    (source / "new file.txt").write_text("new\n")
    (source / "run.sh").write_text("#!/bin/sh\necho changed and longer\n")
    (source / "private.key").unlink()
    os.utime(source, ns=(MTIME_NS, MTIME_NS))
    before = snapshot(copy)
    plan = pull(TARGET, str(source), str(copy), dry_run=True)
    assert snapshot(copy) == before
    assert plan.dry_run
    planned = {change.path: change for change in plan.changes}
    assert set(planned) == {"new file.txt", "run.sh", "private.key"}
    assert planned["new file.txt"].reasons() == ["missing"]
    assert planned["private.key"].deleted
    assert "content" not in planned["run.sh"].reasons() and "size" in planned["run.sh"].reasons()
    assert plan.bytes_transferred == os.path.getsize(source / "new file.txt") + os.path.getsize(source / "run.sh")
    done = pull(TARGET, str(source), str(copy))
    assert done.changes == plan.changes
    assert done.bytes_transferred == plan.bytes_transferred
    assert snapshot(copy) == snapshot(source)


def test_differences_of_identical_trees_is_empty(copied):
    assert differences(TARGET, *map(str, copied)) == []


def flip_first_byte_keeping_size_and_mtime(path: Path) -> None:
    info = os.stat(path)
    data = bytearray(path.read_bytes())
    data[0] ^= 0xFF
    path.write_bytes(bytes(data))
    os.utime(path, ns=(info.st_atime_ns, info.st_mtime_ns))


def test_differences_finds_a_flipped_byte_that_the_quick_check_misses(copied):
    source, copy = copied
    flip_first_byte_keeping_size_and_mtime(copy / "new\nline.txt")
    assert pull(TARGET, str(source), str(copy), dry_run=True).changes == []  # size and mtime alike: unseen
    (found,) = differences(TARGET, str(source), str(copy))
    assert found.path == "new\nline.txt"
    assert found.reasons() == ["content"]


def replace_keeping_metadata(path: Path, link_target: str | None = None) -> None:
    """Replace `path` by a symlink to `link_target`, or by a copy of itself (no longer a hard link), with the same
    owner, group and times, so that only the link differs."""
    info = os.lstat(path)
    if link_target is None:
        shutil.copy2(path, f"{path}.tmp")
    else:
        os.symlink(link_target, f"{path}.tmp")
    os.rename(f"{path}.tmp", path)
    os.chown(path, info.st_uid, info.st_gid, follow_symlinks=False)
    os.utime(path, ns=(info.st_atime_ns, info.st_mtime_ns), follow_symlinks=False)


@pytest.mark.parametrize(
    ("mutate", "expected"),
    [
        (lambda c: os.chown(c / "run.sh", 0, 4321), [("run.sh", ["owner"])]),
        (lambda c: os.chown(c / "run.sh", 4321, 0), [("run.sh", ["group"])]),
        (lambda c: (c / "private.key").chmod(0o644), [("private.key", ["mode"])]),
        (lambda c: os.removexattr(c / "xattr.txt", "user.hosting.comment"), [("xattr.txt", ["xattr"])]),
        (lambda c: subprocess.run(["setfacl", "-b", str(c / "acl.txt")], check=True), [("acl.txt", ["acl"])]),
        (lambda c: os.utime(c / "run.sh", (0, 0)), [("run.sh", ["mtime"])]),
        (lambda c: (c / "extra").write_text("only here"), [("extra", ["extra"])]),
        (lambda c: (c / "--delete").unlink(), [("--delete", ["missing"])]),
        (
            lambda c: replace_keeping_metadata(c / "link-outside-home", "/etc/passwd"),
            [("link-outside-home", ["content"])],
        ),
        # The copy of data-hardlink.bin (first of its group in rsync's order) is a file of its own: the other
        # members of the group are no longer links to it.
        (
            lambda c: replace_keeping_metadata(c / "data-hardlink.bin"),
            [("data.bin", ["hard link"]), ("dir with\nnewline/third link", ["hard link"])],
        ),
    ],
    ids=["owner", "group", "mode", "xattr", "acl", "mtime", "extra", "missing", "symlink", "hardlink"],
)
def test_differences_finds_each_kind_of_change(copied, mutate, expected):
    source, copy = copied
    mutate(copy)
    os.utime(copy, ns=(0, os.stat(source).st_mtime_ns))  # adding or removing an entry touched the root's mtime
    found = differences(TARGET, str(source), str(copy))
    assert [(change.path, change.reasons()) for change in found] == expected


def test_excluded_entries_are_neither_copied_nor_deleted(trees):
    source, copy = trees
    (source / "cache").mkdir()
    (source / "cache" / "big.tmp").write_text("skip me")
    copy.mkdir()
    (copy / "cache").mkdir()
    (copy / "cache" / "local").write_text("keep me")
    pull(TARGET, str(source), str(copy), excludes=["/cache/"])
    assert os.listdir(copy / "cache") == ["local"]
    assert differences(TARGET, str(source), str(copy), excludes=["/cache/"]) == []


@pytest.mark.parametrize(
    "source",
    [
        "relative/path",
        "/home/alice/../bob",
        "/home/*",
        "/home/al?ce",
        "/home/[a]lice",
        "/home/back\\slash",
        "/a\0b",
        "",
    ],
)
def test_hostile_source_paths_are_refused(source):
    with pytest.raises(ValueError, match="source must be an absolute path"):
        pull_argv(TARGET, source, "/srv/copy")


@pytest.mark.parametrize("dest", ["relative", "-rf", "/srv/../etc", "/a\0b"])
def test_hostile_dest_paths_are_refused(dest):
    with pytest.raises(ValueError, match="dest must be an absolute path"):
        pull_argv(TARGET, "/home/alice", dest)


def test_argv():
    argv = pull_argv(TARGET, "/home/alice", "/srv/copy/", excludes=["/.cache/"], io_timeout=60)
    assert argv[0] == "rsync"
    for option in ["-aHAX", "--numeric-ids", "--delete", "--protect-args", "--stats", "--timeout=60"]:
        assert option in argv
    assert f"--partial-dir={PARTIAL_DIR}" in argv
    assert argv[argv.index("--rsh") + 1] == TARGET.rsh()
    assert "--exclude=/.cache/" in argv
    assert "--dry-run" not in argv and "--checksum" not in argv and "--info=progress2" not in argv
    assert argv[-3:] == ["--", "client:/home/alice/", "/srv/copy/"]
    assert "--dry-run" in pull_argv(TARGET, "/home/alice", "/srv/copy", dry_run=True)
    assert "--info=progress2" in pull_argv(TARGET, "/home/alice", "/srv/copy", progress=True)
    assert pull_argv(SshTarget("fd77::10"), "/home/alice", "/srv/copy")[-2] == "[fd77::10]:/home/alice/"
    with pytest.raises(ValueError, match="io_timeout"):
        pull_argv(TARGET, "/home/alice", "/srv/copy", io_timeout=0)


def test_rsync_reaches_the_source_through_the_target_ssh_options(copied, tmp_path):
    calls = logged_calls(tmp_path / "fake-ssh.log")
    assert calls[0][: len(TARGET.options()) - 1] == TARGET.options()[1:]
    assert calls[0][len(TARGET.options()) - 1] == "client"
    # --protect-args: no file name on the remote command line.
    assert str(copied[0]) not in " ".join(calls[0])


def test_progress_reports_bytes_and_files(trees):
    source, copy = trees
    (source / "big.bin").write_bytes(os.urandom(8 << 20))
    os.utime(source, ns=(MTIME_NS, MTIME_NS))
    seen: list[Progress] = []
    result = pull(TARGET, str(source), str(copy), progress=seen.append)
    assert seen
    assert max(p.bytes_done for p in seen) == result.bytes_transferred
    with_files = [p for p in seen if p.files_total is not None]
    assert with_files[-1].files_total == result.number_of_files
    assert with_files[-1].files_checked == result.number_of_files
    assert snapshot(copy) == snapshot(source)


def test_an_interrupted_pull_leaves_no_partial_file_under_its_final_name_and_resumes(trees, monkeypatch):
    source, copy = trees
    size = 256 << 20
    (source / "big.bin").write_bytes(os.urandom(size))
    monkeypatch.setenv("FAKE_SSH_SLOW", "1")  # some 25 s for big.bin: the interruption comes well before its end

    def stop_mid_file(update: Progress) -> None:
        if update.bytes_done > 0 and update.files_total is None:  # an update from inside a file's transfer
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        pull(TARGET, str(source), str(copy), progress=stop_mid_file)
    assert not (copy / "big.bin").exists()
    assert 0 < os.path.getsize(copy / PARTIAL_DIR / "big.bin") < size
    assert not [pid for pid in os.listdir("/proc") if pid.isdigit() and str(copy).encode() in _cmdline(pid)], (
        "an rsync outlived the interrupted pull"
    )

    monkeypatch.delenv("FAKE_SSH_SLOW")
    result = pull(TARGET, str(source), str(copy))
    assert "big.bin" in {change.path for change in result.changes}
    assert result.bytes_received < size  # the partial file's data was reused
    assert not (copy / PARTIAL_DIR).exists()
    assert differences(TARGET, str(source), str(copy)) == []


def _cmdline(pid: str) -> bytes:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as handle:
            return handle.read()
    except OSError:
        return b""


def test_a_missing_source_raises_naming_it(trees, tmp_path):
    with pytest.raises(RsyncError, match=r"rsync from client:/nonexistent/ to .* exited 23: .*No such file"):
        pull(TARGET, "/nonexistent", str(tmp_path / "copy"))


def test_an_ssh_failure_raises_naming_the_host(trees, tmp_path):
    # rsync says 255 (ssh's code) or 12 (protocol stream ended), depending on which of its processes notices first.
    with pytest.raises(RsyncError, match=r"from unreachable\.invalid:/home/alice/ .* exited (255|12): ssh: .*resolve"):
        pull(SshTarget("unreachable.invalid"), "/home/alice", str(tmp_path / "copy"))


@pytest.mark.parametrize(
    ("line", "expected"),
    [
        (b">f+++++++++ plain.txt", Change(">f+++++++++", "plain.txt")),
        (b"cd+++++++++ ./", Change("cd+++++++++", ".")),
        (b".d..t...... some dir/", Change(".d..t......", "some dir")),
        (b"*deleting   gone", Change("*deleting  ", "gone")),
        (b"*deleting   old dir/", Change("*deleting  ", "old dir")),
        (b"hf          third link", Change("hf         ", "third link")),
        (b"cL+++++++++ arrow -> target", Change("cL+++++++++", "arrow -> target")),
        (b">f+++++++++ new\\#012line", Change(">f+++++++++", "new\nline")),
        (b">f+++++++++ lit\\#134#134x", Change(">f+++++++++", "lit\\#134x")),
        (b">f+++++++++ back\\slash", Change(">f+++++++++", "back\\slash")),
        (b">f+++++++++ \\#303\\#274", Change(">f+++++++++", "ü")),
        (b">f+++++++++ bad\\#377", Change(">f+++++++++", os.fsdecode(b"bad\xff"))),
        (b">f+++++++++  leading space", Change(">f+++++++++", " leading space")),
    ],
)
def test_parse_change(line, expected):
    assert parse_change(line) == expected


@pytest.mark.parametrize(
    "line",
    [
        b"",
        b"created directory /srv/copy",
        b"cannot delete non-empty directory: x",
        b"Number of files: 12 (reg: 9, dir: 2, link: 1)",
        b"Total file size: 213 bytes",
        b"sent 668 bytes  received 204 bytes  1744.00 bytes/sec",
        b"         5000000  35%  676.73MB/s    0:00:00 (xfr#1, to-chk=1/5)",
        b">f+++++++++",
    ],
)
def test_parse_change_ignores_other_lines(line):
    assert parse_change(line) is None


def test_unescape():
    assert unescape(b"a\\#012b\\#134#134c\\#12 \\#999") == b"a\nb\\#134c\\#12 \\#999"


def test_parse_progress():
    assert parse_progress(b"        5000000  35%  676.73MB/s    0:00:00 (xfr#1, to-chk=1/5)") == Progress(5000000, 4, 5)
    assert parse_progress(b"          32768   0%    0.00kB/s    0:00:00  ") == Progress(32768)
    assert parse_progress(b"   496   0%   0.00kB/s  0:00:00 (xfr#1, ir-chk=2164/2166)") == Progress(496, 2, 2166)
    assert parse_progress(b"Number of files: 5") is None


def test_parse_stats_insists_on_every_figure():
    with pytest.raises(RsyncError, match="lacks Total transferred file size"):
        parse_stats(
            b"Number of files: 5 (reg: 4)\nNumber of regular files transferred: 1\nTotal file size: 9 bytes\n"
            b"Total bytes received: 12\n"
        )


def make_maildir(root: Path, mailboxes: dict[str, list[str]]) -> None:
    for mailbox, names in mailboxes.items():
        for sub in ("cur", "new", "tmp"):
            (root / mailbox / sub).mkdir(parents=True, exist_ok=True)
        for name in names:
            (root / mailbox / name).write_text(f"Message-ID: <{name}>\r\n\r\nbody\r\n")


def test_maildir_messages_by_unique_name_locally_and_over_ssh(tmp_path, monkeypatch):
    install_fake_ssh(tmp_path, monkeypatch)
    root = tmp_path / "mail"
    make_maildir(
        root,
        {
            "info": ["cur/1700000000.M1P1.client:2,S", "cur/1700000001.M2P1.client:2,RS", "new/1700000002.M3P1.client"],
            "sales": ["new/1700000003.M4P1.client"],
            "info/.Sent": ["cur/1700000004.M5P1.client:2,S"],
            "empty": [],
        },
    )
    (root / "info" / "tmp" / "1700000009.M9P1.client").write_text("delivery in progress")
    expected = {
        "info": {"1700000000.M1P1.client", "1700000001.M2P1.client", "1700000002.M3P1.client"},
        "sales": {"1700000003.M4P1.client"},
        "info/.Sent": {"1700000004.M5P1.client"},
    }
    assert maildir_messages(str(root)) == expected
    assert maildir_messages(str(root), SshTarget("client")) == expected


def test_maildir_messages_of_a_missing_root_raises(tmp_path, monkeypatch):
    install_fake_ssh(tmp_path, monkeypatch)
    with pytest.raises(RsyncError, match=r"cannot list the Maildirs in client:/nonexistent"):
        maildir_messages("/nonexistent", SshTarget("client"))
    with pytest.raises(ValueError, match="maildir root"):
        maildir_messages("var/mail")


def test_compare_maildirs_ignores_flags_and_reports_per_mailbox(tmp_path):
    source, copy = tmp_path / "source", tmp_path / "copy"
    make_maildir(source, {"info": ["new/1.M1.a", "cur/2.M2.a:2,S"], "sales": ["cur/3.M3.a:2,"]})
    # In the copy message 1 was read (new -> cur, flag S), message 2 lost, a new one arrived in sales.
    make_maildir(copy, {"info": ["cur/1.M1.a:2,S"], "sales": ["cur/3.M3.a:2,RS", "new/4.M4.a"]})
    assert compare_maildirs(maildir_messages(str(source)), maildir_messages(str(copy))) == {
        "info": {"missing": ["2.M2.a"], "extra": []},
        "sales": {"missing": [], "extra": ["4.M4.a"]},
    }
    assert compare_maildirs(maildir_messages(str(source)), maildir_messages(str(source))) == {}
    assert compare_maildirs({"gone": {"x"}}, {}) == {"gone": {"missing": ["x"], "extra": []}}
