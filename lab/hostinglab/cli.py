"""`lab up | down | status | reset | connect | exec`: the lab's one entry point."""

from __future__ import annotations

import argparse
import json
import os
import selectors
import shutil
import socket
import sys
import time
from concurrent.futures import ThreadPoolExecutor

from . import hosts, mail, network, seed, services, tls, web
from .config import NS_HANDLES, STATE_DIR, Host, Lab, load
from .proc import LabError, in_host, kill_netns_processes, run

PACKAGES = [
    "mariadb-server", "mariadb-client", "postgresql", "postgresql-client", "bind9", "bind9-dnsutils",
    "bind9-utils", "nginx-light", "openssh-server", "openssh-client", "rsync", "nftables", "iproute2", "acl",
    "attr", "util-linux", "procps", "python3-yaml", "python3-pymysql", "python3-psycopg2", "python3-dnspython",
    "cron", "sshpass", "postfix", "dovecot-core", "dovecot-imapd", "dovecot-lmtpd",
    "php8.2-fpm", "php8.2-cli", "php8.2-mysql", "wordpress", "wordpress-theme-twentytwentythree", "gunicorn",
    "python3-flask", "supervisor", "pebble", "certbot", "openssl", "ca-certificates",
]  # fmt: skip
# Each role's ports, all checked by `lab status` and `lab up`'s health test.
SERVICE_PORTS = {
    "mariadb": (3306,), "postgresql": (5432,), "nginx": (80, 443), "bind": (53,), "mail": (25, 143),
    "mail_relay": (25,), "acme": (14000,),
}  # fmt: skip
# Postfix's installer would otherwise ask which kind of mail server this is; the lab writes main.cf itself.
DEBCONF = "postfix postfix/main_mailer_type select No configuration\n"
STATE_FILE = STATE_DIR / "lab.json"


def log(message: str) -> None:
    print(f"lab: {message}", flush=True)


def ensure_packages() -> None:
    status = run(["dpkg-query", "-W", "-f", "${Package} ${db:Status-Status}\n", *PACKAGES], check=False)
    installed = {line.split()[0] for line in status.splitlines() if line.endswith(" installed")}
    missing = [p for p in PACKAGES if p not in installed]
    if not missing:
        return
    log(f"installing Debian packages: {' '.join(missing)}")
    os.environ["DEBIAN_FRONTEND"] = "noninteractive"
    run(["debconf-set-selections"], input=DEBCONF)
    run(["apt-get", "update", "-q"])
    run(["apt-get", "install", "-y", "-q", "--no-install-recommends", *missing])


def host_ports(host: Host) -> dict[str, int]:
    ports = {"sshd": 22}
    for role in host.roles:
        names = {25: "smtp", 143: "imap", 443: "https"}
        for port in SERVICE_PORTS.get(role, ()):
            ports[names.get(port, role)] = port
    return ports


def port_open(address: str, port: int) -> bool:
    try:
        with socket.create_connection((address, port), timeout=1):
            return True
    except OSError:
        return False


def health(lab: Lab) -> dict[str, dict[str, bool]]:
    report = {}
    for host in lab.hosts.values():
        present = network.netns_exists(host.name) and (NS_HANDLES / f"{host.name}.mnt").exists()
        report[host.name] = {name: present and port_open(host.ipv4, port) for name, port in host_ports(host).items()}
    return report


def is_healthy(lab: Lab) -> bool:
    return STATE_FILE.exists() and all(all(h.values()) for h in health(lab).values())


def start_host(lab: Lab, host: Host, seeded: list[dict], zones: dict, big_db_mb: int) -> None:
    started = time.monotonic()
    services.start_sshd(host)
    if "mariadb" in host.roles:
        services.start_mariadb(host, lab)
    if "postgresql" in host.roles:
        services.start_postgresql(host, lab)
    if "nginx" in host.roles:
        services.start_nginx(host)
    if "bind" in host.roles:
        services.start_bind(host, lab, zones[host.name])
    if "runtime_packages" in host.roles:
        seed.install_contract(lab, host, seeded if "accounts" in host.roles else None)
    if "accounts" in host.roles:
        for account in seeded:
            seed.seed_mariadb(host, account, big_db_mb)
            seed.seed_postgresql(host, account, big_db_mb)
        services.reload_nginx(host)
    if "web" in host.roles:
        start_web(host, seeded if "accounts" in host.roles else [])
    if "cron" in host.roles:
        services.start_cron(host)
    if "mail" in host.roles:
        mail.start_hosting_mail(host, lab)
    if "mail_relay" in host.roles:
        mail.start_mail_relay(host, lab)
    if "acme" in host.roles:
        tls.start_acme(host, lab)
    log(f"{host.name} ready in {time.monotonic() - started:.1f}s")


