"""execution-environment.yml, checked without a container engine: `ansible-builder create` writes the build
context, which must carry our requirements.txt and bindep.txt, the ansible-core pin, and a collection that
installs the way the image's galaxy stage installs it; a broken definition is refused."""

from __future__ import annotations

import json
import os
import re
import subprocess
import tarfile
from pathlib import Path

import pytest
import yaml
from conftest import REPO, run

DEFINITION = REPO / "execution-environment.yml"
# What the collection runs from; the image has no use for tests/, inventories/ or changelogs/.
RUNTIME_DIRS = ("meta", "plugins", "playbooks", "roles")


def builder_create(definition: Path, context: Path, *, check=True) -> subprocess.CompletedProcess:
    argv = ["ansible-builder", "create", "--file", definition, "--context", context]
    return run([*argv, "--output-filename", "Containerfile"], check=check)


def containerfile_arg(containerfile: str, name: str) -> str:
    match = re.search(rf'^ARG {name}="([^"]*)"$', containerfile, re.MULTILINE)
    assert match, f"no ARG {name} with a value in the Containerfile"
    return match.group(1)


def runtime_files(files_json: Path) -> list[str]:
    files = json.loads(files_json.read_text(encoding="utf-8"))["files"]
    return sorted(f["name"] for f in files if f["ftype"] == "file" and f["name"].split("/")[0] in RUNTIME_DIRS)


@pytest.fixture(scope="module")
def context(tmp_path_factory) -> Path:
    context = tmp_path_factory.mktemp("ee") / "context"
    builder_create(DEFINITION, context)
    return context


@pytest.fixture
def definition_copy(tmp_path):
    """Write a definition next to links to the checkout's files, so it differs from ours only by its text."""
    for entry in REPO.iterdir():
        if entry.name not in (DEFINITION.name, "collections", ".git"):
            (tmp_path / entry.name).symlink_to(entry)

    def write(ee: dict) -> Path:
        copy = tmp_path / DEFINITION.name
        copy.write_text(yaml.safe_dump(ee), encoding="utf-8")
        return copy

    return write


def test_containerfile_pins_ansible_core_as_requirements_txt(context):
    containerfile = (context / "Containerfile").read_text(encoding="utf-8")
    pins = [line for line in (REPO / "requirements.txt").read_text(encoding="utf-8").split() if "==" in line]
    core = next(pin for pin in pins if pin.startswith("ansible-core=="))
    refs = containerfile_arg(containerfile, "ANSIBLE_INSTALL_REFS").split()
    assert core in refs
    assert any(ref.startswith("ansible-runner==") for ref in refs), "AWX runs ansible-runner inside the image"
    assert containerfile_arg(containerfile, "EE_BASE_IMAGE")


def test_context_carries_our_requirements_and_bindep(context):
    for name in ("requirements.txt", "bindep.txt"):
        assert (context / "_build" / name).read_bytes() == (REPO / name).read_bytes(), name
    containerfile = (context / "Containerfile").read_text(encoding="utf-8")
    assert "--user-pip=requirements.txt --user-bindep=bindep.txt" in containerfile


def test_collection_installs_from_context_as_the_galaxy_stage_does(context, tmp_path):
    """The galaxy stage runs `ansible-galaxy collection install -r requirements.yml` in the context's _build/;
    the collection it gets must hold the same runtime files as the tarball `collection build` makes."""
    build = context / "_build"
    assert "-r requirements.yml" in (context / "Containerfile").read_text(encoding="utf-8")
    subprocess.run(
        ["ansible-galaxy", "collection", "install", "-r", "requirements.yml", "-p", tmp_path / "collections"],
        cwd=build,
        check=True,
        capture_output=True,
        # As in the image build: no configuration of this checkout (`make test` exports ANSIBLE_CONFIG, whose
        # collections path already holds hosting.migration, and galaxy would then skip the install).
        env={k: v for k, v in os.environ.items() if not k.startswith("ANSIBLE_")},
    )
    installed = tmp_path / "collections" / "ansible_collections" / "hosting" / "migration"
    run(["ansible-galaxy", "collection", "build", "--output-path", tmp_path / "tarball"])
    (tarball,) = (tmp_path / "tarball").iterdir()
    with tarfile.open(tarball) as tar:
        tar.extract("FILES.json", tmp_path / "tarball", filter="data")
    expected = runtime_files(tmp_path / "tarball" / "FILES.json")
    assert expected and runtime_files(installed / "FILES.json") == expected


@pytest.mark.parametrize(
    ("break_it", "refusal"),
    [
        (lambda ee: ee.update(version=4), "Unsupported schema version: 4"),
        (lambda ee: ee["dependencies"].update(pyhton="requirements.txt"), "'pyhton' was unexpected"),
        (lambda ee: ee["dependencies"].update(system="bindep-missing.txt"), "bindep-missing.txt does not exist"),
    ],
    ids=["bad-version", "misspelled-key", "missing-bindep"],
)
def test_broken_definition_is_refused(definition_copy, tmp_path_factory, break_it, refusal):
    ee = yaml.safe_load(DEFINITION.read_text(encoding="utf-8"))
    # The same copy, unbroken, is accepted: the refusal below comes from the break alone.
    builder_create(definition_copy(ee), tmp_path_factory.mktemp("accepted"))
    break_it(ee)
    result = builder_create(definition_copy(ee), tmp_path_factory.mktemp("refused"), check=False)
    assert result.returncode != 0
    assert refusal in result.stdout + result.stderr
