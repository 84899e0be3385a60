"""The retry decision and its settings, as pure logic (no Redis): `jobs.retries`."""

from __future__ import annotations

import pytest
from rq.timeouts import JobTimeoutException

from config import Settings, SettingsError
from jobs import messages
from jobs.errors import ConnectionFailed, DiskFull, HeldBack, HTTPStatusError, InvalidRequest, NotAFile
from jobs.retries import Failure, RetryPolicy, decide, died, failure_of

pytestmark = pytest.mark.timeout(10)

POLICY = RetryPolicy(max_attempts=4, delays=(1, 2, 5, 10), retry_after_max=300)


def test_production_defaults() -> None:
    settings = Settings.from_env({})
    assert (settings.retries, settings.max_attempts) == (3, 4)
    assert settings.retry_delays == (1, 2, 5, 10)
    assert settings.retry_after_max == 300
    assert settings.min_free_mb == 100 and settings.min_free_bytes == 100_000_000


@pytest.mark.parametrize(
    ("name", "value"),
    [("DQ_RETRIES", "-1"), ("DQ_RETRIES", "two"), ("DQ_RETRY_DELAYS", "1,,2"), ("DQ_RETRY_DELAYS", "1,-2"),
     ("DQ_RETRY_DELAYS", "1,inf"), ("DQ_RETRY_AFTER_MAX", "-5"), ("DQ_MIN_FREE_MB", "lots")],
)  # fmt: skip
def test_bad_retry_settings_are_refused_naming_the_variable(name: str, value: str) -> None:
    with pytest.raises(SettingsError, match=name):
        Settings.from_env({name: value})


def test_delays_follow_the_list_and_the_last_repeats_with_up_to_20_percent_jitter() -> None:
    meta: dict[str, object] = {}
    waits = []
    for _ in range(3):
        decision = decide(meta, Failure("HTTP 503 Service Unavailable", True), POLICY, 1000.0, jitter=lambda: 0.0)
        assert decision.retry
        waits.append(decision.due - 1000.0)  # type: ignore[operator]
        meta["attempts"] = decision.attempts
    assert waits == [1, 2, 5]
    assert decide(meta, Failure("x", True), POLICY, 1000.0).retry is False  # attempt 4 of 4 was the last
    long = RetryPolicy(max_attempts=10, delays=(1, 2, 5, 10), retry_after_max=300)
    assert long.delay(7, None, jitter=lambda: 0.0) == 10
    assert long.delay(1, None, jitter=lambda: 1.0) == pytest.approx(1.2)


def test_retry_after_is_exact_and_capped() -> None:
    decision = decide({}, Failure("HTTP 429 Too Many Requests", True, retry_after=3), POLICY, 50.0, jitter=lambda: 1)
    assert decision.due == 53.0
    capped = RetryPolicy(max_attempts=4, delays=(1,), retry_after_max=7)
    assert decide({}, Failure("x", True, retry_after=3600), capped, 0.0).due == 7


def test_final_errors_and_the_last_attempt_end_the_job() -> None:
    assert decide({}, Failure("HTTP 404 Not Found", False), POLICY, 0).retry is False
    assert decide({"attempts": 3}, died(messages.RECOVERED), POLICY, 0) == decide(
        {"attempts": 3}, died(messages.RECOVERED), POLICY, 0
    )
    assert decide({"attempts": 3}, died(messages.RECOVERED), POLICY, 0).attempts == 4


def test_dq_retries_0_never_retries_anything() -> None:
    phase_1 = RetryPolicy.from_settings(Settings.from_env({"DQ_RETRIES": "0"}))
    for failure in (died(messages.RECOVERED), Failure("x", True, retry_after=1), Failure("x", True, held_until=9)):
        decision = decide({}, failure, phase_1, 0)
        assert (decision.retry, decision.attempts) == (False, 1)


def test_a_held_back_job_uses_no_attempt() -> None:
    decision = decide({"attempts": 2}, Failure("held", True, held_until=120.0), POLICY, 100.0)
    assert (decision.retry, decision.attempts, decision.due) == (True, 2, 120.0)


@pytest.mark.parametrize(
    ("error", "retryable"),
    [
        (HTTPStatusError(503), True),
        (HTTPStatusError(429, 3), True),
        (HTTPStatusError(408), True),
        (HTTPStatusError(500), True),
        (HTTPStatusError(404), False),
        (HTTPStatusError(403), False),
        (ConnectionFailed("Connection reset (h:1)"), True),
        (InvalidRequest("refused"), False),
        (DiskFull(5_000_000, 200_000_001), False),
        (NotAFile(), False),
        (JobTimeoutException("late"), True),
        (ValueError("a bug"), False),
    ],
)
def test_what_is_retryable(error: BaseException, retryable: bool) -> None:
    assert failure_of(error, 300).retryable is retryable


def test_failure_lines_and_backoff() -> None:
    assert failure_of(JobTimeoutException("x"), 300).line == "Processing timeout (300s exceeded)"
    assert failure_of(HTTPStatusError(429, 3), 300).backoff is True
    assert failure_of(HTTPStatusError(503, None), 300).backoff is False  # no Retry-After
    assert failure_of(HTTPStatusError(500, 3), 300).backoff is False
    assert failure_of(HeldBack("h:1", 99.0), 300).held_until == 99.0
    assert messages.disk_full(5_999_999, 100_000_001) == "Disk full (5 MB free, 101 MB needed)"


def test_retry_and_attempt_lines() -> None:
    assert (
        messages.retry_line(2, 4, 0.4, "HTTP 503 Service Unavailable")
        == "retry 2/4 in 1s: HTTP 503 Service Unavailable"
    )
    assert messages.retry_line(3, 4, None, "x") == "retry 3/4: x"
    assert messages.after_attempts("Download timeout (30s)", 4) == "Download timeout (30s) (after 4 attempts)"
    assert messages.after_attempts("HTTP 404 Not Found", 1) == "HTTP 404 Not Found"
