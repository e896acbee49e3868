# Copyright: hosting.migration contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Wait for an async account_move and show its progress: which phase runs and how far it got.

Ansible's own async polling prints nothing while a job runs; a person watching a 20-minute move from a shell or
AWX needs to see it move, so this polls the job and the progress file the move keeps in the journal, and prints
a line whenever the phase or the counters change.
"""

from __future__ import annotations

import base64
import json
import time

from ansible.errors import AnsibleActionFail
from ansible.plugins.action import ActionBase
from ansible.utils.display import Display

display = Display()


def describe(progress: dict) -> str:
    parts = [str(progress.get("phase") or "starting")]
    if progress.get("bytes_total"):
        done = progress.get("bytes_done") or 0
        parts.append(f"{done / 1048576:.1f}/{progress['bytes_total'] / 1048576:.1f} MB")
    if progress.get("tables_total"):
        parts.append(f"{progress.get('tables_done') or 0}/{progress['tables_total']} tables")
    return ", ".join(parts)


class ActionModule(ActionBase):
    _supports_check_mode = True
    _requires_connection = True

    def run(self, tmp=None, task_vars=None):
        result = super().run(tmp, task_vars)
        args = self._task.args
        jid = args.get("jid")
        progress_file = args.get("progress_file")
        if not jid or not progress_file:
            raise AnsibleActionFail("move_wait needs jid and progress_file")
        interval = float(args.get("interval", 2))
        deadline = time.monotonic() + float(args.get("timeout", 7200))
        label = args.get("label", "")
        shown = None
        # What ansible.builtin.async_status's own action plugin passes to the module.
        async_dir = self.get_shell_option("async_dir", default="~/.ansible_async")
        while True:
            query = {"jid": jid, "_async_dir": async_dir}
            status = self._execute_module("ansible.builtin.async_status", query, task_vars=task_vars)
            if status.get("finished") or status.get("failed") and "finished" not in status:
                self._execute_module(
                    "ansible.builtin.async_status", {"jid": jid, "mode": "cleanup"}, task_vars=task_vars
                )
                status.pop("ansible_job_id", None)
                status.pop("finished", None)
                status.pop("started", None)
                result.update(status)
                return result
            if time.monotonic() > deadline:
                raise AnsibleActionFail(f"{label} still running after {args.get('timeout', 7200)} s (job {jid})")
            read = self._execute_module("ansible.builtin.slurp", {"src": progress_file}, task_vars=task_vars)
            if "content" in read:
                line = describe(json.loads(base64.b64decode(read["content"])))
                if line != shown:
                    display.display(
                        f"  [{self._task.delegate_to or task_vars.get('inventory_hostname')}] {label}: {line}"
                    )
                    shown = line
            time.sleep(interval)
