"""awx/controller_objects.yml against the rest of the checkout: what the controller would run exists and takes the
variables the surveys and credentials give it, account questions agree with the modules' rule, no secret is a
survey answer, the workflow is steps 1 -> 8, and the loader gives every credential type its required inputs."""

from __future__ import annotations

import re
from pathlib import Path

import awx_job
import pytest
import yaml

from ansible_collections.hosting.migration.plugins.module_utils.account import (
    ACCOUNT_NAME_PATTERN,
    validate_account_name,
)

REPO = Path(__file__).resolve().parents[2]
OBJECTS = yaml.safe_load((REPO / "awx" / "controller_objects.yml").read_text(encoding="utf-8"))
TEMPLATES = OBJECTS["hosting_awx_job_templates"]
TYPES = OBJECTS["hosting_awx_credential_types"]
SECRET_WORDS = re.compile(r"password|secret|key_data|token|private", re.IGNORECASE)


def survey_accepts(question: dict, value: str) -> bool:
    # The emulation the integration tests launch jobs through (tests/awx_job.py) holds AWX's survey rules.
    try:
        awx_job.survey_vars([question], {question["variable"]: value})
    except awx_job.SurveyError:
        return False
    return True


def rule_accepts(name: str) -> bool:
    try:
        validate_account_name(name)
    except ValueError:
        return False
    return True


@pytest.mark.parametrize("template", TEMPLATES, ids=lambda t: t["playbook"])
def test_every_template_runs_a_playbook_that_uses_its_survey_variables(template):
    playbook = REPO / template["playbook"]
    assert playbook.is_file(), template["playbook"]
    text = playbook.read_text(encoding="utf-8")
    for question in template["survey"]:
        assert re.search(rf"\b{question['variable']}\b", text), f"{template['playbook']} ignores {question['variable']}"


def test_every_step_playbook_has_a_template():
    steps = sorted(p.relative_to(REPO).as_posix() for p in (REPO / "playbooks").glob("step*.yml"))
    assert steps == sorted(t["playbook"] for t in TEMPLATES if "/step" in t["playbook"])


ACCOUNT_TEMPLATES = [t for t in TEMPLATES if any(q["variable"] in ("account", "accounts") for q in t["survey"])]


@pytest.mark.parametrize("template", ACCOUNT_TEMPLATES, ids=lambda t: t["playbook"])
def test_account_questions_hold_the_modules_rule(template):
    """The survey can only bound lengths; the playbook applies the modules' pattern itself, before any change."""
    text = (REPO / template["playbook"]).read_text(encoding="utf-8")
    roles = re.findall(r"name: hosting\.migration\.(\w+)", text)
    sources = text + "".join((REPO / "roles" / r / "tasks" / "main.yml").read_text(encoding="utf-8") for r in roles)
    assert ACCOUNT_NAME_PATTERN.rstrip("$") in sources, f"{template['playbook']} does not apply {ACCOUNT_NAME_PATTERN}"
    question = next((q for q in template["survey"] if q["variable"] == "account"), None)
    if question is not None:
        for length in range(1, 40):
            name = "a" * length
            assert survey_accepts(question, name) == rule_accepts(name), f"{length} characters"


def test_no_secret_is_a_survey_answer():
    questions = [q for t in [*TEMPLATES, OBJECTS["hosting_awx_workflow"]] for q in t["survey"]]
    assert questions
    for question in questions:
        assert question["type"] != "password" and not SECRET_WORDS.search(question["variable"]), question


def test_credential_types_mark_their_secrets_and_inject_what_the_inventory_names():
    example = "".join(p.read_text(encoding="utf-8") for p in (REPO / "inventories").rglob("*.yml"))
    for credential_type in TYPES:
        for field in credential_type["inputs"]["fields"]:
            assert field.get("secret", False) == bool(SECRET_WORDS.search(field["id"])), field
        for variable in credential_type["injectors"]["extra_vars"]:
            # Each injected variable replaces one an inventory sets: the same name, so extra vars win.
            assert re.search(rf"^{variable}:", example, re.MULTILINE), f"{variable} is no inventory variable"


def test_loader_gives_each_credential_type_its_required_inputs():
    loader = yaml.safe_load((REPO / "awx" / "load_controller.yml").read_text(encoding="utf-8"))
    task = next(t for t in loader[0]["tasks"] if "awx.awx.credential" in t)
    inputs = task["vars"]["__awx_credential_inputs"]
    assert task.get("no_log") is True
    assert sorted(inputs) == sorted(c["name"] for c in TYPES)
    for credential_type in TYPES:
        assert set(credential_type["inputs"]["required"]) <= set(inputs[credential_type["name"]])


def test_workflow_runs_steps_one_to_eight_in_order():
    names = {t["name"]: t["playbook"] for t in TEMPLATES}
    playbooks = [names.get(name, "approval") for name in awx_job.workflow_chain()]
    steps = [Path(p).stem.split("_")[0] for p in playbooks]
    assert steps == ["step1", "step2", "step3", "step4", "step5", "approval", "step6", "step7", "step5", "step8"]
