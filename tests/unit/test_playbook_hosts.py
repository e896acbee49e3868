"""Which hosts each playbook's plays run on, as ansible-playbook itself resolves them (issue 17): a play's `hosts:` is
templated before any host is chosen, so it never sees inventory variables; the plays must find the client and the
transit server through the inventory groups (playbooks/servers.yml), whatever the hosts are called. No lab needed:
`--list-hosts` connects to nothing, and the refusals happen on localhost before any server is reached."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
# The ansible-playbook of the virtualenv running the tests (.venv/bin/pytest: .venv/bin/ansible-playbook).
ANSIBLE_PLAYBOOK = Path(sys.executable).with_name("ansible-playbook")
NOT_STEPS = ("lab_smoke.yml", "servers.yml")  # lab_smoke targets hosting_servers; servers.yml is imported

# The hosts each play of a playbook runs on, in play order: the servers play on localhost, then the step's plays.
PLAYS = {
    "step1_prepare.yml": ["localhost", "client"],
    "step2_transit_request.yml": ["localhost", "client"],
    "step3_transit_install.yml": ["localhost", "transit"],
    "step4_migrate.yml": ["localhost", "transit"],
    "step5_verify.yml": ["localhost", "transit"],
    "step6_reinstall.yml": ["localhost", "transit", "client"],
    "step7_relocate.yml": ["localhost", "client"],
    "step8_finish.yml": ["localhost", "transit"],
    "rollback.yml": ["localhost", "client"],
    "site_version.yml": ["localhost", "transit"],
}
# Enough for every playbook to parse (--list-hosts runs no task).
EXTRA = ["-e", "account=alice", "-e", "accounts=alice", "-e", "domain=alice-shop.test", "-e", "version=8.1"]

# Hosts named nothing like the lab's, in TEST-NET-1: nothing answers there, should anything try.
ODD = {
    "client": "old-box.hosting.example",
    "client2": "old-box-2.hosting.example",
    "transit": "spare-7.hosting.example",
    "test_db": "tdb.hosting.example",
    "router": "edge-gw.hosting.example",
}


def inventory(client=("client",), transit=("transit",), test_db=("test_db",), router=("router",)) -> dict:
    """An inventory of ODD's hosts: each argument lists the keys of the hosts of that group (None: no group)."""
    address = {key: f"192.0.2.{200 + index}" for index, key in enumerate(ODD)}

    def group(keys):
        return {"hosts": {ODD[key]: {"ansible_host": address[key]} for key in keys}}

    servers = {name: group(keys) for name, keys in (("hosting_client", client), ("hosting_transit", transit))
               if keys is not None}  # fmt: skip
    children = {"hosting_servers": {"children": servers}}
    children.update({name: group(keys) for name, keys in (("test_db_servers", test_db), ("routers", router))
                     if keys is not None})  # fmt: skip
    return {"all": {"children": children}}


def ansible_playbook(inventory_path, playbook, *args) -> subprocess.CompletedProcess:
    return subprocess.run(
        [str(ANSIBLE_PLAYBOOK), "-i", str(inventory_path), str(playbook), *args],
        cwd=REPO,
        capture_output=True,
        text=True,
        env={**os.environ, "ANSIBLE_CONFIG": str(REPO / "ansible.cfg"), "ANSIBLE_TIMEOUT": "5"},
        timeout=120,
        check=False,
    )


def listed_hosts(output: str) -> list[list[str]]:
    """--list-hosts output -> the hosts of each play, in play order."""
    plays: list[list[str]] = []
    for line in output.splitlines():
        if re.match(r"\s+play #\d+ ", line):
            plays.append([])
        elif plays and re.match(r"\s{6}\S", line):
            plays[-1].append(line.strip())
    return plays


@pytest.fixture(scope="module")
def inventories(tmp_path_factory) -> dict[str, tuple[Path, dict[str, str]]]:
    """name -> (inventory path, the host each server role should resolve to)."""
    root = tmp_path_factory.mktemp("inventories")
    odd = root / "odd.yml"
    odd.write_text(yaml.safe_dump(inventory(), sort_keys=False), encoding="utf-8")
    return {
        "example": (REPO / "inventories" / "example",
                    {"client": "srv1.provider.example", "transit": "transit1.provider.example"}),
        "lab": (REPO / "inventories" / "lab", {"client": "client", "transit": "transit"}),
        "odd": (odd, {"client": ODD["client"], "transit": ODD["transit"]}),
    }  # fmt: skip


@pytest.fixture(scope="module")
def listings(inventories) -> dict[tuple[str, str], subprocess.CompletedProcess]:
    """(inventory name, playbook) -> its --list-hosts run; all of them at once (each costs a second of start-up)."""
    cases = [(name, playbook) for name in inventories for playbook in PLAYS]
    with ThreadPoolExecutor(max_workers=8) as pool:
        runs = pool.map(lambda case: ansible_playbook(inventories[case[0]][0], REPO / "playbooks" / case[1],
                                                      "--list-hosts", *EXTRA), cases)  # fmt: skip
        return dict(zip(cases, runs, strict=True))


def test_every_playbook_on_the_servers_is_listed_here():
    assert sorted(p.name for p in (REPO / "playbooks").glob("*.yml") if p.name not in NOT_STEPS) == sorted(PLAYS)


