"""The Molecule scenarios, each a full `molecule test` on nspawn hosts (needs root), one after the
other: every scenario's judge is real callers (speech in, speech recognized out) whose verdict
needs the machine's two cores, which two scenarios side by side would overload (measured with
the earlier synthetic calls, side by side was fine; with real calls a third of the audio calls
lost a turn once the lab ran short). The wall time of each is printed and counted in the suite's
time by part (tests/conftest.py).
"""

from __future__ import annotations

import itertools
import os
import re
import subprocess
import time

import pytest

from tests.conftest import ROOT
from tests.test_lint import BIN

# trixie (default's checks on Debian 13) is left out: fleet2 of the fleet scenario runs Debian 13
# through every fleet operation, and the suite has no room for another 8 minutes.
SCENARIOS = ["default", "monitoring", "fleet"]


def molecule_test(scenario: str) -> tuple[subprocess.CompletedProcess[str], float]:
    started = time.monotonic()
    proc = subprocess.run(
        [str(BIN / "molecule"), "test", "-s", scenario],
        cwd=ROOT,
        # no colour codes: the failure excerpt below is read in CI logs
        env={
            **os.environ,
            "PATH": f"{BIN}:{os.environ['PATH']}",
            "PY_COLORS": "0",
            "ANSIBLE_NOCOLOR": "1",
        },
        capture_output=True,
        text=True,
        timeout=60 * 60,  # the longest, fleet, takes about 30 min
        check=False,
    )
    return proc, time.monotonic() - started


@pytest.mark.lab
@pytest.mark.parametrize("scenario", SCENARIOS)
def test_molecule_scenario(scenario: str) -> None:
    assert os.geteuid() == 0, "the Molecule scenarios need root (nspawn hosts): run as root"
    proc, seconds = molecule_test(scenario)
    print(f"molecule test -s {scenario}: {seconds:.0f} s")
    rc = proc.returncode  # asserted by name: pytest would print the whole CompletedProcess
    assert rc == 0, (
        f"molecule test -s {scenario}: rc {rc}\n"
        + failure_excerpt(proc.stdout)
        + "\n--- stderr (tail) ---\n"
        + proc.stderr[-1500:]
    )


ANSI = re.compile(r"\x1b\[[0-9;]*m")
FAILED = re.compile(r"^\W*(fatal: \[|failed: \[).*")


def failure_excerpt(stdout: str, before: int = 12, after: int = 24, width: int = 400) -> str:
    """Where the scenario failed, short enough that CI's excerpt of the run (which starts at the
    first failure) still reaches the next failed scenario: the last failed task that was not
    ignored (its header; from Ansible's error message of it, which holds the task's fail_msg,
    else `before` lines before the failure; `after` lines from it; each cut at `width`
    characters), then the recap that follows it. The destroy step after a failure fills the tail
    of the output, so the tail does not say what failed."""
    lines = [line[:width] for line in ANSI.sub("", stdout).splitlines()]
    failed = [
        i
        for i, line in enumerate(lines)
        if FAILED.match(line) and "...ignoring" not in " ".join(lines[i : i + 3])
    ]
    if not failed:
        return "\n".join(["no failed task found; the output's tail:", *lines[-40:]])
    at = failed[-1]
    task = next((j for j in range(at, -1, -1) if lines[j].startswith("TASK [")), at)
    error = next(
        (j for j in range(at, task, -1) if lines[j].startswith("[ERROR]: Task failed")), None
    )
    recap = next((j for j in range(at, len(lines)) if lines[j].startswith("PLAY RECAP")), None)
    end = min(at + after, recap if recap is not None else len(lines))
    hosts = [] if recap is None else itertools.takewhile(bool, lines[recap : recap + 8])
    return "\n".join(
        [
            lines[task],
            *lines[error if error is not None else max(task + 1, at - before) : end],
            "...",
            *hosts,
        ]
    )


def test_the_failure_excerpt_starts_at_the_failed_tasks_message() -> None:
    """A loop whose item failed: the excerpt holds Ansible's message of it (the task's fail_msg,
    any length), not the successful items before it, and the recap."""
    stdout = "\n".join(
        [
            "TASK [Load | Assert per operation] ***",
            *[f"ok: [localhost] (item=op {i}) => line {j}" for i in range(3) for j in range(10)],
            "[ERROR]: Task failed: Action failed: op 3: 1/2 calls kept",
            *[f"  what went wrong, line {j}" for j in range(20)],
            "Origin: load-report.yml:115:3",
            "failed: [localhost] (item=op 3) => ",
            *[f"    item field {j}" for j in range(40)],
            "",
            "PLAY RECAP ***",
            "localhost                  : ok=76   changed=24   unreachable=0    failed=1",
            "",
            "destroy ...",
        ]
    )
    lines = failure_excerpt(stdout).splitlines()
    assert lines[0] == "TASK [Load | Assert per operation] ***"
    assert lines[1] == "[ERROR]: Task failed: Action failed: op 3: 1/2 calls kept"
    assert "  what went wrong, line 19" in lines
    assert not any(line.startswith("ok: [localhost]") for line in lines)
    assert lines[-1].startswith("localhost                  : ok=76")
