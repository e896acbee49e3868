"""Launch a job template of awx/controller_objects.yml the way AWX launches it, without a controller.

What AWX does for a job, and this module does too: survey answers are checked against the template's survey
(required, min/max, choices; answers to no question are dropped) and written to env/extravars marked `!unsafe`
(launch-time values are never templated); each credential's injectors are rendered in a Jinja sandbox with the
credential's inputs: `file` templates become 0600 files under env/ (`tower.filename.NAME`), `extra_vars` a
0400 YAML file under env/ (also `!unsafe`) passed as `-e @file`; then ansible-runner runs the project's playbook
from the checkout (its ansible.cfg) against the given inventory. The job's artifacts are what AWX keeps and
shows: artifacts/<ident>/ (command, status, rc, stdout, job_events/).
"""

from __future__ import annotations

import json
import os
import shlex
import shutil
import stat
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import ansible_runner
import yaml
from jinja2.sandbox import ImmutableSandboxedEnvironment

REPO = Path(__file__).resolve().parents[1]
OBJECTS = yaml.safe_load((REPO / "awx" / "controller_objects.yml").read_text(encoding="utf-8"))


class SurveyError(ValueError):
    """AWX refuses the launch: an answer does not fit the survey."""


def job_template(name: str) -> dict:
    return next(jt for jt in OBJECTS["hosting_awx_job_templates"] if jt["name"] == name)


def credential_type(name: str) -> dict:
    return next(ct for ct in OBJECTS["hosting_awx_credential_types"] if ct["name"] == name)


def workflow_chain() -> list[str]:
    """The workflow's nodes in the order they run: job template names, `approval` for an approval node."""
    nodes = OBJECTS["hosting_awx_workflow"]["nodes"]
    by_id = {node["identifier"]: node for node in nodes}
    chain = [nodes[0]["identifier"]]
    while by_id[chain[-1]]["related"]["success_nodes"]:
        chain.append(by_id[chain[-1]]["related"]["success_nodes"][0]["identifier"])
    if len(chain) != len(nodes):
        raise AssertionError("the workflow's nodes are not all on one chain")
    templates = [by_id[i]["unified_job_template"] for i in chain]
    return [t["name"] if t["type"] == "job_template" else "approval" for t in templates]


def survey_vars(spec: list[dict], answers: dict) -> dict:
    """The extra vars AWX derives from a survey and the launch's answers, or SurveyError as AWX refuses them."""
    result = {}
    for question in spec:
        name = question["variable"]
        if name in answers:
            value = answers[name]
        elif question.get("default") not in (None, ""):
            value = question["default"]
        elif question.get("required"):
            raise SurveyError(f"{name}: an answer is required")
        else:
            continue
        kind = question["type"]
        if kind in ("text", "textarea", "password"):
            if not isinstance(value, str) or not question.get("min", 0) <= len(value) <= question.get("max", 1024):
                raise SurveyError(f"{name}: {question.get('min', 0)} to {question.get('max', 1024)} characters")
        elif kind == "integer":
            if isinstance(value, bool) or not isinstance(value, int) or not question["min"] <= value <= question["max"]:
                raise SurveyError(f"{name}: an integer from {question['min']} to {question['max']}")
        elif kind == "multiplechoice":
            if value not in question["choices"]:
                raise SurveyError(f"{name}: one of {question['choices']}")
        else:
            raise SurveyError(f"{name}: survey type {kind} is not emulated")
        result[name] = value
    return result


class _Unsafe(str):
    pass


class _UnsafeDumper(yaml.SafeDumper):
    pass


_UnsafeDumper.add_representer(_Unsafe, lambda dumper, value: dumper.represent_scalar("!unsafe", str(value)))


def unsafe_yaml(data: dict) -> str:
    """YAML with every string tagged !unsafe, as AWX writes launch-time and credential extra vars."""

    def mark(node):
        if isinstance(node, dict):
            return {key: mark(value) for key, value in node.items()}
        if isinstance(node, list):
            return [mark(value) for value in node]
        return _Unsafe(node) if isinstance(node, str) else node

    return yaml.dump(mark(data), Dumper=_UnsafeDumper, default_flow_style=False)


def _private_file(directory: Path, text: str, mode: int) -> Path:
    handle, path = tempfile.mkstemp(dir=directory)
    with os.fdopen(handle, "w", encoding="utf-8") as out:
        out.write(text)
    os.chmod(path, mode)
    return Path(path)


