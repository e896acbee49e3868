# Copyright: hosting.migration contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""What an account is to the operating system, outside its home and mail trees: the Unix user (passwd and shadow
entries, supplementary groups) and its crontab. Read on one side of a move, applied on the other, compared.

Password hashes reach the destination on chpasswd's standard input, never on a command line, and never appear in
a result or a message (differences only say which field differs).
"""

from __future__ import annotations

import base64
import datetime
import hashlib
from dataclasses import dataclass, replace

from ansible_collections.hosting.migration.plugins.module_utils.hosts import Host, HostError, run_checked

# passwd: name:x:uid:gid:gecos:home:shell; shadow: name:hash:lastchg:min:max:warn:inactive:expire:reserved.
SHADOW_AGING = ("lastchg", "min", "max", "warn", "inactive", "expire")
# chage's option for each aging field (-1 empties a field, as an empty field in /etc/shadow means "not set").
_CHAGE_OPTIONS = ("-d", "-m", "-M", "-W", "-I", "-E")
# The day the login hold expires a user (freeze.hold_logins): a copy made during the freeze carries it.
HELD_EXPIRY = "1"
# Values of the shadow password field that are no hash (locked, no password, ...): newer chpasswd -e refuses them,
# and they are no secret, so they go through usermod -p.
_NOT_A_HASH = ("", "!", "!!", "*", "!*", "x")

_READ_IDENTITY = (
    'getent passwd "$1" || exit 3; getent shadow "$1" || exit 4; '
    'for gid in $(id -G "$1"); do getent group "$gid" || exit 5; done'
)
_READ_CRONTAB = 'test -e "$1" || exit 3; stat -c "%a %U %G" "$1" && base64 -w 0 "$1"'
_WRITE_CRONTAB = (
    'umask 077; mkdir -p -m 0700 "$(dirname "$1")" && base64 -d > "$1.hm-tmp" && chown "$2:$3" "$1.hm-tmp" '
    '&& chmod "$4" "$1.hm-tmp" && mv -f "$1.hm-tmp" "$1"'
)


@dataclass(frozen=True)
class Identity:
    uid: int
    gid: int
    group: str  # the primary group's name
    gecos: str
    home: str
    shell: str
    password_hash: str
    aging: tuple[str, ...]  # SHADOW_AGING's fields, as written in /etc/shadow ("" = not set)
    groups: tuple[tuple[str, int], ...]  # supplementary groups (name, gid), sorted

    def differences(self, other: Identity) -> list[str]:
        """What differs from `other`, naming fields only (no hash is ever shown)."""
        found = [
            f"{field} {mine!r} on the source, {theirs!r} here"
            for field, mine, theirs in (
                ("uid", self.uid, other.uid),
                ("gid", self.gid, other.gid),
                ("primary group", self.group, other.group),
                ("gecos", self.gecos, other.gecos),
                ("home", self.home, other.home),
                ("shell", self.shell, other.shell),
                ("supplementary groups", list(self.groups), list(other.groups)),
            )
            if mine != theirs
        ]
        if self.password_hash != other.password_hash:
            found.append("password hash differs")
        found += [
            f"shadow {field} {self.aging[i]!r} on the source, {other.aging[i]!r} here"
            for i, field in enumerate(SHADOW_AGING)
            if self.aging[i] != other.aging[i]
        ]
        return found

    def digest(self) -> str:
        """A fingerprint of the whole identity (hash included): what a rollback checks for changes."""
        fields = [str(self.uid), str(self.gid), self.group, self.gecos, self.home, self.shell, self.password_hash]
        text = "\0".join(fields)
        text += "\0" + ":".join(self.aging) + "\0" + ",".join(f"{name}={gid}" for name, gid in self.groups)
        return hashlib.sha256(text.encode()).hexdigest()


def parse_identity(account: str, text: str) -> Identity:
    """getent's passwd line, shadow line and the user's group lines (primary included) as _READ_IDENTITY prints."""
    lines = text.splitlines()
    if len(lines) < 2:
        raise ValueError(f"incomplete user entry of {account}")
    passwd, shadow = lines[0].split(":"), lines[1].split(":")
    if len(passwd) != 7 or passwd[0] != account or len(shadow) != 9 or shadow[0] != account:
        raise ValueError(f"unexpected passwd or shadow entry for {account}")
    gid = int(passwd[3])
    primary = ""
    groups = set()
    for line in lines[2:]:
        name, _x, number, _members = line.split(":", 3)
        if int(number) == gid:
            primary = name
        else:
            groups.add((name, int(number)))
    if not primary:
        raise ValueError(f"the primary group {gid} of {account} has no entry")
    return Identity(
        uid=int(passwd[2]),
        gid=gid,
        group=primary,
        gecos=passwd[4],
        home=passwd[5],
        shell=passwd[6],
        password_hash=shadow[1],
        aging=tuple(shadow[2:8]),
        groups=tuple(sorted(groups)),
    )


def read_identity(host: Host, account: str) -> Identity | None:
    """The account's user on `host`, or None if it has none."""
    rc, out, err = host.run(["sh", "-c", _READ_IDENTITY, "sh", account])
    if rc == 3:
        return None
    if rc != 0:
        raise HostError(f"cannot read the user entry of {account} on {host.name}: {err.strip() or f'exit {rc}'}")
    try:
        return parse_identity(account, out)
    except ValueError as error:
        raise HostError(f"{error} on {host.name}") from error


