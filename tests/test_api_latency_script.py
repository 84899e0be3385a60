"""bin/api-latency in a small run, so the script cannot rot (its figures are for the closing note)."""

from __future__ import annotations

import subprocess
import sys

import pytest

from tests.helpers import ROOT


@pytest.mark.timeout(120)
def test_the_latency_script_runs_and_prints_its_figures() -> None:
    run = subprocess.run(
        [sys.executable, "-m", "tests.api_latency", "--concurrent", "5", "--posts", "10", "--rounds", "1"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=110,
    )
    assert run.returncode == 0, run.stdout + run.stderr
    lines = run.stdout.splitlines()
    assert any(line.startswith("GET /api/download-queue/stats") and "n=    5" in line for line in lines)
    assert any(line.startswith("POST /api/download-queue") and "n=   10" in line for line in lines)
    assert lines[-1].startswith("summary: ") and lines[-1].endswith("failures 0")
