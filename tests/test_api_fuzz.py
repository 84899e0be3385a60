"""The API fuzzed from its own OpenAPI document by schemathesis, against a real `dq dashboard`
(waitress, real Redis): no input makes it answer 500, and every answer's status, content type
and body are the ones the document promises. `DQ_FUZZ_EXAMPLES` sets the examples per route."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from tests.helpers import dashboard_env

SCHEMATHESIS = str(Path(sys.executable).with_name("schemathesis"))
CHECKS = "not_a_server_error,status_code_conformance,content_type_conformance,response_schema_conformance"


@pytest.mark.timeout(300)
def test_no_generated_request_gets_a_500_or_an_undocumented_answer(
    env: dict[str, str], start_dashboard: Any, tmp_path: Path
) -> None:
    # No workers run here: whatever the fuzzer enqueues stays queued and is flushed after.
    dashboard = start_dashboard(dashboard_env(env, DQ_API_RATE="1000000"))
    examples = os.environ.get("DQ_FUZZ_EXAMPLES", "30")
    run = subprocess.run(
        [
            SCHEMATHESIS,
            "run",
            dashboard.url("api/openapi.json"),
            "--checks",
            CHECKS,
            "--max-examples",
            examples,
            "--phases",
            "examples,coverage,fuzzing,stateful",
            # /health takes no input, and its 503 (no supervisor runs here) is its documented `fail`.
            "--exclude-path",
            "/health",
            "--seed",
            os.environ.get("DQ_FUZZ_SEED", "20261203"),
            "--workers",
            "2",
            "--request-timeout",
            "20",
            "--generation-database",
            "none",
            "--no-color",
        ],
        capture_output=True,
        text=True,
        timeout=280,
        cwd=tmp_path,
    )
    failures = run.stdout[run.stdout.find("FAILURES") :]
    assert run.returncode == 0, failures[:8000] + run.stderr[-3000:] + dashboard.log()[-3000:]
    assert "passed" in run.stdout.lower()
