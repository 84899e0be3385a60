"""Health: the decision over read figures (fakes), the heartbeat in real Redis, and `bin/health`
against a real supervisor that is SIGKILLed."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import pytest
import redis
from rq.utils import now, utcformat
from rq.worker_registration import REDIS_WORKER_KEYS, WORKERS_BY_QUEUE_KEY

from config import Settings
from jobs import health, keys, published
from jobs.health import Figures
from jobs.workers import this_host
from supervisor.cleanup import Cleanup
from tests.helpers import run_dq, wait_until

SETTINGS = Settings(cleanup_interval=2, workers=4, queue_warn=10)
NOW = 1_000_000.0


def figures(**changes: object) -> Figures:
    base: dict[str, object] = {
        "redis_url": "unix:///x/redis.sock",
        "now": NOW,
        "beats": {"web1": NOW - 1.0},
        "live_workers": 4,
        "queued": 3,
    }
    base.update(changes)
    return Figures(**base)  # type: ignore[arg-type]


# --- the decision, with fakes --------------------------------------------------------------------
@pytest.mark.timeout(5)
def test_all_good_is_ok_and_exits_0() -> None:
    result = health.decide(figures(), SETTINGS)
    assert result["status"] == "ok"
    assert set(result["checks"]) == {"redis", "heartbeat", "workers", "queue"}
    assert all(entry["ok"] and entry["detail"] for entry in result["checks"].values())
    assert result["checks"]["heartbeat"]["age_seconds"] == {"web1": 1.0}
    assert health.exit_code(result) == 0


@pytest.mark.timeout(5)
def test_heartbeat_older_than_three_intervals_fails() -> None:
    at_limit = health.decide(figures(beats={"web1": NOW - 6.0}), SETTINGS)  # 3 x 2 s
    assert at_limit["status"] == "ok"
    stale = health.decide(figures(beats={"web1": NOW - 6.1}), SETTINGS)
    assert stale["status"] == "fail" and health.exit_code(stale) == 1
    assert not stale["checks"]["heartbeat"]["ok"]
    assert "6.1s ago (web1)" in stale["checks"]["heartbeat"]["detail"]


@pytest.mark.timeout(5)
def test_now_argument_overrides_the_redis_clock() -> None:
    assert health.decide(figures(), SETTINGS, now=NOW + 4.0)["status"] == "ok"
    assert health.decide(figures(), SETTINGS, now=NOW + 5.5)["status"] == "fail"


@pytest.mark.timeout(5)
def test_one_stale_host_among_fresh_ones_fails() -> None:
    result = health.decide(figures(beats={"web1": NOW - 0.5, "web2": NOW - 30}), SETTINGS)
    assert result["status"] == "fail"
    assert "web2" in result["checks"]["heartbeat"]["detail"]


@pytest.mark.timeout(5)
def test_no_heartbeat_fails() -> None:
    none_at_all = health.decide(figures(beats={}), SETTINGS)
    assert none_at_all["status"] == "fail"
    assert "no supervisor heartbeat" in none_at_all["checks"]["heartbeat"]["detail"]
    expired = health.decide(figures(beats={"web1": NOW - 1, "db2": None}), SETTINGS)
    assert expired["status"] == "fail"
    assert "none from db2" in expired["checks"]["heartbeat"]["detail"]


@pytest.mark.timeout(5)
def test_fewer_workers_than_dq_workers_fails() -> None:
    result = health.decide(figures(live_workers=3), SETTINGS)
    assert result["status"] == "fail"
    assert result["checks"]["workers"] == {"ok": False, "detail": "3 of 4 workers live", "live": 3, "expected": 4}
    assert health.decide(figures(live_workers=8), SETTINGS)["status"] == "ok"


@pytest.mark.timeout(5)
def test_long_queue_warns_and_still_exits_0() -> None:
    assert health.decide(figures(queued=10), SETTINGS)["status"] == "ok"
    result = health.decide(figures(queued=11), SETTINGS)
    assert result["status"] == "warn" and health.exit_code(result) == 0
    assert result["checks"]["queue"]["detail"] == "Queue is long (11 queued, warning above 10)"
    # a failure outranks the warning
    assert health.decide(figures(queued=11, live_workers=0), SETTINGS)["status"] == "fail"


@pytest.mark.timeout(5)
def test_redis_unreachable_fails_with_every_check_and_exits_3() -> None:
    result = health.decide(Figures(redis_url="unix:///x", redis_error="Connection refused"), SETTINGS)
    assert result["status"] == "fail" and health.exit_code(result) == 3
    assert set(result["checks"]) == {"redis", "heartbeat", "workers", "queue"}
    assert not any(entry["ok"] for entry in result["checks"].values())
    assert "Connection refused" in result["checks"]["redis"]["detail"]


@pytest.mark.timeout(5)
def test_lines_one_per_check() -> None:
    result = health.decide(figures(queued=11, live_workers=2), SETTINGS)
    lines = health.lines(result)
    assert lines[0] == "status: fail"
    assert lines[1:] == [
        "ok   redis: Redis answers at unix:///x/redis.sock",
        "ok   heartbeat: supervisor heartbeat 1.0s ago (web1) (limit 6s)",
        "fail workers: 2 of 4 workers live",
        "warn queue: Queue is long (11 queued, warning above 10)",
    ]


def register_worker(connection: redis.Redis, settings: Settings, name: str) -> None:
    """A worker of this process, registered as `rq worker` registers itself (Worker.all finds it)."""
    stamp = utcformat(now())
    connection.hset(
        keys.worker(name),
        mapping={"hostname": this_host(), "pid": os.getpid(), "birth": stamp, "last_heartbeat": stamp, "state": "idle"},
    )
    connection.expire(keys.worker(name), 120)
    connection.sadd(WORKERS_BY_QUEUE_KEY % settings.queue_name, keys.worker(name))
    connection.sadd(REDIS_WORKER_KEYS, keys.worker(name))


# --- real Redis ----------------------------------------------------------------------------------
@pytest.mark.timeout(10)
def test_beat_writes_redis_time_with_a_ttl_and_stop_removes_it(connection: redis.Redis, settings: Settings) -> None:
    stamp = health.beat(connection, settings, host="web1")
    seconds, micros = connection.time()
    assert 0 <= seconds + micros / 1e6 - stamp < 1
    assert float(connection.get(keys.heartbeat("web1")) or 0) == pytest.approx(stamp)
    ttl = connection.pttl(keys.heartbeat("web1"))
    assert 0 < ttl <= published.publication_ttl(settings) * 1000
    health.stop(connection, host="web1")
    assert connection.exists(keys.heartbeat("web1")) == 0


@pytest.mark.timeout(10)
def test_cleanup_publish_beats_and_withdraw_removes_it(connection: redis.Redis, settings: Settings) -> None:
    cleanup = Cleanup.create(connection, settings)
    cleanup.publish()
    key = keys.heartbeat(this_host())
    assert connection.exists(key) == 1
    result = health.check(connection, settings)
    assert result["checks"]["heartbeat"]["ok"], result
    assert list(result["checks"]["heartbeat"]["age_seconds"]) == [this_host()]
    cleanup.withdraw()
    assert connection.exists(key) == 0
    assert health.check(connection, settings)["checks"]["heartbeat"]["ok"] is False


@pytest.mark.timeout(10)
def test_check_reads_real_figures(connection: redis.Redis, env: dict[str, str]) -> None:
    settings = Settings.from_env({**env, "DQ_WORKERS": "2", "DQ_QUEUE_WARN": "1"})
    published.publish(connection, settings)
    health.beat(connection, settings)
    register_worker(connection, settings, "w1")
    connection.rpush(keys.queue(settings.queue_name), "a", "b")
    result = health.check(connection, settings)
    assert result["checks"]["queue"]["queued"] == 2 and not result["checks"]["queue"]["ok"]
    assert result["checks"]["workers"]["live"] == 1 and result["status"] == "fail"
    register_worker(connection, settings, "w2")
    assert health.check(connection, settings)["status"] == "warn"


# --- bin/health against real processes ----------------------------------------------------------
@pytest.mark.timeout(90)
def test_bin_health_exits_0_then_1_within_three_intervals_of_a_killed_supervisor(
    env: dict[str, str], start_service, connection: redis.Redis
) -> None:
    interval = 1.0
    env = {**env, "DQ_CLEANUP_INTERVAL": str(interval), "DQ_WORKERS": "2"}
    service = start_service(env, wait_workers=2)
    last: list[object] = []

    def healthy() -> bool:
        result = run_dq(["health"], env)
        last[:] = [result]
        return result.returncode == 0

    assert wait_until(healthy, timeout=20, interval=0.2), last
    ok = run_dq(["health"], env)
    assert ok.returncode == 0 and ok.stdout.startswith("status: ok"), ok
    assert len(ok.stdout.splitlines()) == 5
    as_json = json.loads(run_dq(["health", "--json"], env).stdout)
    assert as_json["status"] == "ok" and as_json["checks"]["heartbeat"]["ok"]

    service.process.kill()  # the supervisor alone: its workers die by the parent-death signal
    killed_at = time.monotonic()
    service.process.wait(10)
    first_fail = None
    while time.monotonic() < killed_at + 3 * interval:
        started = time.monotonic()
        if run_dq(["health"], env).returncode == 1:
            first_fail = started
            break
    assert first_fail is not None and first_fail - killed_at <= 3 * interval
    # Once 3 intervals have passed, the heartbeat itself has gone stale, whatever the workers say.
    time.sleep(max(0.0, killed_at + 3 * interval - time.monotonic()))
    stale = run_dq(["health", "--json"], env)
    assert stale.returncode == 1, stale
    checks = json.loads(stale.stdout)["checks"]
    assert checks["heartbeat"]["ok"] is False, checks
    assert checks["redis"]["ok"] is True


@pytest.mark.timeout(30)
def test_bin_health_exits_3_when_redis_is_unreachable(env: dict[str, str], tmp_path: Path) -> None:
    env = {**env, "REDIS_URL": f"unix://{tmp_path}/nothing-here.sock"}
    result = run_dq(["health"], env)
    assert result.returncode == 3, result
    lines = result.stdout.splitlines()
    assert lines[0] == "status: fail"
    assert lines[1].startswith("fail redis: Redis is not reachable at unix://")
    assert [line.split()[1] for line in lines[1:]] == ["redis:", "heartbeat:", "workers:", "queue:"]
    as_json = run_dq(["health", "--json"], env)
    assert as_json.returncode == 3
    assert json.loads(as_json.stdout)["status"] == "fail"
