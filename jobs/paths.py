"""Where files go: file names, and confinement to the download dir (URLs: `jobs.urls`)."""

from __future__ import annotations

import logging
import os
import re
import unicodedata
from email.message import Message
from pathlib import Path
from urllib.parse import unquote, urlsplit

from jobs.errors import InvalidRequest

PART_SUFFIX = ".part"
log = logging.getLogger("dq.paths")
MAX_NAME_BYTES = 200  # leaves room for " (n)" and ".<job id>.part" under every filesystem's 255
_UNSAFE = re.compile(r'[\x00-\x1f\x7f/\\:*?"<>|]')
_SPACES = re.compile(r"\s+")


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


def file_in(directory: Path, name: str) -> Path:
    """`directory/name` for a single, sanitized component. The name itself is not resolved: a
    symlink there is the link, judged by `lstat` and never followed (jobs.files)."""
    if name in ("", ".", "..") or "/" in name or "\x00" in name:
        raise InvalidRequest(f"not a plain file name: {name!r}")
    return directory / name


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
