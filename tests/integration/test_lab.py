"""The lab against its promise (DESIGN §2): real hosts reached over SSH, real databases with the seeded accounts,
real DNS with TSIG, real HTTP through the router, and the old/new architecture difference step 1 relies on."""

from __future__ import annotations

import json
import os
import socket
import ssl
import subprocess
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path

import dns.flags
import dns.message
import dns.query
import dns.rcode
import dns.resolver
import dns.tsig
import dns.tsigkeyring
import dns.update
import pytest
import yaml
from conftest import LAB, REPO, run
from lab_state import LAB_CA_FILE, NoRedirect, http, recap

pytestmark = pytest.mark.lab

SEED = yaml.safe_load((REPO / "lab" / "seed.yml").read_text())


def seeded_databases(engine):
    return {d["name"]: d for a in SEED["accounts"].values() for d in a["databases"] if d["engine"] == engine}


def test_ansible_reaches_client_and_transit_over_ssh(lab):
    result = run(["ansible", "-i", "inventories/lab", "client,transit", "-m", "ansible.builtin.ping"])
    assert result.stdout.count("ping: pong") == 2, result.stdout
    # Each answer comes from its own host (own UTS and mount namespace), not from the controller.
    result = run(
        ["ansible", "-i", "inventories/lab", "client,transit", "-m", "ansible.builtin.command", "-a", "hostname"]
    )
    assert "client | CHANGED | rc=0 >>\nclient" in result.stdout
    assert "transit | CHANGED | rc=0 >>\ntransit" in result.stdout


def test_hosts_have_their_own_users_and_contract(ssh):
    client_passwd = ssh("client", "getent passwd alice bob carol dave").stdout
    assert [line.split(":")[0] for line in client_passwd.splitlines()] == ["alice", "bob", "carol", "dave"]
    assert ssh("transit", "getent passwd alice", check=False).returncode == 2
    profile = yaml.safe_load(ssh("client", "cat /etc/hosting/server.yml").stdout)
    assert profile["architecture"] == SEED["client_architecture"]
    assert profile["languages"] == SEED["architectures"][SEED["client_architecture"]]
    for language, versions in profile["languages"].items():
        for version in versions:
            out = ssh("client", f"/opt/hosting/langs/{language}/{version}/bin/{language}").stdout
            assert out.startswith(f"{language} {version}")
    # Both servers carry the provider's runtime packages of both architectures (what steps 3 and 6 install).
    for server in ("client", "transit"):
        for architecture, languages in SEED["architectures"].items():
            for language, versions in languages.items():
                for version in versions:
                    binary = f"/opt/hosting/packages/{architecture}/{language}/{version}/bin/{language}"
                    assert ssh(server, binary).stdout.startswith(f"{language} {version}")
    assert ssh("transit", "ls /opt/hosting/langs", check=False).returncode != 0
    registry = ssh("client", "ls /etc/hosting/accounts").stdout.split()
    assert registry == sorted(f"{name}.yml" for name in SEED["accounts"])
    bob = yaml.safe_load(ssh("client", "cat /etc/hosting/accounts/bob.yml").stdout)
    assert bob["domains"] == [{"name": "bobs-garden.test", "provider_dns": False}]
    assert bob["databases"] == [{"engine": "postgresql", "name": "bob_app"}]


def test_homes_keep_odd_names_hard_links_acls_xattrs_and_symlinks(ssh):
    odd = "/home/alice/odd"
    names = ssh("client", f"cd {odd} && find . -mindepth 1 -maxdepth 1 -print0 | xargs -0 -n1 printf '%s\\0'").stdout
    listed = set(names.split("\0")) - {""}
    assert {"./new\nline.txt", "./-leading-dash.txt", "./ünïcödé-名前.txt", "./quote'and\"double.txt"} <= listed
    inodes = ssh("client", f"stat -c %i:%h {odd}/data.bin {odd}/data-hardlink.bin").stdout.split()
    assert inodes[0] == inodes[1] and inodes[0].endswith(":2")
    assert "user:www-data:r--" in ssh("client", f"getfacl -p {odd}/acl.txt").stdout
    assert "kept by rsync -X" in ssh("client", f"getfattr -n user.hosting.comment {odd}/xattr.txt").stdout
    assert ssh("client", f"readlink {odd}/link-outside-home").stdout.strip() == "/etc/hostname"
    owners = ssh("client", "find /home/alice -printf '%u\\n' | sort -u").stdout.split()
    assert owners == ["alice"]