def inject(type_name: str, inputs: dict, env_dir: Path) -> Path | None:
    """Render one credential's injectors into env_dir; returns the extra vars file to pass as -e @file."""
    injectors = credential_type(type_name)["injectors"]
    sandbox = ImmutableSandboxedEnvironment()
    filenames = {}
    for key, template in injectors.get("file", {}).items():
        text = sandbox.from_string(template).render(**inputs)
        # ssh refuses a key without its final newline, as AWX knows (it appends one to OpenSSH keys).
        if "PRIVATE KEY-----" in text and not text.endswith("\n"):
            text += "\n"
        filenames[key.split(".", 1)[1]] = str(_private_file(env_dir, text, stat.S_IRUSR | stat.S_IWUSR))
    namespace = {**inputs, "tower": {"filename": filenames}}
    extra_vars = {name: sandbox.from_string(template).render(**namespace)
                  for name, template in injectors.get("extra_vars", {}).items()}  # fmt: skip
    if not extra_vars:
        return None
    return _private_file(env_dir, unsafe_yaml(extra_vars), stat.S_IRUSR)


@dataclass
class Job:
    template: str
    status: str
    rc: int
    artifacts: Path
    events: list[dict] = field(default_factory=list)

    @property
    def stdout(self) -> str:
        return (self.artifacts / "stdout").read_text(encoding="utf-8", errors="replace")

    def failed_tasks(self) -> list[str]:
        return [e["event_data"].get("task", "") for e in self.events if e["event"] == "runner_on_failed"
                and not e["event_data"].get("ignore_errors")]  # fmt: skip


def launch(template_name: str, *, private_data_dir: Path, inventory: Path, credentials: dict[str, dict],
           answers: dict | None = None, job_type: str = "run", verbosity: int = 0) -> Job:  # fmt: skip
    """Run one job of the named template; credentials maps each credential type name to its inputs."""
    template = job_template(template_name)
    extra_vars = survey_vars(template["survey"], answers or {})
    # AWX gives every job a fresh private data directory; one per job keeps the artifacts apart.
    private_data_dir.mkdir(parents=True, exist_ok=False)
    env_dir = private_data_dir / "env"
    env_dir.mkdir(mode=0o700)
    (env_dir / "extravars").write_text(unsafe_yaml(extra_vars), encoding="utf-8")
    cmdline = []
    for type_name, inputs in credentials.items():
        injected = inject(type_name, inputs, env_dir)
        if injected:
            cmdline += ["-e", f"@{injected}"]
    if job_type == "check":
        cmdline.append("--check")
    runner = ansible_runner.run(
        private_data_dir=str(private_data_dir),
        project_dir=str(REPO),
        playbook=template["playbook"],
        inventory=str(inventory),
        cmdline=shlex.join(cmdline),
        verbosity=verbosity,
        ident="job",
        quiet=True,
    )
    return Job(template_name, runner.status, runner.rc, private_data_dir / "artifacts" / "job", list(runner.events))


