"""A module a hostile Redis writer would name in a job: importing it leaves a marker file.

Never imported by the suite itself; `tests/test_refused_jobs.py` checks that no worker does.
"""

import os
from pathlib import Path

marker = os.environ.get("DQ_TEST_IMPORT_MARKER")
if marker:
    Path(marker).write_text("imported\n")


def run(*args: object, **kwargs: object) -> None:
    if marker:
        Path(marker).write_text("ran\n")