def test_maildirs_hold_the_seeded_messages(ssh):
    for name, account in SEED["accounts"].items():
        for mailbox, count in account["mailboxes"].items():
            found = ssh("client", f"grep -l '^Message-ID: <seed-{name}-{mailbox}-' -r /var/mail/{name}/{mailbox}")
            assert len(found.stdout.split()) == count, (name, mailbox)
    assert ssh("client", "stat -c %U:%a /var/mail/alice/info").stdout.strip() == "alice:700"


def test_mariadb_holds_the_seeded_databases_with_row_counts(mariadb):
    conn = mariadb("client")
    with conn.cursor() as cur:
        cur.execute("SELECT schema_name FROM information_schema.schemata")
        databases = {row[0] for row in cur.fetchall()}
        assert set(seeded_databases("mariadb")) <= databases
        cur.execute("SELECT COUNT(*) FROM alice_shop.products")
        rows = seeded_databases("mariadb")["alice_shop"]["rows"]
        assert cur.fetchone()[0] == rows
        cur.execute("SELECT COUNT(*) FROM alice_shop.orders")
        assert cur.fetchone()[0] == rows * 4
        cur.execute("SELECT COUNT(*) FROM dave_data.measurements")
        assert cur.fetchone()[0] > 10_000
    # The transit server is delivered empty: no account database yet.
    with mariadb("transit").cursor() as cur:
        cur.execute("SELECT COUNT(*) FROM information_schema.schemata WHERE schema_name LIKE 'alice%'")
        assert cur.fetchone()[0] == 0


def test_account_users_log_in_with_their_passwords_and_grants(mariadb, postgresql):
    users = {(u["engine"], u["name"]): u for a in SEED["accounts"].values() for u in a["db_users"]}
    # carol's password holds quotes, $, ;, parentheses, a space and a backslash.
    carol = users[("mariadb", "carol")]["password"]
    with mariadb("client", user="carol", password=carol, database="carol_blog").cursor() as cur:
        cur.execute("SELECT COUNT(*) FROM posts")
        assert cur.fetchone()[0] == seeded_databases("mariadb")["carol_blog"]["rows"]
    with mariadb("client", user="alice_ro", password=users[("mariadb", "alice_ro")]["password"]).cursor() as cur:
        cur.execute("SHOW GRANTS")
        grants = " ".join(row[0] for row in cur.fetchall())
        assert "GRANT SELECT ON `alice\\_%`.*" in grants
    with postgresql(
        "client", user="carol", password=users[("postgresql", "carol")]["password"], database="carol_legacy"
    ).cursor() as cur:
        cur.execute("SELECT COUNT(*) FROM notes")
        assert cur.fetchone()[0] == seeded_databases("postgresql")["carol_legacy"]["rows"]
    ro = postgresql("client", user="bob_ro", password=users[("postgresql", "bob_ro")]["password"], database="bob_app")
    with ro.cursor() as cur:
        cur.execute("SELECT COUNT(*) FROM plants")
        assert cur.fetchone()[0] == seeded_databases("postgresql")["bob_app"]["rows"]
        with pytest.raises(Exception, match="permission denied"):
            cur.execute("DELETE FROM plants")
    with pytest.raises(Exception, match="Access denied"):
        mariadb("client", user="alice", password="wrong")


def test_postgresql_holds_the_seeded_databases_with_row_counts(postgresql):
    with postgresql("client").cursor() as cur:
        cur.execute("SELECT datname, pg_encoding_to_char(encoding), pg_get_userbyid(datdba) FROM pg_database")
        databases = {row[0]: row[1:] for row in cur.fetchall()}
    for name in seeded_databases("postgresql"):
        assert name in databases
    assert databases["bob_app"] == ("UTF8", "bob")
    assert databases["carol_legacy"] == ("SQL_ASCII", "carol")
    with postgresql("client", database="bob_app").cursor() as cur:
        rows = seeded_databases("postgresql")["bob_app"]["rows"]
        cur.execute(
            "SELECT (SELECT COUNT(*) FROM plants), (SELECT COUNT(*) FROM visits), (SELECT COUNT(*) FROM tags_nopk)"
        )
        assert cur.fetchone() == (rows, rows * 3, rows)


