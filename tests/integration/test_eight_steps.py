"""`make demo`'s sequence end to end on a fresh lab (issue 5), each step run as AWX runs it (issue 6: its job template
of awx/controller_objects.yml through ansible-runner, secrets injected by the credential types, in the workflow's
order, no secret in any artifact): between every two steps each seeded domain answers through the client server's
public IPv4 and IPv6 with its own page; each step's check job first changes nothing;
step 6 refuses while accounts are on the client; steps 4 and 7 both compare every database while its account runs
(no table hashed whole in a freeze); at the end every file, mail and row is the seeded data plus what
the test wrote on the way, every account's Unix user (passwd, shadow, groups) and crontab are the seeded ones where
it is served and its password logs in over SSH only there, bob's MX is 10/20, addresses and provider DNS records
are back, and the bill is right.

One test function on purpose: the steps are one migration, and a failure names the step it happened in."""

from __future__ import annotations

import calendar
import datetime
import json
from decimal import ROUND_HALF_UP, Decimal

import awx_job
import pytest
from conftest import LAB, REPO, run
from hostinglab import demo
from lab_state import (
    CRON_TICKS,
    JOURNAL,
    http,
    in_host,
    in_hosts,
    mariadb_rows,
    playbook,
    postgresql_rows,
    ssh_password_login,
    state_snapshot,
    tree_snapshot,
    unix_snapshot,
)

# The whole migration end to end (about 6 minutes): in the long suite, which CI runs after `make test`.
pytestmark = [pytest.mark.lab, pytest.mark.long]

ACCOUNTS = ("alice", "bob", "carol", "dave")
HOSTS = ("client", "transit")
PROVIDER_ZONES = ("alice-shop.test", "carol-blog.test", "dave-data.test")


def sites(lab):
    return {site["domain"]: site["title"] for account in lab.seed["accounts"].values() for site in account["sites"]}


def assert_every_site_answers(lab, when):
    client = lab.hosts["client"]
    for domain, title in sites(lab).items():
        for address in (client.public_ipv4[0], f"[{client.public_ipv6[0]}]"):
            status, page = http(domain, address=address)
            assert (status, f"<title>{title}</title>" in page) == (200, True), f"{when}: {domain} via {address}"


def world(lab, mariadb, postgresql):
    """What --check must leave alone: both servers' trees, maps, users, journals, runtimes and databases, the
    router's routes, the transit's addresses, and the DNS zones."""
    snap = state_snapshot(lab, mariadb, postgresql)
    scripts = {"routes": ("gw", "ip route; ip -6 route"), "transit_addresses": ("transit", "ip -o addr show dev lo")}
    for host in ("client", "transit"):
        scripts[host, "langs"] = (host, "find /opt/hosting -printf '%p %s %T@ %m\\n' | sort")
        scripts[host, "journal_times"] = (host, f"find {JOURNAL} -printf '%p %s %T@\\n' 2>/dev/null | sort")
    outputs = in_hosts(scripts)
    for host in ("client", "transit"):
        snap[host].update(langs=outputs[host, "langs"], journal_times=outputs[host, "journal_times"])
    snap.update(routes=outputs["routes"], transit_addresses=outputs["transit_addresses"])
    snap["dns"] = axfr(lab)
    return snap


def axfr(lab):
    zones = {zone: lab.hosts["dns"].ipv4 for zone in PROVIDER_ZONES}
    zones["bobs-garden.test"] = lab.hosts["thirdparty-dns"].ipv4
    return {zone: sorted(run(["dig", "+noall", "+answer", f"@{server}", zone, "AXFR"]).stdout.splitlines())
            for zone, server in zones.items()}  # fmt: skip


def without_soa(zones):
    return {zone: [line for line in lines if "\tSOA\t" not in line] for zone, lines in zones.items()}


def account_data(host, mariadb, postgresql, lab):
    data = {}
    for name in ACCOUNTS:
        data[name] = {"tree": set(tree_snapshot(host, name).splitlines()), "unix": unix_snapshot(host, name)}
        for database in lab.seed["accounts"][name]["databases"]:
            rows = mariadb_rows if database["engine"] == "mariadb" else postgresql_rows
            data[name][database["name"]] = rows(mariadb if database["engine"] == "mariadb" else postgresql,
                                                host, database["name"])  # fmt: skip
    return data