def start_web(host: Host, seeded: list[dict]) -> None:
    """PHP-FPM (its pools are in place already), the sites' applications, then the supervisor that runs them."""
    web.start_php_fpm(host)
    web.install_apps(host, seeded)
    web.start_supervisor(host)


def controller_key() -> None:
    key = services.CONTROLLER_KEY
    key.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    if not key.exists():
        run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "hosting-lab-controller", "-f", str(key)])


def up(lab: Lab, params: dict) -> None:
    if is_healthy(lab):
        current = json.loads(STATE_FILE.read_text())["params"]
        if current == params:
            log("already up and healthy; nothing to do")
            return
        log(f"up with other parameters {current}; rebuilding with {params}")
    if network.leftovers(lab) or NS_HANDLES.exists() or STATE_FILE.exists():
        log("found a partial or stale lab (e.g. daemons gone after a stop): tearing it down first")
        down(lab)
    started = time.monotonic()
    ensure_packages()
    controller_key()
    hosts.prepare_handles_dir()
    network.create_bridge()
    gw = lab.hosts["gw"]
    for host in lab.hosts.values():
        network.create_host_network(host, gw)
        hosts.create_host_fs(host.name)
    network.configure_router(lab, gw)
    seeded = seed.accounts(lab, params["extra_accounts"])
    zones = seed.zones(lab, seeded)
    with ThreadPoolExecutor(max_workers=len(lab.hosts)) as pool:
        futures = [pool.submit(start_host, lab, h, seeded, zones, params["big_db_mb"]) for h in lab.hosts.values()]
        for future in futures:
            future.result()
    # HTTPS once the CA answers: the servers trust it, then the client's sites get their certificates.
    for host in lab.hosts.values():
        if "web" in host.roles:
            tls.install_tls_tools(host)
    tls.issue_certificates(lab.hosts["client"], lab, seeded)
    services.KNOWN_HOSTS.write_text("".join(services.host_key_line(h) for h in lab.hosts.values()))
    STATE_FILE.write_text(json.dumps({"params": params, "accounts": [a["name"] for a in seeded]}, indent=2))
    log(f"up in {time.monotonic() - started:.1f}s: {len(seeded)} accounts on client ({params})")


def reinstall(lab: Lab, name: str, architecture: str) -> None:
    """What a provider's reinstall does to a hosting server (step 6's reinstall_command in the lab): everything on
    it is wiped — files, accounts, databases, services, SSH host keys — and it comes back empty on `architecture`'s
    profile, runtimes and database settings, with the same addresses. The journal goes too: the migration keeps
    its own on the transit server."""
    host = lab.hosts.get(name)
    if host is None or "accounts" not in host.roles:
        raise LabError(f"only the client server can be reinstalled, not {name!r}")
    if architecture not in lab.seed["architectures"]:
        raise LabError(f"unknown architecture {architecture!r}; the lab has {', '.join(lab.seed['architectures'])}")
    if not is_healthy(lab):
        raise LabError("the lab is not up and healthy; run `lab/lab up` first")
    started = time.monotonic()
    kill_netns_processes(host.name)
    hosts.delete_host_fs(host.name)
    hosts.create_host_fs(host.name)
    services.start_sshd(host)
    services.start_mariadb(host, lab, generation=architecture)
    services.start_postgresql(host, lab, generation=architecture)
    services.start_nginx(host)
    seed.install_contract(lab, host, [], architecture=architecture)
    services.reload_nginx(host)
    start_web(host, [])
    services.start_cron(host)
    tls.install_tls_tools(host)
    mail.start_hosting_mail(host, lab)
    services.KNOWN_HOSTS.write_text("".join(services.host_key_line(h) for h in lab.hosts.values()))
    state = json.loads(STATE_FILE.read_text())
    state.setdefault("reinstalled", {})[host.name] = architecture
    STATE_FILE.write_text(json.dumps(state, indent=2))
    log(f"{host.name} reinstalled on architecture {architecture} in {time.monotonic() - started:.1f}s (empty)")


def down(lab: Lab) -> None:
    for host in lab.hosts.values():
        kill_netns_processes(host.name)
    for host in lab.hosts.values():
        hosts.delete_host_fs(host.name)
    network.delete_network(lab)
    hosts.release_handles_dir()
    for path in (STATE_DIR / "hosts", STATE_DIR / "logs"):
        shutil.rmtree(path, ignore_errors=True)
    for path in (STATE_FILE, services.KNOWN_HOSTS):
        path.unlink(missing_ok=True)
    deadline = time.monotonic() + 5
    while (left := network.leftovers(lab)) and time.monotonic() < deadline:
        time.sleep(0.1)  # the kernel tears veth pairs of deleted namespaces down asynchronously
    if left:
        raise LabError(f"down left these behind: {', '.join(left)}")
    log("down: no lab namespace, process, link, address or route left")