class AwxLab:
    """The AWX side of the lab: an inventory copied from inventories/lab without any variable the credential types
    inject, the credentials' inputs (the lab's real secrets), and jobs launched each in its own private data
    directory under `root`."""

    def __init__(self, lab, root: Path):
        self.root = root
        self.inventory = root / "inventory"
        shutil.copytree(REPO / "inventories" / "lab", self.inventory)
        injected = {name for ct in OBJECTS["hosting_awx_credential_types"] for name in ct["injectors"]["extra_vars"]}
        self.stripped: set[str] = set()
        for path in (self.inventory / "group_vars" / "all").glob("*.yml"):
            data = yaml.safe_load(path.read_text(encoding="utf-8"))
            self.stripped |= data.keys() & injected
            data = {key: value for key, value in data.items() if key not in injected}
            # The copy is not in the checkout: the lab's command (ProxyCommand, reinstall) is named absolutely.
            if "hosting_lab_command" in data:
                data["hosting_lab_command"] = str(REPO / "lab" / "lab")
            path.write_text(yaml.safe_dump(data), encoding="utf-8")
        state = Path(lab.vars["hosting_lab_state_dir"]) / "controller"
        ssh_key = (state / "id_ed25519").read_text(encoding="utf-8")
        self.credentials = {
            "hosting.migration database admin": {"username": lab.vars["hosting_db_admin_user"],
                                                 "password": lab.vars["hosting_db_admin_password"]},
            "hosting.migration TSIG key": {"key_name": lab.vars["hosting_tsig_key_name"],
                                           "algorithm": lab.vars["hosting_tsig_algorithm"],
                                           "secret": lab.vars["hosting_tsig_secret"]},
            "hosting.migration mail probe": {"username": lab.vars["hosting_mail_probe_user"],
                                             "password": lab.vars["hosting_mail_probe_password"]},
            "hosting.migration SSH": {"username": "root", "ssh_key_data": ssh_key,
                                      "known_hosts": (state / "known_hosts").read_text(encoding="utf-8")},
        }  # fmt: skip
        # Every secret a job could leak: the injected ones first, then the accounts' database passwords.
        self.secrets = [lab.vars["hosting_db_admin_password"], lab.vars["hosting_tsig_secret"],
                        lab.vars["hosting_mail_probe_password"]]  # fmt: skip
        self.secrets += [line for line in ssh_key.splitlines() if len(line) >= 20 and "PRIVATE KEY" not in line]
        self.secrets += [user["password"] for account in lab.seed["accounts"].values() for user in account["db_users"]]
        self.jobs: list[Job] = []

    def launch(self, template: str, answers: dict | None = None, **options) -> Job:
        job = launch(template, private_data_dir=self.root / f"job{len(self.jobs) + 1:02d}", inventory=self.inventory,
                     credentials=self.credentials, answers=answers, **options)  # fmt: skip
        self.jobs.append(job)
        return job

    def template_for(self, playbook: str) -> str:
        return next(jt["name"] for jt in OBJECTS["hosting_awx_job_templates"] if jt["playbook"] == playbook)


def encodings(secret: str) -> set[str]:
    """The forms a secret takes in the artifacts: as is, quoted by the YAML result format of stdout, and either of
    those inside a JSON string (events), once or twice (an event's stdout inside its JSON)."""
    forms = {secret, secret.replace("'", "''")}
    for _depth in range(2):
        forms |= {json.dumps(form)[1:-1] for form in forms}
    return forms


def leaks_in(directory: Path, secrets: list[str], root: Path) -> list[str]:
    found = []
    for path in sorted(directory.rglob("*")):
        if path.is_file():
            text = path.read_text(encoding="utf-8", errors="replace")
            found += [f"{path.relative_to(root)}: {secret[:4]}…" for secret in secrets
                      if any(form in text for form in encodings(secret))]  # fmt: skip
    return found


def assert_successful(job: Job) -> None:
    assert (job.status, job.rc) == ("successful", 0), f"{job.template}: {job.failed_tasks()}\n{job.stdout[-3000:]}"
    kinds = [event["event"] for event in job.events if event["event"] != "verbose"]  # -v lines come first
    assert kinds[0] == "playbook_on_start" and "playbook_on_stats" in kinds, f"{job.template}: events incomplete"
    # The job's stdout artifact is its events' stdout, in order: what AWX shows is what the events hold.
    counters = [event["counter"] for event in job.events]
    assert counters == sorted(counters) == list(range(1, len(counters) + 1)), f"{job.template}: events missing"
    from_events = "\n".join(event["stdout"] for event in job.events if event.get("stdout"))
    assert _lines(from_events) == _lines(job.stdout), f"{job.template}: stdout and events differ"


def _lines(text: str) -> list[str]:
    """Non-blank lines: events and the stdout file put different blank lines between tasks."""
    return [line for line in text.replace("\r", "").splitlines() if line.strip()]


def assert_no_secret_in_artifacts(awx: AwxLab) -> None:
    leaks = []
    for job in awx.jobs:
        env = job.artifacts.parent.parent / "env"
        for path in env.iterdir():
            if path.name not in ("extravars", "cmdline"):
                assert stat.S_IMODE(path.stat().st_mode) & 0o077 == 0, f"{path} readable by others"
        # The search finds what is there: the credentials' own files under env/ hold the injected secrets.
        assert len(leaks_in(env, awx.secrets[:3], awx.root)) == 3, f"{env}: the injected secrets not found"
        leaks += leaks_in(job.artifacts, awx.secrets, awx.root)
    assert not leaks, "\n".join(leaks)
