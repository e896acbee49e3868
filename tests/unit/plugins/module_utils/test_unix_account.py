"""The account's Unix user and crontab: parsed exactly, applied without a hash on any command line, compared
without showing a hash, and left alone when already equal."""

from __future__ import annotations

import base64

import pytest

from ansible_collections.hosting.migration.plugins.module_utils import unix_account
from ansible_collections.hosting.migration.plugins.module_utils.hosts import HostError

HASH = "$6$salt$Q8rOlN0tAhash"
GETENT = (
    "alice:x:2001:2001:Alice Shop:/home/alice:/bin/sh\n"
    f"alice:{HASH}:19800:0:365:10:::\n"
    "alice:x:2001:\n"
    "sftpusers:x:2500:alice,bob\n"
    "webdev:x:2501:alice\n"
)


class FakeHost:
    """A host whose user database is a few dicts; records every command and its standard input."""

    name = "fake"

    def __init__(self, identity_text: str | None = None, groups: dict | None = None, passwd: dict | None = None):
        self.identity_text = identity_text
        self.groups = groups or {}
        self.passwd = passwd or {}
        self.calls: list[tuple[list[str], str | None]] = []
        self.files: dict[str, str] = {}

    def run(self, argv, input=None, timeout=None):
        self.calls.append((argv, input))
        if argv[:2] == ["sh", "-c"] and argv[2] == unix_account._READ_IDENTITY:
            return (0, self.identity_text, "") if self.identity_text else (3, "", "")
        if argv[0] == "getent":
            table = self.groups if argv[1] == "group" else self.passwd
            for name, number in table.items():
                if argv[2] in (name, str(number)):
                    return 0, f"{name}:x:{number}:\n", ""
            return 2, "", ""
        if argv[:2] == ["sh", "-c"] and argv[2] == unix_account._READ_CRONTAB:
            text = self.files.get(argv[4])
            return (0, text, "") if text else (3, "", "")
        return 0, "", ""

    def commands(self):
        return [argv for argv, _input in self.calls if argv[0] not in ("sh", "getent")]


def test_parse_identity_keeps_every_field_and_only_supplementary_groups():
    identity = unix_account.parse_identity("alice", GETENT)
    assert (identity.uid, identity.gid, identity.gecos, identity.home, identity.shell) == (
        2001, 2001, "Alice Shop", "/home/alice", "/bin/sh"
    )  # fmt: skip
    assert identity.password_hash == HASH
    assert identity.aging == ("19800", "0", "365", "10", "", "")
    assert identity.groups == (("sftpusers", 2500), ("webdev", 2501))


def test_parse_identity_refuses_another_users_entry():
    with pytest.raises(ValueError):
        unix_account.parse_identity("bob", GETENT)


def test_differences_name_the_field_never_the_hash():
    source = unix_account.parse_identity("alice", GETENT)
    other = unix_account.parse_identity(
        "alice", GETENT.replace("/bin/sh", "/bin/bash").replace(HASH, "!").replace("webdev:x:2501:alice\n", "")
    )
    found = source.differences(other)
    assert "password hash differs" in found
    assert any(d.startswith("shell '/bin/sh' on the source") for d in found)
    assert any(d.startswith("supplementary groups") for d in found)
    assert not any(HASH in d or "salt" in d for d in found)
    assert source.differences(source) == []
    assert source.digest() != other.digest()


def test_apply_creates_the_user_with_groups_shell_and_hash_on_stdin_only():
    host = FakeHost(identity_text=None, groups={}, passwd={})
    identity = unix_account.parse_identity("alice", GETENT)
    assert unix_account.apply_identity(host, "alice", identity, held=True) is True
    commands = host.commands()
    assert ["groupadd", "-g", "2001", "alice"] in commands
    assert ["groupadd", "-g", "2500", "sftpusers"] in commands
    useradd = next(c for c in commands if c[0] == "useradd")
    assert useradd[useradd.index("-s") + 1] == "/bin/sh"
    assert useradd[useradd.index("-G") + 1] == "sftpusers,webdev"
    assert [(argv, data) for argv, data in host.calls if argv[0] == "chpasswd"] == [
        (["chpasswd", "-e"], f"alice:{HASH}\n")
    ]
    # Every aging field restored after chpasswd (which sets the last change to today); the copy is held.
    chage = next(c for c in commands if c[0] == "chage")
    assert chage == ["chage", "-d", "19800", "-m", "0", "-M", "365", "-W", "10", "-I", "-1", "-E", "1", "alice"]
    assert not any(HASH in " ".join(argv) for argv, _input in host.calls), "a hash on a command line"


