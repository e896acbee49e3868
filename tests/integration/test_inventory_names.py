"""The steps against an inventory whose hosts are named nothing like the lab's (issue 17): the lab's own machines,
reached at their own addresses, under the names a provider would give them. A play's `hosts:` never sees inventory
variables, so only the groups hosting_client / hosting_transit (playbooks/servers.yml) can point the plays at these
servers; before that fix, such an inventory ran every step on no host at all and exited 0.

Step 1 reports on bob with his databases test-restored on the test DB server, step 4 moves him to the transit server
under its alias, and the transit server's journal says so. bob is moved: the lab is reset afterwards."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml
from conftest import LAB, REPO, run
from lab_state import JOURNAL, in_host

# Long: two lab resets and two steps (the short suite's end-to-end test runs every step on the lab's names).
pytestmark = [pytest.mark.lab, pytest.mark.long]

SEED = yaml.safe_load((REPO / "lab" / "seed.yml").read_text(encoding="utf-8"))
LAB_INVENTORY = REPO / "inventories" / "lab"
# Lab host -> the name this inventory gives it (its address stays the lab's).
ALIASES = {
    "client": "web-old.example.net",
    "transit": "web-new.example.net",
    "testdb": "dbcheck.example.net",
    "gw": "edge-gw.example.net",
}
GROUPS = {"hosting_client": "client", "hosting_transit": "transit", "test_db_servers": "testdb", "routers": "gw"}


def lab_host_vars() -> dict[str, dict]:
    """Every host of the lab inventory with its variables, from whichever group (or child group) defines them."""
    found: dict[str, dict] = {}

    def walk(group):
        for name, variables in (group.get("hosts") or {}).items():
            found.setdefault(name, {}).update(variables or {})
        for child in (group.get("children") or {}).values():
            walk(child or {})

    walk(yaml.safe_load((LAB_INVENTORY / "hosts.yml").read_text(encoding="utf-8"))["all"])
    return found


def write_renamed_inventory(root: Path) -> Path:
    """The lab's hosts under ALIASES' names in root: the lab's host variables and group_vars, with the lab's
    command named absolutely (the copy is outside the checkout)."""
    host_vars = lab_host_vars()

    def group(lab_name):
        return {"hosts": {ALIASES[lab_name]: host_vars[lab_name]}}

    inventory = {"all": {"children": {
        "hosting_servers": {"children": {name: group(GROUPS[name]) for name in ("hosting_client", "hosting_transit")}},
        "dns_servers": {"hosts": {name: host_vars[name] for name in ("dns", "thirdparty-dns")}},
        **{name: group(GROUPS[name]) for name in ("test_db_servers", "routers")},
    }}}  # fmt: skip
    (root / "hosts.yml").write_text(yaml.safe_dump(inventory, sort_keys=False), encoding="utf-8")
    (root / "group_vars" / "all").mkdir(parents=True)
    for path in (LAB_INVENTORY / "group_vars" / "all").glob("*.yml"):
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
        if "hosting_lab_command" in data:
            data["hosting_lab_command"] = str(LAB)
        (root / "group_vars" / "all" / path.name).write_text(yaml.safe_dump(data), encoding="utf-8")
    return root


@pytest.fixture(scope="module")
def renamed(lab, tmp_path_factory):
    """A fresh lab, transit with the client's runtimes (what step 3 installs), and the renamed inventory. The lab is
    reset afterwards: bob has moved."""
    run([LAB, "reset"])
    in_host("transit", "mkdir -p /opt/hosting/langs && cp -a /opt/hosting/packages/2020/. /opt/hosting/langs/")
    yield write_renamed_inventory(tmp_path_factory.mktemp("renamed"))
    run([LAB, "reset"])


def playbook(inventory, name, *args):
    return run(["ansible-playbook", "-i", inventory, f"playbooks/{name}", *args])


def test_the_plays_run_on_the_renamed_servers(renamed):
    listed = run(["ansible-playbook", "-i", renamed, "playbooks/step4_migrate.yml", "--list-hosts", "-e",
                  "account=bob"]).stdout  # fmt: skip
    assert ALIASES["transit"] in listed and "hosts (0)" not in listed, listed


def test_step1_reports_on_bob_from_the_renamed_servers(renamed, tmp_path):
    proc = playbook(renamed, "step1_prepare.yml", "-e", "account=bob", "-e", f"hosting_report_dir={tmp_path}")
    (report_file,) = tmp_path.glob("step1_*.json")
    report = json.loads(report_file.read_text(encoding="utf-8"))
    assert (report["client_server"], report["transit_server"], report["test_db_server"]) == (
        ALIASES["client"], ALIASES["transit"], ALIASES["testdb"]), proc.stdout  # fmt: skip
    bob = report["accounts"]["bob"]
    # Each of bob's databases listed and test-restored on the test DB server (reached under its alias).
    seeded = sorted((d["engine"], d["name"]) for d in SEED["accounts"]["bob"]["databases"])
    assert sorted((d["engine"], d["database"]) for d in bob["databases"]) == seeded, bob
    assert bob["databases_tested"] is True and all("ok" in d for d in bob["databases"]), bob
    # The transit server (by its alias) answered for its free space.
    assert isinstance(bob["disk"]["transit_free_bytes"], int) and bob["disk"]["transit_free_bytes"] > 0, bob


def test_step4_moves_bob_to_the_transit_server_under_its_alias(renamed):
    proc = playbook(renamed, "step4_migrate.yml", "-e", "account=bob")
    assert f"bob: now on {ALIASES['transit']}" in proc.stdout, proc.stdout
    state = json.loads(in_host("transit", f"cat {JOURNAL}/accounts/bob/state.json").stdout)
    assert (state["location"], state["status"]) == (ALIASES["transit"], "done"), state
    client_state = json.loads(in_host("client", f"cat {JOURNAL}/accounts/bob/state.json").stdout)
    assert client_state["location"] == ALIASES["transit"], client_state
