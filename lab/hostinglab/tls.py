"""HTTPS in the lab: an ACME CA (Debian's pebble) on the host `acme`, every site's certificate issued through ACME
HTTP-01 by certbot running as the account (kept in the account's home, `~/.tls`, certbot's layout), and the
web front's TLS servers generated from those certificates by `hosting-tls sync`.

The CA's DNS is pebble-challtestsrv answering every name with the client server's first public address: the
internet's view of where every customer domain points (provider DNS or not), which stays true after step 6 moves
that address to the transit server. pebble makes a new root at each start: `lab up` fetches it and every lab
server, the tests and the controller (inventory variable hosting_tls_ca_file) trust it, with the API's own
certificate, through STATE_DIR/acme/ca.pem."""

from __future__ import annotations

import json
import ssl
import urllib.request
from concurrent.futures import ThreadPoolExecutor

from .config import STATE_DIR, Host, Lab
from .proc import LabError, sh_in, start_daemon
from .services import wait_port

ACME_DIR = STATE_DIR / "acme"
CA_FILE = ACME_DIR / "ca.pem"  # what clients trust: the issuing root and the ACME API's certificate
API_PORT = 14000
MANAGEMENT_PORT = 15000
CERTBOT_DIRS = "--config-dir {home}/.tls --work-dir {home}/.tls/work --logs-dir {home}/.tls/logs"

# `hosting-tls sync | renew`, installed on every hosting server (root's, run by cron and by the lab).
#  sync:  /etc/nginx/hosting/tls.conf gets one HTTPS server per domain of docroots.map whose certificate is in
#         its account's ~/.tls (only files the account owns inside that directory: nginx reads them as root);
#         nginx reloads when the file changed, and a config nginx refuses is put back as it was.
#  renew: certbot renew, as the account, for each account this server serves itself (a domain with a backends.map
#         entry is served elsewhere: its renewal runs there, never on both servers); then sync.
HOSTING_TLS = r'''#!/usr/bin/python3
import os, pwd, re, subprocess, sys

MAPS = "/etc/nginx/hosting"
CONF = MAPS + "/tls.conf"
CERTBOT = ["certbot", "-q", "--config-dir", "{h}/.tls", "--work-dir", "{h}/.tls/work", "--logs-dir", "{h}/.tls/logs"]


def read_map(name):
    entries = {}
    try:
        with open(os.path.join(MAPS, name), encoding="utf-8") as handle:
            for line in handle:
                match = re.match(r"^\s*(\S+)\s+(\S+?);\s*$", line)
                if match:
                    entries[match.group(1)] = match.group(2)
    except FileNotFoundError:
        pass
    return entries


def account_of(docroot):
    match = re.match(r"^/home/([a-z][a-z0-9]*)/", docroot)
    return match.group(1) if match else None


def owned_file(account, path):
    """The real file behind certbot's live/ symlink, if it is the account's and inside its ~/.tls."""
    try:
        user = pwd.getpwnam(account)
    except KeyError:
        return None
    top = os.path.realpath(f"{user.pw_dir}/.tls") + "/"
    real = os.path.realpath(path)
    try:
        st = os.stat(real)
    except OSError:
        return None
    return real if real.startswith(top) and st.st_uid == user.pw_uid and os.path.isfile(real) else None


def server_block(domain, chain, key):
    return (f"server {{\n    listen 443 ssl;\n    listen [::]:443 ssl;\n    server_name {domain};\n"
            f"    ssl_certificate {chain};\n    ssl_certificate_key {key};\n"
            f"    include {MAPS}/site.conf;\n}}\n")


def sync():
    blocks = []
    for domain, docroot in sorted(read_map("docroots.map").items()):
        account = account_of(docroot)
        if not account:
            continue
        live = f"/home/{account}/.tls/live/{domain}"
        chain, key = owned_file(account, live + "/fullchain.pem"), owned_file(account, live + "/privkey.pem")
        if chain and key:
            blocks.append(server_block(domain, chain, key))
    text = "# Written by hosting-tls sync: one HTTPS server per domain with a certificate.\n" + "".join(blocks)
    try:
        with open(CONF, encoding="utf-8") as handle:
            old = handle.read()
    except FileNotFoundError:
        old = ""
    if text == old:
        return
    with open(CONF + ".new", "w", encoding="utf-8") as handle:
        handle.write(text)
    os.replace(CONF + ".new", CONF)
    if subprocess.run(["nginx", "-t", "-q"], check=False).returncode != 0:
        with open(CONF, "w", encoding="utf-8") as handle:
            handle.write(old)
        sys.exit("hosting-tls: nginx refused the new TLS servers; kept the previous ones")
    subprocess.run(["nginx", "-s", "reload"], check=True)


def renew():
    backends = read_map("backends.map")
    accounts = sorted({account_of(d) for name, d in read_map("docroots.map").items() if name not in backends} - {None})
    failed = []
    for account in accounts:
        home = pwd.getpwnam(account).pw_dir
        if os.path.isdir(home + "/.tls/renewal"):
            argv = ["runuser", "-u", account, "--"] + [a.format(h=home) for a in CERTBOT] + ["renew"]
            if subprocess.run(argv, check=False).returncode != 0:
                failed.append(account)
    sync()
    if failed:
        sys.exit("hosting-tls: renewal failed for " + ", ".join(failed))


if __name__ == "__main__":
    {"sync": sync, "renew": renew}[sys.argv[1] if len(sys.argv) > 1 else ""]()
'''
RENEW_CRON = (
    "# Renew the certificates of the accounts served here (hosting-tls renew).\n"
    "17 4 * * * root /usr/local/sbin/hosting-tls renew\n"
)


