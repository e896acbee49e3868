#!/usr/bin/python
# Copyright: hosting.migration contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
module: lang_prune
short_description: Report and reversibly remove the language runtimes a target architecture no longer supports
version_added: 0.1.0
description:
  - Runs on a hosting server. Compares the language runtimes installed under O(langs_dir)
    (C(<langs_dir>/<language>/<version>/)) with the support matrix of O(target_architecture), shipped with the
    collection, and reads the account registry to find the sites still using each unsupported version.
  - Returns per unsupported version its proposed replacement (the shipped old to new map, else the closest
    supported version of the same language that is not older, else the newest) and the accounts and sites still
    using it (blockers). Step 1 uses V(report) as its readiness check; step 2 uses V(pruned).
  - V(pruned) moves each unsupported version that no site uses (all of them with O(force=true)) into
    O(quarantine_dir) with one C(rename) per runtime, after writing a manifest of every entry of its tree (relative
    path, type, sha256, owner, group, mode, symlink target) next to it. The prune is recorded in the migration
    journal (server record C(lang_prune)) before each move, and the server profile's C(languages) is updated; its
    original bytes are kept in the record.
  - V(restored) first checks every pruned runtime against its manifest and fails, changing nothing, if anything
    differs; then it renames them back, puts back the server profile's original bytes and clears the record. It
    also completes a prune or a restore that was killed half-way.
  - A kill at any moment leaves each runtime whole, in its place or in the quarantine, and named by the record.
