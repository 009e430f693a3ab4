"""The figures and listings the README states are checked here, so they cannot silently go stale."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text(encoding="utf-8")


def test_readme_states_the_number_of_tests_the_suite_runs() -> None:
    stated = re.search(r"\((\d[\d,]*) tests,", README)
    assert stated, "README must state the test count as '(N tests, ...'"
    proc = subprocess.run([sys.executable, "-m", "pytest", "--collect-only", "-q", "-p", "no:cacheprovider"],
                          cwd=ROOT, capture_output=True, text=True, timeout=300)
    found = re.search(r"(\d+)(?:/\d+)? tests? collected|^(\d+) tests? selected", proc.stdout, re.M)
    collected = [ln for ln in proc.stdout.splitlines() if "::" in ln]
    assert collected, proc.stdout[-2000:] + proc.stderr[-2000:]
    assert int(stated.group(1).replace(",", "")) == len(collected), (
        f"README says {stated.group(1)} tests, the suite collects {len(collected)} ({found and found.group(0)}): "
        "update the README")


def test_readme_commands_are_the_ones_the_scripts_run() -> None:
    ci = (ROOT / ".ci" / "run").read_text()
    assert "bash scripts/test.sh" in ci and "bash scripts/test.sh" in README
    main_job = re.search(r"```bash\n(bash scripts/setup\.sh && \S*kdistill run)\n```", README)
    assert main_job, "README must show the main-job command as 'bash scripts/setup.sh && ... kdistill run'"
