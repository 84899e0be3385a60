"""Where files go: URL checks, file names, and confinement to the download dir."""

from __future__ import annotations

import ipaddress
import logging
import os
import re
import socket
import unicodedata
from email.message import Message
from pathlib import Path
from urllib.parse import unquote, urlsplit

from jobs import messages
from jobs.errors import InvalidRequest

PART_SUFFIX = ".part"
log = logging.getLogger("dq.paths")
MAX_NAME_BYTES = 200  # leaves room for " (n)" and ".<job id>.part" under every filesystem's 255
_UNSAFE = re.compile(r'[\x00-\x1f\x7f/\\:*?"<>|]')
_SPACES = re.compile(r"\s+")


def check_url(url: str) -> str:
    """Return the URL stripped, or raise InvalidRequest with a reason a user understands."""
    url = url.strip()
    if not url:
        raise InvalidRequest("empty URL")
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as error:
        raise InvalidRequest(f"malformed URL {url!r}: {error}") from None
    if parts.scheme not in ("http", "https"):
        raise InvalidRequest(f"not an http(s) URL: {url!r}")
    if not parts.hostname:
        raise InvalidRequest(f"URL has no host: {url!r}")
    if any(ch.isspace() for ch in url):
        raise InvalidRequest(f"URL contains white space: {url!r}")
    del port
    return url


Address = ipaddress.IPv4Address | ipaddress.IPv6Address


def is_private_address(address: Address) -> bool:
    """Loopback, private, link-local or unspecified: what DQ_ALLOW_PRIVATE_NETWORKS=0 refuses."""
    return address.is_loopback or address.is_private or address.is_link_local or address.is_unspecified


def refuse_private_address(url: str) -> None:
    """Refuse URLs whose host resolves to loopback, private or link-local addresses.

    Called at download time (DNS may change between enqueue and download) unless
    DQ_ALLOW_PRIVATE_NETWORKS=1.
    """
    parts = urlsplit(url)
    host = parts.hostname or ""
    try:
        infos = socket.getaddrinfo(host, parts.port or 443, proto=socket.IPPROTO_TCP)
    except OSError:
        return  # the download itself reports the DNS failure
    for info in infos:
        address = ipaddress.ip_address(info[4][0])
        if is_private_address(address):
            raise InvalidRequest(messages.private_address(host, address))


def address_literal(host: str) -> Address | None:
    """The address a host name spells, in any form an HTTP client accepts, else None.

    `ipaddress` reads the usual forms (`127.0.0.1`, `::ffff:127.0.0.1`, `fe80::1%eth0`);
    `inet_aton` the shorthands the C resolver also accepts (`127.1`, `2130706433`,
    `0x7f000001`, `0177.0.0.1`).
    """
    try:
        return ipaddress.ip_address(host.split("%", 1)[0])  # a zone id names no other host
    except ValueError:
        pass
    try:
        return ipaddress.IPv4Address(socket.inet_aton(host))
    except OSError:
        return None


def private_host(host: str, port: int | None) -> tuple[Address, bool] | None:
    """For a check at enqueue: `(address, literal)` when `host` is a private address literal, or
    a name that resolves only to private addresses; None otherwise, and when it does not resolve
    at all (the worker then reports the DNS failure as the job's error)."""
    literal = address_literal(host)
    if literal is not None:
        if not is_private_address(literal):
            return None
        mapped = literal.ipv4_mapped if isinstance(literal, ipaddress.IPv6Address) else None
        return (mapped or literal), True
    try:
        infos = socket.getaddrinfo(host, port or 443, proto=socket.IPPROTO_TCP)
    except (OSError, UnicodeError):
        return None
    addresses = [ipaddress.ip_address(str(info[4][0]).split("%", 1)[0]) for info in infos]
    if addresses and all(is_private_address(address) for address in addresses):
        return addresses[0], False
    return None


def sanitize_filename(name: str) -> str:
    """A safe single path component, or '' when nothing usable is left."""
    name = unicodedata.normalize("NFC", name)
    name = _UNSAFE.sub("_", name)
    name = _SPACES.sub(" ", name).strip().strip(".").strip()
    while len(name.encode()) > MAX_NAME_BYTES:
        stem, dot, ext = name.rpartition(".")
        if dot and 0 < len(ext) <= 8 and stem:
            name = stem[:-1] + "." + ext
        else:
            name = name[:-1]
    if name in ("", ".", ".."):
        return ""
    return name


def filename_from_content_disposition(header: str | None) -> str:
    if not header:
        return ""
    message = Message()
    message["content-disposition"] = header
    name = message.get_filename()  # handles filename*=UTF-8''... (RFC 2231) too
    if not name:
        return ""
    return sanitize_filename(os.path.basename(name.replace("\\", "/")))


def filename_from_url(url: str) -> str:
    path = urlsplit(url).path
    return sanitize_filename(unquote(path.rstrip("/").rsplit("/", 1)[-1]))


def check_dest(dest: str) -> str:
    """Normalise a --dest relative to the download dir; refuse anything that escapes it."""
    if "\x00" in dest:
        raise InvalidRequest("--dest contains a NUL byte")
    if os.path.isabs(dest) or dest.startswith("~"):
        raise InvalidRequest(f"--dest must be relative to the download dir, got {dest!r}")
    parts = [p for p in dest.replace("\\", "/").split("/") if p not in ("", ".")]
    if any(p == ".." for p in parts):
        raise InvalidRequest(f"--dest escapes the download dir: {dest!r}")
    return "/".join(parts)


def check_name(name: str) -> str:
    clean = sanitize_filename(name)
    if not clean or clean != name.strip():
        raise InvalidRequest(f"--name must be a plain file name, got {name!r}")
    return clean


def confined(download_dir: Path, *parts: str) -> Path:
    """Join below the download dir; raise if the result (symlinks resolved) leaves it."""
    root = download_dir.resolve()
    target = root.joinpath(*parts).resolve()
    if target != root and root not in target.parents:
        raise InvalidRequest(f"path escapes the download dir: {'/'.join(parts)!r}")
    return target


_JOB_ID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")
_OWNED_PART = re.compile(r".+\.(" + _JOB_ID.pattern + r")" + re.escape(PART_SUFFIX))


def in_download_dir(download_dir: Path, path: Path) -> bool:
    """Whether `path`'s folder (symlinks resolved) is the download dir or below it."""
    root = download_dir.resolve()
    try:
        directory = path.parent.resolve()
    except OSError:
        return False
    return directory == root or root in directory.parents


def part_path(final: Path, owner: str) -> Path:
    """The partial file of one job's download: `<final name>.<job id>.part`, never shared."""
    return final.with_name(f"{final.name}.{owner}{PART_SUFFIX}")


def part_owner(name: str) -> str | None:
    """The job id a partial file's name carries; None for any other file (a user's own `x.part`)."""
    match = _OWNED_PART.fullmatch(name)
    return match.group(1) if match else None


def remove_part_file(download_dir: Path, final_path: str | None, owner: str) -> Path | None:
    """Remove the partial file of `owner`'s download that no longer runs; return it if one was removed.

    `final_path` is what the job's meta["path"] holds. Meta comes from Redis, so anything
    outside the download dir is refused.
    """
    if not final_path:
        return None
    partial = part_path(Path(final_path), owner)
    if not in_download_dir(download_dir, partial):
        log.warning("not removing %s: outside the download dir %s", partial, download_dir)
        return None
    target = partial.parent.resolve() / partial.name
    try:
        target.unlink()
    except FileNotFoundError:
        return None
    return target