def _lookup(host: Host, database: str, key: str | int) -> list[str] | None:
    rc, out, _err = host.run(["getent", database, str(key)])
    return out.strip().split(":") if rc == 0 and out.strip() else None


def _ensure_group(host: Host, name: str, gid: int, account: str) -> bool:
    by_name, by_gid = _lookup(host, "group", name), _lookup(host, "group", gid)
    if by_name is not None:
        if int(by_name[2]) != gid:
            raise HostError(f"group {name} of {account} has gid {gid} on the source but {by_name[2]} on {host.name}")
        return False
    if by_gid is not None:
        raise HostError(f"group id {gid} ({name}) of {account} already belongs to {by_gid[0]!r} on {host.name}")
    run_checked(host, ["groupadd", "-g", str(gid), name])
    return True


def apply_identity(host: Host, account: str, identity: Identity, *, held: bool) -> bool:
    """Make the account's user on `host` equal `identity`; True if anything changed. With `held`, the copy's
    expiry is the login hold's (a copy must not take logins before its account is served here)."""
    wanted = identity if not held else _with_expiry(identity, HELD_EXPIRY)
    current = read_identity(host, account)
    if current == wanted:
        return False
    if current is not None and current.uid != identity.uid:
        raise HostError(f"user {account} has uid {current.uid} on {host.name} but {identity.uid} on the source")
    holder = _lookup(host, "passwd", identity.uid)
    if holder is not None and holder[0] != account:
        raise HostError(f"user id {identity.uid} of {account} already belongs to {holder[0]!r} on {host.name}")
    _ensure_group(host, identity.group, identity.gid, account)
    for name, gid in identity.groups:
        _ensure_group(host, name, gid, account)
    fields = ["-g", str(identity.gid), "-d", identity.home, "-s", identity.shell, "-c", identity.gecos]
    fields += ["-G", ",".join(name for name, _gid in identity.groups)]
    # The expiry first: a copy must never take a password login before its hold is in place.
    fields += ["-e", _expiry_date(wanted.aging[SHADOW_AGING.index("expire")])]
    if current is None:
        run_checked(host, ["useradd", "-u", str(identity.uid), "-M", *fields, account])
    else:
        run_checked(host, ["usermod", *fields, account])
    if wanted.password_hash in _NOT_A_HASH:
        run_checked(host, ["usermod", "-p", wanted.password_hash, account])
    else:
        run_checked(host, ["chpasswd", "-e"], input=f"{account}:{wanted.password_hash}\n")
    # chpasswd also sets the last-change day to today: chage runs after it and restores every aging field.
    # (indexed, not zip(strict=...): old client servers may run a Python before 3.10)
    chage = [arg for i, option in enumerate(_CHAGE_OPTIONS) for arg in (option, wanted.aging[i] or "-1")]
    run_checked(host, ["chage", *chage, account])
    return True


def _expiry_date(days: str) -> str:
    """useradd/usermod -e's form of a shadow expiry field (days since 1970-01-01; "" = never)."""
    if not days:
        return ""
    return (datetime.date(1970, 1, 1) + datetime.timedelta(days=int(days))).isoformat()


def _with_expiry(identity: Identity, expiry: str) -> Identity:
    aging = list(identity.aging)
    aging[SHADOW_AGING.index("expire")] = expiry
    return replace(identity, aging=tuple(aging))


@dataclass(frozen=True)
class Crontab:
    mode: str  # octal, as stat prints it
    owner: str
    group: str
    content: bytes

    def digest(self) -> str:
        text = f"{self.mode} {self.owner} {self.group} ".encode() + self.content
        return hashlib.sha256(text).hexdigest()


def read_crontab(host: Host, path: str) -> Crontab | None:
    rc, out, err = host.run(["sh", "-c", _READ_CRONTAB, "sh", path])
    if rc == 3:
        return None
    if rc != 0:
        raise HostError(f"cannot read the crontab {path} on {host.name}: {err.strip() or f'exit {rc}'}")
    header, _newline, encoded = out.partition("\n")
    mode, owner, group = header.split()
    return Crontab(mode=mode, owner=owner, group=group, content=base64.b64decode(encoded))


def install_crontab(host: Host, path: str, crontab: Crontab | None) -> bool:
    """`path` on `host` becomes `crontab` (content, mode, owner and group by name; written aside, then renamed),
    or is removed for None. True if anything changed."""
    if read_crontab(host, path) == crontab:
        return False
    if crontab is None:
        run_checked(host, ["rm", "-f", "--", path])
    else:
        argv = ["sh", "-c", _WRITE_CRONTAB, "sh", path, crontab.owner, crontab.group, crontab.mode]
        run_checked(host, argv, input=base64.b64encode(crontab.content).decode())
    return True
