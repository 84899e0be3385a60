"""bin/benchmark --quick, so the benchmark cannot rot: every row and the summary line are printed
with positive figures. Its goals are not asserted (they are measurements, not correctness)."""

from __future__ import annotations

import re
import subprocess

import pytest

from tests.helpers import ROOT

NUMBER = r"(\d+(?:\.\d+)?)"
MARK = r"(ok|MISS)"
SUMMARY = re.compile(
    rf"summary: drain {NUMBER}x rq {MARK}, {NUMBER}x floor {MARK} \| "
    rf"http {NUMBER}x aria2c {MARK} \(curl {NUMBER}x, floor {NUMBER}x {MARK}; whole command {NUMBER}x curl\) \| "
    rf"https {NUMBER}x {MARK} \| "
    rf"enqueue {NUMBER}x {MARK} \| rss {NUMBER} MB {MARK} \| growth {NUMBER} MB {MARK} \| "
    rf"cpu {NUMBER}x aria2c \| kill {NUMBER} s {MARK} \| goals met (\d+)/9"
)
ROWS = ("drain:", "http:", "https:", "cpu:", "enqueue:", "rss:", "growth:", "kill:")
TIMED = re.compile(rf"^  (product|anchor|floor) +.+? {NUMBER} s +{NUMBER} (jobs/s|MiB/s)")


@pytest.mark.slow
@pytest.mark.timeout(150)
def test_the_quick_benchmark_prints_every_row_and_the_summary() -> None:
    run = subprocess.run(
        [str(ROOT / "bin" / "benchmark"), "--quick"], cwd=ROOT, capture_output=True, text=True, timeout=140
    )
    assert run.returncode == 0, run.stdout + run.stderr
    lines = run.stdout.splitlines()
    for label in ROWS:
        assert any(line.startswith(label) for line in lines), f"no {label} row in:\n{run.stdout}"
    timed = [match for line in lines if (match := TIMED.match(line))]
    # drain: product, rq, SimpleWorker; http: 2 product, aria2c, curl, 2 floors; https: 2 product,
    # aria2c, curl; enqueue: product, rq
    assert len(timed) == 15, run.stdout
    assert all(float(match[2]) > 0 and float(match[3]) > 0 for match in timed), run.stdout
    summary = SUMMARY.fullmatch(lines[-1])
    assert summary is not None, lines[-1]
    numbers = [float(value) for value in summary.groups() if value not in ("ok", "MISS")]
    # every figure positive, except that growth may be 0.0 MB and the goals met count 0
    *figures, met = numbers
    growth = figures[9]
    assert all(value > 0 for index, value in enumerate(figures) if index != 9), lines[-1]
    assert growth >= 0 and 0 <= met <= 9