@pytest.mark.parametrize("playbook", sorted(PLAYS))
@pytest.mark.parametrize("inventory_name", ["example", "lab", "odd"])
def test_each_play_runs_on_its_server_whatever_the_hosts_are_called(listings, inventories, inventory_name, playbook):
    run = listings[(inventory_name, playbook)]
    assert run.returncode == 0, run.stderr
    roles = inventories[inventory_name][1] | {"localhost": "localhost"}
    assert listed_hosts(run.stdout) == [[roles[role]] for role in PLAYS[playbook]], run.stdout + run.stderr


@pytest.fixture(scope="module")
def two_clients(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("two_clients") / "hosts.yml"
    path.write_text(yaml.safe_dump(inventory(client=("client", "client2")), sort_keys=False), encoding="utf-8")
    return path


@pytest.mark.parametrize("playbook", ["step4_migrate.yml", "step6_reinstall.yml", "rollback.yml"])
def test_an_extra_var_picks_the_client_of_a_group_of_several(two_clients, playbook):
    run = ansible_playbook(two_clients, REPO / "playbooks" / playbook, "--list-hosts", *EXTRA,
                           "-e", f"hosting_client_server={ODD['client2']}")  # fmt: skip
    roles = {"localhost": "localhost", "client": ODD["client2"], "transit": ODD["transit"]}
    assert listed_hosts(run.stdout) == [[roles[role]] for role in PLAYS[playbook]], run.stdout + run.stderr


SHOW = """
- name: Find the servers
  ansible.builtin.import_playbook: {servers}
  vars:
    servers_extra: [test_db, router]

- name: Show the names each host was given
  hosts: "{{{{ hosting_client_server | default('hosting_client', true) }}}},{{{{ hosting_transit_server
    | default('hosting_transit', true) }}}},localhost"
  gather_facts: false
  tasks:
    - name: Show them
      ansible.builtin.debug:
        msg: "names {{{{ [hosting_client_server, hosting_transit_server, hosting_test_db_server, hosting_router]
          | join(' ') }}}}"
"""


def test_the_names_found_reach_localhost_the_client_and_the_transit_server(two_clients, tmp_path):
    show = tmp_path / "show.yml"
    show.write_text(SHOW.format(servers=REPO / "playbooks" / "servers.yml"), encoding="utf-8")
    run = ansible_playbook(two_clients, show, "-e", f"hosting_client_server={ODD['client2']}")
    assert run.returncode == 0, run.stdout + run.stderr
    names = " ".join(ODD[key] for key in ("client2", "transit", "test_db", "router"))
    shown = re.findall(r"ok: \[([^\]]+)\] =>\s+msg: names (.+)", run.stdout)
    assert sorted(shown) == sorted((host, names) for host in (ODD["client2"], ODD["transit"], "localhost")), run.stdout


# A real run of step 4 (not --list-hosts): refused on localhost, in one sentence, before any other play starts.
REFUSALS = [
    pytest.param(dict(transit=None), [],
                 "the inventory has no group hosting_transit: add it, holding the transit server", id="no-group"),
    pytest.param(dict(transit=()), [],
                 "group hosting_transit of the inventory is empty: put the transit server in it", id="empty-group"),
    pytest.param(dict(client=("client", "client2")), [],
                 f"group hosting_client holds several hosts ({ODD['client']}, {ODD['client2']}): name the client "
                 "server with -e hosting_client_server=NAME", id="several-hosts"),
    pytest.param({}, ["-e", "hosting_client_server=nowhere.example"],
                 "-e hosting_client_server=nowhere.example names no host of the inventory", id="unknown-host"),
    pytest.param({}, ["-e", f"hosting_client_server={ODD['transit']}"],
                 f"-e hosting_client_server={ODD['transit']} names a host outside group hosting_client "
                 f"({ODD['client']})", id="outside-group"),
    pytest.param(dict(transit=("client",)), [],
                 f"{ODD['client']} is both the client and the transit server: they must be two different hosts",
                 id="client-is-transit"),
]  # fmt: skip


@pytest.mark.parametrize(("groups", "args", "message"), REFUSALS)
def test_step4_refuses_an_ambiguous_inventory_before_any_server(tmp_path, groups, args, message):
    path = tmp_path / "hosts.yml"
    path.write_text(yaml.safe_dump(inventory(**groups), sort_keys=False), encoding="utf-8")
    run = ansible_playbook(path, REPO / "playbooks" / "step4_migrate.yml", "-e", "account=alice", *args)
    output = run.stdout + run.stderr
    assert run.returncode != 0, output
    assert message in " ".join(output.split()), output
    assert "PLAY [Step 4" not in output, output
    recap = output.split("PLAY RECAP")[1]
    assert re.findall(r"^(\S+)\s+: ok=", recap, re.MULTILINE) == ["localhost"], output


def test_site_version_refuses_on_naming_neither_server(tmp_path):
    """`-e on=NAME` picks the server whose registry site_version edits: a name outside the pair would match no host
    of a real inventory and change nothing, silently."""
    path = tmp_path / "hosts.yml"
    path.write_text(yaml.safe_dump(inventory(), sort_keys=False), encoding="utf-8")
    args = ["-e", "account=carol", "-e", "domain=carol-blog.test", "-e", "version=8.1", "-e", "on=client"]
    run = ansible_playbook(path, REPO / "playbooks" / "site_version.yml", *args)
    output = " ".join((run.stdout + run.stderr).split())
    assert run.returncode != 0 and f"-e on=client names neither the client server ({ODD['client']})" in output
    assert "PLAY [Switch a site" not in output
