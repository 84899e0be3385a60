"""URL checks: one reading only, a sane length, and only globally routable addresses, judged on
the socket actually connected (a name that rebinds between two lookups gets nowhere).

The rebinding tests swap the process's resolver for one that answers as an attacker's DNS
would (public first, then loopback) and point it at a real fault server on 127.0.0.1.
"""

from __future__ import annotations

import ipaddress
import socket
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest

from jobs import urllib3_compat
from jobs.download import Target, download
from jobs.errors import DownloadError, InvalidRequest
from jobs.urls import (
    MAX_URL_BYTES,
    check_url,
    is_global_address,
    private_host,
    redacted,
    refuse_private_peer,
)
from tests.faultserver import FaultServer
from tests.helpers import listed, run_dq

pytestmark = pytest.mark.timeout(30)
PUBLIC = "93.184.216.34"
PUBLIC6 = "2606:2800:220:1:248:1893:25c8:1946"


@pytest.mark.parametrize(
    "url",
    [
        "",
        "   ",
        "ftp://host/a.flac",
        "file:///etc/passwd",
        "http://",
        "https:///x",
        "not a url",
        "http://host:99999/a",
        "javascript:alert(1)",
        "http://a b/c",
        "http://127.0.0.1:8000\\@public.example/secret",
        "http://public.example\\@127.0.0.1/secret",
        "http://host/a\\b.flac",
        "http://host/a\x00b",
        "http://host/a\x7fb",
        "http://host/\tx",
    ],
)
def test_bad_urls_are_refused(url: str) -> None:
    with pytest.raises(InvalidRequest):
        check_url(url)


def test_good_url_is_stripped() -> None:
    assert check_url("  https://example.org/Artist/01%20Song.flac\n") == "https://example.org/Artist/01%20Song.flac"


def test_the_backslash_url_names_two_hosts_and_is_refused_for_it() -> None:
    with pytest.raises(InvalidRequest, match="backslash") as refused:
        check_url("http://127.0.0.1:8000\\@public.example/secret")
    assert "127.0.0.1:8000" in str(refused.value)  # the part that makes it dangerous is shown
    with pytest.raises(InvalidRequest) as refused:
        check_url("ftp://listener:pw@public.example/a")
    assert "pw" not in str(refused.value)


def test_urls_over_8_kib_are_refused_with_their_size() -> None:
    base = "https://example.org/"
    check_url(base + "a" * (MAX_URL_BYTES - len(base)))
    with pytest.raises(InvalidRequest, match=r"URL too long \(8193 bytes, at most 8192\)") as refused:
        check_url(base + "a" * (MAX_URL_BYTES - len(base) + 1))
    assert len(str(refused.value)) < 400  # the message shows the start of the URL only


def test_redaction_hides_user_and_password_only() -> None:
    assert redacted("http://user:secret@host:81/a?b=1") == "http://***@host:81/a?b=1"
    assert redacted("https://token@host/a") == "https://***@host/a"
    assert redacted("https://host/a@b") == "https://host/a@b"
    assert redacted("https://host/a") == "https://host/a"


@pytest.mark.parametrize(
    "address",
    [
        "127.0.0.1", "10.1.2.3", "172.16.0.1", "192.168.1.1", "169.254.169.254", "0.0.0.0",
        "100.64.0.1", "100.127.255.254",  # CGNAT
        "224.0.0.1", "239.255.255.250", "255.255.255.255", "240.0.0.1", "198.18.0.1", "192.0.0.8",
        "::1", "::", "fe80::1", "fc00::1", "fd12:3456::1", "fec0::1", "ff02::1", "ff0e::1",
        "::ffff:127.0.0.1", "::ffff:10.0.0.1", "::ffff:100.64.0.1",
        "64:ff9b::7f00:1", "64:ff9b::a00:1", "64:ff9b:1::1",  # NAT64 of loopback / private; local-use NAT64
        "2002:7f00:1::1", "2002:a00:1::", "2002:c0a8:101::1",  # 6to4 of loopback / private
        "2001:db8::1", "::7f00:1",
    ],
)  # fmt: skip
def test_non_global_addresses_are_not_admitted(address: str) -> None:
    assert not is_global_address(ipaddress.ip_address(address))


@pytest.mark.parametrize("address", [PUBLIC, "8.8.8.8", PUBLIC6, "64:ff9b::5db8:d822", "2002:5db8:d822::1"])
def test_global_addresses_are_admitted(address: str) -> None:
    assert is_global_address(ipaddress.ip_address(address))


def test_a_scoped_link_local_address_is_not_global() -> None:
    assert not is_global_address(ipaddress.ip_address("fe80::1%eth0"))


@pytest.mark.parametrize(
    "host", ["127.1", "2130706433", "0x7f000001", "0177.0.0.1", "::ffff:127.0.0.1", "64:ff9b::7f00:1", "100.64.1.1"]
)
def test_every_spelling_of_a_private_literal_is_caught_at_enqueue(host: str) -> None:
    found = private_host(host, None)
    assert found is not None and found[1] is True


