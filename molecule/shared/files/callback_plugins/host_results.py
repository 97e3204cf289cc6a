"""Stdout callback for preflight_table.py: every host's task results and its stats, as one JSON.

ansible-core has no JSON stdout callback of its own (ansible.builtin.json redirects to
ansible.posix.json, and this repository depends on no collection), so the table brings this
one: {"hosts": {host: [result, ...]}, "stats": {host: {"ok", "changed", "failures", ...}}}.
Results go through CallbackBase._dump_results, which drops internal keys and honours no_log.
"""

from __future__ import annotations

import json

from ansible.plugins.callback import CallbackBase

DOCUMENTATION = """
    name: host_results
    type: stdout
    short_description: every host's task results and stats as one JSON document
    description: Written for molecule/shared/files/preflight_table.py.
"""


class CallbackModule(CallbackBase):
    CALLBACK_VERSION = 2.0
    CALLBACK_TYPE = "stdout"
    CALLBACK_NAME = "host_results"

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.hosts: dict[str, list[dict]] = {}

    def _record(self, result, **extra) -> None:
        data = json.loads(self._dump_results(result.result, indent=0))
        self.hosts.setdefault(result.host.get_name(), []).append({**data, **extra})

    def v2_runner_on_ok(self, result) -> None:
        self._record(result)

    def v2_runner_on_failed(self, result, ignore_errors=False) -> None:
        self._record(result, failed=True)

    def v2_runner_on_unreachable(self, result) -> None:
        self._record(result, unreachable=True)

    def v2_runner_on_skipped(self, result) -> None:
        self._record(result, skipped=True)

    def v2_playbook_on_stats(self, stats) -> None:
        report = {
            "hosts": self.hosts,
            "stats": {h: stats.summarize(h) for h in sorted(stats.processed)},
        }
        self._display.display(json.dumps(report))