def write_on_transit(mariadb):
    """What the account owners do while their accounts live on the transit server."""
    in_host(
        "transit",
        "printf 'written on transit\\n' > /home/alice/files/e2e-note.txt && "
        "chown 2001:2001 /home/alice/files/e2e-note.txt && "
        "printf 'Subject: e2e\\n\\nmail received on transit\\n' > "
        "/var/mail/bob/hello/new/1800000000.e2e.transit && chown -R 2002:2002 /var/mail/bob/hello/new",
    )
    with mariadb("transit", database="alice_shop").cursor() as cursor:
        cursor.execute("INSERT INTO audit_log (at, message) VALUES ('2026-11-28 12:00:00', 'e2e write on transit')")


def assert_password_logins_only_on(lab, side):
    """Each account with a Unix password logs in over SSH on `side`'s address, and not on the other server's."""
    other = "transit" if side == "client" else "client"
    for name, account in lab.seed["accounts"].items():
        password = account.get("unix", {}).get("password")
        if password:
            assert ssh_password_login(lab.hosts[side].ipv4, name, password) == "shell", f"{name}: none on {side}"
            assert ssh_password_login(lab.hosts[other].ipv4, name, password) == "refused", f"{name}: on {other}"


def assert_cron_ticked_once_a_minute_on_one_server(lab):
    """Each account's minute tick (lab/seed.yml cron_tick: the minute and the host that ran it), carried with its
    home: the client's cron first, the transit's after step 4 (the client's again after step 7, if a minute turned
    since), never two servers in one minute; and the transit's copy, left at step 7's freeze, has nothing the
    client's lacks (its cron stopped there)."""
    for name in ACCOUNTS:
        ticks = {host: in_host(host, f"cat /home/{name}/{CRON_TICKS}").stdout.splitlines() for host in HOSTS}
        minutes = [line.split()[0] for line in ticks["client"]]
        assert minutes == sorted(set(minutes)), f"{name}: a minute ticked twice or out of order: {ticks['client']}"
        servers = [line.split()[1] for line in ticks["client"]]
        assert servers[:1] == ["client"] and "transit" in servers, f"{name}: cron did not follow: {ticks['client']}"
        left = ticks["transit"]
        assert ticks["client"][: len(left)] == left, f"{name}: transit ticked after step 7: {left[-3:]}"


def expected_bill(delivered, finished, monthly):
    """The bill computed independently: 14 free days from delivery (its day included), then per day the monthly
    price divided by that month's days, summed per month and rounded to cents."""
    first_billed = delivered + datetime.timedelta(days=14)
    per_month = {}
    day = first_billed
    while day <= finished:
        per_month[(day.year, day.month)] = per_month.get((day.year, day.month), 0) + 1
        day += datetime.timedelta(days=1)
    total = Decimal(0)
    for (year, month), days in per_month.items():
        share = Decimal(monthly) * days / calendar.monthrange(year, month)[1]
        total += share.quantize(Decimal("0.01"), rounding=ROUND_HALF_UP)
    return f"{total:.2f}", sum(per_month.values())


def as_awx_job(argv):
    """The job template and survey answers AWX would launch for `ansible-playbook PLAYBOOK -e k=v ...`."""
    answers = dict(arg.split("=", 1) for arg in argv[3::2])
    assert argv[2::2] == ["-e"] * len(answers), argv
    return argv[1], answers


def assert_verified_while_live():
    """Both ways, every database was compared while its account ran: no table hashed whole in a freeze (step 6
    prepares the reinstalled client's database servers for it as step 3 prepared both servers)."""
    for account in ACCOUNTS:
        for step in ("step4", "step7"):
            record = json.loads(
                in_host("transit", f"cat /var/lib/hosting-migration/results/{account}.{step}.json").stdout
            )
            hashed = {database: copied.get("hashed_in_freeze") for database, copied in record["databases"].items()}
            assert hashed and not any(hashed.values()), f"{account} {step}: tables hashed in the freeze: {hashed}"