def resolver_for(address):
    resolver = dns.resolver.Resolver(configure=False)
    resolver.nameservers = [address]
    resolver.lifetime = 5
    return resolver


def test_dns_serves_the_seeded_records(lab):
    provider = resolver_for(lab.hosts["dns"].ipv4)
    client = lab.hosts["client"]
    assert [r.address for r in provider.resolve("alice-shop.test", "A")] == client.public_ipv4
    assert [r.address for r in provider.resolve("alice-shop.test", "AAAA")] == client.public_ipv6
    mx = sorted((r.preference, r.exchange.to_text()) for r in provider.resolve("alice-shop.test", "MX"))
    assert mx == [(10, "mx1.provider.test."), (20, "mx2.provider.test.")]
    third = resolver_for(lab.hosts["thirdparty-dns"].ipv6)
    mx = sorted((r.preference, r.exchange.to_text()) for r in third.resolve("bobs-garden.test", "MX"))
    assert mx == [(5, "srv1.provider.test."), (10, "mx1.provider.test."), (20, "mx2.provider.test.")]
    # bob's domain is not on the provider's DNS: the `test.` registry on `dns` only refers to its own servers.
    query = dns.message.make_query("bobs-garden.test", "MX")
    query.flags &= ~dns.flags.RD
    referral = dns.query.udp(query, lab.hosts["dns"].ipv4, timeout=5)
    assert not referral.answer and not referral.flags & dns.flags.AA
    assert [(r.name.to_text(), r[0].to_text()) for r in referral.authority] == [
        ("bobs-garden.test.", "ns.thirdparty.test.")
    ]
    with pytest.raises(dns.resolver.NoAnswer):
        provider.resolve("bobs-garden.test", "MX")


def test_rfc2136_update_needs_the_tsig_key(lab):
    server = lab.hosts["dns"].ipv4
    keyring = dns.tsigkeyring.from_text({lab.vars["hosting_tsig_key_name"]: lab.vars["hosting_tsig_secret"]})
    unsigned = dns.update.UpdateMessage("alice-shop.test")
    unsigned.add("unsigned-probe", 60, "TXT", '"should be refused"')
    assert dns.query.tcp(unsigned, server, timeout=5).rcode() == dns.rcode.REFUSED
    wrong = dns.update.UpdateMessage(
        "alice-shop.test",
        keyring=dns.tsigkeyring.from_text({lab.vars["hosting_tsig_key_name"]: "d3JvbmcK"}),
        keyalgorithm=lab.vars["hosting_tsig_algorithm"],
    )
    wrong.add("wrong-key-probe", 60, "TXT", '"wrong key"')
    with pytest.raises(dns.tsig.PeerBadSignature):
        dns.query.tcp(wrong, server, timeout=5)
    signed = dns.update.UpdateMessage(
        "alice-shop.test", keyring=keyring, keyalgorithm=lab.vars["hosting_tsig_algorithm"]
    )
    signed.replace("signed-probe", 60, "TXT", '"accepted"')
    assert dns.query.tcp(signed, server, timeout=5).rcode() == dns.rcode.NOERROR
    resolver = resolver_for(server)
    try:
        assert [r.to_text() for r in resolver.resolve("signed-probe.alice-shop.test", "TXT")] == ['"accepted"']
        for name in ("unsigned-probe", "wrong-key-probe"):
            with pytest.raises(dns.resolver.NXDOMAIN):
                resolver.resolve(f"{name}.alice-shop.test", "TXT")
    finally:
        cleanup = dns.update.UpdateMessage(
            "alice-shop.test", keyring=keyring, keyalgorithm=lab.vars["hosting_tsig_algorithm"]
        )
        cleanup.delete("signed-probe")
        dns.query.tcp(cleanup, server, timeout=5)