def status(lab: Lab, as_json: bool) -> int:
    report = health(lab)
    healthy = is_healthy(lab)
    if as_json:
        print(json.dumps({"healthy": healthy, "hosts": report}, indent=2))
    else:
        for name, checks in report.items():
            print(f"{name:15} " + " ".join(f"{svc}:{'up' if ok else 'DOWN'}" for svc, ok in checks.items()))
        print("lab is up" if healthy else "lab is down or incomplete")
    return 0 if healthy else 3


def require_host(lab: Lab, address: str) -> Host:
    """The fail-closed guard: no traffic to a lab address unless the lab's namespaces exist."""
    host = lab.host_by_address(address)
    if host is None:
        raise LabError(f"{address} is not a lab host or address; refusing to connect")
    needed = [host.name, "gw"] if address in (*host.public_ipv4, *host.public_ipv6) else [host.name]
    missing = [name for name in needed if not network.netns_exists(name)]
    if missing or not network.link_exists("hmlab0"):
        raise LabError(
            f"the lab is down (network namespace {', '.join(missing) or 'bridge'} missing): "
            f"refusing to send traffic to {address}; run `lab/lab up` first"
        )
    return host


def connect(lab: Lab, address: str, port: int) -> None:
    """An SSH ProxyCommand: relay stdin/stdout to address:port once the guard passes."""
    require_host(lab, address)
    sock = socket.create_connection((address, port), timeout=10)
    sock.settimeout(None)
    selector = selectors.DefaultSelector()
    selector.register(sys.stdin.fileno(), selectors.EVENT_READ, "in")
    selector.register(sock, selectors.EVENT_READ, "sock")
    while True:
        for key, _events in selector.select():
            if key.data == "in":
                data = os.read(sys.stdin.fileno(), 65536)
                if not data:
                    sock.shutdown(socket.SHUT_WR)
                    selector.unregister(sys.stdin.fileno())
                    continue
                sock.sendall(data)
            else:
                data = sock.recv(65536)
                if not data:
                    return
                os.write(sys.stdout.fileno(), data)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="lab", description="The hosting.migration lab (run as root).")
    sub = parser.add_subparsers(dest="command", required=True)
    for name in ("up", "reset"):
        p = sub.add_parser(name, help="bring the lab up" if name == "up" else "down, then a fresh seeded lab")
        p.add_argument("--extra-accounts", type=int, default=int(os.environ.get("LAB_EXTRA_ACCOUNTS", "0")))
        p.add_argument("--big-db-mb", type=int, default=int(os.environ.get("LAB_BIG_DB_MB", "8")))
    sub.add_parser("down", help="remove every lab process, namespace, link, address and route")
    p = sub.add_parser("status", help="health of each host's services; exit 0 when up")
    p.add_argument("--json", action="store_true")
    sub.add_parser("demo", help="a fresh lab, then the eight steps for every account (make demo)")
    p = sub.add_parser("reinstall", help="wipe the client server and bring it back empty on an architecture")
    p.add_argument("host")
    p.add_argument("--architecture", default=None, help="default: the lab's new architecture")
    p = sub.add_parser("connect", help="SSH ProxyCommand with the fail-closed guard")
    p.add_argument("address")
    p.add_argument("port", type=int)
    p = sub.add_parser("exec", help="run a command inside a lab host")
    p.add_argument("host")
    p.add_argument("argv", nargs=argparse.REMAINDER)
    args = parser.parse_args(argv)

    if os.geteuid() != 0:
        print("lab: must run as root (namespaces, mounts, daemons)", file=sys.stderr)
        return 2
    lab = load()
    try:
        if args.command in ("up", "reset"):
            params = {"extra_accounts": args.extra_accounts, "big_db_mb": args.big_db_mb}
            if args.command == "reset":
                down(lab)
            up(lab, params)
        elif args.command == "down":
            down(lab)
        elif args.command == "demo":
            from .demo import run_all

            down(lab)
            up(lab, {"extra_accounts": 0, "big_db_mb": 8})
            run_all(lab)
        elif args.command == "reinstall":
            reinstall(lab, args.host, args.architecture or lab.seed["new_architecture"])
        elif args.command == "status":
            return status(lab, args.json)
        elif args.command == "connect":
            connect(lab, args.address, args.port)
        elif args.command == "exec":
            host = require_host(lab, args.host)
            command = args.argv[1:] if args.argv[:1] == ["--"] else args.argv
            os.execvp("nsenter", in_host(host.name, command or ["bash", "-l"]))
    except LabError as error:
        print(f"lab: {error}", file=sys.stderr)
        return 2
    return 0