def test_apply_changes_nothing_when_the_user_is_already_equal():
    host = FakeHost(identity_text=GETENT)
    identity = unix_account.parse_identity("alice", GETENT)
    assert unix_account.apply_identity(host, "alice", identity, held=False) is False
    assert host.commands() == []


def test_apply_refuses_a_uid_or_gid_taken_by_someone_else():
    identity = unix_account.parse_identity("alice", GETENT)
    with pytest.raises(HostError, match="2001 of alice already belongs to 'mallory'"):
        unix_account.apply_identity(FakeHost(passwd={"mallory": 2001}), "alice", identity, held=True)
    with pytest.raises(HostError, match="sftpusers of alice has gid 2500 on the source but 3000"):
        unix_account.apply_identity(FakeHost(groups={"sftpusers": 3000}), "alice", identity, held=True)


def test_crontab_read_and_installed_with_its_mode_and_owner():
    content = b'MAILTO=""\n*/5 * * * * date +\\%s\n'
    source = FakeHost()
    source.files["/held/alice"] = "600 alice crontab\n" + base64.b64encode(content).decode()
    crontab = unix_account.read_crontab(source, "/held/alice")
    assert crontab == unix_account.Crontab(mode="600", owner="alice", group="crontab", content=content)
    here = FakeHost()
    assert unix_account.install_crontab(here, "/held/alice", crontab) is True
    ((argv, data),) = [(a, d) for a, d in here.calls if a[:2] == ["sh", "-c"] and a[2] == unix_account._WRITE_CRONTAB]
    assert argv[4:] == ["/held/alice", "alice", "crontab", "600"]
    assert base64.b64decode(data) == content
    here.files["/held/alice"] = source.files["/held/alice"]
    assert unix_account.install_crontab(here, "/held/alice", crontab) is False
    assert unix_account.install_crontab(here, "/held/alice", None) is True
    assert here.calls[-1][0] == ["rm", "-f", "--", "/held/alice"]


def test_the_hold_is_set_with_the_user_before_any_password_reaches_it():
    host = FakeHost()
    unix_account.apply_identity(host, "alice", unix_account.parse_identity("alice", GETENT), held=True)
    names = [argv[0] for argv in host.commands()]
    useradd = next(c for c in host.commands() if c[0] == "useradd")
    assert useradd[useradd.index("-e") + 1] == "1970-01-02"  # day 1: the login hold's expiry
    assert names.index("useradd") < names.index("chpasswd") < names.index("chage")


@pytest.mark.parametrize("marker", ["!", "", "*", "!!"])
def test_a_locked_or_empty_password_field_is_set_by_usermod_not_chpasswd(marker):
    """No hash to hide, and chpasswd -e of newer shadow releases refuses these values."""
    host = FakeHost()
    identity = unix_account.parse_identity("alice", GETENT.replace(HASH, marker))
    unix_account.apply_identity(host, "alice", identity, held=True)
    assert ["usermod", "-p", marker, "alice"] in host.commands()
    assert not any(argv[0] == "chpasswd" for argv, _input in host.calls)


def test_the_primary_group_keeps_its_own_name():
    text = GETENT.replace("alice:x:2001:\n", "customers:x:2001:\n")
    identity = unix_account.parse_identity("alice", text)
    assert identity.group == "customers"
    host = FakeHost()
    unix_account.apply_identity(host, "alice", identity, held=True)
    assert ["groupadd", "-g", "2001", "customers"] in host.commands()
    other = unix_account.parse_identity("alice", GETENT)
    assert "primary group 'customers' on the source, 'alice' here" in identity.differences(other)
