"""`ansible-galaxy collection build` makes an installable tarball, and everything the collection offers resolves by
FQCN from a clean collections path holding only that install (as AWX sees it), not from this checkout."""

from __future__ import annotations

import importlib
import json
import os
import subprocess
import tarfile
from pathlib import Path

import pytest
import yaml
from conftest import REPO, run

GALAXY = yaml.safe_load((REPO / "galaxy.yml").read_text(encoding="utf-8"))
TARBALL = f"{GALAXY['namespace']}-{GALAXY['name']}-{GALAXY['version']}.tar.gz"
# Paths of the checkout that galaxy.yml's build_ignore keeps out of the tarball.
LEFT_OUT = ("lab", "tests/output", ".venv", "reports", "bench", "collections")
STEPS_BY_FQCN = ("step4_migrate", "step8_finish")


def stems(directory: Path, pattern: str) -> list[str]:
    return sorted(p.stem for p in directory.glob(pattern) if p.stem != "__init__")


def roles_with_specs(root: Path) -> list[str]:
    return sorted(p.parent.parent.name for p in root.glob("roles/*/meta/argument_specs.yml"))


def repo_filter_names() -> list[str]:
    """The filters the checkout's filter plugins register (conftest puts the checkout on sys.path)."""
    names = []
    for name in stems(REPO / "plugins" / "filter", "*.py"):
        plugin = importlib.import_module(f"ansible_collections.hosting.migration.plugins.filter.{name}")
        names.extend(plugin.FilterModule().filters())
    return sorted(names)


