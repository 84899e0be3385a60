"""What a URL may be: one reading only, a sane length, a host on the public internet.

- `check_url`: refused when empty, not http(s), over `MAX_URL_BYTES`, or readable two ways
  (a backslash, a control character, a host our parser and urllib3's, the one that
  connects, see differently: `http://127.0.0.1\\@public.example/` is 127.0.0.1 to urllib3);
- `is_global_address`: only globally routable addresses pass DQ_ALLOW_PRIVATE_NETWORKS=0,
  judged on the IPv4 address inside IPv4-mapped, 6to4 and NAT64 forms;
- `private_host`: the enqueue-time check of a host literal or name; the worker's check is
  on the address each socket actually connected to (`jobs.urllib3_compat`);
- `redacted`: a URL (or a text with URLs) as shown and logged, its `user:password@` replaced.
"""

from __future__ import annotations

import ipaddress
import re
import socket
from urllib.parse import urlsplit

import urllib3.util

from jobs import messages
from jobs.errors import InvalidRequest

MAX_URL_BYTES = 8192
REDACTED = "***"
_CONTROL = re.compile(r"[\x00-\x20\x7f]")
_SHOWN_CHARS = 200  # of a refused URL in its error message

Address = ipaddress.IPv4Address | ipaddress.IPv6Address

_NAT64 = ipaddress.IPv6Network("64:ff9b::/96")
# What `ipaddress` (as of Python 3.11) counts as global but is not reachable on the internet.
_NOT_GLOBAL = (
    ipaddress.IPv4Network("100.64.0.0/10"),  # carrier-grade NAT
    ipaddress.IPv4Network("192.0.0.0/24"),  # IETF protocol assignments
    ipaddress.IPv6Network("64:ff9b:1::/48"),  # local-use NAT64
    ipaddress.IPv6Network("fec0::/10"),  # site-local
)


def _shown(url: str) -> str:
    """A refused URL as its message shows it: the start of it, a password hidden (what made it
    ambiguous, a backslash before an `@`, is kept)."""
    text = redacted(url[: _SHOWN_CHARS + 1])
    return repr(text[:_SHOWN_CHARS] + ("..." if len(text) > _SHOWN_CHARS else ""))


def check_url(url: str) -> str:
    """Return the URL stripped, or raise InvalidRequest with a reason a user understands."""
    url = url.strip()
    if not url:
        raise InvalidRequest("empty URL")
    size = len(url.encode("utf-8", "surrogatepass"))
    if size > MAX_URL_BYTES:
        raise InvalidRequest(f"URL too long ({size} bytes, at most {MAX_URL_BYTES}): {_shown(url)}")
    if _CONTROL.search(url):
        raise InvalidRequest(f"URL contains white space or a control character: {_shown(url)}")
    if "\\" in url:
        raise InvalidRequest(f"URL contains a backslash, which HTTP clients read in different ways: {_shown(url)}")
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018  (raises for a port that is not a number in range)
    except ValueError as error:
        raise InvalidRequest(f"malformed URL {_shown(url)}: {error}") from None
    if parts.scheme not in ("http", "https"):
        raise InvalidRequest(f"not an http(s) URL: {_shown(url)}")
    if not parts.hostname:
        raise InvalidRequest(f"URL has no host: {_shown(url)}")
    if connecting_host(url) != parts.hostname:
        raise InvalidRequest(f"URL can be read as two different hosts: {_shown(url)}")
    return url


def connecting_host(url: str) -> str | None:
    """The host urllib3 (which opens the connection) reads in `url`, as urlsplit spells hosts."""
    try:
        host = urllib3.util.parse_url(url).host
    except urllib3.exceptions.LocationParseError:
        return None
    return host.strip("[]").lower() if host else None


# Up to the authority's last `@` (a password may hold one), never past its end or a backslash.
_USERINFO_IN_TEXT = re.compile(r"(?i)\b([a-z][a-z0-9+.-]*://)[^\s/\\?#'\"]*@")


def redacted(text: str) -> str:
    """`text` with the `user:password@` of every URL in it replaced: a URL itself, or a log
    line or call string with URLs in it."""
    return _USERINFO_IN_TEXT.sub(rf"\1{REDACTED}@", text)


def embedded_ipv4(address: ipaddress.IPv6Address) -> ipaddress.IPv4Address | None:
    """The IPv4 address an IPv6 one reaches: IPv4-mapped, 6to4 (2002::/16) or NAT64 (64:ff9b::/96)."""
    if address.ipv4_mapped is not None:
        return address.ipv4_mapped
    if address.sixtofour is not None:
        return address.sixtofour
    if address in _NAT64:
        return ipaddress.IPv4Address(int(address) & 0xFFFFFFFF)
    return None


def is_global_address(address: Address) -> bool:
    """Whether DQ_ALLOW_PRIVATE_NETWORKS=0 lets a download connect to `address`."""
    if isinstance(address, ipaddress.IPv6Address):
        if address.scope_id:
            return False
        inner = embedded_ipv4(address)
        if inner is not None:
            return is_global_address(inner)
    if any(address in network for network in _NOT_GLOBAL if network.version == address.version):
        return False
    return address.is_global and not (address.is_multicast or address.is_reserved or address.is_unspecified)


def address_literal(host: str) -> Address | None:
    """The address a host name spells, in any form an HTTP client accepts, else None.

    `ipaddress` reads the usual forms (`127.0.0.1`, `::ffff:127.0.0.1`, `fe80::1%eth0`);
    `inet_aton` the shorthands the C resolver also accepts (`127.1`, `2130706433`,
    `0x7f000001`, `0177.0.0.1`).
    """
    try:
        return ipaddress.ip_address(host)
    except ValueError:
        pass
    try:
        return ipaddress.IPv4Address(socket.inet_aton(host))
    except OSError:
        return None


def _shown_address(address: Address) -> Address:
    inner = embedded_ipv4(address) if isinstance(address, ipaddress.IPv6Address) else None
    return inner or address


def private_host(host: str, port: int | None) -> tuple[Address, bool] | None:
    """For a check at enqueue: `(address, literal)` when `host` is a non-global address literal,
    or a name that resolves only to such addresses; None otherwise, and when it does not resolve
    at all (the worker then reports the DNS failure as the job's error)."""
    literal = address_literal(host)
    if literal is not None:
        return None if is_global_address(literal) else (_shown_address(literal), True)
    try:
        infos = socket.getaddrinfo(host, port or 443, proto=socket.IPPROTO_TCP)
    except (OSError, UnicodeError):
        return None
    addresses = [ipaddress.ip_address(str(info[4][0])) for info in infos]
    if addresses and not any(is_global_address(address) for address in addresses):
        return _shown_address(addresses[0]), False
    return None


def refuse_private_peer(host: str, peer: str) -> None:
    """Raise InvalidRequest when a socket opened for `host` is connected to a non-global `peer`."""
    address = ipaddress.ip_address(peer)
    if not is_global_address(address):
        raise InvalidRequest(messages.private_address(host, _shown_address(address)))
