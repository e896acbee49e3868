"""The AWX job templates and workflow of awx/controller_objects.yml, run through ansible-runner against the lab with
the secrets injected by the credential types (tests/awx_job.py does what AWX does for a job), from an inventory
that holds none of what the credentials inject (issue 6).

- Survey answers AWX would refuse are refused; answers it accepts but the modules' account rule refuses fail the
  job at its first check, before any task changes anything.
- The workflow's nodes, in order, carry a freshly seeded lab through steps 1 -> 8 (with the customers' fixes at
  the approval node, as the demo makes them): every job successful, its events complete, and afterwards every
  site answers through the client's addresses.
- No secret (DB admin password, TSIG secret, SSH private key, the accounts' database passwords) appears in any
  file of any job's artifacts, in any encoding the artifacts use.
"""

from __future__ import annotations

import json
import shutil
import stat

import awx_job
import pytest
import yaml
from conftest import LAB, REPO, run
from hostinglab import demo
from lab_state import http

pytestmark = pytest.mark.lab

INVENTORY = REPO / "inventories" / "lab"
STATE = "/srv/hosting-lab/controller"


def injected_names() -> set[str]:
    return {name for ct in awx_job.OBJECTS["hosting_awx_credential_types"] for name in ct["injectors"]["extra_vars"]}


@pytest.fixture(scope="module")
def awx(lab, tmp_path_factory):
    """The AWX side of the lab: an inventory stripped of every variable the credentials inject, the credentials'
    inputs (the lab's real secrets), and a launcher that gives each job its own private data directory."""
    root = tmp_path_factory.mktemp("awx")
    inventory = root / "inventory"
    shutil.copytree(INVENTORY, inventory)
    stripped = set()
    for path in (inventory / "group_vars" / "all").glob("*.yml"):
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
        stripped |= data.keys() & injected_names()
        data = {key: value for key, value in data.items() if key not in injected_names()}
        # The copy does not sit in the checkout, so the lab's command (ProxyCommand, reinstall) is named absolutely.
        if "hosting_lab_command" in data:
            data["hosting_lab_command"] = str(LAB)
        path.write_text(yaml.safe_dump(data), encoding="utf-8")
    assert {"hosting_db_admin_password", "hosting_tsig_secret", "ansible_ssh_private_key_file"} <= stripped

    key = (f"{STATE}/id_ed25519", f"{STATE}/known_hosts")
    with open(key[0], encoding="utf-8") as private, open(key[1], encoding="utf-8") as known:
        ssh_key, known_hosts = private.read(), known.read()
    credentials = {
        "hosting.migration database admin": {"username": lab.vars["hosting_db_admin_user"],
                                             "password": lab.vars["hosting_db_admin_password"]},
        "hosting.migration TSIG key": {"key_name": lab.vars["hosting_tsig_key_name"],
                                       "algorithm": lab.vars["hosting_tsig_algorithm"],
                                       "secret": lab.vars["hosting_tsig_secret"]},
        "hosting.migration SSH": {"username": "root", "ssh_key_data": ssh_key, "known_hosts": known_hosts},
    }  # fmt: skip
    secrets = [lab.vars["hosting_db_admin_password"], lab.vars["hosting_tsig_secret"]]
    secrets += [line for line in ssh_key.splitlines() if len(line) >= 20 and "PRIVATE KEY" not in line]
    secrets += [user["password"] for account in lab.seed["accounts"].values() for user in account["db_users"]]
    jobs = []

    def launch(template, answers=None, **options):
        job = awx_job.launch(template, private_data_dir=root / f"job{len(jobs) + 1:02d}", inventory=inventory,
                             credentials=credentials, answers=answers, **options)  # fmt: skip
        jobs.append(job)
        return job

    launch.jobs = jobs
    launch.secrets = secrets
    launch.root = root
    return launch


def assert_successful(job):
    assert (job.status, job.rc) == ("successful", 0), f"{job.template}: {job.failed_tasks()}\n{job.stdout[-3000:]}"
    kinds = [event["event"] for event in job.events if event["event"] != "verbose"]  # -v lines come first
    assert kinds[0] == "playbook_on_start" and "playbook_on_stats" in kinds, f"{job.template}: events incomplete"
    # The job's stdout artifact is its events' stdout, in order: what AWX shows is what the events hold.
    counters = [event["counter"] for event in job.events]
    assert counters == sorted(counters) == list(range(1, len(counters) + 1)), f"{job.template}: events missing"
    from_events = "\n".join(event["stdout"] for event in job.events if event.get("stdout"))
    assert lines(from_events) == lines(job.stdout), f"{job.template}: stdout and events differ"


def lines(text):
    """Non-blank lines: events and the stdout file put different blank lines between tasks."""
    return [line for line in text.replace("\r", "").splitlines() if line.strip()]


def changed_events(job):
    return [event for event in job.events
            if event["event"] == "runner_on_ok" and event["event_data"].get("res", {}).get("changed")]  # fmt: skip


