"""The two small programs a lab hosting server's mail needs beyond Postfix and Dovecot, installed into each host as
text. Both read the server contract live (registry, mail holds), so a move changes what they
answer the moment the collection changes those files: no postmap, no reload, no cache.

- MAILMAP: Postfix's lookup tables (socketmap protocol, netstrings) — which domains and mailboxes this server
  holds, and which recipients are held by a freeze (450: the sender or relay retries).
- MAIL_AUTH: Dovecot's passdb and userdb (checkpassword protocol) — a mailbox logs in with its password from the
  registry (`mailbox_passwords`, SHA-512 crypt hashes), is delivered into /var/mail/<account>/<mailbox> as the
  account's user, and neither logs in nor is delivered to (temporary failure) while its account is held; once the
  hold names the server that holds the account now (`relay <address>`, after the switch), Dovecot's LMTP proxies
  each delivery there. The decision is made per message at delivery time: Postfix's own routing would be cached
  for up to 30 s (its queue manager's resolve cache) and could send a message back and forth after a rollback.
"""

# Both programs read a hold file alike.
HOLD = '''def hold(account):
    """None (not held), "" (held) or the address the account's mail goes to now (`relay <address>`)."""
    try:
        with open(f"{HOLDS}/{account}", encoding="utf-8") as handle:
            words = handle.read().split()
    except FileNotFoundError:
        return None
    if len(words) == 2 and words[0] == "relay":
        try:
            return str(ipaddress.ip_address(words[1]))
        except ValueError:
            pass
    return ""
'''

MAILMAP = r'''
import glob
import ipaddress
import os
import socketserver
import sys

import yaml

REGISTRY = "/etc/hosting/accounts"
HOLDS = "/etc/hosting/mail-hold"
HELD = "450 4.2.0 this mailbox is being moved to another server; try again in a minute"
_cache = {}


def registry():
    """domain -> (account, mailboxes), re-read whenever a registry file changes."""
    files = sorted(glob.glob(f"{REGISTRY}/*.yml"))
    key = tuple((f, os.stat(f).st_mtime_ns) for f in files)
    if _cache.get("key") != key:
        domains = {}
        for path in files:
            with open(path, encoding="utf-8") as handle:
                entry = yaml.safe_load(handle) or {}
            for domain in entry.get("domains", []):
                domains[domain["name"].lower()] = (entry["name"], set(entry.get("mailboxes", [])))
        _cache.update(key=key, domains=domains)
    return _cache["domains"]


{HOLD}

def lookup(table, key):
    key = key.lower()
    domain = key.rsplit("@", 1)[-1]
    found = registry().get(domain)
    if table == "domain":
        return "OK hosted" if found and "@" not in key else "NOTFOUND "
    if table == "mailbox":
        if found and "@" in key and key.split("@", 1)[0] in found[1]:
            return f"OK {found[0]}/{key.split('@', 1)[0]}/"
        return "NOTFOUND "
    if table == "hold":
        if found and "@" in key and hold(found[0]) == "":
            return f"OK {HELD}"
        return "NOTFOUND "  # not held, or forwarded to the server that holds the account now (Dovecot's LMTP proxy)
    return "PERM unknown table"


def read_netstring(stream):
    length = b""
    while True:
        char = stream.read(1)
        if not char:
            return None
        if char == b":":
            break
        length += char
    data = stream.read(int(length))
    stream.read(1)
    return data.decode("utf-8", "replace")


class Handler(socketserver.StreamRequestHandler):
    def handle(self):
        while True:
            request = read_netstring(self.rfile)
            if request is None:
                return
            table, _, key = request.partition(" ")
            try:
                reply = lookup(table, key)
            except Exception as error:  # a broken registry file: defer, never bounce
                reply = f"TEMP {type(error).__name__}"
            data = reply.encode()
            self.wfile.write(b"%d:%s," % (len(data), data))
            self.wfile.flush()


class Server(socketserver.ThreadingMixIn, socketserver.UnixStreamServer):
    daemon_threads = True


if __name__ == "__main__":
    path = sys.argv[1]
    if os.path.exists(path):
        os.unlink(path)
    server = Server(path, Handler)
    os.chmod(path, 0o666)
    server.serve_forever()
'''

MAILMAP = MAILMAP.replace("{HOLD}", HOLD)

MAIL_AUTH = r'''
import warnings

warnings.simplefilter("ignore", DeprecationWarning)  # crypt: Debian 12's Python 3.11 still has it

import crypt
import glob
import hmac
import ipaddress
import os
import pwd
import sys

import yaml

HOLDS = "/etc/hosting/mail-hold"
# Dovecot runs this program as its passdb and as its userdb: `args` names the role before checkpassword-reply.
ROLE = sys.argv[1] if len(sys.argv) > 2 else "passdb"


{HOLD}

def mailbox(user):
    """(account entry, mailbox) of 'mailbox@domain', or None."""
    box, _, domain = user.lower().partition("@")
    for path in glob.glob("/etc/hosting/accounts/*.yml"):
        with open(path, encoding="utf-8") as handle:
            entry = yaml.safe_load(handle) or {}
        if domain in (d["name"].lower() for d in entry.get("domains", [])) and box in entry.get("mailboxes", []):
            return entry, box
    return None


def main():
    data = b""
    while True:
        chunk = os.read(3, 1024)
        if not chunk:
            break
        data += chunk
    user, password = (data.split(b"\0") + [b"", b""])[:2]
    user, password = user.decode("utf-8", "replace"), password.decode("utf-8", "replace")
    lookup = os.environ.get("AUTHORIZED") == "1"
    found = mailbox(user)
    if found is None:
        sys.exit(3 if lookup else 1)
    entry, box = found
    # While held, a login waits (the freeze ended the account's sessions; a new one must not change flags the final
    # delta has already copied) and nothing is delivered here (what Postfix accepted just before waits in its
    # queue). Once the hold names the server that holds the account now, deliveries are proxied there: the lookup
    # LMTP makes before each recipient (passdb, with lmtp_proxy) answers with that server, decided per message.
    relay = hold(entry["name"])
    if relay is not None:
        if relay and os.environ.get("SERVICE") == "lmtp" and ROLE == "passdb":
            os.environ.update(USER=user, proxy="y", host=relay, port="24", EXTRA="proxy host port",
                              AUTHORIZED="2")
            os.execv(sys.argv[-1], sys.argv[-1:])
        sys.exit(111)
    # MASTER_USER: Dovecot has already checked the master user's password (passdb `pass = yes`).
    if not lookup and not os.environ.get("MASTER_USER"):
        stored = (entry.get("mailbox_passwords") or {}).get(box, "")
        if not stored or not hmac.compare_digest(crypt.crypt(password, stored), stored):
            sys.exit(1)
    account = pwd.getpwnam(entry["name"])
    home = f"/var/mail/{entry['name']}/{box}"
    os.environ.update(USER=user, HOME=home, userdb_uid=str(account.pw_uid), userdb_gid=str(account.pw_gid),
                      userdb_mail=f"maildir:{home}", EXTRA="userdb_uid userdb_gid userdb_mail")
    if lookup:
        os.environ["AUTHORIZED"] = "2"  # checkpassword-reply then exits 2: "found" for a lookup
    os.execv(sys.argv[-1], sys.argv[-1:])


if __name__ == "__main__":
    main()
'''
MAIL_AUTH = MAIL_AUTH.replace("{HOLD}", HOLD)
