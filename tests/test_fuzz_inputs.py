"""Property-based fuzzing (hypothesis) of everything a URL, a file name or a playlist can bring:
no input crashes a check, escapes the download dir, or reaches a non-global address."""

from __future__ import annotations

import ipaddress
import os
import string
from pathlib import Path
from urllib.parse import urlsplit

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from jobs.errors import InvalidRequest
from jobs.paths import check_dest, confined, file_in, filename_from_content_disposition, sanitize_filename
from jobs.playlist import parse_m3u
from jobs.urls import MAX_URL_BYTES, check_url, connecting_host, is_global_address, private_host

pytestmark = pytest.mark.timeout(120)
# DQ_FUZZ_EXAMPLES=5000 bin/test tests/test_fuzz_inputs.py for a longer hunt
FUZZ = settings(
    max_examples=int(os.environ.get("DQ_FUZZ_EXAMPLES", "400")),
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)

URL_CHARS = string.ascii_letters + string.digits + "-._~:/?#[]@!$&'()*+,;=%\\ \t\x00\x7fé€\u200b"
url_pieces = st.text(alphabet=URL_CHARS, max_size=40)
urls = st.one_of(
    st.text(max_size=200),
    st.builds(
        lambda scheme, userinfo, host, port, rest: f"{scheme}://{userinfo}{host}{port}{rest}",
        st.sampled_from(["http", "https", "HTTP", "ftp", "javascript", ""]),
        st.one_of(st.just(""), url_pieces.map(lambda text: text + "@")),
        st.one_of(
            url_pieces,
            st.sampled_from(["127.0.0.1", "[::1]", "example.org", "127.1", "0x7f000001", "[::ffff:127.0.0.1]"]),
        ),
        st.one_of(st.just(""), st.integers(min_value=-1, max_value=70000).map(lambda n: f":{n}")),
        url_pieces,
    ),
)

PRIVATE_V4 = ["127.0.0.0/8", "10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16", "169.254.0.0/16", "100.64.0.0/10"]


@FUZZ
@given(urls)
def test_a_url_passes_only_with_one_reading(url: str) -> None:
    try:
        checked = check_url(url)
    except InvalidRequest:
        return
    parts = urlsplit(checked)
    assert parts.scheme in ("http", "https")
    assert parts.hostname and connecting_host(checked) == parts.hostname
    assert "\\" not in checked and not any(ord(ch) < 0x21 or ord(ch) == 0x7F for ch in checked)
    assert len(checked.encode("utf-8", "surrogatepass")) <= MAX_URL_BYTES


def private_v4() -> st.SearchStrategy[ipaddress.IPv4Address]:
    def pick(network: str, offset: int) -> ipaddress.IPv4Address:
        net = ipaddress.IPv4Network(network)
        return net[offset % net.num_addresses]

    return st.builds(pick, st.sampled_from(PRIVATE_V4), st.integers(min_value=0, max_value=2**32))


def spellings(address: ipaddress.IPv4Address) -> list[str]:
    number = int(address)
    octets = [int(part) for part in str(address).split(".")]
    return [
        str(address),
        str(number),
        hex(number),
        ".".join(oct(part).replace("0o", "0") for part in octets),
        f"{octets[0]}.{(octets[1] << 16) | (octets[2] << 8) | octets[3]}",
        f"::ffff:{address}",
        str(ipaddress.IPv6Address((0x0064FF9B << 96) | number)),  # NAT64
        str(ipaddress.IPv6Address((0x2002 << 112) | (number << 80) | 1)),  # 6to4
    ]


@FUZZ
@given(private_v4())
def test_no_spelling_of_a_private_address_passes_the_enqueue_check(address: ipaddress.IPv4Address) -> None:
    assert not is_global_address(address)
    for host in spellings(address):
        found = private_host(host, None)
        assert found is not None and found[1] is True, host


@FUZZ
@given(st.integers(min_value=0, max_value=2**32 - 1))
def test_ipv6_forms_of_an_ipv4_address_are_judged_as_it(number: int) -> None:
    address = ipaddress.IPv4Address(number)
    forms = [
        ipaddress.IPv6Address((0xFFFF << 32) | number),
        ipaddress.IPv6Address((0x0064FF9B << 96) | number),
        ipaddress.IPv6Address((0x2002 << 112) | (number << 80)),
    ]
    assert {is_global_address(form) for form in forms} == {is_global_address(address)}


@FUZZ
@given(st.integers(min_value=0, max_value=2**128 - 1))
def test_no_non_global_ipv6_network_is_admitted(number: int) -> None:
    address = ipaddress.IPv6Address(number)
    if is_global_address(address):
        assert not (address.is_loopback or address.is_link_local or address.is_private or address.is_multicast)
        assert not address.is_site_local and not address.is_reserved


@FUZZ
@given(dest=st.text(max_size=60), name=st.text(max_size=300), header=st.text(max_size=120))
def test_no_name_or_dest_escapes_the_download_dir(tmp_path: Path, dest: str, name: str, header: str) -> None:
    root = tmp_path.resolve()
    for candidate in (sanitize_filename(name), filename_from_content_disposition(f"attachment; filename={header}")):
        if not candidate:
            continue
        assert "/" not in candidate and "\x00" not in candidate and not candidate.startswith(".")
        assert len(candidate.encode()) <= 200
        try:
            directory = confined(root, check_dest(dest))
        except InvalidRequest:
            continue
        final = file_in(directory, candidate)
        assert final.parent == directory and (directory == root or root in directory.parents)


@FUZZ
@given(st.lists(st.one_of(urls, st.text(max_size=80), st.sampled_from(["#EXTM3U", "#EXTINF:12,Title", ""]))))
def test_playlist_parsing_never_crashes_and_keeps_only_checked_urls(lines: list[str]) -> None:
    for entry in parse_m3u("\n".join(lines), "https://lists.example/music/list.m3u8"):
        if entry.url is not None:
            assert check_url(entry.url) == entry.url