def test_the_eight_steps_carry_every_account_there_and_back(lab, mariadb, postgresql, tmp_path):
    run([LAB, "reset"])
    # Each step runs as AWX runs it (issue 6): its job template through ansible-runner, the secrets injected by
    # the credential types into an inventory that holds none of them; first as a check job, then for real.
    awx = awx_job.AwxLab(lab, tmp_path)
    dns_before = without_soa(axfr(lab))
    routes_before = in_host("gw", "ip route; ip -6 route").stdout
    seeded = account_data("client", mariadb, postgresql, lab)
    assert_every_site_answers(lab, "before step 1")
    launched = []

    for name, step in demo.STEPS:
        if name.startswith("step 4"):
            refused = playbook("step6_reinstall.yml", check=False)
            assert refused.returncode != 0 and "not on transit yet" in refused.stdout, "step 6 must refuse"
        if name.startswith("step 6"):
            transit_view = account_data("transit", mariadb, postgresql, lab)
            assert_password_logins_only_on(lab, "transit")
        argv = getattr(step, "argv", None)
        if argv:
            template, answers = as_awx_job(argv)
            template = awx.template_for(template)
            before = world(lab, mariadb, postgresql)
            awx_job.assert_successful(awx.launch(template, answers, job_type="check"))
            assert world(lab, mariadb, postgresql) == before, f"{name}: the check job changed something"
            # Support raises a job's verbosity to see why it is slow: -vvv must not show a secret either.
            job = awx.launch(template, answers, verbosity=3 if name.startswith("step 4") else 0)
            awx_job.assert_successful(job)
            launched.append(template if name.startswith("step") else "approval")
        else:
            step(lab)
            launched.append("approval")
        assert_every_site_answers(lab, f"after {name}")
        if name.startswith("step 1"):
            report = json.loads(sorted((REPO / "reports").glob("step1_*.json"))[-1].read_text())
            carol = [b for b in report["accounts"]["carol"]["blockers"] if b["kind"] == "language"]
            assert (carol[0]["version"], carol[0]["replacement"]) == ("5.6", "8.1")
        if name.startswith("step 5:"):
            write_on_transit(mariadb)
        if name.startswith("step 7"):
            assert_verified_while_live()
    # The demo's order is the AWX workflow's, the customers' fixes where its approval node waits.
    demo_order = [t for i, t in enumerate(launched) if t != "approval" or launched[i - 1] != "approval"]
    assert demo_order == awx_job.workflow_chain()
    awx_job.assert_no_secret_in_artifacts(awx)

    # Nothing lost on the way to transit: what changed there is only what the test and carol wrote.
    for account in ACCOUNTS:
        removed = seeded[account]["tree"] - transit_view[account]["tree"]
        added = transit_view[account]["tree"] - seeded[account]["tree"]
        assert not removed, f"{account}: lost on transit: {sorted(removed)[:5]}"
        assert all("e2e" in line for line in added), f"{account}: unexpected on transit: {sorted(added)[:5]}"
        assert transit_view[account]["unix"] == seeded[account]["unix"], f"{account}: Unix user or crontab changed"
    assert transit_view["alice"]["alice_shop"]["audit_log"][0] == seeded["alice"]["alice_shop"]["audit_log"][0] + 1
    for account, databases in seeded.items():
        for database, tables in databases.items():
            if database == "tree" or database in ("alice_shop", "carol_blog"):
                continue
            assert transit_view[account][database] == tables, f"{database} changed on transit"

    # Home again: exactly what transit held, on the reinstalled client, and every database user logs in there
    # with its own password.
    assert account_data("client", mariadb, postgresql, lab) == transit_view
    assert_password_logins_only_on(lab, "client")
    assert_cron_ticked_once_a_minute_on_one_server(lab)
    for account in lab.seed["accounts"].values():
        for user in account["db_users"]:
            connect = mariadb if user["engine"] == "mariadb" else postgresql
            database = next(d["name"] for d in account["databases"] if d["engine"] == user["engine"])
            connect("client", user=user["name"], password=user["password"], database=database)  # or it raises
    mx = sorted(
        run(["dig", "+short", "@" + lab.hosts["thirdparty-dns"].ipv4, "bobs-garden.test", "MX"]).stdout.split("\n")
    )
    assert [line for line in mx if line] == ["10 mx1.provider.test.", "20 mx2.provider.test."]
    dns_after = without_soa(axfr(lab))
    dns_before["bobs-garden.test"] = [line for line in dns_before["bobs-garden.test"] if "srv1" not in line]
    assert dns_after == dns_before
    assert in_host("gw", "ip route; ip -6 route").stdout == routes_before
    assert "198.51.100.10" not in in_host("transit", "ip -o addr show dev lo").stdout

    final = json.loads((REPO / "reports" / "final_report.json").read_text())
    delivered = datetime.date.fromisoformat(final["bill"]["delivered"])
    assert final["bill"]["amount"] == "0.00" and final["bill"]["billable_days"] == 0
    assert {row["account"] for row in final["accounts"]} == set(ACCOUNTS)
    assert all(row["downtime_step4_s"] and row["downtime_step7_s"] for row in final["accounts"])
    finished = delivered + datetime.timedelta(days=45)
    playbook("step8_finish.yml", "-e", f"finish_date={finished.isoformat()}")
    bill = json.loads((REPO / "reports" / "final_report.json").read_text())["bill"]
    amount, days = expected_bill(delivered, finished, lab.vars["hosting_client_monthly_price"])
    assert (bill["amount"], bill["billable_days"]) == (amount, days)
    assert "<svg" in (REPO / "reports" / "final_report.html").read_text()
