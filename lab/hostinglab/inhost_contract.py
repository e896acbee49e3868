"""Runs *inside* a lab host (system Python with python3-yaml): installs the provider's runtime packages and, on
a server that has accounts, the server contract of DESIGN §1 — server profile, account registry, users, homes
with real files, Maildirs with real messages, installed language runtimes and the web front's maps — from the
JSON plan the controller passes on stdin."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import yaml

ODD_NAMES = [
    "name with spaces.txt",
    "new\nline.txt",
    "ünïcödé-名前.txt",
    "-leading-dash.txt",
    "quote'and\"double.txt",
    "back\\slash.txt",
    "*glob?[chars].txt",
]


def write(path: Path, data: bytes | str, uid: int, gid: int, mode: int = 0o644) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data.encode() if isinstance(data, str) else data)
    os.chown(path, uid, gid, follow_symlinks=False)
    os.chmod(path, mode)


def dump_yaml(data: dict) -> str:
    return yaml.safe_dump(data, sort_keys=False, allow_unicode=True, default_flow_style=False)


def install_runtime(root: Path, language: str, version: str) -> None:
    write(root / "bin" / language, f"#!/bin/sh\necho '{language} {version} (hosting lab runtime)'\n", 0, 0, 0o755)
    write(root / "lib" / "VERSION", f"{version}\n", 0, 0)


def create_groups(groups: dict[str, int]) -> None:
    for name, gid in groups.items():
        if subprocess.run(["getent", "group", name], capture_output=True, check=False).returncode != 0:
            subprocess.run(["groupadd", "-g", str(gid), name], check=True)


def create_user(account: dict) -> None:
    """The account's user as the provider's panel made it: shell, supplementary groups, password, aging."""
    name, uid = account["name"], account["uid"]
    unix = account.get("unix", {})
    subprocess.run(["groupadd", "-g", str(uid), name], check=True)
    argv = ["useradd", "-u", str(uid), "-g", str(uid), "-d", f"/home/{name}", "-m"]
    argv += ["-s", unix.get("shell", "/bin/bash"), "-G", ",".join(unix.get("groups", [])), name]
    subprocess.run(argv, check=True)
    if "password" in unix:
        subprocess.run(["chpasswd"], input=f"{name}:{unix['password']}\n", text=True, check=True)
    aging = [arg for key, option in (("max_days", "-M"), ("warn_days", "-W")) if key in unix
             for arg in (option, str(unix[key]))]  # fmt: skip
    if aging:
        subprocess.run(["chage", *aging, name], check=True)
    # nginx (www-data) traverses homes to reach document roots.
    os.chmod(f"/home/{name}", 0o711)


def install_crontab(account: dict) -> None:
    """As `crontab -u NAME` leaves it: the spool file owned by the user and the crontab group, 0600; and the
    (empty) file its minute tick appends to, so that the first tick changes no directory."""
    import grp

    uid = account["uid"]
    write(
        Path("/var/spool/cron/crontabs") / account["name"],
        account["crontab"],
        uid,
        grp.getgrnam("crontab").gr_gid,
        0o600,
    )
    logs = Path("/home") / account["name"] / "logs"
    write(logs / "cron-ticks.log", "", uid, uid)
    os.chown(logs, uid, uid)


def install_services(account: dict) -> None:
    """The account's pool or program definitions (root's, as the panel writes them), and where its PHP sessions live
    (in its home: they travel with it)."""
    for path, text in account.get("service_files", {}).items():
        write(Path(path), text, 0, 0, 0o644)
    sessions = Path("/home") / account["name"] / ".php" / "sessions"
    sessions.mkdir(parents=True, exist_ok=True)
    for directory in (sessions, sessions.parent):
        os.chown(directory, account["uid"], account["uid"])
        os.chmod(directory, 0o700)


def seed_files(account: dict) -> None:
    name, uid = account["name"], account["uid"]
    home = Path("/home") / name
    for site in account["sites"]:
        docroot = Path(site["document_root"])
        page = f"<!doctype html>\n<html><head><title>{site['title']}</title></head>\n<body><h1>{site['title']}</h1>"
        write(docroot / "index.html", page + f"<p>served for {site['domain']}</p></body></html>\n", uid, uid)
        os.chmod(docroot, 0o755)
        os.chmod(docroot.parent, 0o755)
    files = home / "files"
    for i in range(20):
        write(files / f"document-{i:02d}.txt", f"{name} document {i}\n" * (50 * (i + 1)), uid, uid)
    write(files / "private.key", os.urandom(64), uid, uid, 0o600)
    write(files / "run.sh", "#!/bin/sh\necho hello\n", uid, uid, 0o755)
    if account.get("odd_files"):
        odd = home / "odd"
        for i, odd_name in enumerate(ODD_NAMES):
            write(odd / odd_name, f"odd file {i}\n", uid, uid)
        write(odd / "data.bin", os.urandom(4096), uid, uid)
        os.link(odd / "data.bin", odd / "data-hardlink.bin")
        write(odd / "acl.txt", "readable by www-data through an ACL\n", uid, uid, 0o640)
        subprocess.run(["setfacl", "-m", "u:www-data:r", str(odd / "acl.txt")], check=True)
        write(odd / "xattr.txt", "carries a user xattr\n", uid, uid)
        os.setxattr(odd / "xattr.txt", "user.hosting.comment", b"kept by rsync -X")
        os.symlink("/etc/hostname", odd / "link-outside-home")
        os.lchown(odd / "link-outside-home", uid, uid)
        os.symlink("data.bin", odd / "link-inside")
        os.lchown(odd / "link-inside", uid, uid)
        (odd / "empty-dir").mkdir()
    # write() creates parent directories as root; the account owns its whole tree.
    for directory, _subdirs, _files in os.walk(home):
        os.chown(directory, uid, uid)


def seed_mail(account: dict, server: str) -> None:
    name, uid = account["name"], account["uid"]
    root = Path("/var/mail") / name
    domain = account["domains"][0]["name"]
    for mailbox, count in account["mailboxes"].items():
        box = root / mailbox
        for sub in ("cur", "new", "tmp"):
            (box / sub).mkdir(parents=True, exist_ok=True)
        for i in range(count):
            unique = f"{1700000000 + i}.M{i}P{uid}.{server}"
            message = (
                f"From: sender{i}@example.org\r\nTo: {mailbox}@{domain}\r\n"
                f"Subject: seeded message {i} for {mailbox}\r\n"
                f"Message-ID: <seed-{name}-{mailbox}-{i}@{server}>\r\n"
                f"Date: Mon, 02 Sep 2024 10:{i % 60:02d}:00 +0000\r\n\r\n"
                + f"Message body {i} of {mailbox}@{domain}.\r\n"
                * (5 + i)
            )
            # Read messages live in cur/ with flags, the newest stay unread in new/.
            target = box / "new" / unique if i >= count - 2 else box / "cur" / f"{unique}:2,S"
            write(target, message, uid, uid, 0o600)
        for path in [box, *(box / sub for sub in ("cur", "new", "tmp"))]:
            os.chown(path, uid, uid)
            os.chmod(path, 0o700)
    os.chown(root, uid, uid)
    os.chmod(root, 0o700)


def crypt_hash(password: str) -> str:
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # Debian 12's Python 3.11 still has crypt
        import crypt

    return crypt.crypt(password, crypt.METHOD_SHA512)


def registry_entry(account: dict) -> dict:
    return {
        "name": account["name"],
        "uid": account["uid"],
        "gid": account["uid"],
        "home": f"/home/{account['name']}",
        "domains": [{"name": d["name"], "provider_dns": d["provider_dns"]} for d in account["domains"]],
        "sites": [{k: s[k] for k in ("domain", "language", "version", "document_root")} for s in account["sites"]],
        "mailboxes": sorted(account["mailboxes"]),
        # As the panel keeps them: SHA-512 crypt hashes, which the server's Dovecot checks at an IMAP login.
        "mailbox_passwords": {box: crypt_hash(pw) for box, pw in sorted(account["mailbox_passwords"].items())},
        "databases": [{"engine": d["engine"], "name": d["name"]} for d in account["databases"]],
    }


def main() -> None:
    plan = json.load(sys.stdin)
    Path("/etc/hosting/mail-hold").mkdir(parents=True, exist_ok=True)
    # The provider's runtime packages of every architecture: what steps 3 and 6 install from, offline.
    for architecture, languages in plan["packages"].items():
        for language, versions in languages.items():
            for version in versions:
                install_runtime(Path("/opt/hosting/packages") / architecture / language / version, language, version)
    if "profile" not in plan:
        return
    for language, versions in plan["profile"]["languages"].items():
        for version in versions:
            install_runtime(Path("/opt/hosting/langs") / language / version, language, version)
    registry = Path("/etc/hosting/accounts")
    registry.mkdir(parents=True, exist_ok=True)
    Path("/etc/hosting/server.yml").write_text(dump_yaml(plan["profile"]), encoding="utf-8")
    Path("/var/lib/hosting-migration").mkdir(parents=True, exist_ok=True)
    docroots = []
    create_groups(plan.get("unix_groups", {}))
    for account in plan["accounts"]:
        create_user(account)
        install_crontab(account)
        install_services(account)
        seed_files(account)
        seed_mail(account, plan["profile"]["hostname"])
        (registry / f"{account['name']}.yml").write_text(dump_yaml(registry_entry(account)), encoding="utf-8")
        docroots += [f"{s['domain']} {s['document_root']};" for s in account["sites"]]
    Path("/etc/nginx/hosting/docroots.map").write_text("\n".join(docroots) + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
