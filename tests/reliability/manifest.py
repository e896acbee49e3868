"""The evidence of the "nothing lost" rule: an account's manifest on one server, computed by the tests themselves.

Objects, each with a key and a value that changes with its content:
  file:<path>          type, mode, owner, group and sha256 (or a link's target) of everything under /home/<a>
                       and /var/mail/<a> except Maildir messages (and no sha256 of ~/logs/cron-ticks.log, which
                       the account's cron appends to every minute, or of Dovecot's index files, which IMAP and
                       delivery rewrite)
  mail:<box>/<id>      a Maildir message by its unique id (flags aside), with its sha256
  table:<db>.<table>   row count and an order-independent hash of the rows
  rrset:<name> <type>  a DNS record set of the account's zones by AXFR (SOA aside: moves never touch DNS)
  unix:<account>       the account's Unix user: passwd and shadow entries (hash and aging) and its groups
  crontab:<account>    its installed crontab: mode, owner and sha256 (none: no object)

compare() counts the objects of the expected manifest and those lost (missing or different on the serving side),
and lists the unexpected ones (a duplicated message, a stray row): each of those is a finding too.
"""

from __future__ import annotations

import json

from conftest import run
from lab_state import in_host, mariadb_rows, postgresql_rows

WALK = r"""
import hashlib, json, os, stat, subprocess, sys
account = sys.argv[1]
out = {}
user = subprocess.run(["sh", "-c", 'getent passwd "$1"; getent shadow "$1"; id -Gn "$1" | tr " " "\\n" | sort',
                       "sh", account], capture_output=True, text=True, check=True).stdout
out[f"unix:{account}"] = hashlib.sha256(user.encode()).hexdigest()
crontab = f"/var/spool/cron/crontabs/{account}"
if os.path.exists(crontab):
    st = os.stat(crontab)
    with open(crontab, "rb") as handle:
        digest = hashlib.sha256(handle.read()).hexdigest()
    out[f"crontab:{account}"] = f"{stat.filemode(st.st_mode)} {st.st_uid}:{st.st_gid} {digest}"
for root in (f"/home/{account}", f"/var/mail/{account}"):
    if not os.path.isdir(root):
        continue
    for directory, dirs, files in os.walk(root):
        for name in dirs + files:
            path = os.path.join(directory, name)
            st = os.lstat(path)
            parts = os.path.relpath(path, root).split("/")
            owner = f"{stat.filemode(st.st_mode)} {st.st_uid}:{st.st_gid}"
            if stat.S_ISLNK(st.st_mode):
                out[f"file:{path}"] = f"{owner} -> {os.readlink(path)}"
            elif stat.S_ISREG(st.st_mode):
                with open(path, "rb") as handle:
                    digest = hashlib.sha256(handle.read()).hexdigest()
                if root.startswith("/var/mail") and len(parts) == 3 and parts[1] in ("cur", "new"):
                    out[f"mail:{parts[0]}/{parts[2].split(':2,')[0]}"] = digest
                elif root.startswith("/var/mail") and name.startswith("dovecot"):
                    out[f"file:{path}"] = f"{owner} (Dovecot's index of the mailbox, rewritten as mail is read)"
                elif path == f"{root}/logs/cron-ticks.log":
                    out[f"file:{path}"] = f"{owner} {st.st_nlink} (appended to by cron every minute)"
                else:
                    out[f"file:{path}"] = f"{owner} {st.st_nlink} {digest}"
            else:
                out[f"file:{path}"] = owner
print(json.dumps(out))
"""


def files_and_mail(host: str, account: str) -> dict[str, str]:
    script = f"python3 - {account} <<'EOF'\n{WALK}\nEOF"
    return json.loads(in_host(host, script).stdout)


def tables(host: str, account: str, seed: dict, mariadb, postgresql) -> dict[str, str]:
    out = {}
    for database in seed["accounts"][account]["databases"]:
        if database["engine"] == "mariadb":
            digest = mariadb_rows(mariadb, host, database["name"])
        else:
            digest = postgresql_rows(postgresql, host, database["name"])
        out.update({f"table:{database['name']}.{table}": f"{count} {sha}" for table, (count, sha) in digest.items()})
    return out


def dns(lab, account: str) -> dict[str, str]:
    out = {}
    for domain in lab.seed["accounts"][account]["domains"]:
        server = lab.hosts["dns" if domain["provider_dns"] else "thirdparty-dns"].ipv4
        lines = run(["dig", "+noall", "+answer", f"@{server}", domain["name"], "AXFR"]).stdout.splitlines()
        for line in lines:
            name, _ttl, _class, kind, data = line.split(None, 4)
            if kind != "SOA":
                key = f"rrset:{name} {kind}"
                out[key] = "\n".join(sorted([*out.get(key, "").splitlines(), data]))
    return out


def manifest(lab, host: str, account: str, mariadb, postgresql) -> dict[str, str]:
    return {
        **files_and_mail(host, account),
        **tables(host, account, lab.seed, mariadb, postgresql),
        **dns(lab, account),
    }


def compare(expected: dict[str, str], actual: dict[str, str]) -> tuple[int, list[str], list[str]]:
    """(objects compared, lost or changed keys, unexpected keys)."""
    lost = sorted(key for key, value in expected.items() if actual.get(key) != value)
    unexpected = sorted(set(actual) - set(expected))
    return len(expected), lost, unexpected
