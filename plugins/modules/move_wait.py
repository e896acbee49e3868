#!/usr/bin/python
# Copyright: hosting.migration contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# The work happens in the action plugin plugins/action/move_wait.py; this file carries its documentation.

from __future__ import annotations

DOCUMENTATION = r"""
module: move_wait
short_description: Wait for an asynchronous account_move and print its progress
version_added: 0.1.0
description:
  - Polls an C(async) job of M(hosting.migration.account_move) and the progress file the move keeps in the
    journal, printing a line each time the phase, bytes or tables done change, then returns the move's result.
  - Runs on the controller (an action plugin); it reaches the host only to read the job status and the file.
options:
  jid:
    description: The async job id returned by the task that started the move.
    type: str
    required: true
  progress_file:
    description: The move's progress file on the host (C(<journal_dir>/accounts/<account>/progress.json)).
    type: path
    required: true
  interval:
    description: Seconds between two polls.
    type: float
    default: 2
  timeout:
    description: Seconds to wait before failing.
    type: float
    default: 7200
  label:
    description: What the progress lines are about (e.g. the account name).
    type: str
    default: ""
attributes:
  check_mode:
    description: Can run in check_mode and return changed status prediction without modifying target.
    support: full
    details: Only reads.
  diff_mode:
    description: Will return details on what has changed (or possibly needs changing in check_mode), when in diff mode.
    support: none
  action:
    description: Indicates this has a corresponding action plugin so some parts of the options can be executed on
      the controller.
    support: full
  async:
    description: Supports being used with the C(async) keyword.
    support: none
  platform:
    description: Target OS/families that can be operated against.
    support: full
    platforms: posix
author:
  - hosting.migration contributors (@hosting-migration)
"""

EXAMPLES = r"""
- name: Start the move
  hosting.migration.account_move:
    account: alice
    source: {host: 10.77.0.10, name: client}
    destination: {name: transit, http_backend: "10.77.0.11:8080"}
  async: 7200
  poll: 0
  register: move_job

- name: Wait for it, showing its progress
  hosting.migration.move_wait:
    jid: "{{ move_job.ansible_job_id }}"
    progress_file: /var/lib/hosting-migration/accounts/alice/progress.json
    label: alice
"""

RETURN = r"""
downtime_s:
  description: The move's own result is returned as is; see M(hosting.migration.account_move).
  returned: success
  type: float
"""