@pytest.mark.parametrize("family", ["ipv4", "ipv6"])
def test_client_public_addresses_serve_each_account_through_gw(lab, ssh, family):
    client = lab.hosts["client"]
    address = (client.public_ipv4 if family == "ipv4" else client.public_ipv6)[0]
    for name, account in SEED["accounts"].items():
        for site in account["sites"]:
            status, body = http(site["domain"], address=address)
            assert status == 200 and f"<title>{site['title']}</title>" in body, (name, body)
    # The path really goes through the router: with forwarding off on gw the address goes dark.
    key = "net.ipv4.ip_forward" if family == "ipv4" else "net.ipv6.conf.all.forwarding"
    ssh("gw", f"sysctl -qw {key}=0")
    try:
        with pytest.raises(OSError):
            http("alice-shop.test", address=address)
    finally:
        ssh("gw", f"sysctl -qw {key}=1")
    assert http("alice-shop.test", address=address)[0] == 200


def mariadb_client_config(lab, host, tmp):
    """A defaults file: the admin password never reaches a command line."""
    path = Path(tmp) / f"{host}.cnf"
    password = lab.vars["hosting_db_admin_password"].replace("\\", "\\\\").replace('"', '\\"')
    path.write_text(
        f'[client]\nhost={lab.hosts[host].ipv4}\nuser={lab.vars["hosting_db_admin_user"]}\npassword="{password}"\n'
    )
    os.chmod(path, 0o600)
    return path


def test_step1_finding_old_server_accepts_what_the_new_architecture_refuses(lab, mariadb):
    """carol's blog restores on an old-generation server (transit) but not on testdb (new architecture)."""
    with tempfile.TemporaryDirectory() as tmp:
        source = mariadb_client_config(lab, "client", tmp)
        dump = run(["mariadb-dump", f"--defaults-extra-file={source}", "--databases", "carol_blog"]).stdout
        outcomes = {}
        for host in ("transit", "testdb"):
            target = mariadb_client_config(lab, host, tmp)
            restore = subprocess.run(
                ["mariadb", f"--defaults-extra-file={target}"], input=dump, capture_output=True, text=True, check=False
            )
            outcomes[host] = (restore.returncode, restore.stderr)
    try:
        assert outcomes["transit"][0] == 0, outcomes["transit"]
        assert outcomes["testdb"][0] != 0 and "Row size too large" in outcomes["testdb"][1]
        with mariadb("transit").cursor() as cur:
            cur.execute("SELECT COUNT(*) FROM carol_blog.posts")
            assert cur.fetchone()[0] == seeded_databases("mariadb")["carol_blog"]["rows"]
    finally:
        for host in ("transit", "testdb"):
            with mariadb(host).cursor() as cur:
                cur.execute("DROP DATABASE IF EXISTS carol_blog")


def test_lab_status_reports_every_service_up(lab):
    report = json.loads(run([LAB, "status", "--json"]).stdout)
    assert report["healthy"] is True
    every = {
        "sshd": True,
        "mariadb": True,
        "postgresql": True,
        "nginx": True,
        "https": True,
        "smtp": True,
        "imap": True,
    }
    assert report["hosts"]["client"] == every
    assert report["hosts"]["transit"] == every
    assert report["hosts"]["dns"] == {"sshd": True, "bind": True}
    assert report["hosts"]["mx1"] == report["hosts"]["mx2"] == {"sshd": True, "smtp": True}
    assert report["hosts"]["acme"] == {"sshd": True, "acme": True}


def test_demo_smoke_playbook_lists_every_account_where_it_lives(lab):
    result = run(["ansible-playbook", "playbooks/lab_smoke.yml", "--check"])
    rows = {line.split()[0]: line.split() for line in result.stdout.splitlines() if line.startswith("        ")}
    for name, account in SEED["accounts"].items():
        row = rows[name]
        assert row[1] == "client" and row[5] == account["domains"][0]["name"], row
        assert float(row[2]) > 0 and float(row[3]) > 0 and float(row[4]) > 0, row
    counters = recap(result.stdout)
    assert {"client", "transit"} <= set(counters), counters
    assert all(c["changed"] == 0 and c["failed"] == 0 for c in counters.values()), counters