@pytest.fixture(scope="module")
def tarball(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("build")
    run(["ansible-galaxy", "collection", "build", "--output-path", out])
    built = sorted(p.name for p in out.iterdir())
    assert built == [TARBALL]
    return out / TARBALL


@pytest.fixture(scope="module")
def members(tarball) -> list[str]:
    with tarfile.open(tarball) as tar:
        return tar.getnames()


@pytest.fixture(scope="module")
def outside(tmp_path_factory) -> tuple[Path, dict[str, str]]:
    """A working directory outside the checkout and an environment whose only collections path is a fresh
    directory there: no ansible.cfg (an empty one), no sys.path scan, no ANSIBLE_* or PYTHONPATH inherited."""
    home = tmp_path_factory.mktemp("outside")
    (home / "ansible.cfg").write_text("", encoding="utf-8")
    env = {k: v for k, v in os.environ.items() if not k.startswith("ANSIBLE_") and k != "PYTHONPATH"}
    env.update(
        ANSIBLE_CONFIG=str(home / "ansible.cfg"),
        ANSIBLE_COLLECTIONS_PATH=str(home / "collections"),
        ANSIBLE_COLLECTIONS_SCAN_SYS_PATH="false",
        ANSIBLE_ROLES_PATH=str(home / "roles"),
        ANSIBLE_LOCAL_TEMP=str(home / "tmp"),
    )
    return home, env


def run_outside(outside, argv) -> subprocess.CompletedProcess:
    home, env = outside
    proc = subprocess.run(
        [str(a) for a in argv], cwd=home, env=env, capture_output=True, text=True, timeout=300, check=False
    )
    assert proc.returncode == 0, f"{argv} exited {proc.returncode}\nstdout:\n{proc.stdout}\nstderr:\n{proc.stderr}"
    return proc


@pytest.fixture(scope="module")
def installed(tarball, outside) -> Path:
    home = outside[0]
    run_outside(outside, ["ansible-galaxy", "collection", "install", tarball, "-p", home / "collections"])
    root = home / "collections" / "ansible_collections" / GALAXY["namespace"] / GALAXY["name"]
    manifest = json.loads((root / "MANIFEST.json").read_text(encoding="utf-8"))
    assert manifest["collection_info"]["version"] == GALAXY["version"]
    return root


def ansible_doc(outside, plugin_type: str, names: list[str]) -> dict:
    fqcns = [f"hosting.migration.{n}" for n in names]
    return json.loads(run_outside(outside, ["ansible-doc", "-t", plugin_type, "--json", *fqcns]).stdout)


def test_tarball_leaves_out_what_build_ignore_lists(members):
    present = [path for path in LEFT_OUT if (REPO / path).exists()]
    assert present, "none of the ignored paths exists in this checkout: the test would prove nothing"
    leaked = [m for m in members for path in present if m == path or m.startswith(f"{path}/")]
    assert not leaked


def test_tarball_holds_the_runtime_content(members):
    needed = {str(p.relative_to(REPO)) for p in (REPO / "plugins" / "modules").glob("*.py")}
    needed |= {str(p.relative_to(REPO)) for p in (REPO / "playbooks").glob("step*.yml")}
    needed |= {f"roles/{role}/tasks/main.yml" for role in roles_with_specs(REPO)}
    needed |= {"meta/runtime.yml", "MANIFEST.json", "FILES.json"}
    assert needed - set(members) == set()


def test_every_module_documents_itself_from_the_install(installed, outside):
    modules = stems(installed / "plugins" / "modules", "*.py")
    assert modules and modules == stems(REPO / "plugins" / "modules", "*.py")
    docs = ansible_doc(outside, "module", modules)
    assert sorted(docs) == [f"hosting.migration.{m}" for m in modules]
    for fqcn, doc in docs.items():
        assert Path(doc["doc"]["filename"]).is_relative_to(installed), fqcn
        assert doc["doc"]["short_description"] and doc["examples"] and doc["return"], fqcn


def test_every_filter_documents_itself_from_the_install(installed, outside):
    sidecars = (installed / "plugins" / "filter").glob("*.yml")
    filters = sorted(yaml.safe_load(p.read_text(encoding="utf-8"))["DOCUMENTATION"]["name"] for p in sidecars)
    assert filters and filters == repo_filter_names()
    docs = ansible_doc(outside, "filter", filters)
    assert sorted(docs) == [f"hosting.migration.{f}" for f in filters]
    for fqcn, doc in docs.items():
        assert Path(doc["doc"]["filename"]).is_relative_to(installed), fqcn
        assert doc["doc"]["short_description"], fqcn


def test_every_role_argument_spec_documents_itself_from_the_install(installed, outside):
    roles = roles_with_specs(installed)
    assert roles and roles == roles_with_specs(REPO)
    docs = ansible_doc(outside, "role", roles)
    assert sorted(docs) == [f"hosting.migration.{r}" for r in roles]
    for fqcn, doc in docs.items():
        assert Path(doc["path"]).is_relative_to(installed), fqcn
        assert "main" in doc["entry_points"], fqcn


@pytest.mark.parametrize("step", STEPS_BY_FQCN)
def test_step_playbook_resolves_by_fqcn_from_the_install(installed, outside, step):
    argv = ["ansible-playbook", f"hosting.migration.{step}", "--syntax-check", "-i", "localhost,"]
    result = run_outside(outside, [*argv, "-e", "account=alice"])
    assert f"playbook: {installed / 'playbooks' / step}.yml" in result.stdout


@pytest.mark.lab
def test_steps_run_by_fqcn_from_the_install_against_the_lab(installed, outside, lab):
    """Step 1 really runs from the install (its report lands beside the installed playbooks: playbook_dir is the
    install's), and step 4 plans alice's move there in check mode."""
    inventory = ["-i", REPO / "inventories" / "lab"]
    run_outside(outside, ["ansible-playbook", "hosting.migration.step1_prepare", *inventory, "-e", "accounts=alice"])
    reports = sorted((installed / "reports").glob("step1_*.json"))
    assert reports, "step 1 wrote no report in the install"
    assert list(json.loads(reports[-1].read_text(encoding="utf-8"))["accounts"]) == ["alice"]

    plan = run_outside(outside, ["ansible-playbook", "hosting.migration.step4_migrate", *inventory,
                                 "-e", "account=alice", "--check"])  # fmt: skip
    assert "alice: would move to transit" in plan.stdout
