"""Real mail in the lab: Postfix (SMTP in on every address) delivering by LMTP to Dovecot (IMAP) on each hosting
server, and Postfix relays on the backup MX hosts mx1/mx2 that queue and retry towards the server's public
address. Nothing bounces while an account is held: RCPT answers 450 and the sender or relay tries again."""

from __future__ import annotations

from .config import Host, Lab
from .mail_scripts import MAIL_AUTH, MAILMAP
from .proc import sh_in, start_daemon
from .services import wait_port

MAP_SOCKET = "/run/hosting-mail/map.sock"
MAILMAP_PATH = "/usr/local/lib/hosting-mail/mailmap.py"
MAIL_AUTH_PATH = "/usr/local/lib/hosting-mail/mail-auth"
SMTP_PORT, IMAP_PORT = 25, 143

# Retries within seconds, not Postfix's default minutes: a held recipient is back after the move's few seconds.
QUEUE_SETTINGS = """queue_run_delay = 1s
minimal_backoff_time = 1s
maximal_backoff_time = 4s
"""

COMMON_MAIN_CF = """compatibility_level = 3.6
biff = no
append_dot_mydomain = no
inet_interfaces = all
inet_protocols = all
mynetworks = 127.0.0.0/8 [::1]/128
alias_maps =
alias_database =
smtpd_banner = $myhostname ESMTP
maillog_file = /var/log/postfix.log
# The lab has no resolver for clients' reverse names, and every next hop is an address literal.
smtpd_peername_lookup = no
smtp_host_lookup = native
lmtp_host_lookup = native
disable_dns_lookups = yes
"""


def _postfix(host: Host, main_cf: str) -> None:
    sh_in(
        host.name,
        f"""
cat > /etc/postfix/main.cf <<'EOF'
{main_cf}EOF
echo {host.fqdn or host.name} > /etc/mailname
# Off the chroot: the lookup tables live on a socket under /run.
postconf -F '*/*/chroot = n'
install -d -o postfix -g postfix /var/spool/postfix/private /var/spool/postfix/public
postfix set-permissions >/dev/null 2>&1 || true
postfix check
""",
    )
    start_daemon(host.name, "postfix", ["/usr/sbin/postfix", "start-fg"])
    wait_port(host.ipv4, SMTP_PORT, f"Postfix on {host.name}")


def start_hosting_mail(host: Host, lab: Lab) -> None:
    """Postfix + Dovecot of a hosting server (client, transit), reading the server contract through the two
    programs of mail_scripts."""
    probe_user, probe_password = lab.vars["hosting_mail_probe_user"], lab.vars["hosting_mail_probe_password"]
    sh_in(
        host.name,
        f"""
install -d -m 0755 /usr/local/lib/hosting-mail /run/hosting-mail /etc/hosting/mail-hold
cat > {MAILMAP_PATH} <<'EOF'
{MAILMAP}EOF
cat > {MAIL_AUTH_PATH} <<'EOF'
#!/usr/bin/python3
{MAIL_AUTH}EOF
chmod 0755 {MAIL_AUTH_PATH}
""",
    )
    start_daemon(host.name, "mailmap", ["python3", MAILMAP_PATH, MAP_SOCKET])
    table = f"socketmap:unix:{MAP_SOCKET}"
    # The master user logs in as any mailbox (`mailbox@domain*probe`): step 5's IMAP check, without the customer's
    # password. Its hash is made in the host from standard input, never from a command line.
    sh_in(
        host.name,
        f"""
python3 -W ignore -c 'import crypt, sys; print(sys.argv[1] + ":{{CRYPT}}" + crypt.crypt(sys.stdin.read()))' \
    {probe_user} > /etc/dovecot/master-users
chown root:dovecot /etc/dovecot/master-users && chmod 0640 /etc/dovecot/master-users
cat > /etc/dovecot/dovecot.conf <<'EOF'
protocols = imap lmtp
listen = *, ::
ssl = no
disable_plaintext_auth = no
auth_mechanisms = plain login
auth_cache_size = 0
auth_master_user_separator = *
log_path = /var/log/dovecot.log
first_valid_uid = 1000
mail_location = maildir:~
passdb {{
  driver = passwd-file
  master = yes
  pass = yes
  args = /etc/dovecot/master-users
}}
passdb {{
  driver = checkpassword
  args = {MAIL_AUTH_PATH} passdb
}}
userdb {{
  driver = checkpassword
  args = {MAIL_AUTH_PATH} userdb
}}
service lmtp {{
  unix_listener /var/spool/postfix/private/dovecot-lmtp {{
    mode = 0600
    user = postfix
    group = postfix
  }}
  # Where the side an account has left proxies its deliveries (the lab's network only).
  inet_listener lmtp {{
    port = 24
  }}
}}
protocol lmtp {{
  postmaster_address = postmaster@{host.fqdn}
  lmtp_proxy = yes
}}
EOF
install -d -o postfix -g postfix /var/spool/postfix/private
doveconf -n >/dev/null
""",
        input=probe_password,
    )
    start_daemon(host.name, "dovecot", ["/usr/sbin/dovecot", "-F"])
    wait_port(host.ipv4, IMAP_PORT, f"Dovecot on {host.name}")
    _postfix(
        host,
        COMMON_MAIN_CF
        + QUEUE_SETTINGS
        + f"""myhostname = {host.fqdn}
myorigin = $myhostname
mydestination = localhost
virtual_mailbox_domains = {table}:domain
virtual_mailbox_maps = {table}:mailbox
virtual_transport = lmtp:unix:private/dovecot-lmtp
smtpd_relay_restrictions = permit_mynetworks, reject_unauth_destination
smtpd_recipient_restrictions = check_recipient_access {table}:hold, reject_unauth_destination
""",
    )


def start_mail_relay(host: Host, lab: Lab) -> None:
    """A backup MX: accepts mail for the lab's domains and relays it to the client server's public address (the
    MX 5 server), queueing while that answers 450 or not at all. Step 6 moves that address to the transit."""
    target = lab.hosts["client"].public_ipv4[0]
    sh_in(host.name, "printf '%s\\n' '/\\.test$/ OK' > /etc/postfix/relay_domains")
    _postfix(
        host,
        COMMON_MAIN_CF
        + QUEUE_SETTINGS
        + f"""myhostname = {host.name}.{lab.seed["provider_zone"]}
mydestination =
relay_domains = regexp:/etc/postfix/relay_domains
relay_recipient_maps =
transport_maps = static:smtp:[{target}]:25
smtpd_relay_restrictions = permit_mynetworks, reject_unauth_destination
""",
    )