def tls_handshake(address, server_name, cafile=LAB_CA_FILE):
    """The certificate a visitor's browser gets for server_name at address, verified against cafile."""
    context = ssl.create_default_context(cafile=cafile)
    with socket.create_connection((address, 443), timeout=5) as sock:
        with context.wrap_socket(sock, server_hostname=server_name) as tls:
            return tls.getpeercert()


@pytest.mark.parametrize("family", ["ipv4", "ipv6"])
def test_every_site_has_its_own_certificate_from_the_lab_acme_ca(lab, family):
    client = lab.hosts["client"]
    address = (client.public_ipv4 if family == "ipv4" else client.public_ipv6)[0]
    for account in SEED["accounts"].values():
        for site in account["sites"]:
            cert = tls_handshake(address, site["domain"])
            assert ("DNS", site["domain"]) in cert["subjectAltName"], cert
            assert "Pebble" in dict(x[0] for x in cert["issuer"])["commonName"], cert
    # A name without a certificate of its own gets the server's: no browser accepts it for that name.
    with pytest.raises(ssl.SSLCertVerificationError):
        tls_handshake(address, "not-hosted-here.test")
    # ... and the sites' certificates are not trusted without the lab's CA.
    with pytest.raises(ssl.SSLCertVerificationError):
        tls_handshake(address, "alice-shop.test", cafile=None)


def test_plain_http_redirects_to_https_but_serves_acme_challenges(lab, ssh):
    docroot = SEED["accounts"]["carol"]["sites"][0]
    root = yaml.safe_load(ssh("client", "cat /etc/hosting/accounts/carol.yml").stdout)["sites"][0]["document_root"]
    token = "lab-test-token-" + os.urandom(4).hex()
    ssh(
        "client",
        f"runuser -u carol -- sh -c 'mkdir -p {root}/.well-known/acme-challenge && "
        f"echo {token} > {root}/.well-known/acme-challenge/{token}'",
    )
    try:
        opener = urllib.request.build_opener(urllib.request.ProxyHandler({}), NoRedirect())

        def get(path):
            request = urllib.request.Request(f"http://198.51.100.10{path}", headers={"Host": docroot["domain"]})
            try:
                with opener.open(request, timeout=5) as response:
                    return response.status, response.headers, response.read().decode()
            except urllib.error.HTTPError as error:
                return error.code, error.headers, ""

        status, headers, _body = get("/some/page?x=1")
        assert status == 301 and headers["Location"] == f"https://{docroot['domain']}/some/page?x=1"
        status, _headers, body = get(f"/.well-known/acme-challenge/{token}")
        assert (status, body.strip()) == (200, token)
    finally:
        ssh("client", f"rm -f {root}/.well-known/acme-challenge/{token}")


def test_certificates_renew_from_cron_as_the_account_where_it_is_served(lab, ssh):
    cron = ssh("client", "cat /etc/cron.d/hosting-tls").stdout
    assert "root /usr/local/sbin/hosting-tls renew" in cron
    before = tls_handshake("198.51.100.10", "dave-data.test")["serialNumber"]
    # What cron runs, forced (certbot renews only near expiry otherwise) and without the random delay of up to 8
    # minutes certbot takes before a renewal it runs unattended: a new certificate, served at once.
    ssh(
        "client",
        "runuser -u dave -- certbot renew -q --force-renewal --no-random-sleep-on-renew --cert-name dave-data.test "
        "--config-dir /home/dave/.tls --work-dir /home/dave/.tls/work --logs-dir /home/dave/.tls/logs "
        "&& /usr/local/sbin/hosting-tls renew",
    )
    # nginx's reload replaces its workers within moments: the new certificate is served then.
    deadline = time.monotonic() + 5
    while (serial := tls_handshake("198.51.100.10", "dave-data.test")["serialNumber"]) == before:
        assert time.monotonic() < deadline, "the renewed certificate is not served"
        time.sleep(0.1)
    served = ssh("client", "openssl x509 -noout -serial -in /home/dave/.tls/live/dave-data.test/cert.pem").stdout
    assert served.strip() == f"serial={serial}"
    owners = ssh("client", "stat -L -c '%U %a' /home/dave/.tls/live/dave-data.test/privkey.pem").stdout.split()
    assert owners == ["dave", "600"]