class Resolver:
    """Answers `name` as a rebinding DNS server would: `answers` in turn, the last one repeating."""

    def __init__(self, name: str, answers: list[list[str]]) -> None:
        self.name = name
        self.answers = answers
        self.calls = 0
        self.real = socket.getaddrinfo

    def __call__(self, host: Any, port: Any, *args: Any, **kwargs: Any) -> list[Any]:
        if host != self.name:
            return self.real(host, port, *args, **kwargs)
        answer = self.answers[min(self.calls, len(self.answers) - 1)]
        self.calls += 1
        infos = []
        for address in answer:
            family = socket.AF_INET6 if ":" in address else socket.AF_INET
            where = (address, int(port), 0, 0) if family == socket.AF_INET6 else (address, int(port))
            infos.append((family, socket.SOCK_STREAM, socket.IPPROTO_TCP, "", where))
        return infos


@pytest.fixture
def rebinding(monkeypatch: pytest.MonkeyPatch) -> Iterator[Callable[[list[list[str]]], Resolver]]:
    def install(answers: list[list[str]]) -> Resolver:
        resolver = Resolver("rebind.test", answers)
        monkeypatch.setattr(socket, "getaddrinfo", resolver)
        return resolver

    yield install


def fetch(url: str, directory: Path, request_timeout: float = 2) -> None:
    download(url, Target(), download_dir=directory, request_timeout=request_timeout, allow_private=False)


def test_a_name_that_rebinds_to_loopback_never_reaches_the_server(
    tmp_path: Path, fault_server: FaultServer, rebinding: Callable[[list[list[str]]], Resolver]
) -> None:
    """Public for the first lookup, loopback after: the old check-then-connect downloaded these."""
    for attempt in range(10):
        rebinding([[PUBLIC], ["127.0.0.1"]])
        url = f"http://rebind.test:{fault_server.port}/bytes/100?n={attempt}"
        with pytest.raises(DownloadError):  # refused, or the public address did not answer
            fetch(url, tmp_path, request_timeout=1)
    assert fault_server.request_log == []
    assert list(tmp_path.rglob("*")) == []


def test_the_connected_loopback_address_is_refused_with_the_setting_to_change(
    tmp_path: Path, fault_server: FaultServer, rebinding: Callable[[list[list[str]]], Resolver]
) -> None:
    rebinding([["127.0.0.1"]])
    with pytest.raises(InvalidRequest, match=r"rebind\.test .*private address \(127\.0\.0\.1\).*DQ_ALLOW_PRIVATE"):
        fetch(f"http://rebind.test:{fault_server.port}/bytes/100", tmp_path)
    assert fault_server.request_log == []


def test_a_public_answer_that_fails_over_to_loopback_is_refused(
    tmp_path: Path, fault_server: FaultServer, rebinding: Callable[[list[list[str]]], Resolver]
) -> None:
    """One answer with an unreachable public address first: the client falls over to the next."""
    rebinding([["0.0.0.1", "127.0.0.1"]])  # nothing answers on 0.0.0.1
    with pytest.raises(InvalidRequest, match="private address"):
        fetch(f"http://rebind.test:{fault_server.port}/bytes/100", tmp_path)
    assert fault_server.request_log == []


def test_a_redirect_to_a_backslash_url_is_refused_before_it_connects(tmp_path: Path, fault_server: FaultServer) -> None:
    """Even where private networks are allowed: the hop is read two ways, so it is not followed."""
    target = f"http://127.0.0.1:{fault_server.port}\\@public.example/bytes/100"
    first = fault_server.url(f"/status/302?location={quote(target, safe='')}")
    with pytest.raises(InvalidRequest, match="backslash"):
        download(first, Target(), download_dir=tmp_path, request_timeout=2, allow_private=True)
    assert [record.path for record in fault_server.request_log] == ["/status/302"]


def test_a_redirect_to_loopback_is_refused_on_the_hop(
    tmp_path: Path,
    fault_server: FaultServer,
    rebinding: Callable[[list[list[str]]], Resolver],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The first hop passes (the test server plays a public one, `public.test`); the redirect it
    sends to 127.0.0.1 is refused by the check on the socket the second hop opens."""
    resolver = rebinding([["127.0.0.1"]])
    resolver.name = "public.test"
    checked: list[str] = []

    def first_hop_is_public(host: str, peer: str) -> None:
        checked.append(host)
        if host != "public.test":
            refuse_private_peer(host, peer)

    monkeypatch.setattr(urllib3_compat, "refuse_private_peer", first_hop_is_public)
    target = f"http://127.0.0.1:{fault_server.port}/bytes/100/inside.flac"
    with pytest.raises(InvalidRequest, match=r"private address \(127\.0\.0\.1\)"):
        fetch(f"http://public.test:{fault_server.port}/status/302?location={quote(target, safe='')}", tmp_path)
    assert checked == ["public.test", "127.0.0.1"]
    assert [record.path for record in fault_server.request_log] == ["/status/302"]


@pytest.mark.parametrize(
    ("url", "reason"),
    [
        ("https://example.org/" + "a" * MAX_URL_BYTES, "URL too long"),
        ("http://127.0.0.1:8000\\@public.example/secret", "backslash"),
        ("http://[::ffff:127.0.0.1]/a.mp3", "private address"),
        ("http://100.64.0.1/a.mp3", "private address"),
    ],
)
def test_bin_enqueue_refuses_with_exit_2_and_enqueues_nothing(env: dict[str, str], url: str, reason: str) -> None:
    refused_env = {**env, "DQ_ALLOW_PRIVATE_NETWORKS": "0"}
    result = run_dq(["enqueue", "https://example.org/fine.mp3", url], refused_env)
    assert result.returncode == 2, result.stderr
    assert reason in result.stderr and len(result.stderr) < 1000
    assert listed(env) == {}
