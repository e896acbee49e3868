# Copyright: hosting.migration contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Test-only stdout callback: prints, at the end, one JSON object {host: result} of the last task run on each host,
exactly as the module returned it (the json callback now lives in ansible.posix, which the tests do not install)."""

from __future__ import annotations

import json

from ansible.plugins.callback import CallbackBase

DOCUMENTATION = """
name: result_json
type: stdout
short_description: the last task's result per host, as one JSON object
description: Test helper of hosting.migration; not shipped.
"""


class CallbackModule(CallbackBase):
    CALLBACK_VERSION = 2.0
    CALLBACK_TYPE = "stdout"
    CALLBACK_NAME = "result_json"

    def __init__(self) -> None:
        super().__init__()
        self.results: dict[str, dict] = {}

    def _keep(self, result, status: str) -> None:
        self.results[result._host.get_name()] = {**result._result, "_status": status}

    def v2_runner_on_ok(self, result) -> None:
        self._keep(result, "ok")

    def v2_runner_on_failed(self, result, ignore_errors=False) -> None:
        self._keep(result, "failed")

    def v2_runner_on_unreachable(self, result) -> None:
        self._keep(result, "unreachable")

    def v2_runner_on_skipped(self, result) -> None:
        self._keep(result, "skipped")

    def v2_playbook_on_stats(self, stats) -> None:
        self._display.display(json.dumps(self.results, default=str, sort_keys=True))