def test_survey_answers_awx_refuses():
    step4 = awx_job.job_template("hosting.migration step 4 - migrate accounts")["survey"]
    rollback = awx_job.job_template("hosting.migration rollback - one account home")["survey"]
    for spec, answers in ((step4, {"accounts": "alice", "concurrency": 0}),
                          (step4, {"accounts": "alice", "concurrency": "4; id"}),
                          (step4, {"accounts": "a"}),
                          (rollback, {"account": "a" * 33}),
                          (rollback, {})):  # fmt: skip
        with pytest.raises(awx_job.SurveyError):
            awx_job.survey_vars(spec, answers)
    assert awx_job.survey_vars(step4, {"accounts": "alice,bob"}) == {"accounts": "alice,bob", "concurrency": 4}


@pytest.mark.parametrize(
    ("template", "answers"),
    [
        ("hosting.migration step 4 - migrate accounts", {"accounts": "alice;touch /tmp/pwned"}),
        ("hosting.migration step 4 - migrate accounts", {"accounts": "alice,{{ lookup('pipe', 'id') }}"}),
        ("hosting.migration step 7 - relocate accounts", {"accounts": "../etc"}),
        ("hosting.migration rollback - one account home", {"account": "-rf"}),
        (
            "hosting.migration site language version",
            {"account": "carol", "domain": "carol-blog.test;id", "version": "8.1"},
        ),
    ],
)
def test_hostile_survey_answers_fail_the_job_before_any_change(awx, template, answers):
    job = awx(template, answers)
    assert job.status == "failed", job.stdout[-2000:]
    assert job.failed_tasks(), job.stdout[-2000:]
    assert not changed_events(job), f"{template}: changed something before refusing"
    # Launch-time answers are never templated: the lookup stays text and nothing ran it.
    assert "uid=" not in job.stdout and not (REPO / "pwned").exists()


def test_workflow_carries_the_lab_through_the_eight_steps(awx, lab):
    run([LAB, "reset"])
    workflow = awx_job.OBJECTS["hosting_awx_workflow"]
    answers = awx_job.survey_vars(workflow["survey"], {"accounts": "all", "concurrency": 4})
    # Each node runs only after the one before it succeeded: a chain through every node.
    nodes = {node["identifier"]: node for node in workflow["nodes"]}
    order = [workflow["nodes"][0]["identifier"]]
    while nodes[order[-1]]["related"]["success_nodes"]:
        order.append(nodes[order[-1]]["related"]["success_nodes"][0]["identifier"])
    assert len(order) == len(nodes)

    for identifier in order:
        template = nodes[identifier]["unified_job_template"]
        if template["type"] == "workflow_approval":
            # What the customers do before support approves (step 1's blockers), as `make demo` does it.
            for account, domain, version in (("carol", "carol-blog.test", "8.1"), ("bob", "bobs-garden.test", "3.11")):
                fix = awx("hosting.migration site language version",
                          {"account": account, "domain": domain, "version": version})  # fmt: skip
                assert_successful(fix)
            demo.fix_carol_database(lab)
            demo.rehash_postgresql_passwords(lab)
            continue
        # Support raises the verbosity of a job to see why it is slow: -vvv must not show a secret either.
        assert_successful(awx(template["name"], answers, verbosity=3 if identifier == "step4" else 0))

    for account in lab.seed["accounts"].values():
        for site in account["sites"]:
            status, page = http(site["domain"], address=lab.hosts["client"].public_ipv4[0])
            assert (status, f"<title>{site['title']}</title>" in page) == (200, True), site["domain"]


def encodings(secret):
    """The forms a secret takes in the artifacts: as is, quoted by the YAML result format of stdout, and either of
    those inside a JSON string (events), once or twice (an event's stdout inside its JSON)."""
    forms = {secret, secret.replace("'", "''")}
    for _depth in range(2):
        forms |= {json.dumps(form)[1:-1] for form in forms}
    return forms


def leaks_in(directory, secrets, root):
    found = []
    for path in sorted(directory.rglob("*")):
        if path.is_file():
            text = path.read_text(encoding="utf-8", errors="replace")
            found += [f"{path.relative_to(root)}: {secret[:4]}…" for secret in secrets
                      if any(form in text for form in encodings(secret))]  # fmt: skip
    return found


def test_no_secret_in_any_artifact(awx):
    assert len(awx.jobs) >= 10, "the workflow's jobs ran first"
    leaks = []
    for job in awx.jobs:
        env = job.artifacts.parent.parent / "env"
        injected = [path for path in env.iterdir() if path.name not in ("extravars", "cmdline")]
        for path in injected:
            assert stat.S_IMODE(path.stat().st_mode) & 0o077 == 0, f"{path} readable by others"
        # The search finds what is there: the credentials' own files under env/ hold the injected secrets.
        assert len(leaks_in(env, awx.secrets[:3], awx.root)) == 3, f"{env}: the injected secrets not found"
        leaks += leaks_in(job.artifacts, awx.secrets, awx.root)
    assert not leaks, "\n".join(leaks)