options:
  state:
    description:
      - V(report) only reads and reports.
      - V(pruned) quarantines unsupported versions that are not in use (all of them with O(force)).
      - V(restored) puts back everything earlier prunes quarantined, byte-identical.
    type: str
    choices: [report, pruned, restored]
    default: report
  target_architecture:
    description:
      - The architecture generation whose support matrix applies, for example V(2024).
      - Required with O(state=report) and O(state=pruned); with O(state=restored) the record's one is used when
        omitted. Letters, digits, C(_) and C(-) only.
    type: str
  force:
    description:
      - With O(state=pruned), also quarantine unsupported versions that sites still use (they stop working).
      - With O(state=restored), put back the profile's original bytes even if the profile was changed by something
        else since the prune.
    type: bool
    default: false
  support_matrix:
    description:
      - "Support matrices that replace the shipped ones, per architecture, for example
        C({\"2024\": {\"languages\": {\"php\": [\"8.2\"]}, \"replacements\": {\"php\": {\"7.4\": \"8.2\"}}}})."
      - Each has C(languages) (language to list of supported versions) and optionally C(replacements) (language to
        a map of old version to supported version).
    type: dict
  langs_dir:
    description: Where runtimes are installed. Absolute and normalised, like every path option.
    type: path
    default: /opt/hosting/langs
  profile_path:
    description: The server profile, whose C(languages) lists the installed versions.
    type: path
    default: /etc/hosting/server.yml
  registry_dir:
    description: The account registry, one C(<account>.yml) per account with its C(sites).
    type: path
    default: /etc/hosting/accounts
  quarantine_dir:
    description:
      - Where pruned runtimes and their manifests are kept (created 0700). It must be on the file system of
        O(langs_dir) and outside it.
    type: path
    default: /opt/hosting/.lang-quarantine
  journal_dir:
    description: The migration journal, where the prune is recorded.
    type: path
    default: /var/lib/hosting-migration
attributes:
  check_mode:
    description: Can run in check_mode and return changed status prediction without modifying target.
    support: full
    details: Returns the same plan and predicted result as a real run (a restore also checks the manifests) and
      writes nothing.
  diff_mode:
    description: Will return details on what has changed (or possibly needs changing in check_mode), when in diff mode.
    support: full
    details: The installed versions before and after.
  idempotent:
    description: When run twice in a row outside check mode, with the same arguments, the second invocation
      indicates no change.
    support: full
  platform:
    description: Target OS/families that can be operated against.
    support: N/A
    platforms: posix
requirements:
  - PyYAML (the account registry and the server profile are YAML)
author:
  - hosting.migration contributors (@hosting-migration)
"""

EXAMPLES = r"""
- name: Step 1 readiness - which sites still use versions the 2024 architecture drops
  hosting.migration.lang_prune:
    target_architecture: "2024"
  register: langs

- name: Step 2 - quarantine the unsupported versions no site uses
  hosting.migration.lang_prune:
    target_architecture: "2024"
    state: pruned

- name: Put back everything that was pruned
  hosting.migration.lang_prune:
    state: restored
"""

RETURN = r"""
installed:
  description: Installed versions per language after the run (predicted in check mode).
  returned: always
  type: dict
  sample: {php: ["5.6", "8.1"], python: ["3.9"]}
supported:
  description: Versions per language the target architecture supports.
  returned: when an architecture is known
  type: dict
  sample: {php: ["8.1", "8.2", "8.3"], python: ["3.11", "3.12"]}
unsupported:
  description:
    - Per unsupported version (installed, quarantined or used by a site) its replacement, blockers and action.
    - "C(action) is one of V(pruned) (this run quarantined it, or would in check mode), V(prunable) (V(report) -
      V(pruned) would quarantine it), V(kept: in use), V(already quarantined), V(not installed)."
  returned: when an architecture is known
  type: list
  elements: dict
  sample:
    - {language: php, version: "5.6", replacement: "8.1", installed: true, action: "kept: in use",
       blockers: [{account: carol, domain: carol-blog.test}]}
blockers:
  description: Every site on an unsupported version, with the version that should replace it.
  returned: when an architecture is known
  type: list
  elements: dict
  sample: [{account: carol, domain: carol-blog.test, language: php, version: "5.6", replacement: "8.1"}]
ready:
  description: Whether no site uses an unsupported version (the step 1 readiness of this server).
  returned: when an architecture is known
  type: bool
pruned:
  description: Runtimes (C(<language>/<version>)) this run moved into the quarantine.
  returned: always
  type: list
  elements: str
  sample: [php/7.4, python/3.7]
restored:
  description: Runtimes this run moved back from the quarantine.
  returned: always
  type: list
  elements: str
quarantined:
  description: Runtimes in the quarantine after the run.
  returned: always
  type: list
  elements: str
ignored:
  description: Entries of O(langs_dir) that are not runtimes (odd names, symlinks, files); never touched.
  returned: always
  type: list
  elements: str
"""

import os
import traceback

from ansible.module_utils.basic import AnsibleModule, missing_required_lib

from ansible_collections.hosting.migration.plugins.module_utils import langs
from ansible_collections.hosting.migration.plugins.module_utils.account import is_subpath, validate_account_name
from ansible_collections.hosting.migration.plugins.module_utils.journal import (
    Journal,
    JournalError,
    utc_now,
    write_bytes_atomic,
)

try:
    import yaml

    HAS_YAML = True
    YAML_IMPORT_ERROR = None
except ImportError:
    YAML_IMPORT_ERROR = traceback.format_exc()
    HAS_YAML = False

PATH_OPTIONS = {
    "langs_dir": "/opt/hosting/langs",
    "profile_path": "/etc/hosting/server.yml",
    "registry_dir": "/etc/hosting/accounts",
    "quarantine_dir": "/opt/hosting/.lang-quarantine",
    "journal_dir": "/var/lib/hosting-migration",
}


def argument_spec() -> dict:
    return {
        "state": {"type": "str", "choices": ["report", "pruned", "restored"], "default": "report"},
        "target_architecture": {"type": "str"},
        "force": {"type": "bool", "default": False},
        "support_matrix": {"type": "dict"},
        **{name: {"type": "path", "default": default} for name, default in PATH_OPTIONS.items()},
    }


class LangPrune:
    def __init__(self, module: AnsibleModule) -> None:
        self.module = module
        self.params = module.params
        self.result: dict = {"changed": False, "pruned": [], "restored": []}
        for name in PATH_OPTIONS:
            langs.validate_abs_path(self.params[name], name)
        self.langs_dir = self.params["langs_dir"]
        self.quarantine_dir = self.params["quarantine_dir"]
        self.profile_path = self.params["profile_path"]
        if is_subpath(self.quarantine_dir, self.langs_dir) or is_subpath(self.langs_dir, self.quarantine_dir):
            raise langs.LangError("quarantine_dir and langs_dir must not contain one another")
        if self.params["target_architecture"] is not None:
            langs.validate_architecture(self.params["target_architecture"])
        for architecture in self.params["support_matrix"] or {}:
            langs.load_matrix(architecture, self.params["support_matrix"])
        self.journal = Journal(self.params["journal_dir"])
        self.quarantine = langs.Quarantine(self.langs_dir, self.quarantine_dir, self.save_record)

    def save_record(self, record: dict) -> None:
        self.journal.write_record(langs.RECORD_NAME, record)

    # ---- reading ----------------------------------------------------------------------------------------------------

    def read_record(self) -> dict | None:
        record = self.journal.read_record(langs.RECORD_NAME)
        if record is None:
            return None
        if not isinstance(record, dict) or record.get("version") != langs.RECORD_VERSION:
            raise langs.LangError(f"journal record {langs.RECORD_NAME} is not a version {langs.RECORD_VERSION} record")
        for key in ("langs_dir", "quarantine_dir", "profile_path"):
            if record.get(key) != self.params[key]:
                raise langs.LangError(
                    f"the recorded prune used {key}={record.get(key)}, not {self.params[key]}: run with the same paths"
                )
        for entry in record["runtimes"]:
            language, version = entry["id"].split("/")
            langs.validate_language(language)
            langs.validate_version(version)
        return record

    def read_sites(self) -> list[dict]:
        registry = self.params["registry_dir"]
        if not os.path.isdir(registry):
            raise langs.LangError(f"account registry {registry} is not a directory")
        sites = []
        for name in sorted(os.listdir(registry)):
            if not name.endswith(".yml"):
                continue
            account = name[: -len(".yml")]
            try:
                validate_account_name(account)
            except ValueError as error:
                raise langs.LangError(f"registry file {registry}/{name}: {error}") from None
            with open(os.path.join(registry, name), encoding="utf-8") as handle:
                try:
                    entry = yaml.safe_load(handle)
                except yaml.YAMLError as error:
                    raise langs.LangError(f"registry file {registry}/{name} is not valid YAML: {error}") from None
            sites.extend(langs.validate_registry_entry(account, entry))
        return sites

    def read_profile(self) -> tuple[bytes | None, dict]:
        """The profile's bytes and its data (None and {} when there is no profile)."""
        try:
            with open(self.profile_path, "rb") as handle:
                raw = handle.read()
        except FileNotFoundError:
            return None, {}
        try:
            profile = yaml.safe_load(raw)
        except yaml.YAMLError as error:
            raise langs.LangError(f"server profile {self.profile_path} is not valid YAML: {error}") from None
        if not isinstance(profile, dict) or not isinstance(profile.get("languages", {}), dict):
            raise langs.LangError(f"server profile {self.profile_path} must be a mapping with a 'languages' mapping")
        for language, versions in profile.get("languages", {}).items():
            langs.validate_language(language)
            if not isinstance(versions, list):
                raise langs.LangError(f"server profile {self.profile_path}: versions of {language} must be a list")
            for version in versions:
                langs.validate_version(str(version))
        return raw, profile

    def installed(self) -> dict[str, list[str]]:
        if not os.path.isdir(self.langs_dir):
            raise langs.LangError(f"langs_dir {self.langs_dir} is not a directory")
        installed, ignored = langs.scan_installed(self.langs_dir)
        self.result["ignored"] = ignored
        return installed

    # ---- running ----------------------------------------------------------------------------------------------------

    def run(self) -> dict:
        state = self.params["state"]
        if self.module.check_mode or state == "report":
            return self.restore() if state == "restored" else self.prune()
        # One run at a time: the server-level lock, released by the kernel if the run is killed.
        with self.journal.server_lock(langs.RECORD_NAME, f"lang_prune {state}"):
            return self.restore() if state == "restored" else self.prune()

    def summarize(self, architecture: str | None, installed: dict, quarantined: list[str], sites: list[dict]) -> None:
        """Installed, quarantined, and with an architecture the per-version plan and blockers (after the run)."""
        self.result.update(installed=installed, quarantined=quarantined)
        if architecture is None:
            return
        matrix = langs.load_matrix(architecture, self.params["support_matrix"])
        plan = langs.build_plan(installed, matrix, sites, quarantined, self.params["force"])
        self.result.update(
            target_architecture=architecture,
            supported=matrix["languages"],
            unsupported=plan,
            blockers=langs.blocker_list(plan),
        )
        self.result["ready"] = not self.result["blockers"]

    def prune(self) -> dict:
        architecture = self.params["target_architecture"]
        matrix = langs.load_matrix(architecture, self.params["support_matrix"])
        record = self.read_record()
        pruning = self.params["state"] == "pruned"
        if pruning and record and record["target_architecture"] != architecture:
            raise langs.LangError(
                f"runtimes were pruned for architecture {record['target_architecture']}; restore them before "
                f"pruning for {architecture}"
            )
        before = self.installed()
        sites = self.read_sites()
        raw_profile, profile = self.read_profile()
        plan = langs.build_plan(before, matrix, sites, self.quarantine.quarantined(record), self.params["force"])
        to_prune = [langs.runtime_id(i["language"], i["version"]) for i in plan if i["action"] == "prune" and pruning]
        if to_prune:
            self.quarantine.check_filesystem()
            if raw_profile is None:
                raise langs.LangError(f"server profile {self.profile_path} is missing; it must stay true after a prune")
        languages = profile.get("languages", {})
        quarantined = sorted({*self.quarantine.quarantined(record), *to_prune})
        new_languages = langs.profile_languages_after(languages, quarantined)
        profile_change = pruning and raw_profile is not None and new_languages != languages
        changed = bool(to_prune) or profile_change
        if changed and not self.module.check_mode:
            if record is None:
                info = os.stat(self.profile_path)
                record = langs.Quarantine.new_record(
                    target_architecture=architecture,
                    langs_dir=self.langs_dir,
                    quarantine_dir=self.quarantine_dir,
                    profile_path=self.profile_path,
                    profile_original=langs.encode_bytes(raw_profile),
                    profile_owner={"uid": info.st_uid, "gid": info.st_gid, "mode": info.st_mode & 0o7777},
                    started_at=utc_now(),
                )
            self.quarantine.prune(record, to_prune)
            if profile_change:
                self.write_profile(record, {**profile, "languages": new_languages})
        after = langs.profile_languages_after(before, to_prune)
        self.result.update(changed=changed, pruned=to_prune)
        self.summarize(architecture, after, quarantined, sites)
        for item in self.result["unsupported"]:
            rid = langs.runtime_id(item["language"], item["version"])
            if rid in to_prune:
                item["action"] = "pruned"
            elif item["action"] == "prune":
                item["action"] = "prunable"
        self.set_diff(before, after)
        return self.result

    def write_profile(self, record: dict, profile: dict) -> None:
        data = yaml.safe_dump(profile, sort_keys=False, allow_unicode=True, default_flow_style=False).encode()
        # Recorded before the write: a restore recognises this content as ours even if the run dies right after.
        record["profile_written_sha256"].append(langs.sha256_bytes(data))
        self.save_record(record)
        owner = record["profile_owner"]
        write_bytes_atomic(self.profile_path, data, mode=owner["mode"], owner=(owner["uid"], owner["gid"]))

    def restore(self) -> dict:
        record = self.read_record()
        before = self.installed()
        sites = self.read_sites()
        architecture = self.params["target_architecture"] or (record or {}).get("target_architecture")
        if record is None:
            self.summarize(architecture, before, [], sites)
            self.set_diff(before, before)
            return self.result
        to_move = self.quarantine.check_restore(record)
        original = langs.decode_bytes(record["profile_original"])
        raw_profile, _profile = self.read_profile()
        if raw_profile != original:
            known = raw_profile is not None and langs.sha256_bytes(raw_profile) in record["profile_written_sha256"]
            if not known and not self.params["force"]:
                raise langs.LangError(
                    f"server profile {self.profile_path} was changed since the prune by something else; restore "
                    "refused, nothing was changed (force=true puts back the original bytes anyway)"
                )
        if not self.module.check_mode:
            self.quarantine.move_back(to_move)
            if raw_profile != original:
                owner = record["profile_owner"]
                write_bytes_atomic(self.profile_path, original, mode=owner["mode"], owner=(owner["uid"], owner["gid"]))
            self.quarantine.clean(record)
            self.journal.delete_record(langs.RECORD_NAME)
        after = {lang: list(versions) for lang, versions in before.items()}
        for rid in to_move:
            language, version = rid.split("/")
            after[language] = sorted({*after.get(language, []), version}, key=langs.version_key)
        self.result.update(changed=True, restored=to_move)
        self.summarize(architecture, after, [], sites)
        self.set_diff(before, after)
        return self.result

    def set_diff(self, before: dict, after: dict) -> None:
        if self.module._diff:
            self.result["diff"] = {"before": {"installed": before}, "after": {"installed": after}}


def main() -> None:
    module = AnsibleModule(
        argument_spec=argument_spec(),
        supports_check_mode=True,
        required_if=[("state", "report", ["target_architecture"]), ("state", "pruned", ["target_architecture"])],
    )
    if not HAS_YAML:
        module.fail_json(msg=missing_required_lib("PyYAML"), exception=YAML_IMPORT_ERROR)
    result: dict = {"changed": False}
    try:
        runner = LangPrune(module)
        result = runner.result
        result = runner.run()
    except (langs.LangError, JournalError, OSError, ValueError) as error:
        module.fail_json(msg=str(error), **result)
    module.exit_json(**result)


if __name__ == "__main__":
    main()
