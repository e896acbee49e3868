"""The AWX job templates of awx/controller_objects.yml launched as AWX launches them (tests/awx_job.py), against
the lab, from an inventory that holds none of what the credentials inject (issue 6):

- survey answers AWX would refuse are refused;
- answers it accepts but the modules' account rule refuses fail the job at its first check, before any task
  changes anything, and nothing in them is ever templated;
- no secret appears in any file of those jobs' artifacts.

The eight steps themselves run as these jobs, in the workflow's order, in tests/integration/test_eight_steps.py."""

from __future__ import annotations

import awx_job
import pytest
from conftest import REPO

pytestmark = pytest.mark.lab

INVENTORY = REPO / "inventories" / "lab"
STATE = "/srv/hosting-lab/controller"


@pytest.fixture(scope="module")
def awx(lab, tmp_path_factory):
    return awx_job.AwxLab(lab, tmp_path_factory.mktemp("awx"))


def test_the_inventory_keeps_none_of_the_injected_secrets(awx):
    assert {"hosting_db_admin_password", "hosting_tsig_secret", "ansible_ssh_private_key_file"} <= awx.stripped
    inventory = "".join(p.read_text(encoding="utf-8") for p in awx.inventory.rglob("*.yml"))
    assert not [secret for secret in awx.secrets[:3] if secret in inventory]


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
    job = awx.launch(template, answers)
    assert job.status == "failed", job.stdout[-2000:]
    assert job.failed_tasks(), job.stdout[-2000:]
    assert not changed_events(job), f"{template}: changed something before refusing"
    # Launch-time answers are never templated: the lookup stays text and nothing ran it.
    assert "uid=" not in job.stdout and not (REPO / "pwned").exists()


def test_no_secret_in_the_artifacts_of_these_jobs(awx):
    assert len(awx.jobs) >= 5, "the hostile-answer jobs ran first"
    awx_job.assert_no_secret_in_artifacts(awx)
