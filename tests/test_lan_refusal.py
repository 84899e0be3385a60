"""URLs on private networks are judged at enqueue by the running workers' setting.

The supervisor publishes its workers' DQ_ALLOW_PRIVATE_NETWORKS in Redis (`jobs.published`);
`dq enqueue` refuses (exit 2, nothing enqueued) a URL the workers would refuse, whatever the
enqueuing shell says, and tells where to set it. With no supervisor running, the enqueuing
command's own setting decides.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pytest
import redis

from config import Settings
from jobs import keys, published
from tests.faultserver import FaultServer
from tests.helpers import Service, listed, run_dq, wait_until

PUBLIC = "http://93.184.216.34/a.flac"  # a public address literal: no DNS lookup, never fetched here
WHERE = ("DQ_ALLOW_PRIVATE_NETWORKS=1", "bin/up's environment", "supervisord's environment=", "systemd env file")


def refusing(env: dict[str, str]) -> dict[str, str]:
    return {**env, "DQ_ALLOW_PRIVATE_NETWORKS": "0", "DQ_WORKERS": "1"}


def allowing(env: dict[str, str]) -> dict[str, str]:
    return {**env, "DQ_ALLOW_PRIVATE_NETWORKS": "1", "DQ_WORKERS": "1"}


def assert_refused(result: object, env: dict[str, str], host: str) -> None:
    assert getattr(result, "returncode", None) == 2, result
    stderr = str(getattr(result, "stderr", ""))
    assert f"refused: {host} " in stderr, stderr
    assert "the workers do not allow private networks" in stderr, stderr
    assert all(place in stderr for place in WHERE), stderr
    assert "nothing was enqueued" in stderr, stderr
    assert listed(env) == {}, "nothing was enqueued"


@pytest.mark.timeout(60)
def test_a_lan_url_is_refused_by_the_workers_setting_not_the_shells(
    env: dict[str, str], fault_server: FaultServer, start_service: Callable[..., Service]
) -> None:
    start_service(refusing(env))
    url = fault_server.url("/bytes/1000/lan.flac")  # http://127.0.0.1:PORT/...
    result = run_dq(["enqueue", url], allowing(env))
    assert_refused(result, env, "127.0.0.1")
    assert "127.0.0.1 is a private address (127.0.0.1)" in result.stderr
    assert fault_server.requests == [], "no worker ever tried it"


@pytest.mark.timeout(60)
def test_a_lan_url_is_accepted_and_downloaded_when_the_workers_allow_it(
    env: dict[str, str], fault_server: FaultServer, start_service: Callable[..., Service]
) -> None:
    start_service(allowing(env))
    result = run_dq(["enqueue", "--wait", fault_server.url("/bytes/1000/lan.flac")], refusing(env), timeout=40)
    assert result.returncode == 0, result.stderr
    assert (Path(env["DQ_DOWNLOAD_DIR"]) / "lan.flac").stat().st_size == 1000


@pytest.mark.timeout(90)
def test_every_form_of_a_private_host_is_refused(env: dict[str, str], start_service: Callable[..., Service]) -> None:
    start_service(refusing(env))
    forms = {
        "127.1": "127.0.0.1",
        "2130706433": "127.0.0.1",
        "0x7f000001": "127.0.0.1",
        "0177.0.0.1": "127.0.0.1",
        "[::ffff:127.0.0.1]": "127.0.0.1",
        "[::1]": "::1",
        "192.168.1.20": "192.168.1.20",
        "10.0.0.7": "10.0.0.7",
        "169.254.169.254": "169.254.169.254",
    }
    for host, address in forms.items():
        result = run_dq(["enqueue", f"http://{host}:8000/x.flac"], allowing(env))
        shown = host.strip("[]")
        assert_refused(result, env, shown)
        assert f"{shown} is a private address ({address})" in result.stderr
    # A name that resolves only to private addresses.
    result = run_dq(["enqueue", "http://localhost:8000/x.flac"], allowing(env))
    assert_refused(result, env, "localhost")
    assert "localhost resolves only to private addresses" in result.stderr
    # A public address and a name that does not resolve pass (the worker reports a DNS failure).
    accepted = run_dq(["enqueue", PUBLIC, "http://nothing-here.invalid/x.flac"], {**refusing(env), "DQ_QUEUE": "q2"})
    assert accepted.returncode == 0, accepted.stderr


@pytest.mark.timeout(60)
def test_one_lan_line_refuses_a_whole_from_file_batch(
    env: dict[str, str], tmp_path: Path, start_service: Callable[..., Service]
) -> None:
    start_service(refusing(env))
    batch = tmp_path / "urls.txt"
    lines = [f"http://93.184.216.{n}/{n}.flac" for n in range(1, 6)]
    batch.write_text("# a batch\n" + "\n".join(lines[:3] + ["http://192.168.1.20/nas.flac"] + lines[3:]) + "\n")
    result = run_dq(["enqueue", "--from-file", str(batch)], allowing(env))
    assert_refused(result, env, "192.168.1.20")


@pytest.mark.timeout(60)
def test_an_album_or_playlist_with_a_lan_url_is_refused_whole(
    env: dict[str, str], fault_server: FaultServer, start_service: Callable[..., Service]
) -> None:
    start_service(refusing(env))
    album = run_dq(["enqueue", "--album", "Home", PUBLIC, fault_server.url("/bytes/10/2.flac")], allowing(env))
    assert_refused(album, env, "127.0.0.1")
    playlist = run_dq(["enqueue", "--playlist", fault_server.url("/lists/home.m3u")], allowing(env))
    assert_refused(playlist, env, "127.0.0.1")


@pytest.mark.timeout(60)
def test_without_a_supervisor_the_enqueuing_settings_decide(env: dict[str, str], fault_server: FaultServer) -> None:
    url = fault_server.url("/bytes/1000/lan.flac")
    refused = run_dq(["enqueue", url], refusing(env))
    assert refused.returncode == 2, refused.stderr
    assert "refused: 127.0.0.1 is a private address (127.0.0.1); private networks are not allowed" in refused.stderr
    assert all(place in refused.stderr for place in WHERE), refused.stderr
    assert listed(env) == {}
    accepted = run_dq(["enqueue", url], allowing(env))
    assert accepted.returncode == 0, accepted.stderr
    assert len(listed(env)) == 1


@pytest.mark.timeout(60)
def test_the_supervisor_publishes_its_setting_and_withdraws_it_on_a_clean_stop(
    env: dict[str, str], connection: redis.Redis, fault_server: FaultServer, start_service: Callable[..., Service]
) -> None:
    service = start_service(refusing(env))
    [field] = connection.hkeys(keys.PUBLISHED)
    assert field.decode().endswith(f":{service.pid}")
    value = json.loads(connection.hget(keys.PUBLISHED, field) or "{}")
    assert value["queue"] == "downloads" and value["allow_private_networks"] is False
    # Refreshed every cleanup round (DQ_CLEANUP_INTERVAL=0.5): the expiry moves on.
    assert wait_until(
        lambda: json.loads(connection.hget(keys.PUBLISHED, field) or "{}").get("expires_at", 0) > value["expires_at"],
        timeout=5,
    )
    assert service.terminate() == 0
    assert connection.hkeys(keys.PUBLISHED) == []
    accepted = run_dq(["enqueue", fault_server.url("/bytes/10/after.flac")], allowing(env))
    assert accepted.returncode == 0, "no live publisher: the enqueuing settings decide again"


@pytest.mark.timeout(30)
def test_every_live_publisher_must_allow_and_expired_ones_do_not_count(connection: redis.Redis) -> None:
    """In process, with real Redis: two hosts' supervisors, one of them refusing."""
    allow = Settings(allow_private_networks=True, cleanup_interval=0.5)
    deny = Settings(allow_private_networks=False, cleanup_interval=0.5)
    published.publish(connection, allow, "host-a:1")
    assert published.private_network_policy(connection, deny) == published.PrivateNetworkPolicy(True, True)
    published.publish(connection, deny, "host-b:1")
    assert published.private_network_policy(connection, allow) == published.PrivateNetworkPolicy(False, True)
    # Another queue's workers do not decide for this one.
    other = Settings(queue_name="other", allow_private_networks=True)
    assert published.private_network_policy(connection, other) == published.PrivateNetworkPolicy(True, False)
    # An expired publication is ignored, and dropped by the next writer.
    connection.hset(
        keys.PUBLISHED,
        "host-b:1",
        json.dumps({"queue": "downloads", "allow_private_networks": False, "expires_at": 1.0}),
    )
    assert published.private_network_policy(connection, deny) == published.PrivateNetworkPolicy(True, True)
    published.publish(connection, allow, "host-a:1")
    assert connection.hkeys(keys.PUBLISHED) == [b"host-a:1"]
    published.withdraw(connection, "host-a:1")
    assert published.private_network_policy(connection, deny) == published.PrivateNetworkPolicy(False, False)