def start_acme(host: Host, lab: Lab) -> None:
    """pebble (ACME API on 14000, management on 15000, HTTP-01 checks on port 80 of the names) and its DNS."""
    target = lab.hosts["client"].public_ipv4[0]
    sh_in(
        host.name,
        f"""
install -d -m 0700 /etc/pebble
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 30 -subj /CN=acme.lab \
    -addext 'subjectAltName=IP:{host.ipv4},IP:{host.ipv6},DNS:acme.{lab.seed["provider_zone"]}' \
    -keyout /etc/pebble/api.key -out /etc/pebble/api.pem 2>/dev/null
cat > /etc/pebble/pebble.json <<'EOF'
{
            json.dumps(
                {
                    "pebble": {
                        "listenAddress": f"0.0.0.0:{API_PORT}",
                        "managementListenAddress": f"0.0.0.0:{MANAGEMENT_PORT}",
                        "certificate": "/etc/pebble/api.pem",
                        "privateKey": "/etc/pebble/api.key",
                        "httpPort": 80,
                        "tlsPort": 443,
                        "ocspResponderURL": "",
                        "externalAccountBindingRequired": False,
                    }
                },
                indent=2,
            )
        }
EOF
""",
    )
    start_daemon(host.name, "challtestsrv", [
        "/usr/bin/pebble-challtestsrv", "-defaultIPv4", target, "-defaultIPv6", "", "-dns01", "127.0.0.1:8053",
        "-http01", "", "-https01", "", "-tlsalpn01", "", "-management", "127.0.0.1:8055",
    ])  # fmt: skip
    # No nonce rejections and no validation delays: the lab's certbot runs are quick and never retry.
    start_daemon(host.name, "pebble", [
        "env", "PEBBLE_VA_NOSLEEP=1", "PEBBLE_WFE_NONCEREJECT=0", "PEBBLE_AUTHZREUSE=100",
        "/usr/bin/pebble", "-config", "/etc/pebble/pebble.json", "-dnsserver", "127.0.0.1:8053",
    ])  # fmt: skip
    wait_port(host.ipv4, API_PORT, "pebble (the lab's ACME CA)")
    wait_port(host.ipv4, MANAGEMENT_PORT, "pebble's management API")
    api_cert = sh_in(host.name, "cat /etc/pebble/api.pem")
    ACME_DIR.mkdir(parents=True, exist_ok=True)
    (ACME_DIR / "api.pem").write_text(api_cert)
    context = ssl.create_default_context(cafile=str(ACME_DIR / "api.pem"))
    with urllib.request.urlopen(f"https://{host.ipv4}:{MANAGEMENT_PORT}/roots/0", context=context, timeout=10) as r:
        root = r.read().decode()
    if "BEGIN CERTIFICATE" not in root:
        raise LabError("pebble's management API gave no root certificate")
    (ACME_DIR / "root.pem").write_text(root)
    CA_FILE.write_text(root + api_cert)


def directory_url(lab: Lab) -> str:
    return f"https://{lab.hosts['acme'].ipv4}:{API_PORT}/dir"


def install_tls_tools(host: Host) -> None:
    """The lab CA in the host's trust store (certbot talks to the ACME API, probes check the sites), hosting-tls
    and its renewal cron entry. (The front's fallback certificate is start_nginx's.)"""
    sh_in(
        host.name,
        f"""
cat > /usr/local/share/ca-certificates/hosting-lab-acme.crt <<'EOF'
{CA_FILE.read_text()}EOF
update-ca-certificates >/dev/null 2>&1
cat > /usr/local/sbin/hosting-tls <<'EOF'
{HOSTING_TLS}EOF
chmod 0755 /usr/local/sbin/hosting-tls
printf '%s' '{RENEW_CRON}' > /etc/cron.d/hosting-tls
""",
    )


def issue_certificates(host: Host, lab: Lab, seeded: list[dict]) -> None:
    """Each site's certificate through ACME HTTP-01, certbot running as the account (webroot: the site's document
    root, which the front serves on port 80 for /.well-known/acme-challenge/), then the front's TLS servers."""
    server = directory_url(lab)

    def issue(account: dict) -> None:
        home = f"/home/{account['name']}"
        for site in account["sites"]:
            sh_in(
                host.name,
                f"runuser -u {account['name']} -- certbot certonly -q --non-interactive --agree-tos "
                f"--register-unsafely-without-email --server {server} {CERTBOT_DIRS.format(home=home)} "
                f"--webroot -w {site['document_root']} -d {site['domain']} --cert-name {site['domain']}",
            )

    with ThreadPoolExecutor(max_workers=8) as pool:
        list(pool.map(issue, seeded))
    sh_in(host.name, "/usr/local/sbin/hosting-tls sync")
